//! The WorkerPool actor: a queue of runs and N Worker actors, supervised.
//!
//! The pool hands a run to an idle worker, settles each attempt (SUCCESS,
//! a delayed retry, or FAILED after the last attempt), and keeps N workers:
//! a worker that fails is replaced and the run it held goes back to the
//! front of the queue, so a run never vanishes (ractor's factory would drop
//! it). On a restart the pool re-queues every unfinished record from the
//! store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{oneshot, watch};

use crate::AbortOnDrop;
use crate::backoff::retry_delay;
use crate::delivery::{DeliveryReport, Message};
use crate::handler::Registry;
use crate::handles::{NotifierHandle, SchedulerHandle, StoreHandle};
use crate::health::{Health, LeaseTiming, Mode, PEER_TTL};
use crate::job::JobSpec;
use crate::precise_timer::PreciseTimer;
use crate::record::{Counts, ExecutionRecord, RunId, RunStatus, Trigger};
use crate::redis_backend::{QueueEntry, RedisStore, blocking_connection};
use crate::telemetry;
use crate::users::UserDirectory;
use crate::won_claims::WonClaims;
use crate::worker::{AttemptOutcome, StartGate, Worker, WorkerArgs, WorkerMsg, WorkerRun};

/// How long one blocking read of the run queue waits for entries.
const QUEUE_BLOCK: Duration = Duration::from_millis(500);
/// The reader takes no new entries while this many store writes wait for
/// Redis: runs started faster than their records can be written would
/// only pile up writes (and past the store's cap, drop records).
const WRITE_BACKLOG_MAX: usize = 20_000;
/// How long the reader waits for the write backlog to shrink.
const BACKLOG_PAUSE: Duration = Duration::from_millis(5);
/// How often due retries are moved onto the queue.
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// How often the entries of daemons whose lease is over are looked for.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// Default visibility timeout: an entry a daemon holds unacknowledged this
/// long is presumed lost with its daemon and taken over by another.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// A run to execute: its record (carrying run id and attempt) and its job.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub record: ExecutionRecord,
    pub job: Arc<JobSpec>,
    /// The run-queue entry it came from; None for runs handed over locally
    /// (offline, or started by hand).
    pub entry_id: Option<String>,
}

/// What the pool needs to read the shared run queue.
#[derive(Clone)]
pub struct QueueArgs {
    pub redis: RedisStore,
    pub url: String,
    pub consumer: String,
    pub visibility: Duration,
    /// A dead daemon's entries are taken over once its lease is over.
    pub lease: LeaseTiming,
    pub connect_timeout: Duration,
    pub health: watch::Receiver<Health>,
    /// The scheduled runs this daemon takes from the queue note their
    /// tick's claim here: written back if Redis loses its data, so the
    /// daemon whose enqueue of it went unanswered does not queue it again.
    pub won: WonClaims,
}

pub enum PoolMsg {
    Submit(RunRequest),
    /// Runs read from the queue (or reclaimed from a dead daemon).
    FromQueue {
        entries: Vec<QueueEntry>,
        reclaimed: bool,
    },
    /// Entries Redis counts as delivered to this daemon (read again after a
    /// read whose reply may have been lost): those the pool does not hold
    /// are taken as reclaimed ones.
    OwnPending(Vec<QueueEntry>),
    /// Refresh the idle time of the queue entries this pool holds.
    Touch,
    Cancel(RunId, RpcReplyPort<bool>),
    AttemptDone {
        worker: usize,
        request: RunRequest,
        outcome: AttemptOutcome,
    },
    /// Runs that succeeded with nothing to send wait in [`SettledRuns`]:
    /// their workers already wrote the final records and acknowledged the
    /// entries (work spread over the workers instead of all on the pool,
    /// which every run passes through); the pool frees the workers and
    /// tells the scheduler. Sent by the worker that found the list empty:
    /// one message carries every run settled until the pool reads it.
    Settled,
    RetryDue(RunId),
    /// Held runs (fired ahead of their tick) are due: start them.
    Release,
    /// Stop taking runs; let running ones finish within the grace, then
    /// cancel them. Replies when nothing is left.
    Drain {
        grace: Duration,
        reply: RpcReplyPort<DrainReport>,
    },
    DrainDeadline,
    Stats(RpcReplyPort<PoolStats>),
    /// Runs this pool holds (running, queued, held, waiting to retry or
    /// delivering), counted by job.
    RunsByJob(RpcReplyPort<HashMap<String, u32>>),
    /// A run's deliveries so far: written to its RUNNING record.
    FanOutProgress {
        run_id: RunId,
        report: DeliveryReport,
    },
    /// A run's deliveries all settled: its record completes.
    FanOutDone {
        run_id: RunId,
        report: DeliveryReport,
    },
    /// Hand again to the Notifier fan-outs it lost (it restarted).
    CheckFanOuts,
    /// Look again for the jobs of entries in [`PoolState::unknown_jobs`].
    LookUpJobs,
    /// Runs of a batch the worker did not start, because one before them
    /// is still going (see [`dispatch`]): they go back to the queue.
    NotStarted {
        worker: usize,
        runs: Vec<RunId>,
    },
}

/// A run its worker settled (see [`PoolMsg::Settled`]).
pub struct SettledRun {
    pub worker: usize,
    pub run_id: RunId,
    pub job_id: String,
    pub duration_ms: u64,
}

/// Runs settled by workers and not yet seen by the pool. When a tick
/// starts a thousand runs, the pool is the one actor they all pass
/// through: a message (and a wake-up of the pool) per settled run, and
/// one more from the pool to the scheduler, were on each run's path.
#[derive(Default)]
pub struct SettledRuns(std::sync::Mutex<Vec<SettledRun>>);

impl SettledRuns {
    /// Adds runs; `true` if the list was empty (the pool must be told).
    pub fn push(&self, runs: impl IntoIterator<Item = SettledRun>) -> bool {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = list.is_empty();
        list.extend(runs);
        was_empty && !list.is_empty()
    }

    fn take(&self) -> Vec<SettledRun> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A run whose handler finished and whose messages are going out.
struct Delivering {
    request: RunRequest,
    messages: Vec<Message>,
    /// The handler's own counts, added to the deliveries' at the end.
    counts: Counts,
}

/// Prefetch (see [`PoolState::prefetch`]) while the moving average of
/// attempts' run time is below this.
/// How often the definitions of jobs unknown here are looked for in
/// Redis, and for how long, for queue entries that name them (a job just
/// created through another daemon: see [`look_up_jobs`]).
const JOB_LOOKUP_EVERY: Duration = Duration::from_millis(250);
const JOB_LOOKUP_FOR: Duration = Duration::from_secs(30);

const PREFETCH_BELOW_MS: f64 = 50.0;
const PREFETCH_MIN: usize = 16;
/// Entries read at once, beyond the workers' share, while the queue holds
/// runs fired ahead of their tick.
const HOLD_READ: usize = 1_000;
const PREFETCH_MAX: usize = 64;
/// Batches go out (see [`dispatch`]) while the moving average of attempts'
/// run time is below this: runs over at their first poll.
const BATCH_BELOW_MS: f64 = 1.0;
/// Runs handed to one worker at once at most.
const MAX_BATCH: usize = 32;
/// Weight of the latest attempt in the moving average of run time.
const RUN_TIME_WEIGHT: f64 = 0.3;

/// How often the pool checks that the Notifier still has its fan-outs.
const CHECK_FAN_OUTS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Runs that finished on their own during the drain.
    pub finished: usize,
    /// Runs cancelled: queued, waiting to retry, or still running at the deadline.
    pub cancelled: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub waiting_retry: usize,
    /// Runs whose messages are going out (no worker held).
    pub delivering: usize,
    pub worker_restarts: u64,
}

