//! Delivery idempotency keys and user deactivation in Redis.

use deadpool_redis::redis;

use super::scripts::CLAIM_DELIVERY;
use super::store::{BackendError, RedisStore};

/// Where one message part stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryClaim {
    /// Not sent yet (or this daemon's own claim): send it.
    Mine,
    /// Sent by an earlier attempt of the run.
    Sent,
    /// Another send of it started and never reported: not sent again.
    InDoubt,
    /// This daemon's own claim holds it: a send of it started here and
    /// never reported (in doubt), or a claim whose answer was lost before
    /// any send (free to send); the ledger knows which.
    Ours,
    /// The ledger could not be asked (Redis failed while online): send
    /// nothing now, ask again later.
    Unavailable,
    /// Offline, a part of a run from the shared queue: held until Redis
    /// is back. Memory knows only this daemon's sends, and once this
    /// daemon's lease is over a peer takes the run over and sends what
    /// Redis does not show as sent: sent here meanwhile, it would go twice.
    /// Also any part while Redis, having lost its data, does not yet hold
    /// what every daemon sent (the claim was fenced by the epoch, or the
    /// daemons are writing back).
    Held,
}

/// What the ledger in Redis holds for one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMark {
    Free,
    /// A send started (`sending:<daemon>`) and never reported.
    Sending,
    Sent,
}

impl RedisStore {
    /// Claims message parts for `daemon`, one pipeline. Fenced by `epoch`
    /// (the one this daemon last saw settled; see
    /// [`BackendError::EpochChanged`]); `None` claims unfenced.
    pub async fn claim_deliveries(
        &self,
        keys: &[String],
        daemon: &str,
        epoch: Option<&str>,
    ) -> Result<Vec<DeliveryClaim>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.limits.record_ttl.as_secs().max(1);
        let mark = format!("sending:{daemon}");
        let mut p = redis::pipe();
        for key in keys {
            p.invoke_script(
                CLAIM_DELIVERY
                    .key(self.keys.delivery(key))
                    .key(self.keys.epoch())
                    .arg(&mark)
                    .arg(ttl)
                    .arg(epoch.unwrap_or("")),
            );
        }
        let mut c = self.conn().await?;
        let states: Vec<i64> = self.query_scripted(&mut c, &p).await?;
        Ok(states
            .into_iter()
            .map(|s| match s {
                1 => DeliveryClaim::Mine,
                2 => DeliveryClaim::Sent,
                3 => DeliveryClaim::Ours,
                _ => DeliveryClaim::InDoubt,
            })
            .collect())
    }

    /// Where each part stands (without claiming anything): sent, a send
    /// started (by any daemon, outcome unknown), or neither.
    pub async fn delivery_marks(&self, keys: &[String]) -> Result<Vec<DeliveryMark>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|k| self.keys.delivery(k)).collect();
        let mut c = self.conn().await?;
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&names).query_async(&mut c).await?;
        Ok(values
            .into_iter()
            .map(|v| match v.as_deref() {
                Some("sent") => DeliveryMark::Sent,
                Some(_) => DeliveryMark::Sending,
                None => DeliveryMark::Free,
            })
            .collect())
    }

    /// Records parts as sent (`sent = true`) or releases their claims so a
    /// later attempt may send them (`sent = false`: definitely not sent).
    pub async fn settle_deliveries(&self, keys: &[(String, bool)]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let ttl = self.limits.record_ttl.as_secs().max(1);
        let mut p = redis::pipe();
        for (key, sent) in keys {
            let name = self.keys.delivery(key);
            if *sent {
                p.set_ex(&name, "sent", ttl).ignore();
            } else {
                p.del(&name).ignore();
            }
        }
        let mut c = self.conn().await?;
        p.query_async::<()>(&mut c).await?;
        Ok(())
    }
}
