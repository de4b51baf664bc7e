//! Typed handles to the actors, and the directory they resolve through.
//!
//! A restarted actor has a new `ActorRef`. The RootSupervisor records each
//! child's current ref in the [`Directory`]; handles look it up on every
//! send, so callers never hold a stale ref. Every request/reply carries a
//! timeout: ractor's `call(.., None)` would wait forever.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::delivery::{DeliveryReport, Message};
use crate::execution_store::{StoreData, StoreMsg, StoreSnapshot, StoreStats, StoreWrite};
use crate::health::{Health, Mode};
use crate::job::{JobId, JobSpec};
use crate::memory::RecordQuery;
use crate::notifier::{NotifierMsg, NotifierStats};
use crate::record::{ExecutionRecord, RunId, SkippedTicks};
use crate::scheduler::{JobView, SchedulerMsg};
use crate::worker_pool::{PoolMsg, PoolStats, RunRequest};

/// How long a request to an actor may take before the caller gives up.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An actor could not be reached, or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("{0} is not running (restarting or stopped)")]
    Unavailable(&'static str),
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
}

/// The current ref of each child of the tree.
#[derive(Default)]
pub struct Directory {
    store: RwLock<Option<ActorRef<StoreMsg>>>,
    notifier: RwLock<Option<ActorRef<NotifierMsg>>>,
    pool: RwLock<Option<ActorRef<PoolMsg>>>,
    scheduler: RwLock<Option<ActorRef<SchedulerMsg>>>,
}

fn read<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(slot: &RwLock<Option<T>>, value: Option<T>) {
    *slot.write().unwrap_or_else(|p| p.into_inner()) = value;
}

impl Directory {
    pub fn set_store(&self, r: Option<ActorRef<StoreMsg>>) {
        write(&self.store, r)
    }
    pub fn set_notifier(&self, r: Option<ActorRef<NotifierMsg>>) {
        write(&self.notifier, r)
    }
    pub fn set_pool(&self, r: Option<ActorRef<PoolMsg>>) {
        write(&self.pool, r)
    }
    pub fn set_scheduler(&self, r: Option<ActorRef<SchedulerMsg>>) {
        write(&self.scheduler, r)
    }
}

async fn call<M, T>(
    actor: Option<ActorRef<M>>,
    name: &'static str,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, HandleError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    let actor = actor.ok_or(HandleError::Unavailable(name))?;
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(HandleError::Timeout(name, timeout)),
        Ok(CallResult::SenderError) | Err(_) => Err(HandleError::Unavailable(name)),
    }
}

fn cast<M: ractor::Message>(
    actor: Option<ActorRef<M>>,
    name: &'static str,
    msg: M,
) -> Result<(), HandleError> {
    actor
        .ok_or(HandleError::Unavailable(name))?
        .cast(msg)
        .map_err(|_| HandleError::Unavailable(name))
}

/// The ExecutionStore: records, skipped ticks, job table, last ticks.
///
/// Writes are applied by the handle itself to the store's shared data
/// (memory and the queue for Redis), so they never wait on, or get lost
/// with, the actor; the actor is then asked to flush. Reads go to the actor
/// (but for the job lookup of the run path, from memory).
#[derive(Clone)]
pub struct StoreHandle {
    dir: Arc<Directory>,
    timeout: Duration,
    data: Arc<StoreData>,
}

impl StoreHandle {
    pub fn new(dir: Arc<Directory>, timeout: Duration, data: Arc<StoreData>) -> Self {
        StoreHandle { dir, timeout, data }
    }

    fn actor(&self) -> Option<ActorRef<StoreMsg>> {
        read(&self.dir.store)
    }

    /// Applies a write; it is in memory and queued for Redis when this
    /// returns. Never fails: a restarting actor finds the write and flushes.
    pub fn write(&self, write: StoreWrite) {
        if self.data.write(write) && self.data.request_flush() {
            let delivered = self
                .actor()
                .is_some_and(|a| a.cast(StoreMsg::Flush).is_ok());
            if !delivered {
                // The actor is restarting; its start flushes what is queued.
                self.data.clear_flush_request();
            }
        }
    }

    pub fn put_record(&self, record: ExecutionRecord) {
        self.write(StoreWrite::Record(Box::new(record)));
    }

    pub fn put_skipped(&self, skipped: SkippedTicks) {
        self.write(StoreWrite::Skipped(skipped));
    }

    pub fn set_last_tick(&self, job_id: JobId, at: DateTime<Utc>) {
        self.write(StoreWrite::LastTick { job_id, at });
    }

    /// A tick this daemon ran while offline, to claim in Redis on return.
    pub fn put_claim(&self, job_id: String, at: DateTime<Utc>, daemon: String) {
        self.write(StoreWrite::Claim { job_id, at, daemon });
    }

    /// Acknowledges a run-queue entry, after every write made before.
    pub fn ack(&self, entry_id: String) {
        self.write(StoreWrite::Ack(entry_id));
    }