#[derive(Clone)]
pub struct PoolArgs {
    pub size: usize,
    /// Runs waiting in the local queue at most.
    pub max_queued: usize,
    pub daemon_id: String,
    pub registry: Arc<Registry>,
    pub store: StoreHandle,
    pub notifier: NotifierHandle,
    pub scheduler: SchedulerHandle,
    /// None: runs only arrive locally (no Redis).
    pub queue: Option<QueueArgs>,
    /// The owner chat for `save` deliveries.
    pub save_chat: Option<i64>,
    pub users: UserDirectory,
}

pub struct WorkerPool;

struct Slot {
    worker: ActorRef<WorkerMsg>,
    id: ActorId,
    /// The runs handed to the worker and not settled yet, in the order it
    /// starts them: one, or a batch while a backlog goes out (see
    /// [`dispatch`]). The worker is idle when this is empty.
    runs: Vec<Assigned>,
}

/// A run a worker holds, kept here to run again if the worker dies.
struct Assigned {
    request: Box<RunRequest>,
    /// Ends the run, or keeps it from starting (the worker does not read
    /// its mailbox mid-run); taken once used.
    cancel: Option<oneshot::Sender<()>>,
}

impl Slot {
    fn idle(&self) -> bool {
        self.runs.is_empty()
    }

    fn holds(&self, run_id: &RunId) -> bool {
        self.runs.iter().any(|a| &a.request.record.run_id == run_id)
    }

    /// Takes a run off the worker (settled, or given back). A late report
    /// of an earlier run finds nothing here.
    fn release(&mut self, run_id: &RunId) -> Option<Assigned> {
        let at = self
            .runs
            .iter()
            .position(|a| &a.request.record.run_id == run_id)?;
        Some(self.runs.remove(at))
    }

    fn cancel(&mut self, run_id: &RunId) -> bool {
        match self
            .runs
            .iter_mut()
            .find(|a| &a.request.record.run_id == run_id)
        {
            Some(a) => {
                if let Some(cancel) = a.cancel.take() {
                    let _ = cancel.send(());
                }
                true
            }
            None => false,
        }
    }

    fn cancel_all(&mut self) {
        for a in &mut self.runs {
            if let Some(cancel) = a.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }
}

struct Draining {
    reply: Option<RpcReplyPort<DrainReport>>,
    report: DrainReport,
    _deadline: AbortOnDrop,
    /// The grace is over: no new fan-out starts.
    deadline_passed: bool,
}

/// Where a held run stands among those fired ahead: its tick, then its
/// deadline, then arrival. Runs due at the same instant start earliest
/// deadline first (EDF), a run's deadline being its job's next tick, past
/// which a late run collides with the next one: when a per-second job and
/// ten thousand yearly ones fall due together, the per-second run goes
/// first, since its next run is a second away and theirs a year.
type HeldKey = (DateTime<Utc>, DateTime<Utc>, u64);

pub struct PoolState {
    args: PoolArgs,
    slots: Vec<Slot>,
    /// Runs are boxed while they wait: a burst moves ten thousand of
    /// them at once (held to queue to worker), 8 bytes each rather than
    /// the whole request.
    queue: VecDeque<Box<RunRequest>>,
    /// Runs fired ahead of their tick (see `timetable::FIRE_AHEAD`), by
    /// scheduled time and then deadline (see [`HeldKey`]): they start on
    /// the dot, not before.
    held: BTreeMap<HeldKey, Box<RunRequest>>,
    held_seq: u64,
    /// The last read from the queue brought runs to hold.
    reading_ahead: bool,
    /// Wakes the pool when the earliest held run is due (to well under a
    /// millisecond: see `precise_timer`), and the instant it is armed for.
    release_timer: PreciseTimer,
    release_at: Option<DateTime<Utc>>,
    retries: HashMap<RunId, (RunRequest, AbortOnDrop)>,
    delivering: HashMap<RunId, Delivering>,
    /// Runs this pool holds: queued, running or waiting to retry.
    known: HashSet<RunId>,
    /// Queue entries of jobs not known here yet, each with whether it was
    /// reclaimed and when it was first read: their definitions are looked
    /// for in Redis (see [`look_up_jobs`]).
    unknown_jobs: Vec<(QueueEntry, bool, Instant)>,
    lookup_timer: Option<AbortOnDrop>,
    draining: Option<Draining>,
    worker_restarts: u64,
    /// Idle workers not spoken for, plus the prefetch allowance: how many
    /// entries the reader may take.
    capacity: watch::Sender<usize>,
    /// Moving average of recent attempts' run time (ms): prefetching is
    /// only for short runs.
    recent_run_ms: f64,
    /// Shared with the workers.
    settled: Arc<SettledRuns>,
    _reader: Option<AbortOnDrop>,
    _toucher: Option<AbortOnDrop>,
    _fan_out_checker: AbortOnDrop,
}

impl PoolState {
    fn note_run_time(&mut self, ms: u64) {
        self.recent_run_ms =
            RUN_TIME_WEIGHT * ms as f64 + (1.0 - RUN_TIME_WEIGHT) * self.recent_run_ms;
    }

    fn update_capacity(&self) {
        let idle = self.slots.iter().filter(|s| s.idle()).count();
        let free = if self.draining.is_some() {
            0
        } else {
            (idle + self.prefetch()).saturating_sub(self.queue.len())
        };
        // Held runs need no worker yet, but are bounded too: at twice the
        // queue's bound, so an instant with as many runs due as the queue
        // holds leaves room for the ticks around it. (An entry left unread
        // is read only once due, after the release, and queues behind that
        // instant's runs whatever its deadline: with the bound at the
        // queue's, the per-second runs of the second of a 10,000-run burst
        // started 140 ms late.) While reads bring runs to hold (a batch of
        // ticks fired ahead), read them in large batches: they must all be
        // here by their tick.
        let held_max = self.args.max_queued.saturating_mul(2);
        let free = if self.held.len() >= held_max {
            0
        } else if self.reading_ahead && self.draining.is_none() {
            free + HOLD_READ.min(held_max - self.held.len())
        } else {
            free
        };
        self.capacity.send_if_modified(|c| {
            let changed = *c != free;
            *c = free;
            changed
        });
    }

