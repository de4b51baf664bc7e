//! The run queue: a Redis Stream read by one consumer group that every
//! daemon shares, plus a sorted set of retries waiting for their time.
//!
//! A run is an entry whose `record` field is its execution record (JSON).
//! A daemon reads entries in batches (`XREADGROUP`), runs them, and
//! acknowledges and deletes each entry once its final record is written
//! (the ack travels behind the record in the store's write queue). An entry
//! left unacknowledged longer than the visibility timeout (its daemon died)
//! is taken over by any daemon (`XAUTOCLAIM`); a daemon still running an
//! entry refreshes its idle time so it is not taken from it. A failed
//! attempt with retries left becomes a member of `{p}:retries` scored by
//! its due time; any daemon moves due retries back onto the stream with one
//! atomic script.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::streams::{
    StreamClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use deadpool_redis::redis::{self, AsyncCommands, AsyncConnectionConfig};

use super::scripts::{ENQUEUE, INFLIGHT_COUNTS, PROMOTE_RETRIES, REQUEUE};
use super::store::{BackendError, CLAIM_TTL, RedisStore, from_json, to_json};
use crate::record::ExecutionRecord;

/// The consumer group every daemon reads the run queue through.
pub const GROUP: &str = "herald";

/// In-flight sets expire if untouched this long (a safety net: members
/// are removed when their runs settle).
const INFLIGHT_TTL_SECONDS: u64 = 86_400;

/// One run read from the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub entry_id: String,
    pub record: ExecutionRecord,
}