    /// A run's final record, then (a queued run) its entry's
    /// acknowledgement and its removal from the job's in-flight set.
    pub fn put_final(&self, record: ExecutionRecord, entry_id: Option<String>) {
        self.write(StoreWrite::Final {
            record: Box::new(record),
            entry_id,
        });
    }

    /// Records a retry (PENDING, next attempt) and parks it in Redis until `due`.
    pub fn retry(&self, record: ExecutionRecord, due: DateTime<Utc>) {
        self.write(StoreWrite::Retry(Box::new(record), due));
    }

    pub fn put_job(&self, spec: Arc<JobSpec>) {
        self.write(StoreWrite::Job(spec));
    }

    pub fn remove_job(&self, id: String) {
        self.write(StoreWrite::RemoveJob(id));
    }

    /// Memory only: a record Redis already holds (written by the enqueue
    /// script). Forward-only like every record write.
    pub fn cache_record(&self, record: ExecutionRecord) {
        self.write(StoreWrite::CachedRecord(Box::new(record)));
    }

    /// Memory only: a job as read back from Redis.
    pub fn cache_job(&self, spec: Arc<JobSpec>) {
        self.write(StoreWrite::CachedJob(spec));
    }

    /// Memory only: a job Redis no longer holds.
    pub fn forget_job(&self, id: String) {
        self.write(StoreWrite::ForgetJob(id));
    }

    /// The current definitions of these jobs (None where unknown), read
    /// from the store's memory directly: the pool looks jobs up for every
    /// batch it reads, and must not wait behind a flush to Redis.
    pub fn jobs(&self, ids: &[String]) -> Vec<Option<Arc<JobSpec>>> {
        self.data.jobs(ids)
    }

    /// Writes not yet in Redis.
    pub fn pending_writes(&self) -> usize {
        self.data.pending_writes()
    }

    pub fn set_mode(&self, mode: Mode) -> Result<(), HandleError> {
        cast(self.actor(), "execution store", StoreMsg::Mode(mode))
    }

    /// Flushes pending writes to Redis; returns how many are left.
    pub async fn flush(&self) -> Result<usize, HandleError> {
        call(
            self.actor(),
            "execution store",
            self.timeout,
            StoreMsg::FlushNow,
        )
        .await
    }

    pub async fn record(&self, run_id: RunId) -> Result<Option<ExecutionRecord>, HandleError> {
        call(self.actor(), "execution store", self.timeout, |r| {
            StoreMsg::GetRecord(run_id, r)
        })
        .await
    }

    pub async fn query(&self, q: RecordQuery) -> Result<Vec<ExecutionRecord>, HandleError> {
        call(self.actor(), "execution store", self.timeout, |r| {
            StoreMsg::Query(q, r)
        })
        .await
    }

    pub async fn latest(&self, job_id: String) -> Result<Option<ExecutionRecord>, HandleError> {
        call(self.actor(), "execution store", self.timeout, |r| {
            StoreMsg::Latest(job_id, r)
        })
        .await
    }

    pub async fn skipped(
        &self,
        job_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<SkippedTicks>, HandleError> {
        call(self.actor(), "execution store", self.timeout, |reply| {
            StoreMsg::Skipped {
                job_id,
                limit,
                reply,
            }
        })
        .await
    }

    pub async fn snapshot(&self) -> Result<StoreSnapshot, HandleError> {
        call(
            self.actor(),
            "execution store",
            self.timeout,
            StoreMsg::Snapshot,
        )
        .await
    }

    pub async fn stats(&self) -> Result<StoreStats, HandleError> {
        call(
            self.actor(),
            "execution store",
            self.timeout,
            StoreMsg::Stats,
        )
        .await
    }
}

/// The Notifier: delivers what runs produce.
#[derive(Clone)]
pub struct NotifierHandle {
    dir: Arc<Directory>,
    timeout: Duration,
}

impl NotifierHandle {
    pub fn new(dir: Arc<Directory>, timeout: Duration) -> Self {
        NotifierHandle { dir, timeout }
    }

    fn actor(&self) -> Option<ActorRef<NotifierMsg>> {
        read(&self.dir.notifier)
    }

    /// Hands a run's messages over; the pool hears of progress and the end.
    pub fn fan_out(
        &self,
        run_id: RunId,
        job_id: String,
        messages: Vec<Message>,
        shared: bool,
    ) -> Result<(), HandleError> {
        cast(
            self.actor(),
            "notifier",
            NotifierMsg::FanOut {
                run_id,
                job_id,
                messages,
                shared,
            },
        )
    }

    /// Which of these runs the Notifier is delivering for.
    pub async fn known(&self, run_ids: Vec<RunId>) -> Result<Vec<bool>, HandleError> {
        call(self.actor(), "notifier", self.timeout, |r| {
            NotifierMsg::Known(run_ids, r)
        })
        .await
    }