    /// Entries read beyond the idle workers, so the next runs are at hand
    /// when workers free up instead of a read round trip later: one read
    /// serves many runs even at concurrency 1. Only while recent runs are
    /// short: behind long runs a prefetched entry would wait here while
    /// another daemon sits idle.
    fn prefetch(&self) -> usize {
        if self.recent_run_ms < PREFETCH_BELOW_MS {
            self.slots.len().clamp(PREFETCH_MIN, PREFETCH_MAX)
        } else {
            0
        }
    }

    /// Every run this pool holds, by job (a run in two places counts once).
    fn runs_by_job(&self) -> HashMap<String, u32> {
        let runs: HashMap<&RunId, &str> = self
            .slots
            .iter()
            .flat_map(|s| s.runs.iter().map(|a| &*a.request))
            .chain(self.queue.iter().map(|r| &**r))
            .chain(self.held.values().map(|r| &**r))
            .chain(self.retries.values().map(|(r, _)| r))
            .chain(self.delivering.values().map(|d| &d.request))
            .map(|r| (&r.record.run_id, r.record.job_id.as_str()))
            .collect();
        let mut counts = HashMap::new();
        for job in runs.into_values() {
            *counts.entry(job.to_string()).or_default() += 1;
        }
        counts
    }

    /// Queue entries this pool holds (running, waiting in the local
    /// queue, or delivering).
    fn held_entries(&self) -> Vec<String> {
        self.slots
            .iter()
            .flat_map(|s| s.runs.iter().map(|a| &*a.request))
            .chain(self.queue.iter().map(|r| &**r))
            .chain(self.held.values().map(|r| &**r))
            .chain(self.delivering.values().map(|d| &d.request))
            .filter_map(|r| r.entry_id.clone())
            .chain(self.unknown_jobs.iter().map(|(e, _, _)| e.entry_id.clone()))
            .collect()
    }
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let (capacity, capacity_rx) = watch::channel(0);
        let (reader, toucher) = match &args.queue {
            Some(q) => {
                let reader = tokio::spawn(read_queue(
                    myself.clone(),
                    q.clone(),
                    args.store.clone(),
                    capacity_rx,
                ));
                let touch_every = (q.visibility / 3).max(Duration::from_millis(1));
                let me = myself.clone();
                let toucher = tokio::spawn(async move {
                    let mut every = tokio::time::interval(touch_every);
                    loop {
                        every.tick().await;
                        if me.cast(PoolMsg::Touch).is_err() {
                            break;
                        }
                    }
                });
                (
                    Some(AbortOnDrop::from(reader)),
                    Some(AbortOnDrop::from(toucher)),
                )
            }
            None => (None, None),
        };
        let me = myself.clone();
        let checker = tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECK_FAN_OUTS_EVERY);
            loop {
                every.tick().await;
                if me.cast(PoolMsg::CheckFanOuts).is_err() {
                    break;
                }
            }
        });
        let me = myself.clone();
        let release_timer =
            PreciseTimer::new("herald-release", move || me.cast(PoolMsg::Release).is_ok())?;
        let mut state = PoolState {
            args,
            slots: Vec::new(),
            queue: VecDeque::new(),
            retries: HashMap::new(),
            unknown_jobs: Vec::new(),
            lookup_timer: None,
            delivering: HashMap::new(),
            _fan_out_checker: AbortOnDrop::from(checker),
            known: HashSet::new(),
            draining: None,
            worker_restarts: 0,
            capacity,
            // No prefetch until a short run has been seen.
            recent_run_ms: PREFETCH_BELOW_MS,
            held: BTreeMap::new(),
            held_seq: 0,
            reading_ahead: false,
            release_timer,
            release_at: None,
            settled: Arc::new(SettledRuns::default()),
            _reader: reader,
            _toucher: toucher,
        };
        for index in 0..state.args.size.max(1) {
            let slot = spawn_worker(&myself, &state.args, &state.settled, index).await?;
            state.slots.push(slot);
        }
        restore(&myself, &mut state).await;
        release_due(&mut state);
        dispatch(&mut state);
        state.update_capacity();
        Ok(state)
    }

    /// Every await on a Redis or actor call in here is boxed: ractor
    /// (0.16) moves a message's handler future a few times before polling
    /// it, so its size is copied per message, and a Redis call's future is
    /// ~7 KB where the rest of this one is a few hundred bytes. Unboxed,
    /// the copies under the actors' message loops were about 5% of the
    /// CPU of a tick starting its runs.
    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever the message, runs settled meanwhile count first (a
        // cancel must not find a run that is over).
        take_settled(state);
        match msg {
            PoolMsg::Submit(request) => submit(state, request),
            PoolMsg::FromQueue { entries, reclaimed } => {
                let held_before = state.held.len();
                let entries = entries.into_iter().map(|e| (e, reclaimed, Instant::now()));
                Box::pin(from_queue(&myself, state, entries.collect())).await;
                state.reading_ahead = state.held.len() > held_before;
                // The reader waits for this: entries that went to `held`
                // leave the free capacity as it was.
                state.capacity.send_modify(|_| {});
            }
            PoolMsg::OwnPending(entries) => {
                let held: HashSet<String> = state.held_entries().into_iter().collect();
                let lost: Vec<_> = entries
                    .into_iter()
                    .filter(|e| !held.contains(&e.entry_id))
                    .map(|e| (e, true, Instant::now()))
                    .collect();
                if !lost.is_empty() {
                    tracing::info!(
                        entries = lost.len(),
                        "queue entries delivered here but never received (a lost reply): taken now"
                    );
                    Box::pin(from_queue(&myself, state, lost)).await;
                }
                state.capacity.send_modify(|_| {});
            }
            PoolMsg::Release => state.release_at = None,
            PoolMsg::LookUpJobs => {
                state.lookup_timer = None;
                let entries = std::mem::take(&mut state.unknown_jobs);
                Box::pin(from_queue(&myself, state, entries)).await;
            }
            PoolMsg::Touch => {
                let held = state.held_entries();
                if let Some(q) = &state.args.queue
                    && !held.is_empty()
                    && q.health.borrow().mode == Mode::Online
                    && let Err(e) = Box::pin(q.redis.touch(&q.consumer, &held)).await
                {
                    tracing::debug!(error = %e, "could not refresh held queue entries");
                }
            }
            PoolMsg::AttemptDone {
                worker,
                request,
                outcome,
            } => attempt_done(&myself, state, worker, request, outcome),
            // Taken in below, with any others settled since.
            PoolMsg::Settled => {}
            PoolMsg::RetryDue(run_id) => {
                if let Some((request, _timer)) = state.retries.remove(&run_id) {
                    state.queue.push_back(Box::new(request));
                }
            }
            PoolMsg::Cancel(run_id, reply) => {
                let _ = reply.send(cancel(state, &run_id));
            }
            PoolMsg::Drain { grace, reply } => {
                let deadline = myself.send_after(grace, || PoolMsg::DrainDeadline);
                state.draining = Some(Draining {
                    reply: Some(reply),
                    report: DrainReport::default(),
                    _deadline: AbortOnDrop::from(deadline),
                    deadline_passed: false,
                });
                let held = std::mem::take(&mut state.held).into_values();
                state.release_at = None;
                state.release_timer.disarm();
                let waiting: Vec<Box<RunRequest>> = std::mem::take(&mut state.queue)
                    .into_iter()
                    .chain(held)
                    .collect();
                Box::pin(requeue(state, waiting)).await;
                let unknown = std::mem::take(&mut state.unknown_jobs)
                    .into_iter()
                    .map(|(e, _, _)| (e.entry_id, e.record))
                    .collect();
                Box::pin(hand_back(state, unknown)).await;
                for (_, (request, _timer)) in std::mem::take(&mut state.retries) {
                    settle_cancelled(state, request, "cancelled: herald is shutting down");
                    if let Some(d) = &mut state.draining {
                        d.report.cancelled += 1;
                    }
                }
            }
            PoolMsg::DrainDeadline => {
                if let Some(d) = &mut state.draining {
                    d.deadline_passed = true;
                }
                // Deliveries still going: a queued run's entry stays
                // unacknowledged, so another daemon finishes them (the
                // ledger skips what went out); a local run ends CANCELLED
                // with what was delivered so far.
                let runs: Vec<RunId> = state.delivering.keys().cloned().collect();
                let _ = state.args.notifier.abandon(runs.clone());
                for run_id in runs {
                    if let Some(d) = state.delivering.remove(&run_id) {
                        if let Some(drain) = &mut state.draining {
                            drain.report.cancelled += 1;
                        }
                        if d.request.entry_id.is_some() {
                            state.known.remove(&run_id);
                        } else {
                            settle_cancelled(
                                state,
                                d.request,
                                "cancelled: still delivering at the shutdown deadline",
                            );
                        }
                    }
                }
                for slot in &mut state.slots {
                    slot.cancel_all();
                }
            }
            PoolMsg::Stats(reply) => {
                let _ = reply.send(PoolStats {
                    workers: state.slots.len(),
                    busy: state.slots.iter().filter(|s| !s.idle()).count(),
                    queued: state.queue.len() + state.held.len(),
                    waiting_retry: state.retries.len(),
                    delivering: state.delivering.len(),
                    worker_restarts: state.worker_restarts,
                });
            }
            PoolMsg::RunsByJob(reply) => {
                let _ = reply.send(state.runs_by_job());
            }
            PoolMsg::FanOutProgress { run_id, report } => {
                if let Some(d) = state.delivering.get_mut(&run_id) {
                    d.request.record.counts = d.counts + report.totals();
                    d.request.record.deliveries = Some(report);
                    state.args.store.put_record(d.request.record.clone());
                }
            }
            PoolMsg::FanOutDone { run_id, report } => fan_out_done(state, run_id, report),
            PoolMsg::NotStarted { worker, runs } => {
                let mut given_back = Vec::with_capacity(runs.len());
                for run_id in &runs {
                    let Some(a) = state.slots.get_mut(worker).and_then(|s| s.release(run_id))
                    else {
                        continue;
                    };
                    if a.cancel.is_some() {
                        given_back.push(a.request);
                        continue;
                    }
                    // Cancelled on its way back: it never starts.
                    if let Some(d) = &mut state.draining {
                        d.report.cancelled += 1;
                    }
                    settle_cancelled(state, *a.request, "cancelled");
                }
                Box::pin(requeue(state, given_back)).await;
            }
            PoolMsg::CheckFanOuts => {
                let runs: Vec<RunId> = state.delivering.keys().cloned().collect();
                if !runs.is_empty()
                    && let Ok(known) = Box::pin(state.args.notifier.known(runs.clone())).await
                {
                    for (run_id, known) in runs.into_iter().zip(known) {
                        if let (false, Some(d)) = (known, state.delivering.get(&run_id)) {
                            tracing::warn!(run = %run_id, "the notifier lost this run's deliveries; handing them over again");
                            let _ = state.args.notifier.fan_out(
                                run_id.clone(),
                                d.request.record.job_id.clone(),
                                d.messages.clone(),
                                d.request.record.queued,
                            );
                        }
                    }
                }
            }
        }
        release_due(state);
        dispatch(state);
        finish_drain_if_idle(state);
        state.update_capacity();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            _ => return Ok(()),
        };
        let Some(index) = state.slots.iter().position(|s| s.id == cell.get_id()) else {
            return Ok(());
        };
        // A run the worker settled before it died is over: not run again.
        take_settled(state);
        tracing::warn!(worker = index, %reason, "worker died; replacing it");
        state.worker_restarts += 1;
        telemetry::actor_restarted(telemetry::WORKER_ACTOR);
        let slot = spawn_worker(&myself, &state.args, &state.settled, index).await?;
        let lost = std::mem::replace(&mut state.slots[index], slot).runs;
        for a in lost.into_iter().rev() {
            if state.draining.is_some() {
                settle_cancelled(state, *a.request, "cancelled: worker died during shutdown");
            } else {
                // Same attempt again: the worker died, not the job.
                state.queue.push_front(a.request);
            }
        }
        dispatch(state);
        finish_drain_if_idle(state);
        Ok(())
    }
}

