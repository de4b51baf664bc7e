//! The ExecutionStore actor: the one writer of execution records, skipped
//! ticks, the job table and last ticks, and the place queries go.
//!
//! Every write lands in the in-memory store (a [`MemoryStore`] the tree
//! owns and hands to every incarnation of this actor, so a restart loses
//! nothing). With Redis configured, each write also joins a bounded queue
//! of pending writes, flushed to Redis in one pipeline per batch while
//! online and kept, in order, while offline; on the return to online the
//! queue is flushed before anything else is read. Reads come from Redis
//! while online (after a flush, so they see this daemon's own writes) and
//! from memory while offline. Handlers never fail.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::Pipeline;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::AbortOnDrop;
use crate::health::{Health, Mode};
use crate::job::{Definitions, JobId, JobSpec};
use crate::memory::{MemoryStore, RecordQuery};
use crate::record::{ExecutionRecord, RunId, SkippedTicks};
use crate::redis_backend::{
    BackendError, JobDefinition, JobOrigin, PendingWrite, RedisStore, StoredJob, overrides_for,
};

/// How often expired records are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Writes per pipeline.
const FLUSH_BATCH: usize = 1_000;
/// Pending writes from which a requested flush starts at once instead of
/// gathering: more than the starts of a tick of a thousand runs leave
/// (their RUNNING records, which gathering lets their final records
/// replace, and flushes in the middle of them would slow them down).
const FLUSH_AT_ONCE_FROM: usize = 5 * FLUSH_BATCH;
/// How long a requested flush waits for more writes to join it.
const FLUSH_GATHER: Duration = Duration::from_millis(25);
/// Pipelines per flush before other messages get their turn (a backlog
/// after an outage is flushed in slices, not in one long handler).
const FLUSH_SLICE: usize = 10;
/// How long a stopping store keeps flushing what is pending.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// After a failed flush, try again this soon (the watcher may not have
/// noticed a short outage).
const FLUSH_RETRY: Duration = Duration::from_millis(500);
/// Writes kept for Redis while it is unreachable. At ~4 writes per run this
/// covers 50,000 runs of outage; past it the oldest are dropped, counted.
pub const DEFAULT_MAX_PENDING: usize = 200_000;

pub type SharedMemory = Arc<Mutex<MemoryStore>>;
pub type SharedPending = Arc<Mutex<PendingWrites>>;

/// Writes waiting for Redis, oldest first, bounded.
#[derive(Debug, Default)]
pub struct PendingWrites {
    writes: VecDeque<PendingWrite>,
    cap: usize,
    dropped: u64,
    /// Writes taken out for the pipeline under way (see [`Flight`]).
    in_flight: usize,
}

impl PendingWrites {
    pub fn new(cap: usize) -> Self {
        PendingWrites {
            writes: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
            in_flight: 0,
        }
    }

    /// Queues a write. Past the cap the oldest write whose loss only costs
    /// history (a record update, a skipped tick, a last tick, a job edit)
    /// goes first; claims, acks, retries and in-flight removals, whose loss
    /// could run a tick twice or lose a run, go only if nothing else is left.
    fn push(&mut self, write: PendingWrite) {
        self.writes.push_back(write);
        self.enforce_cap();
    }

    fn enforce_cap(&mut self) {
        while self.writes.len() > self.cap {
            let victim = self
                .writes
                .iter()
                .position(|w| !is_critical(w))
                .unwrap_or(0);
            self.writes.remove(victim);
            self.dropped += 1;
        }
    }

    /// Takes the oldest writes out for one pipeline. They are moved, not
    /// copied, so the queue can change meanwhile (new writes, drops at the
    /// cap) without the batch's place in it being lost.
    fn take_batch(&mut self, max: usize) -> Vec<PendingWrite> {
        let n = max.min(self.writes.len());
        let batch: Vec<PendingWrite> = self.writes.drain(..n).collect();
        self.in_flight += batch.len();
        batch
    }

    /// A batch Redis did not take goes back in front of what came since
    /// (`taken`: how many writes it was when taken out).
    fn put_back(&mut self, batch: Vec<PendingWrite>, taken: usize) {
        self.in_flight = self.in_flight.saturating_sub(taken);
        for write in batch.into_iter().rev() {
            self.writes.push_front(write);
        }
        self.enforce_cap();
    }

