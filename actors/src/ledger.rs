//! The delivery ledger: which message parts of which runs went out, so a
//! retried or reclaimed run never messages anyone twice.
//!
//! Online the keys live in Redis (shared by every daemon, with the record
//! TTL); offline, and when Redis fails to answer, in a bounded map in
//! memory that outlives actor restarts. A part is claimed right before it
//! is sent and marked sent after: a part whose send started and never
//! reported (its daemon died) is "in doubt" and not sent again. herald
//! chooses at most once over at least once for messages to people.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::health::{Health, Mode};
use crate::redis_backend::{BackendError, DeliveryClaim, DeliveryMark, RedisStore};

/// Keys remembered in memory at most; the oldest go first.
const MEMORY_KEYS: usize = 200_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Sending,
    Sent,
    /// Claimed in Redis without an answer, and not sent: the claim may
    /// have landed (`sending:<this daemon>`), no send followed it.
    Unanswered,
}

#[derive(Default)]
struct MemoryLedger {
    marks: HashMap<String, Mark>,
    order: VecDeque<String>,
}

impl MemoryLedger {
    fn claim(&mut self, key: &str) -> DeliveryClaim {
        match self.marks.get(key) {
            Some(Mark::Sent) => DeliveryClaim::Sent,
            // A send that started and never reported (its task died with a
            // restarting Notifier): it may have reached the user.
            Some(Mark::Sending) => DeliveryClaim::InDoubt,
            Some(Mark::Unanswered) | None => {
                self.insert(key, Mark::Sending);
                DeliveryClaim::Mine
            }
        }
    }

    /// Sets a key's mark (new keys count toward the bound).
    fn insert(&mut self, key: &str, mark: Mark) {
        if self.marks.insert(key.to_string(), mark).is_none() {
            self.order.push_back(key.to_string());
            while self.order.len() > MEMORY_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.marks.remove(&old);
                }
            }
        }
    }
}

/// The Redis epoch delivery claims are fenced by, kept by the scheduler
/// (which writes back what this daemon knows after a data loss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimEpoch {
    /// Not seen yet: claims go unfenced.
    Unknown,
    /// Claims hold only while Redis holds this epoch: a Redis restarted
    /// empty refuses them before this daemon even notices the loss.
    Settled(String),
    /// Redis lost its data and the daemons are writing back the parts
    /// they sent: until all have, a free key proves nothing, so every
    /// part is held.
    Restoring,
}

#[derive(Clone)]
pub struct DeliveryLedger {
    redis: Option<(RedisStore, watch::Receiver<Health>)>,
    daemon_id: String,
    memory: Arc<Mutex<MemoryLedger>>,
    epoch: Arc<Mutex<ClaimEpoch>>,
}

impl DeliveryLedger {
    pub fn new(redis: Option<(RedisStore, watch::Receiver<Health>)>, daemon_id: String) -> Self {
        DeliveryLedger {
            redis,
            daemon_id,
            memory: Arc::new(Mutex::new(MemoryLedger::default())),
            epoch: Arc::new(Mutex::new(ClaimEpoch::Unknown)),
        }
    }

    /// Sets the epoch claims are fenced by (see [`ClaimEpoch`]).
    pub fn set_epoch(&self, epoch: ClaimEpoch) {
        if let Ok(mut e) = self.epoch.lock() {
            *e = epoch;
        }
    }

    fn claim_epoch(&self) -> ClaimEpoch {
        match self.epoch.lock() {
            Ok(e) => e.clone(),
            // Poisoned: no writer finished; claim as if restoring (held).
            Err(_) => ClaimEpoch::Restoring,
        }
    }

    fn online(&self) -> Option<&RedisStore> {
        self.redis
            .as_ref()
            .filter(|(_, health)| health.borrow().mode == Mode::Online)
            .map(|(store, _)| store)
    }