async fn spawn_worker(
    pool: &ActorRef<PoolMsg>,
    args: &PoolArgs,
    settled: &Arc<SettledRuns>,
    index: usize,
) -> Result<Slot, ActorProcessingErr> {
    let worker_args = WorkerArgs {
        index,
        settled: settled.clone(),
        daemon_id: args.daemon_id.clone(),
        pool: pool.clone(),
        registry: args.registry.clone(),
        store: args.store.clone(),
        save_chat: args.save_chat,
        users: args.users.clone(),
    };
    let (worker, _) = Actor::spawn_linked(None, Worker, worker_args, pool.get_cell()).await?;
    Ok(Slot {
        id: worker.get_id(),
        worker,
        runs: Vec::new(),
    })
}

/// Re-queues what an earlier incarnation of the pool left unfinished.
async fn restore(myself: &ActorRef<PoolMsg>, state: &mut PoolState) {
    let snapshot = match state.args.store.snapshot().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read unfinished runs; starting empty");
            return;
        }
    };
    let now = Utc::now();
    for mut record in snapshot.unfinished {
        if record.queued && state.args.queue.is_some() {
            // The shared queue redelivers it (here or on another daemon).
            continue;
        }
        let Some(job) = snapshot
            .jobs
            .iter()
            .find(|j| *j.id == *record.job_id)
            .cloned()
        else {
            record.status = RunStatus::Failed;
            record.finished_at = Some(now);
            record.error = Some(format!("job {:?} no longer exists", record.job_id));
            state.args.store.put_record(record.clone());
            let _ = state.args.scheduler.run_settled(record.job_id);
            continue;
        };
        let request = RunRequest {
            record,
            job,
            entry_id: None,
        };
        state.known.insert(request.record.run_id.clone());
        match request.record.retry_at {
            Some(at) if at > now => schedule_retry(myself, state, request, at),
            _ => take_in(state, request),
        }
    }
    if !state.known.is_empty() {
        tracing::info!(runs = state.known.len(), "re-queued unfinished runs");
    }
}