    /// Writes not yet in Redis: queued and in flight.
    pub fn len(&self) -> usize {
        self.writes.len() + self.in_flight
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn is_critical(write: &PendingWrite) -> bool {
    matches!(
        write,
        PendingWrite::Claim { .. }
            | PendingWrite::Ack { .. }
            | PendingWrite::Retry { .. }
            | PendingWrite::Settled { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RunStatus, Trigger};

    #[test]
    fn a_batch_writes_each_run_once_at_its_latest_position() {
        let at = Utc::now();
        let rec = |run: &str, status: RunStatus| {
            let mut r =
                ExecutionRecord::pending(RunId(run.into()), "j", Trigger::Schedule, at, 1, at);
            r.status = status;
            PendingWrite::Record(Box::new(r))
        };
        let ack = |id: &str| PendingWrite::Ack {
            entry_id: id.into(),
        };
        let batch = vec![
            rec("a", RunStatus::Running),
            rec("b", RunStatus::Running),
            rec("a", RunStatus::Success),
            ack("1-0"),
            rec("c", RunStatus::Running),
        ];
        let kept = latest_records_only(batch);
        assert_eq!(
            kept,
            vec![
                rec("b", RunStatus::Running),
                rec("a", RunStatus::Success),
                ack("1-0"),
                rec("c", RunStatus::Running),
            ]
        );
    }

    fn ack(id: &str) -> PendingWrite {
        PendingWrite::Ack {
            entry_id: id.into(),
        }
    }

    /// A batch taken out of `pending`, on its way.
    fn flight_of(pending: &SharedPending, batch: Vec<PendingWrite>) -> Flight {
        Flight {
            pending: pending.clone(),
            taken: batch.len(),
            batch,
            landed: false,
        }
    }

    #[test]
    fn writes_queued_during_a_flight_survive_its_landing_and_follow_a_failed_one() {
        let pending: SharedPending = Arc::new(Mutex::new(PendingWrites::new(3)));
        let take = |n| pending.lock().unwrap().take_batch(n);
        let fly = |batch| flight_of(&pending, batch);
        pending.lock().unwrap().push(ack("1-0"));
        pending.lock().unwrap().push(ack("2-0"));
        let flight = fly(take(10));
        assert_eq!(pending.lock().unwrap().len(), 2, "in flight still counts");
        // Meanwhile: more writes than the cap leaves room for beside the
        // batch; a history write is dropped, the acks stay.
        pending
            .lock()
            .unwrap()
            .push(PendingWrite::RemoveJob("old".into()));
        for id in ["3-0", "4-0", "5-0"] {
            pending.lock().unwrap().push(ack(id));
        }
        flight.landed();
        let left: Vec<PendingWrite> = pending.lock().unwrap().writes.iter().cloned().collect();
        assert_eq!(left, vec![ack("3-0"), ack("4-0"), ack("5-0")]);
        assert_eq!(pending.lock().unwrap().dropped(), 1);

        // A flight that does not land goes back in front, in order.
        let flight = fly(take(2));
        pending.lock().unwrap().push(ack("6-0"));
        drop(flight);
        let left: Vec<PendingWrite> = pending.lock().unwrap().writes.iter().cloned().collect();
        // cap 3: the oldest critical write goes
        assert_eq!(left, vec![ack("4-0"), ack("5-0"), ack("6-0")]);
        assert_eq!(pending.lock().unwrap().len(), 3);
    }

    #[test]
    fn two_batches_out_at_once_go_back_in_their_order() {
        let pending: SharedPending = Arc::new(Mutex::new(PendingWrites::new(100)));
        let take = |n| pending.lock().unwrap().take_batch(n);
        let fly = |batch| flight_of(&pending, batch);
        for id in ["1-0", "2-0", "3-0", "4-0"] {
            pending.lock().unwrap().push(ack(id));
        }
        let current = fly(take(2));
        let next = fly(take(2));
        pending.lock().unwrap().push(ack("5-0"));
        assert_eq!(
            pending.lock().unwrap().len(),
            5,
            "both batches count as pending"
        );
        // A flush cut short (or failed) with both out: the later goes back
        // first, the earlier in front of it.
        drop(Flights {
            next: Some((next, Ok(deadpool_redis::redis::pipe()))),
            current: Some(current),
        });
        let left: Vec<PendingWrite> = pending.lock().unwrap().writes.iter().cloned().collect();
        assert_eq!(
            left,
            vec![ack("1-0"), ack("2-0"), ack("3-0"), ack("4-0"), ack("5-0")]
        );
        assert_eq!(pending.lock().unwrap().len(), 5, "nothing counted twice");
        // The earlier landing and the later failing: only the later returns.
        let current = fly(take(2));
        let next = fly(take(2));
        current.landed();
        drop(next);
        let left: Vec<PendingWrite> = pending.lock().unwrap().writes.iter().cloned().collect();
        assert_eq!(left, vec![ack("3-0"), ack("4-0"), ack("5-0")]);
        assert_eq!(pending.lock().unwrap().len(), 3);
    }

    #[test]
    fn overflow_drops_history_before_claims_acks_and_retries() {
        let mut p = PendingWrites::new(3);
        p.push(PendingWrite::Ack {
            entry_id: "1-0".into(),
        });
        p.push(PendingWrite::RemoveJob("old".into()));
        p.push(PendingWrite::Settled {
            job_id: "j".into(),
            run_id: "r".into(),
        });
        p.push(PendingWrite::Ack {
            entry_id: "2-0".into(),
        });
        assert_eq!(p.dropped(), 1);
        assert!(p.writes.iter().all(is_critical), "{:?}", p.writes);
        // only critical writes left: the oldest goes
        p.push(PendingWrite::Ack {
            entry_id: "3-0".into(),
        });
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.writes.front(),
            Some(&PendingWrite::Settled {
                job_id: "j".into(),
                run_id: "r".into()
            })
        );
    }
}

/// What connects the store to Redis.
#[derive(Clone)]
pub struct RedisLink {
    pub store: RedisStore,
    pub pending: SharedPending,
    pub health: watch::Receiver<Health>,
    /// Job definitions from config and code, to turn edits into overrides.
    pub definitions: Definitions,
}

/// The store's data, shared by the actor and every handle. Writes land
/// here directly (memory, and the queue of writes for Redis) under a short
/// lock, so no write is lost while the actor restarts or in a mailbox it
/// dies with; the actor serves reads and flushes the queue to Redis.
pub struct StoreData {
    pub memory: SharedMemory,
    pub redis: Option<RedisLink>,
    /// A flush has been asked of the actor and not started yet.
    flush_requested: AtomicBool,
}

pub type StoreArgs = Arc<StoreData>;

/// One write to the store.
pub enum StoreWrite {
    Record(Box<ExecutionRecord>),
    /// A record Redis already holds (the enqueue script wrote it): kept
    /// in memory only.
    CachedRecord(Box<ExecutionRecord>),
    Skipped(SkippedTicks),
    LastTick {
        job_id: JobId,
        at: DateTime<Utc>,
    },
    /// A tick this daemon ran while offline, to claim in Redis on return.
    Claim {
        job_id: String,
        at: DateTime<Utc>,
        daemon: String,
    },
    /// A queue entry is done with: acknowledged after the writes before.
    Ack(String),
    /// A run's final record and, for a queued run, its entry's
    /// acknowledgement and its removal from the job's in-flight set: the
    /// three writes a run ends with, queued under one lock.
    Final {
        record: Box<ExecutionRecord>,
        entry_id: Option<String>,
    },
    /// A retry (PENDING, next attempt) to wait in Redis until `due`.
    Retry(Box<ExecutionRecord>, DateTime<Utc>),
    Job(Arc<JobSpec>),
    RemoveJob(String),
    /// A job as Redis holds it (read back): kept in memory only, so a
    /// stale copy is never written over a newer edit.
    CachedJob(Arc<JobSpec>),
    /// A job Redis no longer holds: dropped from memory only.
    ForgetJob(String),
}

impl StoreData {
    pub fn new(memory: SharedMemory, redis: Option<RedisLink>) -> Self {
        StoreData {
            memory,
            redis,
            flush_requested: AtomicBool::new(false),
        }
    }

    fn mem(&self) -> MutexGuard<'_, MemoryStore> {
        // A poisoned lock means a panic mid-operation elsewhere; the
        // structures are still consistent enough to serve and keep going.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a write to memory and queues it for Redis. Returns whether
    /// anything was queued (a flush should follow).
    pub fn write(&self, write: StoreWrite) -> bool {
        match write {
            StoreWrite::Record(r) => {
                let took = self.mem().put_record((*r).clone());
                self.queue(took.then_some(PendingWrite::Record(r)))
            }
            StoreWrite::Final { record, entry_id } => {
                let settled = entry_id.map(|entry_id| {
                    [
                        PendingWrite::Ack { entry_id },
                        PendingWrite::Settled {
                            job_id: record.job_id.clone(),
                            run_id: record.run_id.0.clone(),
                        },
                    ]
                });
                let took = self.mem().put_record((*record).clone());
                let record = took.then_some(PendingWrite::Record(record));
                self.queue(record.into_iter().chain(settled.into_iter().flatten()))
            }
            StoreWrite::Skipped(s) => {
                self.mem().put_skipped(s.clone());
                self.queue([PendingWrite::Skipped(s)])
            }
            StoreWrite::LastTick { job_id, at } => {
                self.mem().set_last_tick(&job_id, at);
                self.queue([PendingWrite::LastTick { job_id, at }])
            }
            StoreWrite::Claim { job_id, at, daemon } => {
                self.queue([PendingWrite::Claim { job_id, at, daemon }])
            }
            StoreWrite::Ack(entry_id) => self.queue([PendingWrite::Ack { entry_id }]),
            StoreWrite::Retry(record, due) => {
                self.mem().put_record((*record).clone());
                self.queue([
                    PendingWrite::Record(record.clone()),
                    PendingWrite::Retry { record, due },
                ])
            }
            StoreWrite::Job(spec) => {
                self.mem().put_job(spec.clone());
                let stored = self.redis.as_ref().map(|link| {
                    match link.definitions.get(&spec.id) {
                        Some(defined) => {
                            let definition = JobDefinition::from(defined.as_ref());
                            StoredJob {
                                overrides: overrides_for(&spec, &definition),
                                definition,
                                orphaned: false,
                                origin: JobOrigin::Defined,
                            }
                        }
                        // Not defined by config or code: created at run time.
                        None => StoredJob {
                            origin: JobOrigin::Custom,
                            ..StoredJob::new(JobDefinition::from(spec.as_ref()))
                        },
                    }
                });
                self.queue(stored.map(|s| PendingWrite::Job(Box::new(s))))
            }
            StoreWrite::RemoveJob(id) => {
                self.mem().remove_job(&id);
                self.queue([PendingWrite::RemoveJob(id)])
            }
            StoreWrite::CachedRecord(r) => {
                self.mem().put_record(*r);
                false
            }
            StoreWrite::CachedJob(spec) => {
                self.mem().put_job(spec);
                false
            }
            StoreWrite::ForgetJob(id) => {
                self.mem().remove_job(&id);
                false
            }
        }
    }

    /// Queues writes for Redis (none without Redis) under one lock, with
    /// no list built first: a run's final writes are on every run's path.
    /// Returns whether anything was queued.
    fn queue(&self, writes: impl IntoIterator<Item = PendingWrite>) -> bool {
        let Some(link) = &self.redis else {
            return false;
        };
        let mut writes = writes.into_iter().peekable();
        if writes.peek().is_none() {
            return false;
        }
        let mut pending = link.pending.lock().unwrap_or_else(|p| p.into_inner());
        for w in writes {
            pending.push(w);
        }
        true
    }

    /// The current definitions of these jobs (None where unknown).
    pub fn jobs(&self, ids: &[String]) -> Vec<Option<Arc<JobSpec>>> {
        let mem = self.mem();
        ids.iter().map(|id| mem.job(id)).collect()
    }

    /// Writes not yet in Redis (0 without Redis).
    pub fn pending_writes(&self) -> usize {
        self.redis.as_ref().map_or(0, |link| {
            link.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
        })
    }

    /// Marks a flush as asked for; `true` if the caller should ask the
    /// actor (none was outstanding).
    pub fn request_flush(&self) -> bool {
        !self.flush_requested.swap(true, AtomicOrdering::AcqRel)
    }

    /// A flush request was taken up, or could not be delivered: the next
    /// write asks again.
    pub fn clear_flush_request(&self) {
        self.flush_requested.store(false, AtomicOrdering::Release);
    }
}

pub enum StoreMsg {
    GetRecord(RunId, RpcReplyPort<Option<ExecutionRecord>>),
    Query(RecordQuery, RpcReplyPort<Vec<ExecutionRecord>>),
    Latest(String, RpcReplyPort<Option<ExecutionRecord>>),
    Skipped {
        job_id: Option<String>,
        limit: usize,
        reply: RpcReplyPort<Vec<SkippedTicks>>,
    },
    /// What a restarted actor rebuilds from (the local view).
    Snapshot(RpcReplyPort<StoreSnapshot>),
    Stats(RpcReplyPort<StoreStats>),
    Mode(Mode),
    Flush,
    /// The gathering pause after a flush request is over: flush.
    Gathered,
    /// Flush and report how many writes are still pending.
    FlushNow(RpcReplyPort<usize>),
    Sweep,
}

/// The state the scheduler and the pool rebuild from.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub jobs: Vec<Arc<JobSpec>>,
    pub last_ticks: HashMap<JobId, DateTime<Utc>>,
    /// PENDING and RUNNING records, oldest first.
    pub unfinished: Vec<ExecutionRecord>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub records: usize,
    pub dropped_records: u64,
    /// Writes waiting for Redis.
    pub pending_writes: usize,
    /// Writes dropped because the pending queue was full.
    pub dropped_writes: u64,
}

pub struct ExecutionStore;

pub struct StoreState {
    data: Arc<StoreData>,
    redis: Option<RedisLink>,
    mode: Mode,
    retry_timer: Option<AbortOnDrop>,
    /// A flush asked for waits this out, gathering the writes that follow.
    gather_timer: Option<AbortOnDrop>,
    _sweeper: AbortOnDrop,
}

impl StoreState {
    fn mem(&self) -> MutexGuard<'_, MemoryStore> {
        self.data.mem()
    }

