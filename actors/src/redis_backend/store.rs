//! herald's state in Redis: jobs, last ticks, execution records with TTL,
//! per-job history, skipped ticks, and tick claims.
//!
//! Writes of a batch of records go out as one pipeline (one round trip);
//! reads are one or two round trips. Every method returns an error rather
//! than waiting: the pool's timeouts bound each call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use deadpool_redis::redis::{self, AsyncCommands, Pipeline};

use super::keys::Keys;
use super::scripts::{
    CLAIM, CLAIM_AND_SKIP, CLAIM_RAN_OFFLINE, PUT_RECORDS, PUT_SKIPPED, RAISE_LAST_RUN,
};
use super::shared::{Conn, SharedConnection};
use super::stored::StoredJob;
use crate::job::JobId;
use crate::memory::{RecordQuery, StoreLimits};
use crate::record::{ExecutionRecord, RunId, SkipReason, SkippedTicks};

/// How many ids one page of a filtered query reads.
const QUERY_PAGE: isize = 256;
/// Keys read per `MGET`: a reply for a thousand keys stays small and quick.
const MGET_SLICE: usize = 1_000;
/// Record writes per script call: a call holds Redis for its whole length
/// (about a millisecond for 100), so a flush of thousands is cut into
/// calls other clients can come between.
const RECORDS_PER_CALL: usize = 100;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis: {0}")]
    Command(String),
    #[error("redis holds a value herald cannot read at {key}: {message}")]
    Corrupt { key: String, message: String },
    /// A claim was refused: Redis holds another epoch than this daemon last
    /// saw (it lost its data). Nothing was claimed; claim again once the
    /// new epoch is known.
    #[error("redis holds another epoch than this daemon last saw; claim refused")]
    EpochChanged,
}

impl From<deadpool_redis::PoolError> for BackendError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        BackendError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for BackendError {
    fn from(e: redis::RedisError) -> Self {
        if super::scripts::is_fenced(&e) {
            BackendError::EpochChanged
        } else if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            BackendError::Unavailable(e.to_string())
        } else {
            BackendError::Command(e.to_string())
        }
    }
}

/// How long a tick claim is kept: long enough that no daemon still
/// considers the tick due, short enough that claims do not pile up.
pub const CLAIM_TTL: Duration = Duration::from_secs(86_400);
/// Claims (or last ticks) written back per round trip after a data loss.
const RESTORE_BATCH: usize = 1_000;
/// How long the set of daemons restored in an epoch is kept.
const RESTORED_TTL_SECONDS: i64 = 86_400;

/// One write waiting to reach Redis, in the order it was made.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingWrite {
    Record(Box<ExecutionRecord>),
    Skipped(SkippedTicks),
    LastTick {
        job_id: JobId,
        at: DateTime<Utc>,
    },
    /// A tick this daemon ran while offline: claimed on return so no other
    /// daemon runs it again.
    Claim {
        job_id: String,
        at: DateTime<Utc>,
        daemon: String,
    },
    Job(Box<StoredJob>),
    RemoveJob(String),
    /// The run queue entry is done with: acknowledge and delete it. Queued
    /// after the record write it follows, so it is never applied first.
    Ack {
        entry_id: String,
    },
    /// A retry waiting in Redis until `due`.
    Retry {
        record: Box<ExecutionRecord>,
        due: DateTime<Utc>,
    },
    /// A queued run reached its final record: no longer in flight.
    Settled {
        job_id: String,
        run_id: String,
    },
}

#[derive(Clone)]
pub struct RedisStore {
    pub(super) pool: Pool,
    pub(super) keys: Keys,
    pub(super) limits: StoreLimits,
    shared: SharedConnection,
    /// Requests sent to Redis (a pipeline counts once): round trips.
    round_trips: Arc<AtomicU64>,
}