fn submit(state: &mut PoolState, request: RunRequest) {
    if state.draining.is_some() {
        settle_cancelled(state, request, "cancelled: herald is shutting down");
        if let Some(d) = &mut state.draining {
            d.report.cancelled += 1;
        }
        return;
    }
    if state.known.contains(&request.record.run_id) {
        return;
    }
    if state.queue.len() >= state.args.max_queued {
        // Bounded memory: a run past the bound fails visibly rather than
        // waiting in a queue that could grow through a long outage.
        let mut record = request.record;
        record.status = RunStatus::Failed;
        record.finished_at = Some(Utc::now());
        record.retry_at = None;
        record.error = Some(format!(
            "not run: {} runs were already waiting for a worker on this daemon (workers.max_queued)",
            state.queue.len()
        ));
        state.known.insert(record.run_id.clone());
        settle(state, record, request.entry_id);
        return;
    }
    state.known.insert(request.record.run_id.clone());
    take_in(state, request);
}

/// Queues a run for a worker, or holds it until its tick if it was fired
/// ahead.
fn take_in(state: &mut PoolState, request: RunRequest) {
    let at = request.record.scheduled_at;
    if request.record.attempt <= 1 && at > Utc::now() {
        state.held_seq += 1;
        let deadline = request
            .job
            .schedule
            .next_after(at)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        state
            .held
            .insert((at, deadline, state.held_seq), Box::new(request));
    } else {
        state.queue.push_back(Box::new(request));
    }
}

/// Moves held runs whose tick has come to the front of the queue (they
/// are due now; what waits there may wait a moment longer), and arms the
/// timer for the next.
fn release_due(state: &mut PoolState) {
    let now = Utc::now();
    // Everything held for a tick up to now, split off in one step; the
    // first held key past now starts the part that stays.
    if state.held.keys().next().is_some_and(|k| k.0 <= now) {
        let not_due = (now + TimeDelta::nanoseconds(1), DateTime::<Utc>::MIN_UTC, 0);
        let later = state.held.split_off(&not_due);
        let due = std::mem::replace(&mut state.held, later);
        state.queue.reserve(due.len());
        for request in due.into_values().rev() {
            state.queue.push_front(request);
        }
    }
    let Some(&(next, _, _)) = state.held.keys().next() else {
        if state.release_at.take().is_some() {
            state.release_timer.disarm();
        }
        return;
    };
    if state.release_at == Some(next) {
        return;
    }
    // Measured from a fresh reading, not `now`: moving a thousand runs
    // takes long enough to put the release that much behind its tick.
    let delay = (next - Utc::now()).to_std().unwrap_or_default();
    state.release_timer.arm(Instant::now() + delay);
    state.release_at = Some(next);
}

/// Frees the workers of the runs settled since the last look (see
/// [`PoolMsg::Settled`]) and tells the scheduler of them in one message.
fn take_settled(state: &mut PoolState) {
    let settled = state.settled.take();
    if settled.is_empty() {
        return;
    }
    let mut jobs = Vec::with_capacity(settled.len());
    for run in settled {
        if let Some(slot) = state.slots.get_mut(run.worker) {
            slot.release(&run.run_id);
        }
        state.note_run_time(run.duration_ms);
        if let Some(d) = &mut state.draining {
            d.report.finished += 1;
        }
        state.known.remove(&run.run_id);
        jobs.push(run.job_id);
    }
    let _ = state.args.scheduler.runs_settled(jobs);
}

/// Hands queued runs to idle workers. While recent runs are short and
/// more runs wait than workers are idle (a tick of a thousand runs at
/// concurrency 100), each worker gets a batch: its share of the queue, up
/// to [`MAX_BATCH`]. Run one at a time, every run costs a message to its
/// worker and a round trip back to the pool before the worker's next; in
/// a batch the worker starts them back to back (see
/// `worker::execute_batch`), and gives back the rest of its batch as soon
/// as one of them keeps running.
fn dispatch(state: &mut PoolState) {
    if state.queue.is_empty() {
        return;
    }
    let idle = state.slots.iter().filter(|s| s.idle()).count();
    if idle == 0 {
        return;
    }
    let per_worker = if state.recent_run_ms < BATCH_BELOW_MS {
        state.queue.len().div_ceil(idle).min(MAX_BATCH)
    } else {
        1
    };
    // Only batches of several runs wait at the gate (see `StartGate`).
    let round = (per_worker > 1).then(|| Arc::new(StartGate::default()));
    for slot in state.slots.iter_mut().filter(|s| s.idle()) {
        if state.queue.is_empty() {
            return;
        }
        let take = per_worker.min(state.queue.len());
        let mut batch = Vec::with_capacity(take);
        for request in state.queue.drain(..take) {
            let (cancel, cancelled) = oneshot::channel();
            batch.push(WorkerRun {
                request: RunRequest::clone(&request),
                cancel: cancelled,
            });
            slot.runs.push(Assigned {
                request,
                cancel: Some(cancel),
            });
        }
        let ticket = round
            .as_ref()
            .filter(|_| batch.len() > 1)
            .map(|round| round.ticket(batch.len()));
        if slot.worker.cast(WorkerMsg::Execute(batch, ticket)).is_err() {
            // The worker is dying; its replacement will take the runs.
            for a in std::mem::take(&mut slot.runs).into_iter().rev() {
                state.queue.push_front(a.request);
            }
        }
    }
}

/// Runs not started: to the front of the queue, or, while shutting down,
/// back to the shared queue (queue entries, for the other daemons) or
/// cancelled.
// Boxed as they wait in the queue they go back to: unboxing them here
// would only box them again.
#[allow(clippy::vec_box)]
async fn requeue(state: &mut PoolState, runs: Vec<Box<RunRequest>>) {
    if state.draining.is_none() {
        for request in runs.into_iter().rev() {
            state.queue.push_front(request);
        }
        return;
    }
    let mut not_started = Vec::new();
    for request in runs {
        if let Some(entry_id) = request.entry_id {
            state.known.remove(&request.record.run_id);
            not_started.push((entry_id, request.record));
            continue;
        }
        settle_cancelled(state, *request, "cancelled: herald is shutting down");
        if let Some(d) = &mut state.draining {
            d.report.cancelled += 1;
        }
    }
    hand_back(state, not_started).await;
}