    fn online(&self) -> Option<&RedisLink> {
        self.redis.as_ref().filter(|_| self.mode == Mode::Online)
    }

    /// Sends pending writes to Redis, oldest first, batch by batch. Stops
    /// at the first failure and tries again shortly. While Redis applies a
    /// batch the next one is taken out and encoded, so neither side waits
    /// for the other; it is sent only once the one before has landed.
    async fn flush(&mut self, myself: &ActorRef<StoreMsg>) {
        self.data.clear_flush_request();
        let Some(link) = self.online().cloned() else {
            return;
        };
        let mut flights = Flights {
            next: prepare_flight(&link),
            current: None,
        };
        for slice in 0..FLUSH_SLICE {
            let Some((flight, pipeline)) = flights.next.take() else {
                return;
            };
            flights.current = Some(flight);
            let started = tokio::time::Instant::now();
            let applied = match pipeline {
                Err(e) => Err(e),
                Ok(pipeline) => {
                    let send = link.store.send_writes(&pipeline);
                    tokio::pin!(send);
                    match futures_util::poll!(&mut send) {
                        std::task::Poll::Ready(applied) => applied,
                        std::task::Poll::Pending => {
                            if slice + 1 < FLUSH_SLICE {
                                flights.next = prepare_flight(&link);
                            }
                            send.await
                        }
                    }
                }
            };
            crate::telemetry::redis_round_trip("store", started.elapsed(), applied.is_ok());
            match applied {
                Ok(_) => {
                    if let Some(flight) = flights.current.take() {
                        flight.landed();
                    }
                }
                Err(e) => {
                    drop(flights);
                    tracing::debug!(error = %e, "flush to redis failed; will retry");
                    if self.retry_timer.is_none() {
                        let timer = myself.send_after(FLUSH_RETRY, || StoreMsg::Flush);
                        self.retry_timer = Some(AbortOnDrop::from(timer));
                    }
                    return;
                }
            }
        }
        // More left: continue after the messages already waiting, without
        // the gathering pause (under a steady load it would leave Redis idle
        // between slices, capping the writes a second).
        if !link
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            && self.data.request_flush()
            && myself.cast(StoreMsg::Gathered).is_err()
        {
            self.data.clear_flush_request();
        }
    }
}