impl RedisStore {
    pub fn new(pool: Pool, prefix: &str, limits: StoreLimits) -> Self {
        RedisStore {
            pool,
            keys: Keys::new(prefix),
            limits,
            shared: SharedConnection::default(),
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Round trips to Redis so far (every request; a pipeline is one).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub(super) fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// The shared connection, for one request (counted as a round trip).
    pub(super) async fn conn(&self) -> Result<Conn, BackendError> {
        self.count_round_trip();
        self.shared.get(&self.pool).await
    }

    /// Each daemon's last heartbeat: milliseconds since the epoch, by its
    /// own clock.
    pub async fn heartbeats(&self) -> Result<HashMap<String, i64>, BackendError> {
        let mut c = self.conn().await?;
        let beats: Vec<(String, f64)> = c.zrange_withscores(self.keys.daemons(), 0, -1).await?;
        Ok(beats.into_iter().map(|(d, ms)| (d, ms as i64)).collect())
    }

    /// PING: is Redis answering?
    pub async fn ping(&self) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await?;
        Ok(())
    }

    // --- jobs -----------------------------------------------------------

    pub async fn put_job(&self, job: &StoredJob) -> Result<(), BackendError> {
        let json = to_json(job)?;
        let id = &job.definition.id;
        let mut c = self.conn().await?;
        redis::pipe()
            .set(self.keys.job(id), json)
            .ignore()
            .sadd(self.keys.jobs(), id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    pub async fn remove_job(&self, id: &str) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        redis::pipe()
            .del(self.keys.job(id))
            .ignore()
            .srem(self.keys.jobs(), id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Every stored job, orphaned ones included.
    /// Ids of jobs deleted through the API.
    pub async fn removed_jobs(&self) -> Result<std::collections::HashSet<String>, BackendError> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("SMEMBERS")
            .arg(self.keys.jobs_removed())
            .query_async(&mut c)
            .await?)
    }

    /// `{p}:jobs:version` (0 before any job write).
    pub async fn jobs_version(&self) -> Result<u64, BackendError> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("GET")
            .arg(self.keys.jobs_version())
            .query_async::<Option<u64>>(&mut c)
            .await?
            .unwrap_or(0))
    }

    /// The ids of every stored job.
    pub async fn job_ids(&self) -> Result<Vec<String>, BackendError> {
        let mut c = self.conn().await?;
        Ok(c.smembers(self.keys.jobs()).await?)
    }