fn attempt_done(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    worker: usize,
    request: RunRequest,
    outcome: AttemptOutcome,
) {
    if let Some(slot) = state.slots.get_mut(worker) {
        slot.release(&request.record.run_id);
    }
    let RunRequest {
        mut record,
        job,
        entry_id,
    } = request;
    let now = Utc::now();
    if let Some(ms) = record.finish_at(now) {
        state.note_run_time(ms);
    }
    if let Some(d) = &mut state.draining {
        match &outcome {
            AttemptOutcome::Cancelled => d.report.cancelled += 1,
            // counted when its messages have settled
            AttemptOutcome::Success(_, messages) if !messages.is_empty() => {}
            _ => d.report.finished += 1,
        }
    }
    let past_deadline = state.draining.as_ref().is_some_and(|d| d.deadline_passed);
    match outcome {
        AttemptOutcome::Success(_, messages) if !messages.is_empty() && past_deadline => {
            // Shutting down past the grace: no fan-out starts now. A queued
            // run stays unacknowledged for another daemon (which runs it
            // again, the ledger skipping what went out); a local one ends
            // CANCELLED.
            if let Some(d) = &mut state.draining {
                d.report.cancelled += 1;
            }
            if entry_id.is_some() {
                state.known.remove(&record.run_id);
            } else {
                settle_cancelled(
                    state,
                    RunRequest {
                        record,
                        job,
                        entry_id,
                    },
                    "cancelled: finished after the shutdown deadline, before its messages went out",
                );
            }
        }
        AttemptOutcome::Success(counts, messages) if !messages.is_empty() => {
            // The worker is free; the record completes when the messages
            // have settled (the Notifier reports progress meanwhile).
            let report = DeliveryReport::expecting(&messages);
            record.finished_at = None;
            record.duration_ms = None;
            record.counts = counts;
            record.deliveries = Some(report);
            state.args.store.put_record(record.clone());
            let run_id = record.run_id.clone();
            let job_id = record.job_id.clone();
            if let Err(e) =
                state
                    .args
                    .notifier
                    .fan_out(run_id.clone(), job_id, messages.clone(), record.queued)
            {
                // Handed over again by the next fan-out check.
                tracing::warn!(run = %run_id, error = %e, "notifier unavailable; will hand the messages over again");
            }
            state.delivering.insert(
                run_id,
                Delivering {
                    request: RunRequest {
                        record,
                        job,
                        entry_id,
                    },
                    messages,
                    counts,
                },
            );
        }
        AttemptOutcome::Success(counts, _) => {
            record.status = RunStatus::Success;
            record.counts = counts;
            record.error = None;
            success_due(&job, now);
            settle(state, record, entry_id);
        }
        AttemptOutcome::Cancelled => {
            record.status = RunStatus::Cancelled;
            record.error = Some(if state.draining.is_some() {
                "cancelled: still running at the shutdown deadline".to_string()
            } else {
                "cancelled".to_string()
            });
            settle(state, record, entry_id);
        }
        AttemptOutcome::Failed(error) => {
            if record.attempt < job.retry.max_attempts && state.draining.is_none() {
                let next = record.attempt + 1;
                let delay = retry_delay(&job.retry, next, rand::random::<f64>());
                tracing::warn!(run = %record.run_id, attempt = record.attempt, %error, retry_in = ?delay, "attempt failed; retrying");
                telemetry::retried(&record.job_id);
                record.status = RunStatus::Pending;
                record.attempt = next;
                record.taken_over_from = None;
                record.error = Some(error);
                record.started_at = None;
                record.finished_at = None;
                record.duration_ms = None;
                let at = chrono::TimeDelta::from_std(delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(now);
                record.retry_at = Some(at);
                match entry_id {
                    Some(entry_id) => {
                        // The retry waits in Redis, not in a timer here.
                        state.known.remove(&record.run_id);
                        state.args.store.retry(record, at);
                        state.args.store.ack(entry_id);
                    }
                    None => {
                        state.args.store.put_record(record.clone());
                        let retry = RunRequest {
                            record,
                            job,
                            entry_id: None,
                        };
                        schedule_retry(myself, state, retry, at);
                    }
                }
            } else {
                tracing::warn!(run = %record.run_id, attempt = record.attempt, %error, "run failed");
                record.status = RunStatus::Failed;
                record.error = Some(error);
                settle(state, record, entry_id);
            }
        }
    }
}

fn schedule_retry(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    request: RunRequest,
    at: DateTime<Utc>,
) {
    let delay = (at - Utc::now()).to_std().unwrap_or_default();
    let run_id = request.record.run_id.clone();
    let id = run_id.clone();
    let timer = myself.send_after(delay, move || PoolMsg::RetryDue(id));
    state
        .retries
        .insert(run_id, (request, AbortOnDrop::from(timer)));
}

/// A run's messages have all settled: its final record. A fan-out fails
/// the run only if nothing at all got through (not retried: whatever was
/// retryable was retried per message).
fn fan_out_done(state: &mut PoolState, run_id: RunId, report: DeliveryReport) {
    let Some(d) = state.delivering.remove(&run_id) else {
        return;
    };
    let mut record = d.request.record;
    let now = Utc::now();
    record.finish_at(now);
    record.counts = d.counts + report.totals();
    record.status = if report.failed_entirely() {
        RunStatus::Failed
    } else {
        RunStatus::Success
    };
    record.error = report.error_summary();
    record.deliveries = Some(report);
    if let Some(drain) = &mut state.draining {
        drain.report.finished += 1;
    }
    if record.status == RunStatus::Success {
        success_due(&d.request.job, now);
    }
    settle(state, record, d.request.entry_id);
}

fn cancel(state: &mut PoolState, run_id: &RunId) -> bool {
    if let Some(d) = state.delivering.remove(run_id) {
        let _ = state.args.notifier.abandon(vec![run_id.clone()]);
        settle_cancelled(state, d.request, "cancelled while delivering");
        return true;
    }
    if let Some(pos) = state.queue.iter().position(|r| &r.record.run_id == run_id) {
        if let Some(request) = state.queue.remove(pos) {
            settle_cancelled(state, *request, "cancelled");
        }
        return true;
    }
    if let Some((request, _timer)) = state.retries.remove(run_id) {
        settle_cancelled(state, request, "cancelled");
        return true;
    }
    if let Some(key) = state
        .held
        .iter()
        .find(|(_, r)| &r.record.run_id == run_id)
        .map(|(k, _)| *k)
    {
        if let Some(request) = state.held.remove(&key) {
            settle_cancelled(state, *request, "cancelled");
        }
        return true;
    }
    if let Some(slot) = state.slots.iter_mut().find(|s| s.holds(run_id)) {
        return slot.cancel(run_id);
    }
    false
}

fn settle_cancelled(state: &mut PoolState, request: RunRequest, why: &str) {
    let mut record = request.record;
    record.status = RunStatus::Cancelled;
    record.finished_at = Some(Utc::now());
    record.retry_at = None;
    record.error = Some(why.to_string());
    settle(state, record, request.entry_id);
}

/// A success: the job's next one is due at its next fire.
pub(crate) fn success_due(job: &JobSpec, now: DateTime<Utc>) {
    let next = job.enabled.then(|| job.schedule.next_after(now)).flatten();
    telemetry::success_due(&job.id, next);
}

/// Writes a final record, acknowledges its queue entry (after the record),
/// and tells the scheduler the run is over.
fn settle(state: &mut PoolState, record: ExecutionRecord, entry_id: Option<String>) {
    state.known.remove(&record.run_id);
    let job_id = record.job_id.clone();
    write_final(&state.args.store, record, entry_id);
    // If the scheduler is restarting it recounts from the store.
    let _ = state.args.scheduler.run_settled(job_id);
}

/// A final record's writes: the record, then the acknowledgement of its
/// queue entry. The pool's part of settling (the run is no longer known;
/// the scheduler hears of it) follows in [`settle`] or on
/// [`PoolMsg::Settled`].
pub(crate) fn write_final(store: &StoreHandle, record: ExecutionRecord, entry_id: Option<String>) {
    tracing::info!(
        job = %record.job_id,
        run = %record.run_id,
        status = %record.status.as_str(),
        attempt = record.attempt,
        duration_ms = record.duration_ms.unwrap_or(0),
        sent = record.counts.sent,
        error = record.error.as_deref().unwrap_or(""),
        "run finished"
    );
    telemetry::run_ended(
        &record.job_id,
        record.status,
        record.duration_ms.map(Duration::from_millis),
        record
            .finished_at
            .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
    );
    store.put_final(record, entry_id);
}

/// Queue entries read but not started (the pool is shutting down) go back
/// to the queue, for the other daemons to read at once. If Redis does not
/// take them, they stay unacknowledged and another daemon takes them over
/// after the visibility timeout.
async fn hand_back(state: &PoolState, not_started: Vec<(String, ExecutionRecord)>) {
    let Some(q) = &state.args.queue else {
        return;
    };
    if not_started.is_empty() {
        return;
    }
    if let Err(e) = q.redis.requeue(&not_started).await {
        tracing::warn!(error = %e, runs = not_started.len(), "could not hand unstarted runs back to the queue; another daemon takes them over after the visibility timeout");
    }
}

/// Takes runs read from the queue, each with whether it was reclaimed and
/// when it was read. Reclaimed ones whose run already finished (the dead
/// daemon recorded it but did not get to acknowledge) are only
/// acknowledged.
async fn from_queue(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    entries: Vec<(QueueEntry, bool, Instant)>,
) {
    let mut not_started = Vec::new();
    let mut unknown = Vec::new();
    let ids: Vec<String> = entries
        .iter()
        .map(|(e, ..)| e.record.job_id.clone())
        .collect();
    let jobs = state.args.store.jobs(&ids);
    for (i, (mut entry, reclaimed, read_at)) in entries.into_iter().enumerate() {
        // A reclaimed entry whose run is final (its daemon died before
        // acknowledging), or a retry entry whose run moved on (the retry
        // was promoted twice after a replayed write), is only acknowledged.
        if (reclaimed || entry.record.attempt > 1)
            && let Ok(Some(current)) = state.args.store.record(entry.record.run_id.clone()).await
        {
            if superseded(&current, &entry.record, reclaimed) {
                state.args.store.ack(entry.entry_id);
                continue;
            }
            if reclaimed && current.attempt == entry.record.attempt {
                // The daemon whose attempt this takes over: its writes for
                // the attempt are refused from now on (fencing).
                entry.record.taken_over_from =
                    current.daemon.filter(|d| *d != state.args.daemon_id);
            }
        }
        if state.draining.is_some() {
            // Read by a last read under way when the drain began.
            not_started.push((entry.entry_id, entry.record));
            continue;
        }
        match jobs.get(i).cloned().flatten() {
            Some(job) => accept(state, entry, job, reclaimed),
            None => unknown.push((entry, reclaimed, read_at)),
        }
    }
    hand_back(state, not_started).await;
    look_up_jobs(myself, state, unknown).await;
}

/// Starts (or holds until its tick) a run read from the queue.
fn accept(state: &mut PoolState, entry: QueueEntry, job: Arc<JobSpec>, reclaimed: bool) {
    if reclaimed {
        tracing::warn!(run = %entry.record.run_id, "took over a run its daemon left unfinished");
    }
    if state.known.insert(entry.record.run_id.clone()) {
        if let Some(q) = &state.args.queue
            && entry.record.trigger != Trigger::Manual
        {
            q.won.push(
                &entry.record.job_id,
                entry.record.scheduled_at,
                &format!("{}:queued", q.consumer),
            );
        }
        take_in(
            state,
            RunRequest {
                record: entry.record,
                job,
                entry_id: Some(entry.entry_id),
            },
        );
    } else {
        // This daemon already has the run (restored locally): the copy
        // it runs settles it; this entry is redundant.
        state.args.store.ack(entry.entry_id);
    }
}

/// Queue entries of jobs this daemon does not know: most often a job just
/// created through another daemon, whose first run was queued (1.5 s
/// ahead of its tick, for overlap `allow`) before this daemon took the job
/// from Redis. The job's definition is read from Redis and the run goes
/// ahead. A job deleted (or orphaned) meanwhile ends its run CANCELLED.
/// A job Redis does not hold yet (its creator's write still on the way)
/// or cannot be read is looked for again every [`JOB_LOOKUP_EVERY`], the
/// entry kept (and its idle time refreshed, so no daemon takes it over);
/// only after [`JOB_LOOKUP_FOR`] does the run fail, saying so.
async fn look_up_jobs(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    entries: Vec<(QueueEntry, bool, Instant)>,
) {
    if entries.is_empty() {
        return;
    }
    let mut ids: Vec<&str> = entries
        .iter()
        .map(|(e, ..)| e.record.job_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (found, removed) = match &state.args.queue {
        Some(q) if q.health.borrow().mode == Mode::Online => {
            let found = q.redis.jobs_by_id(&ids).await;
            let removed = q.redis.removed_jobs().await;
            match (found, removed) {
                (Ok(found), Ok(removed)) => {
                    let found: HashMap<String, _> =
                        ids.iter().map(|id| id.to_string()).zip(found).collect();
                    (Some(found), removed)
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "cannot read the definitions of jobs unknown here; trying again");
                    (None, HashSet::new())
                }
            }
        }
        _ => (None, HashSet::new()),
    };
    let mut waiting = Vec::new();
    for (entry, reclaimed, read_at) in entries {
        let stored = found.as_ref().and_then(|f| f.get(&entry.record.job_id));
        let outcome = match stored {
            Some(Some(job)) if job.orphaned => Err((
                RunStatus::Cancelled,
                format!(
                    "job {:?} is no longer defined (orphaned)",
                    entry.record.job_id
                ),
            )),
            Some(Some(job)) => job.effective().map(Arc::new).map_err(|e| {
                (
                    RunStatus::Failed,
                    format!("job {:?} as stored in Redis: {e}", entry.record.job_id),
                )
            }),
            Some(None) if removed.contains(&entry.record.job_id) => Err((
                RunStatus::Cancelled,
                format!(
                    "job {:?} was deleted before its run started",
                    entry.record.job_id
                ),
            )),
            _ if read_at.elapsed() < JOB_LOOKUP_FOR => {
                waiting.push((entry, reclaimed, read_at));
                continue;
            }
            _ => Err((
                RunStatus::Failed,
                format!(
                    "job {:?} is defined neither on this daemon nor in Redis (looked for {} s)",
                    entry.record.job_id,
                    JOB_LOOKUP_FOR.as_secs()
                ),
            )),
        };
        match outcome {
            Ok(job) => {
                tracing::info!(job = %job.id, run = %entry.record.run_id, "took a job new to this daemon from redis for its run");
                state.args.store.cache_job(job.clone());
                accept(state, entry, job, reclaimed);
            }
            Err((status, why)) => {
                let mut record = entry.record;
                record.status = status;
                record.finished_at = Some(Utc::now());
                record.error = Some(why);
                settle(state, record, Some(entry.entry_id));
            }
        }
    }
    if !waiting.is_empty() {
        state.unknown_jobs.extend(waiting);
        if state.lookup_timer.is_none() {
            let timer = myself.send_after(JOB_LOOKUP_EVERY, || PoolMsg::LookUpJobs);
            state.lookup_timer = Some(AbortOnDrop::from(timer));
        }
    }
}

/// Has the run moved past this queue entry? For a reclaimed entry: its
/// run is final or on a later attempt (a RUNNING record of the same attempt
/// is the dead daemon's, which the takeover replaces). For a fresh entry:
/// the record is anywhere past the entry's PENDING (another copy runs it).
fn superseded(current: &ExecutionRecord, entry: &ExecutionRecord, reclaimed: bool) -> bool {
    if reclaimed {
        current.status.is_terminal() || current.attempt > entry.attempt
    } else {
        current.progress() > entry.progress()
    }
}

/// Reads the run queue for the pool while Redis is online: new entries up
/// to the pool's free capacity, entries of daemons whose lease is over,
/// and due retries moved onto the queue.
async fn read_queue(
    pool: ActorRef<PoolMsg>,
    q: QueueArgs,
    store: StoreHandle,
    mut capacity: watch::Receiver<usize>,
) {
    let mut conn = None;
    let mut group_ready = false;
    let mut last_reclaim = Instant::now();
    let mut last_promote = Instant::now();
    // A daemon whose lease is over (by this daemon's reading, so past the
    // margin too) fires nothing more: its entries are taken over once
    // they are idle for a lease (a live daemon renews its lease every
    // heartbeat, so one it holds is never that idle without its lease
    // over). Its own entries wait for the visibility timeout: the pool
    // touches those it runs only that often.
    let dead_idle = q.visibility.min(q.lease.ttl);
    // When Redis was last seen coming back (or this reader started): the
    // leases may have lapsed in the outage, so nothing is reclaimed until
    // every daemon holding entries that sees Redis again has had the time
    // to renew its own (it renews every ping; the heartbeat TTL, as the
    // resync waits, and the margin). One still away by then is reclaimed
    // from, as it would be from a daemon alone cut off. Longer, with
    // faults every few seconds the wait restarted before it ended: a
    // killed daemon's runs waited 90 s in the Jepsen run.
    let settle = PEER_TTL + q.lease.margin();
    let mut online_since = Instant::now();
    let mut was_online = true;
    // A read may have been answered with entries that never arrived here
    // (its reply lost): Redis then counts them this daemon's. Looked for
    // after every failed read and every return.
    let mut check_own = false;
    loop {
        if q.health.borrow().mode != Mode::Online {
            conn = None;
            group_ready = false;
            was_online = false;
            check_own = true;
            tokio::time::sleep(PROMOTE_EVERY).await;
            continue;
        }
        if check_own && group_ready {
            match q.redis.own_pending(&q.consumer, 1_000).await {
                Ok(entries) => {
                    check_own = false;
                    if !entries.is_empty() && pool.cast(PoolMsg::OwnPending(entries)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read this daemon's pending entries"),
            }
        }
        if !was_online {
            was_online = true;
            online_since = Instant::now();
            // Refresh what this daemon holds before anyone else may reclaim.
            if pool.cast(PoolMsg::Touch).is_err() {
                return;
            }
        }
        if !group_ready {
            group_ready = q.redis.ensure_queue().await.is_ok();
        }
        if last_promote.elapsed() >= PROMOTE_EVERY {
            last_promote = Instant::now();
            let _ = q.redis.promote_due_retries(Utc::now(), 1_000).await;
        }
        if store.pending_writes() >= WRITE_BACKLOG_MAX {
            tokio::time::sleep(BACKLOG_PAUSE).await;
            continue;
        }
        let free = *capacity.borrow_and_update();
        if free == 0 {
            let _ = tokio::time::timeout(PROMOTE_EVERY, capacity.changed()).await;
            continue;
        }
        if last_reclaim.elapsed() >= RECLAIM_EVERY && online_since.elapsed() >= settle {
            last_reclaim = Instant::now();
            let alive = q.health.borrow().peers.clone();
            match q
                .redis
                .reclaim(&q.consumer, q.visibility, dead_idle, free, &alive)
                .await
            {
                Ok(entries) if !entries.is_empty() => {
                    telemetry::reclaimed(entries.len());
                    if pool
                        .cast(PoolMsg::FromQueue {
                            entries,
                            reclaimed: true,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), capacity.changed()).await;
                    continue;
                }
                _ => {}
            }
        }
        if conn.is_none() {
            conn = blocking_connection(&q.url, QUEUE_BLOCK, q.connect_timeout)
                .await
                .ok();
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(PROMOTE_EVERY).await;
            continue;
        };
        match q.redis.read_runs(c, &q.consumer, free, QUEUE_BLOCK).await {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => {
                if pool
                    .cast(PoolMsg::FromQueue {
                        entries,
                        reclaimed: false,
                    })
                    .is_err()
                {
                    return;
                }
                // Wait for the pool to count them before reading more.
                let _ = tokio::time::timeout(Duration::from_secs(1), capacity.changed()).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "run queue read failed");
                conn = None;
                group_ready = false;
                check_own = true;
                tokio::time::sleep(PROMOTE_EVERY).await;
            }
        }
    }
}

fn finish_drain_if_idle(state: &mut PoolState) {
    if state.draining.is_none() {
        return;
    }
    let idle = state.slots.iter().all(|s| s.idle()) && state.delivering.is_empty();
    if idle
        && let Some(d) = &mut state.draining
        && let Some(reply) = d.reply.take()
    {
        let _ = reply.send(d.report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trigger;

    fn rec(attempt: u32, status: RunStatus) -> ExecutionRecord {
        let at = Utc::now();
        let mut r =
            ExecutionRecord::pending(RunId::for_tick("j", at), "j", Trigger::Schedule, at, 3, at);
        r.attempt = attempt;
        r.status = status;
        r
    }

    #[test]
    fn what_supersedes_a_queue_entry() {
        let entry = rec(2, RunStatus::Pending);
        // fresh entry: any progress past it means another copy has it
        assert!(!superseded(&rec(2, RunStatus::Pending), &entry, false));
        assert!(superseded(&rec(2, RunStatus::Running), &entry, false));
        assert!(superseded(&rec(2, RunStatus::Success), &entry, false));
        assert!(superseded(&rec(3, RunStatus::Pending), &entry, false));
        // reclaimed entry: the dead daemon's RUNNING is what it replaces
        assert!(!superseded(&rec(2, RunStatus::Running), &entry, true));
        assert!(superseded(&rec(2, RunStatus::Failed), &entry, true));
        assert!(superseded(&rec(3, RunStatus::Pending), &entry, true));
    }
}