    /// The parts this daemon knows were sent (it sent them, or read them
    /// so): written back if Redis loses its data.
    pub fn sent_keys(&self) -> Vec<String> {
        match self.memory.lock() {
            Ok(m) => m
                .order
                .iter()
                .filter(|k| m.marks.get(*k) == Some(&Mark::Sent))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether parts may be claimed in Redis now (held parts go again):
    /// it is reachable, and not being restored after a data loss.
    pub fn can_claim(&self) -> bool {
        self.online().is_some() && self.claim_epoch() != ClaimEpoch::Restoring
    }

    /// Claims parts before sending them. `shared`: the run came from the
    /// shared queue (a peer may take it over): offline, its parts are
    /// held rather than claimed in memory.
    pub async fn claim(&self, keys: &[String], shared: bool) -> Vec<DeliveryClaim> {
        if let Some(store) = self.online() {
            let epoch = match self.claim_epoch() {
                ClaimEpoch::Restoring => return vec![DeliveryClaim::Held; keys.len()],
                ClaimEpoch::Settled(epoch) => Some(epoch),
                ClaimEpoch::Unknown => None,
            };
            match store
                .claim_deliveries(keys, &self.daemon_id, epoch.as_deref())
                .await
            {
                Ok(claims) => return self.own_claims(keys, claims),
                // Redis lost its data since: nothing was claimed. Held
                // until the daemons wrote back what they sent.
                Err(BackendError::EpochChanged) => {
                    return vec![DeliveryClaim::Held; keys.len()];
                }
                Err(e) => {
                    // Memory does not know what other daemons sent: asking
                    // it could send a part twice. Try again later. The
                    // claims may have landed: noted, so this daemon's own
                    // claim found later is known to be unsent.
                    tracing::warn!(error = %e, "delivery keys unavailable in redis; sending later");
                    if let Ok(mut m) = self.memory.lock() {
                        for key in keys {
                            if !m.marks.contains_key(key) {
                                m.insert(key, Mark::Unanswered);
                            }
                        }
                    }
                    return vec![DeliveryClaim::Unavailable; keys.len()];
                }
            }
        }
        if shared && self.redis.is_some() {
            return vec![DeliveryClaim::Held; keys.len()];
        }
        match self.memory.lock() {
            Ok(mut m) => keys.iter().map(|k| m.claim(k)).collect(),
            Err(_) => vec![DeliveryClaim::Mine; keys.len()],
        }
    }

    /// This daemon's own claim found in Redis is free to send only if it
    /// is one whose answer was lost before any send (else a send of it
    /// started here and never reported: in doubt).
    fn own_claims(&self, keys: &[String], claims: Vec<DeliveryClaim>) -> Vec<DeliveryClaim> {
        let Ok(mut m) = self.memory.lock() else {
            return claims
                .into_iter()
                .map(|c| match c {
                    DeliveryClaim::Ours => DeliveryClaim::InDoubt,
                    other => other,
                })
                .collect();
        };
        keys.iter()
            .zip(claims)
            .map(|(key, claim)| {
                let unanswered = m.marks.get(key) == Some(&Mark::Unanswered);
                match claim {
                    DeliveryClaim::Ours if unanswered => {
                        m.marks.remove(key);
                        DeliveryClaim::Mine
                    }
                    DeliveryClaim::Ours => DeliveryClaim::InDoubt,
                    other => {
                        if unanswered {
                            m.marks.remove(key);
                        }
                        other
                    }
                }
            })
            .collect()
    }

    /// Which parts were already sent (no claim taken): lets a reclaimed
    /// fan-out settle what went out before without waiting on rate limits.
    /// Online, what Redis holds of these parts is copied into memory too:
    /// should Redis go before they are sent, memory must not take a part
    /// another daemon sent, or began to send, for free (a run taken over
    /// from a killed daemon sent its messages twice that way).
    pub async fn already_sent(&self, keys: &[String]) -> Vec<bool> {
        if let Some(store) = self.online()
            && let Ok(marks) = store.delivery_marks(keys).await
        {
            if let Ok(mut m) = self.memory.lock() {
                for (key, mark) in keys.iter().zip(&marks) {
                    match mark {
                        DeliveryMark::Sent => m.insert(key, Mark::Sent),
                        DeliveryMark::Sending
                            if !matches!(m.marks.get(key), Some(Mark::Sent | Mark::Unanswered)) =>
                        {
                            m.insert(key, Mark::Sending)
                        }
                        _ => {}
                    }
                }
            }
            return marks.iter().map(|m| *m == DeliveryMark::Sent).collect();
        }
        match self.memory.lock() {
            Ok(m) => keys
                .iter()
                .map(|k| m.marks.get(k) == Some(&Mark::Sent))
                .collect(),
            Err(_) => vec![false; keys.len()],
        }
    }

    /// After a send: `sent` true marks the part sent; false releases the
    /// claim (definitely not delivered: a later attempt may send it).
    pub async fn settle(&self, key: String, sent: bool) {
        if let Ok(mut m) = self.memory.lock() {
            if sent {
                m.insert(&key, Mark::Sent);
            } else if m.marks.get(&key) == Some(&Mark::Sending) {
                m.marks.remove(&key);
            }
        }
        if let Some(store) = self.online()
            && let Err(e) = store.settle_deliveries(&[(key, sent)]).await
        {
            tracing::warn!(error = %e, "could not record a delivery in redis");
        }
    }
}