    /// These jobs as stored (None where Redis has none), in one MGET: the
    /// caller slices.
    pub async fn jobs_by_id(&self, ids: &[&str]) -> Result<Vec<Option<StoredJob>>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys.job(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| value.map(|json| from_json(key, &json)).transpose())
            .collect()
    }

    /// Every stored job (read in slices of [`MGET_SLICE`]).
    pub async fn jobs(&self) -> Result<Vec<StoredJob>, BackendError> {
        let ids = self.job_ids().await?;
        let mut jobs = Vec::with_capacity(ids.len());
        // In slices: one reply per thousand jobs stays small and quick.
        for slice in ids.chunks(MGET_SLICE) {
            let slice: Vec<&str> = slice.iter().map(String::as_str).collect();
            jobs.extend(self.jobs_by_id(&slice).await?.into_iter().flatten());
        }
        Ok(jobs)
    }

    // --- after a data loss ------------------------------------------------

    /// After Redis lost its data: writes back the tick claims this daemon
    /// won (`job`, unix seconds, claim value), each only where its key is
    /// free, raises the jobs' last ticks to this daemon's, and marks the
    /// message parts it knows were sent (delivery keys) `sent`; then
    /// marks this daemon restored in `epoch`. Safe to repeat.
    pub async fn restore(
        &self,
        claims: &[(String, i64, String)],
        last_ticks: &[(JobId, DateTime<Utc>)],
        sent: &[String],
        daemon_id: &str,
        epoch: &str,
    ) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        let delivery_ttl = self.limits.record_ttl.as_secs().max(1);
        for chunk in sent.chunks(RESTORE_BATCH) {
            let mut p = redis::pipe();
            for key in chunk {
                p.set_ex(self.keys.delivery(key), "sent", delivery_ttl)
                    .ignore();
            }
            p.query_async::<()>(&mut c).await?;
        }
        for chunk in claims.chunks(RESTORE_BATCH) {
            let mut p = redis::pipe();
            for (job_id, at, value) in chunk {
                p.cmd("SET")
                    .arg(self.keys.tick_claim(job_id, *at))
                    .arg(value)
                    .arg("NX")
                    .arg("EX")
                    .arg(CLAIM_TTL.as_secs())
                    .ignore();
            }
            p.query_async::<()>(&mut c).await?;
        }
        for chunk in last_ticks.chunks(RESTORE_BATCH) {
            let mut p = redis::pipe();
            for (job_id, at) in chunk {
                p.invoke_script(
                    RAISE_LAST_RUN
                        .key(self.keys.last_run(job_id))
                        .arg(at.timestamp()),
                )
                .ignore();
            }
            p.query_async::<()>(&mut c).await?;
        }
        let key = self.keys.restored(epoch);
        redis::pipe()
            .sadd(&key, daemon_id)
            .ignore()
            .expire(&key, RESTORED_TTL_SECONDS)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// The daemons that restored what they knew in `epoch`.
    pub async fn restored(&self, epoch: &str) -> Result<BTreeSet<String>, BackendError> {
        let mut c = self.conn().await?;
        Ok(c.smembers(self.keys.restored(epoch)).await?)
    }

    // --- last ticks -----------------------------------------------------

    pub async fn raise_last_tick(
        &self,
        job_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        RAISE_LAST_RUN
            .key(self.keys.last_run(job_id))
            .arg(at.timestamp())
            .invoke_async::<i64>(&mut c)
            .await?;
        Ok(())
    }

    pub async fn last_ticks(
        &self,
        job_ids: &[JobId],
    ) -> Result<HashMap<JobId, DateTime<Utc>>, BackendError> {
        if job_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut c = self.conn().await?;
        let mut ticks = HashMap::new();
        for slice in job_ids.chunks(MGET_SLICE) {
            let keys: Vec<String> = slice.iter().map(|id| self.keys.last_run(id)).collect();
            let values: Vec<Option<i64>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
            ticks.extend(
                slice
                    .iter()
                    .zip(values)
                    .filter_map(|(id, v)| Some((id.clone(), DateTime::from_timestamp(v?, 0)?))),
            );
        }
        Ok(ticks)
    }

    // --- tick claims ----------------------------------------------------

    /// Claims the tick of `job_id` at `at` for `daemon`: `SET NX` with
    /// expiry. `true`: this daemon owns the tick; `false`: another did.
    pub async fn claim_tick(
        &self,
        job_id: &str,
        at: DateTime<Utc>,
        daemon: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut c = self.conn().await?;
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.tick_claim(job_id, at.timestamp()))
            .arg(daemon)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut c)
            .await?;
        Ok(claimed.is_some())
    }

    // --- records --------------------------------------------------------

    /// Writes records (inserts and updates) in one pipeline. Returns how
    /// many old records the `max_records` cap pushed out.
    pub async fn put_records(&self, records: &[ExecutionRecord]) -> Result<u64, BackendError> {
        let writes: Vec<PendingWrite> = records
            .iter()
            .map(|r| PendingWrite::Record(Box::new(r.clone())))
            .collect();
        self.apply(&writes).await
    }

    /// Applies writes in order, in one pipeline (one round trip). Returns
    /// how many old records the `max_records` cap pushed out.
    pub async fn apply(&self, writes: &[PendingWrite]) -> Result<u64, BackendError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let p = self.encode(writes)?;
        self.send_writes(&p).await
    }

    /// The pipeline that applies these writes in order (see [`Self::apply`]);
    /// built apart from sending so a flush can build the next batch's while
    /// Redis applies the last.
    pub fn encode(&self, writes: &[PendingWrite]) -> Result<Pipeline, BackendError> {
        let ttl = self.limits.record_ttl.as_secs().max(1);
        let history_cap = self.limits.history_per_job.max(1) as isize;
        let recent_cap = self.limits.max_records.max(1) as isize;
        let skipped_cap = self.limits.max_skipped.max(1) as isize;
        let mut p = redis::pipe();
        // Record writes go out many to a script call, and acknowledgements
        // and in-flight removals as one command each, after every record:
        // an ack then still follows its record (and a retry's entry), and
        // nothing else in a batch depends on their order.
        let mut records: Vec<&ExecutionRecord> = Vec::new();
        let mut acks: Vec<&String> = Vec::new();
        let mut settled: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for w in writes {
            match w {
                PendingWrite::Record(r) => {
                    records.push(r);
                    if records.len() == RECORDS_PER_CALL {
                        self.put_records_call(&mut p, &records, ttl, history_cap)?;
                        records.clear();
                    }
                }
                PendingWrite::Skipped(s) => {
                    p.invoke_script(
                        PUT_SKIPPED
                            .key(self.keys.skipped())
                            .key(self.keys.skipped_data())
                            .arg(s.dedup_id())
                            .arg(s.recorded_at.timestamp_millis())
                            .arg(to_json(s)?)
                            .arg(skipped_cap),
                    )
                    .ignore();
                }
                PendingWrite::LastTick { job_id, at } => {
                    p.invoke_script(
                        RAISE_LAST_RUN
                            .key(self.keys.last_run(job_id))
                            .arg(at.timestamp()),
                    )
                    .ignore();
                }
                PendingWrite::Job(job) => {
                    let id = &job.definition.id;
                    p.set(self.keys.job(id), to_json(job.as_ref())?).ignore();
                    p.sadd(self.keys.jobs(), id).ignore();
                    p.srem(self.keys.jobs_removed(), id).ignore();
                    p.incr(self.keys.jobs_version(), 1).ignore();
                }
                PendingWrite::RemoveJob(id) => {
                    p.del(self.keys.job(id)).ignore();
                    p.srem(self.keys.jobs(), id).ignore();
                    p.sadd(self.keys.jobs_removed(), id).ignore();
                    p.incr(self.keys.jobs_version(), 1).ignore();
                }
                PendingWrite::Ack { entry_id } => acks.push(entry_id),
                PendingWrite::Retry { record, due } => {
                    p.zadd(
                        self.keys.retries(),
                        to_json(record.as_ref())?,
                        due.timestamp_millis(),
                    )
                    .ignore();
                }
                PendingWrite::Settled { job_id, run_id } => {
                    settled.entry(job_id.as_str()).or_default().push(run_id);
                }
                PendingWrite::Claim { job_id, at, daemon } => {
                    let withdrawn = SkippedTicks {
                        job_id: job_id.clone(),
                        reason: SkipReason::Offline,
                        first: *at,
                        last: *at,
                        count: 1,
                        recorded_at: *at,
                    };
                    p.invoke_script(
                        CLAIM_RAN_OFFLINE
                            .key(self.keys.tick_claim(job_id, at.timestamp()))
                            .key(self.keys.skipped())
                            .key(self.keys.skipped_data())
                            .arg(daemon)
                            .arg(CLAIM_TTL.as_secs())
                            .arg(withdrawn.dedup_id()),
                    )
                    .ignore();
                }
            }
        }
        if !records.is_empty() {
            self.put_records_call(&mut p, &records, ttl, history_cap)?;
        }
        if !acks.is_empty() {
            p.cmd("XACK")
                .arg(self.keys.runs())
                .arg(super::queue::GROUP)
                .arg(&acks)
                .ignore();
            p.cmd("XDEL").arg(self.keys.runs()).arg(&acks).ignore();
        }
        for (job_id, runs) in settled {
            p.srem(self.keys.inflight(job_id), runs).ignore();
        }
        p.cmd("ZREMRANGEBYRANK")
            .arg(self.keys.recent())
            .arg(0)
            .arg(-(recent_cap + 1));
        Ok(p)
    }

    /// Sends a pipeline built by [`Self::encode`]. Returns how many old
    /// records the `max_records` cap pushed out.
    pub async fn send_writes(&self, p: &Pipeline) -> Result<u64, BackendError> {
        let mut c = self.conn().await?;
        let (dropped,): (u64,) = self.query_scripted(&mut c, p).await?;
        if dropped > 0 {
            let _: i64 = c.incr(self.keys.dropped(), dropped).await?;
        }
        Ok(dropped)
    }

    /// Adds one `PUT_RECORDS` call for these records to the pipeline.
    fn put_records_call(
        &self,
        p: &mut Pipeline,
        records: &[&ExecutionRecord],
        ttl: u64,
        history_cap: isize,
    ) -> Result<(), BackendError> {
        let mut call = PUT_RECORDS.key(self.keys.recent());
        call.arg(ttl).arg(history_cap);
        for r in records {
            let (attempt, phase) = r.progress();
            call.key(self.keys.execution(&r.run_id.0))
                .key(self.keys.history(&r.job_id))
                .arg(to_json(r)?)
                .arg(attempt)
                .arg(phase)
                .arg(r.run_id.0.as_str())
                .arg(r.created_at.timestamp_millis())
                .arg(r.daemon.as_deref().unwrap_or(""))
                .arg(r.taken_over_from.as_deref().unwrap_or(""));
        }
        p.invoke_script(&call).ignore();
        Ok(())
    }

    /// Claims many ticks in one pipeline; `true` where this daemon holds
    /// the claim. Safe to repeat: a claim this daemon already holds is
    /// reported as won again.
    pub async fn claim_ticks(
        &self,
        ticks: &[(String, DateTime<Utc>)],
        daemon: &str,
    ) -> Result<Vec<bool>, BackendError> {
        if ticks.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for (job_id, at) in ticks {
            p.invoke_script(
                CLAIM
                    .key(self.keys.tick_claim(job_id, at.timestamp()))
                    .arg(daemon)
                    .arg(CLAIM_TTL.as_secs()),
            );
        }
        let mut c = self.conn().await?;
        let won: Vec<i64> = self.query_scripted(&mut c, &p).await?;
        Ok(won.into_iter().map(|w| w == 1).collect())
    }

    /// Claims each skip's ticks (`mark`, as [`Self::claim_ticks`]) and
    /// records the stretches won, atomically per skip (see
    /// [`CLAIM_AND_SKIP`]); one pipeline. Returns, per skip, which of its
    /// ticks were won. Fenced by `epoch` (the one this daemon last saw; see
    /// [`BackendError::EpochChanged`]); `None` claims unfenced.
    pub async fn claim_and_skip(
        &self,
        skips: &[(&SkippedTicks, &[DateTime<Utc>])],
        mark: &str,
        epoch: Option<&str>,
    ) -> Result<Vec<Vec<bool>>, BackendError> {
        if skips.is_empty() {
            return Ok(Vec::new());
        }
        let cap = self.limits.max_skipped.max(1);
        let mut p = redis::pipe();
        for (skip, ticks) in skips {
            let mut call = CLAIM_AND_SKIP.key(self.keys.skipped());
            call.key(self.keys.skipped_data()).key(self.keys.epoch());
            for at in ticks.iter() {
                call.key(self.keys.tick_claim(&skip.job_id, at.timestamp()));
            }
            call.arg(mark)
                .arg(CLAIM_TTL.as_secs())
                .arg(cap)
                .arg(skip.recorded_at.timestamp_millis())
                .arg(to_json(&skip.job_id)?)
                .arg(&skip.job_id)
                .arg(skip.reason.as_str())
                .arg(rfc3339(skip.recorded_at))
                .arg(epoch.unwrap_or(""));
            for at in ticks.iter() {
                call.arg(at.timestamp()).arg(rfc3339(*at));
            }
            p.invoke_script(&call);
        }
        let mut c = self.conn().await?;
        let won: Vec<Vec<i64>> = self.query_scripted(&mut c, &p).await?;
        Ok(won
            .into_iter()
            .map(|w| w.into_iter().map(|x| x == 1).collect())
            .collect())
    }

    pub async fn record(&self, run_id: &RunId) -> Result<Option<ExecutionRecord>, BackendError> {
        let key = self.keys.execution(&run_id.0);
        let mut c = self.conn().await?;
        let value: Option<String> = c.get(&key).await?;
        value.map(|json| from_json(&key, &json)).transpose()
    }

    /// The newest record of a job.
    pub async fn latest(&self, job_id: &str) -> Result<Option<ExecutionRecord>, BackendError> {
        let q = RecordQuery {
            job_id: Some(job_id.to_string()),
            limit: 1,
            ..RecordQuery::default()
        };
        Ok(self.query(&q).await?.into_iter().next())
    }

    /// Records newest first, filtered and paged as the in-memory store does.
    /// Ids whose record expired are skipped.
    pub async fn query(&self, q: &RecordQuery) -> Result<Vec<ExecutionRecord>, BackendError> {
        let index = match &q.job_id {
            Some(job) => self.keys.history(job),
            None => self.keys.recent(),
        };
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        let mut skipped = 0usize;
        let mut start = 0isize;
        // Ranks shift when runs are added at the top between two pages, so
        // a later page can repeat ids of an earlier one: skip ids seen.
        let mut seen = std::collections::HashSet::new();
        // Without a status filter the wanted ids are the first offset+limit
        // (more only where records expired): no need to read a full page.
        let page = match q.status {
            None => isize::try_from(q.offset.saturating_add(q.limit))
                .unwrap_or(QUERY_PAGE)
                .clamp(1, QUERY_PAGE),
            Some(_) => QUERY_PAGE,
        };
        loop {
            let ids: Vec<String> = c.zrevrange(&index, start, start + page - 1).await?;
            let last_page = (ids.len() as isize) < page;
            start += ids.len() as isize;
            let ids: Vec<String> = ids
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if !ids.is_empty() {
                let keys: Vec<String> = ids.iter().map(|id| self.keys.execution(id)).collect();
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                for (key, value) in keys.iter().zip(values) {
                    let Some(json) = value else { continue };
                    let r: ExecutionRecord = from_json(key, &json)?;
                    if q.status.is_some_and(|s| s != r.status) {
                        continue;
                    }
                    if skipped < q.offset {
                        skipped += 1;
                        continue;
                    }
                    out.push(r);
                    if out.len() >= q.limit {
                        return Ok(out);
                    }
                }
            }
            if last_page {
                return Ok(out);
            }
        }
    }

    /// Records dropped by the `max_records` cap, all time.
    pub async fn dropped_records(&self) -> Result<u64, BackendError> {
        let mut c = self.conn().await?;
        let n: Option<u64> = c.get(self.keys.dropped()).await?;
        Ok(n.unwrap_or(0))
    }

    // --- skipped ticks --------------------------------------------------

    pub async fn put_skipped(&self, entries: &[SkippedTicks]) -> Result<(), BackendError> {
        let writes: Vec<PendingWrite> =
            entries.iter().cloned().map(PendingWrite::Skipped).collect();
        self.apply(&writes).await.map(|_| ())
    }

    pub async fn skipped(
        &self,
        job_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SkippedTicks>, BackendError> {
        let key = self.keys.skipped_data();
        let mut c = self.conn().await?;
        let ids: Vec<String> = c.zrevrange(self.keys.skipped(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&ids)
            .query_async(&mut c)
            .await?;
        let mut out = Vec::new();
        for json in all.into_iter().flatten() {
            let s: SkippedTicks = from_json(&key, &json)?;
            if job_id.is_none_or(|j| s.job_id == j) {
                out.push(s);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, BackendError> {
    serde_json::to_string(value).map_err(|e| BackendError::Command(format!("cannot encode: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    key: &str,
    json: &str,
) -> Result<T, BackendError> {
    serde_json::from_str(json).map_err(|e| BackendError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A time as serde writes it in records (RFC 3339, UTC, `Z`).
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