/// The batches one flush has taken out: the one Redis is applying and the
/// one encoded meanwhile. Fields drop in order, so unless they landed the
/// later batch goes back to the front first and the earlier one in front
/// of it (on a failed pipeline, and if the flush is cut short): the order
/// of writes is kept.
struct Flights {
    next: Option<(Flight, Result<Pipeline, BackendError>)>,
    current: Option<Flight>,
}

/// Takes the oldest pending writes out as a [`Flight`] and encodes them;
/// `None` when nothing is pending.
fn prepare_flight(link: &RedisLink) -> Option<(Flight, Result<Pipeline, BackendError>)> {
    let batch = link
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_batch(FLUSH_BATCH);
    if batch.is_empty() {
        return None;
    }
    let flight = Flight {
        pending: link.pending.clone(),
        taken: batch.len(),
        batch: latest_records_only(batch),
        landed: false,
    };
    let pipeline = link.store.encode(&flight.batch);
    Some((flight, pipeline))
}

/// A batch on its way to Redis. Unless it landed, it goes back to the
/// front of the pending writes when dropped: on a failed pipeline, and
/// also if the flush is cut short (the actor panics or is stopped
/// mid-await), so a batch is never lost with the actor.
struct Flight {
    pending: SharedPending,
    /// How many writes were taken out (the batch may have fewer: see
    /// [`latest_records_only`]).
    taken: usize,
    batch: Vec<PendingWrite>,
    landed: bool,
}