    pub fn abandon(&self, run_ids: Vec<RunId>) -> Result<(), HandleError> {
        cast(self.actor(), "notifier", NotifierMsg::Abandon(run_ids))
    }

    pub async fn stats(&self) -> Result<NotifierStats, HandleError> {
        call(self.actor(), "notifier", self.timeout, NotifierMsg::Stats).await
    }
}

/// The WorkerPool.
#[derive(Clone)]
pub struct PoolHandle {
    dir: Arc<Directory>,
    timeout: Duration,
}

impl PoolHandle {
    pub fn new(dir: Arc<Directory>, timeout: Duration) -> Self {
        PoolHandle { dir, timeout }
    }

    fn actor(&self) -> Option<ActorRef<PoolMsg>> {
        read(&self.dir.pool)
    }

    pub fn submit(&self, run: RunRequest) -> Result<(), HandleError> {
        cast(self.actor(), "worker pool", PoolMsg::Submit(run))
    }

    /// Cancels a queued, running or retry-waiting run; `false` if the pool
    /// does not have it.
    pub async fn cancel(&self, run_id: RunId) -> Result<bool, HandleError> {
        call(self.actor(), "worker pool", self.timeout, |r| {
            PoolMsg::Cancel(run_id, r)
        })
        .await
    }

    pub async fn stats(&self) -> Result<PoolStats, HandleError> {
        call(self.actor(), "worker pool", self.timeout, PoolMsg::Stats).await
    }

    /// The runs this pool holds, by job.
    pub async fn runs_by_job(&self) -> Result<HashMap<String, u32>, HandleError> {
        call(
            self.actor(),
            "worker pool",
            self.timeout,
            PoolMsg::RunsByJob,
        )
        .await
    }

    pub fn fan_out_progress(
        &self,
        run_id: RunId,
        report: DeliveryReport,
    ) -> Result<(), HandleError> {
        cast(
            self.actor(),
            "worker pool",
            PoolMsg::FanOutProgress { run_id, report },
        )
    }

    pub fn fan_out_done(&self, run_id: RunId, report: DeliveryReport) -> Result<(), HandleError> {
        cast(
            self.actor(),
            "worker pool",
            PoolMsg::FanOutDone { run_id, report },
        )
    }
}

/// The Scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    dir: Arc<Directory>,
    timeout: Duration,
}

impl SchedulerHandle {
    pub fn new(dir: Arc<Directory>, timeout: Duration) -> Self {
        SchedulerHandle { dir, timeout }
    }

    fn actor(&self) -> Option<ActorRef<SchedulerMsg>> {
        read(&self.dir.scheduler)
    }

    /// Adds or replaces a job and re-arms the timer; returns its next fire.
    pub async fn upsert_job(&self, spec: JobSpec) -> Result<Option<DateTime<Utc>>, HandleError> {
        call(self.actor(), "scheduler", self.timeout, |r| {
            SchedulerMsg::Upsert(Box::new(spec), r)
        })
        .await
    }

    /// `false` if there was no such job.
    pub async fn remove_job(&self, id: String) -> Result<bool, HandleError> {
        call(self.actor(), "scheduler", self.timeout, |r| {
            SchedulerMsg::Remove(id, r)
        })
        .await
    }

    /// Enables or disables a job; `None` if there is no such job, else its
    /// next fire.
    pub async fn set_enabled(
        &self,
        id: String,
        enabled: bool,
    ) -> Result<Option<Option<DateTime<Utc>>>, HandleError> {
        call(self.actor(), "scheduler", self.timeout, |r| {
            SchedulerMsg::SetEnabled(id, enabled, r)
        })
        .await
    }

    /// Starts a run now, outside the schedule; `None` if no such job.
    pub async fn run_now(&self, id: String) -> Result<Option<RunId>, HandleError> {
        call(self.actor(), "scheduler", self.timeout, |r| {
            SchedulerMsg::RunNow(id, r)
        })
        .await
    }

    pub async fn jobs(&self) -> Result<Vec<JobView>, HandleError> {
        call(self.actor(), "scheduler", self.timeout, SchedulerMsg::Jobs).await
    }

    /// A run of the job reached a final status.
    pub fn run_settled(&self, job_id: String) -> Result<(), HandleError> {
        self.runs_settled(vec![job_id])
    }

    /// Runs of these jobs (one entry per run) reached a final status.
    pub fn runs_settled(&self, job_ids: Vec<String>) -> Result<(), HandleError> {
        cast(
            self.actor(),
            "scheduler",
            SchedulerMsg::RunSettled { job_ids },
        )
    }

    pub fn health(&self, health: Health) -> Result<(), HandleError> {
        cast(self.actor(), "scheduler", SchedulerMsg::Health(health))
    }

    /// Stops firing (for shutdown); queued ticks are dropped and recorded.
    pub async fn stop_firing(&self) -> Result<(), HandleError> {
        call(
            self.actor(),
            "scheduler",
            self.timeout,
            SchedulerMsg::StopFiring,
        )
        .await
    }
}