/// A connection for blocking reads: its response timeout must outlast the
/// `BLOCK` time, or every idle read would fail as a timeout.
pub async fn blocking_connection(
    url: &str,
    block: Duration,
    connect_timeout: Duration,
) -> Result<MultiplexedConnection, BackendError> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(block + Duration::from_secs(1)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

impl RedisStore {
    /// Creates the stream and the group if they do not exist.
    pub async fn ensure_queue(&self) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        let created: Result<(), redis::RedisError> =
            c.xgroup_create_mkstream(self.keys.runs(), GROUP, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts claimed ticks' runs on the queue, one pipeline: for each run,
    /// one script writes its PENDING record, adds it to the job's in-flight
    /// set and appends its stream entry, all or none, and marks the tick's
    /// claim as queued. A run already marked is not queued again, so after
    /// an error (the reply lost, the writes perhaps applied) the same call
    /// can simply be repeated. Returns, per run, whether it is on the queue
    /// (false: another daemon holds the tick). Fenced by `epoch` (the one
    /// this daemon last saw; see [`BackendError::EpochChanged`]): `None`
    /// claims unfenced.
    pub async fn enqueue(
        &self,
        records: &[ExecutionRecord],
        daemon: &str,
        epoch: Option<&str>,
    ) -> Result<Vec<bool>, BackendError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.limits.record_ttl.as_secs().max(1);
        let history_cap = self.limits.history_per_job.max(1) as isize;
        let mut p = redis::pipe();
        for r in records {
            let json = to_json(r)?;
            let (attempt, phase) = r.progress();
            p.invoke_script(
                ENQUEUE
                    .key(self.keys.tick_claim(&r.job_id, r.scheduled_at.timestamp()))
                    .key(self.keys.execution(&r.run_id.0))
                    .key(self.keys.history(&r.job_id))
                    .key(self.keys.recent())
                    .key(self.keys.inflight(&r.job_id))
                    .key(self.keys.runs())
                    .key(self.keys.epoch())
                    .arg(daemon)
                    .arg(&json)
                    .arg(ttl)
                    .arg(attempt)
                    .arg(phase)
                    .arg(&r.run_id.0)
                    .arg(r.created_at.timestamp_millis())
                    .arg(history_cap)
                    .arg(INFLIGHT_TTL_SECONDS)
                    .arg(CLAIM_TTL.as_secs())
                    .arg(epoch.unwrap_or("")),
            );
        }
        let mut c = self.conn().await?;
        let done: Vec<i64> = self.query_scripted(&mut c, &p).await?;
        Ok(done.into_iter().map(|d| d >= 0).collect())
    }

    /// Reads up to `count` new entries for `consumer`, waiting up to
    /// `block` for some to arrive.
    pub async fn read_runs(
        &self,
        conn: &mut MultiplexedConnection,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<QueueEntry>, BackendError> {
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(count.max(1))
            .block(block.as_millis() as usize);
        self.count_round_trip();
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[self.keys.runs()], &[">"], &options)
            .await?;
        let ids = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        self.entries(ids)
    }

    /// Entries delivered to `consumer` and not acknowledged, up to `count`:
    /// after a read whose reply was lost (a timeout, a link that failed
    /// mid-reply), Redis counts them this consumer's, and no one else
    /// would take them for a visibility timeout.
    pub async fn own_pending(
        &self,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<QueueEntry>, BackendError> {
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(count.max(1));
        let mut c = self.conn().await?;
        let reply: Option<StreamReadReply> = c
            .xread_options(&[self.keys.runs()], &["0"], &options)
            .await?;
        let ids = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        self.entries(ids)
    }

    /// Takes over, up to `count`, entries held unacknowledged by a
    /// consumer that is not `alive` for at least `dead_idle`: one whose
    /// lease is over (it died, or is cut off past its lease and fires
    /// nothing); and this consumer's own entries idle for at least
    /// `own_idle` (ones it no longer holds: it touches those it runs). A
    /// consumer whose lease may still be alive may be running its entries
    /// cut off from Redis: taking them would run them twice.
    pub async fn reclaim(
        &self,
        consumer: &str,
        own_idle: Duration,
        dead_idle: Duration,
        count: usize,
        alive: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<QueueEntry>, BackendError> {
        let mut c = self.conn().await?;
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (own_ms, dead_ms) = (millis(own_idle), millis(dead_idle));
        let idle_ms = own_ms.min(dead_ms);
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(self.keys.runs())
            .arg(GROUP)
            .arg("IDLE")
            .arg(idle_ms)
            .arg("-")
            .arg("+")
            .arg(count.max(1) * 4)
            .query_async(&mut c)
            .await?;
        let ids: Vec<String> = pending
            .into_iter()
            .filter(|(_, holder, idle, _)| {
                if holder == consumer {
                    *idle >= own_ms
                } else {
                    !alive.contains(holder) && *idle >= dead_ms
                }
            })
            .map(|(id, ..)| id)
            .take(count.max(1))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply: StreamClaimReply = c
            .xclaim(self.keys.runs(), GROUP, consumer, idle_ms, &ids)
            .await?;
        self.entries(reply.ids)
    }

    /// Resets the idle time of entries this consumer is still running, so
    /// no other daemon reclaims them.
    pub async fn touch(&self, consumer: &str, entry_ids: &[String]) -> Result<(), BackendError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        redis::cmd("XCLAIM")
            .arg(self.keys.runs())
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry_ids)
            .arg("JUSTID")
            .query_async::<Vec<String>>(&mut c)
            .await?;
        Ok(())
    }

    /// Hands entries this daemon read but did not start back to the queue
    /// (see [`REQUEUE`]); returns how many were still held here.
    pub async fn requeue(
        &self,
        entries: &[(String, ExecutionRecord)],
    ) -> Result<usize, BackendError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut invocation = REQUEUE.prepare_invoke();
        invocation.key(self.keys.runs()).arg(GROUP);
        for (entry_id, record) in entries {
            invocation.arg(entry_id).arg(to_json(record)?);
        }
        let mut c = self.conn().await?;
        Ok(invocation.invoke_async(&mut c).await?)
    }

    /// Runs in flight per job, on every daemon (see [`INFLIGHT_COUNTS`]).
    pub async fn inflight_counts(&self, job_ids: &[String]) -> Result<Vec<u64>, BackendError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut invocation = INFLIGHT_COUNTS.prepare_invoke();
        for id in job_ids {
            invocation.key(self.keys.inflight(id));
        }
        invocation.arg(self.keys.execution(""));
        Ok(invocation.invoke_async(&mut c).await?)
    }

    /// Moves retries due by `now` onto the queue; returns how many.
    pub async fn promote_due_retries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, BackendError> {
        let mut c = self.conn().await?;
        let moved: usize = PROMOTE_RETRIES
            .key(self.keys.retries())
            .key(self.keys.runs())
            .arg(now.timestamp_millis())
            .arg(limit.max(1))
            .invoke_async(&mut c)
            .await?;
        Ok(moved)
    }

    /// Entries in the queue, entries read but not acknowledged, and retries
    /// waiting.
    pub async fn queue_depth(&self) -> Result<(u64, u64, u64), BackendError> {
        let mut c = self.conn().await?;
        let (len, retries): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.runs())
            .cmd("ZCARD")
            .arg(self.keys.retries())
            .query_async(&mut c)
            .await?;
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(self.keys.runs())
            .arg(GROUP)
            .query_async(&mut c)
            .await
            .unwrap_or(redis::Value::Nil);
        let pending_count = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok((len, pending_count, retries))
    }

    /// Parses entries one by one. One that cannot be read (written by a
    /// newer herald, or damaged) is logged and left unacknowledged, so the
    /// rest of the batch still runs and the entry stays for inspection.
    fn entries(&self, ids: Vec<StreamId>) -> Result<Vec<QueueEntry>, BackendError> {
        let key = self.keys.runs();
        let mut out = Vec::with_capacity(ids.len());
        for sid in ids {
            let parsed = sid
                .get::<String>("record")
                .ok_or_else(|| "entry has no record field".to_string())
                .and_then(|json| {
                    from_json::<ExecutionRecord>(&key, &json).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(record) => out.push(QueueEntry {
                    record,
                    entry_id: sid.id,
                }),
                Err(message) => {
                    tracing::error!(key = %key, entry = %sid.id, %message, "unreadable run-queue entry; skipping it");
                }
            }
        }
        Ok(out)
    }
}