impl Flight {
    fn landed(mut self) {
        self.landed = true;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.in_flight = pending.in_flight.saturating_sub(self.taken);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.landed {
            let batch = std::mem::take(&mut self.batch);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put_back(batch, self.taken);
        }
    }
}

/// Drops a record write when a later write of the same run follows in the
/// batch: record writes only move forward, so the later one carries all
/// the earlier said, at a position still before the writes that depend on
/// it (an ack follows its final record). Under load a run's RUNNING and
/// final records often meet in one batch, and Redis is written once.
fn latest_records_only(batch: Vec<PendingWrite>) -> Vec<PendingWrite> {
    let mut seen: HashSet<&RunId> = HashSet::new();
    let mut keep = vec![true; batch.len()];
    for (i, w) in batch.iter().enumerate().rev() {
        if let PendingWrite::Record(r) = w
            && !seen.insert(&r.run_id)
        {
            keep[i] = false;
        }
    }
    if keep.iter().all(|k| *k) {
        return batch;
    }
    batch
        .into_iter()
        .zip(keep)
        .filter_map(|(w, k)| k.then_some(w))
        .collect()
}

impl Actor for ExecutionStore {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StoreMsg>,
        args: StoreArgs,
    ) -> Result<StoreState, ActorProcessingErr> {
        let me = myself.clone();
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                if me.cast(StoreMsg::Sweep).is_err() {
                    break;
                }
            }
        });
        let mode = args
            .redis
            .as_ref()
            .map_or(Mode::Offline, |l| l.health.borrow().mode);
        let state = StoreState {
            redis: args.redis.clone(),
            data: args,
            mode,
            retry_timer: None,
            gather_timer: None,
            _sweeper: AbortOnDrop::from(sweeper),
        };
        // Writes an earlier incarnation left pending.
        let _ = myself.cast(StoreMsg::Flush);
        Ok(state)
    }

    /// On a graceful stop (after every queued write was handled), flush
    /// to Redis until nothing is pending, Redis stops taking writes, or
    /// [`FINAL_FLUSH_LIMIT`] has passed (one flush is at most a slice, and
    /// a start-up or a burst can leave more than that pending); what
    /// cannot reach Redis stays in the shared queue.
    async fn post_stop(
        &self,
        myself: ActorRef<StoreMsg>,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH_LIMIT;
        loop {
            let before = state.data.pending_writes();
            state.flush(&myself).await;
            let after = state.data.pending_writes();
            if after == 0 || after >= before || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let left = state.data.pending_writes();
        if left > 0 {
            tracing::warn!(left, "writes not flushed to redis before stopping");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StoreMsg::GetRecord(id, reply) => {
                let found = match redis_read(state, &myself).await {
                    Some(link) => link.store.record(&id).await.ok().flatten(),
                    None => None,
                };
                let _ = reply.send(found.or_else(|| state.mem().record(&id)));
            }
            StoreMsg::Query(q, reply) => {
                let from_redis = match redis_read(state, &myself).await {
                    Some(link) => link.store.query(&q).await.ok(),
                    None => None,
                };
                let _ = reply.send(from_redis.unwrap_or_else(|| state.mem().query(&q)));
            }
            StoreMsg::Latest(job, reply) => {
                let from_redis = match redis_read(state, &myself).await {
                    Some(link) => link.store.latest(&job).await.ok(),
                    None => None,
                };
                let _ = reply.send(from_redis.unwrap_or_else(|| state.mem().latest(&job)));
            }
            StoreMsg::Skipped {
                job_id,
                limit,
                reply,
            } => {
                let from_redis = match redis_read(state, &myself).await {
                    Some(link) => link.store.skipped(job_id.as_deref(), limit).await.ok(),
                    None => None,
                };
                let _ = reply.send(
                    from_redis.unwrap_or_else(|| state.mem().skipped(job_id.as_deref(), limit)),
                );
            }
            StoreMsg::Snapshot(reply) => {
                let mem = state.mem();
                let jobs = mem.jobs();
                let last_ticks = jobs
                    .iter()
                    .filter_map(|j| mem.last_tick(&j.id).map(|t| (j.id.clone(), t)))
                    .collect();
                let snapshot = StoreSnapshot {
                    jobs,
                    last_ticks,
                    unfinished: mem.unfinished(),
                };
                drop(mem);
                let _ = reply.send(snapshot);
            }
            StoreMsg::Stats(reply) => {
                let (records, dropped_records) = {
                    let mem = state.mem();
                    (mem.record_count(), mem.dropped_records())
                };
                let (pending_writes, dropped_writes) = state.redis.as_ref().map_or((0, 0), |l| {
                    let p = l.pending.lock().unwrap_or_else(|p| p.into_inner());
                    (p.len(), p.dropped())
                });
                let _ = reply.send(StoreStats {
                    records,
                    dropped_records,
                    pending_writes,
                    dropped_writes,
                });
            }
            StoreMsg::Mode(mode) => {
                state.mode = mode;
                if mode == Mode::Online {
                    state.flush(&myself).await;
                }
            }
            StoreMsg::Flush => {
                // Wait a moment for more: one flush then carries many
                // runs' writes (a quick run's RUNNING and final records
                // become one write), and a burst of runs starting is not
                // slowed by flushes between them. The flag stays set
                // meanwhile, so writers do not ask again.
                if state.data.pending_writes() >= FLUSH_AT_ONCE_FROM {
                    // A backlog: gathering would only leave Redis idle
                    // while it grows (and the queue reader pauses on it).
                    state.gather_timer = None;
                    state.retry_timer = None;
                    state.flush(&myself).await;
                } else if state.gather_timer.is_none() {
                    let timer = myself.send_after(FLUSH_GATHER, || StoreMsg::Gathered);
                    state.gather_timer = Some(AbortOnDrop::from(timer));
                }
            }
            StoreMsg::Gathered => {
                state.gather_timer = None;
                state.retry_timer = None;
                state.flush(&myself).await;
            }
            StoreMsg::FlushNow(reply) => {
                // Everything, slice after slice, as long as Redis takes it.
                loop {
                    let before = state.data.pending_writes();
                    state.flush(&myself).await;
                    let after = state.data.pending_writes();
                    if after == 0 || after >= before {
                        break;
                    }
                }
                let _ = reply.send(state.data.pending_writes());
            }
            StoreMsg::Sweep => {
                let expired = state.mem().expire(Utc::now());
                if expired > 0 {
                    tracing::debug!(expired, "expired execution records");
                }
            }
        }
        Ok(())
    }
}

/// The Redis link to read from, after flushing this daemon's own pending
/// writes; `None` (read memory) when offline or writes are still pending
/// (a backlog after an outage is not flushed inside a read).
async fn redis_read(state: &mut StoreState, myself: &ActorRef<StoreMsg>) -> Option<RedisLink> {
    let backlog = state
        .online()?
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    if backlog > FLUSH_BATCH {
        return None;
    }
    state.flush(myself).await;
    let link = state.online()?.clone();
    let drained = link
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty();
    drained.then_some(link)
}
