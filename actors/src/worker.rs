//! A Worker actor: executes runs for the WorkerPool, one at a time, one
//! or a batch per message (see [`execute_batch`]).
//!
//! The job's handler runs inside the worker's own message handling, which
//! also applies the timeout and catches a panic; a panic, an error, a
//! timeout or a cancellation becomes an [`AttemptOutcome`] sent straight
//! to the pool, so the worker itself never fails because of a job. No task
//! is spawned per run: a spawn and its wake-up cost more than the run of a
//! short job, and a tick that starts a thousand runs pays them a thousand
//! times. Cancellation therefore does not wait in the worker's mailbox
//! (which is not read while a run is going): it comes through a oneshot
//! whose sender the pool keeps beside the run. If the worker goes away
//! mid-run, the handler is dropped with it. (A handler that blocks its
//! thread instead of awaiting also holds up its own timeout: handlers must
//! be async.)

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

use crate::delivery::{Message, Outbox};
use crate::handler::{Registry, RunContext, RunNotes};
use crate::handles::StoreHandle;
use crate::record::{Counts, RunId, RunStatus, Trigger};
use crate::telemetry;
use crate::users::UserDirectory;
use crate::worker_pool::{PoolMsg, RunRequest, SettledRun, SettledRuns, success_due, write_final};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The handler's counts, and the messages it left to send.
    Success(Counts, Vec<Message>),
    Failed(String),
    Cancelled,
}

pub enum WorkerMsg {
    /// Run these, one after the other (see `worker_pool::dispatch`); a
    /// batch of several comes with its ticket at the [`StartGate`].
    Execute(Vec<WorkerRun>, Option<GateTicket>),
}

/// The runs of one round of batches (one `worker_pool::dispatch`) not
/// started yet. A worker settles its batch's successes (their final
/// records, their Redis writes, the pool told) only once every batch of
/// its round has started: when a tick starts a thousand runs in one
/// round, that bookkeeping would otherwise share the two cores with the
/// starts still to come, and Redis with it. Later rounds are not waited
/// for: while a queue drains, the pool hands out a round each time
/// workers come free, and a gate over all of them would seldom open.
#[derive(Default)]
pub struct StartGate {
    unstarted: AtomicUsize,
    all_started: Notify,
}

/// How long a worker waits at the gate at most: a handler that blocks its
/// thread in its first poll holds up the other batches' starts, and their
/// settling should not wait for it much longer.
const GATE_WAIT_MAX: Duration = Duration::from_millis(20);

impl StartGate {
    /// A batch of `runs` handed out; the gate opens when its ticket is
    /// dropped.
    pub fn ticket(self: &Arc<Self>, runs: usize) -> GateTicket {
        self.unstarted.fetch_add(runs, Ordering::AcqRel);
        GateTicket {
            gate: Arc::clone(self),
            runs,
        }
    }

    /// Until every batch of the round has started (or been given back).
    async fn all_started(&self) {
        let notified = self.all_started.notified();
        let mut notified = pin!(notified);
        // Registered before the count is read, so the last start's
        // notification cannot fall between the two.
        notified.as_mut().enable();
        if self.unstarted.load(Ordering::Acquire) == 0 {
            return;
        }
        let _ = tokio::time::timeout(GATE_WAIT_MAX, notified).await;
    }
}

/// A batch's share of the [`StartGate`]'s count, given up when dropped:
/// by its worker once the batch has started or been given back, or with
/// the message or the worker, if either is lost.
pub struct GateTicket {
    gate: Arc<StartGate>,
    runs: usize,
}

impl GateTicket {
    /// The batch has started: its share goes, the gate stays to wait at.
    fn started(self) -> Arc<StartGate> {
        Arc::clone(&self.gate)
    }
}

impl Drop for GateTicket {
    fn drop(&mut self) {
        let before = self.gate.unstarted.fetch_sub(self.runs, Ordering::AcqRel);
        if before == self.runs {
            self.gate.all_started.notify_waiters();
        }
    }
}

pub struct WorkerRun {
    pub request: RunRequest,
    /// A message here ends the run, or keeps it from starting; the sender
    /// dropped without one does neither.
    pub cancel: oneshot::Receiver<()>,
}

/// A run over with a success and nothing to send, its record final, to be
/// settled by the worker (see [`settle_successes`]).
struct Succeeded {
    request: RunRequest,
    finished: chrono::DateTime<Utc>,
    duration_ms: u64,
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub index: usize,
    pub daemon_id: String,
    pub pool: ActorRef<PoolMsg>,
    /// Where this worker's settled runs wait for the pool.
    pub settled: Arc<SettledRuns>,
    pub registry: Arc<Registry>,
    pub store: StoreHandle,
    pub save_chat: Option<i64>,
    pub users: UserDirectory,
}

pub struct Worker;

pub struct WorkerState {
    args: WorkerArgs,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState { args })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Execute(runs, ticket) => execute_batch(state, runs, ticket).await,
        }
        Ok(())
    }
}

/// Runs a batch back to back. The successes' settling (their final
/// records, the pool told) waits until every run of the batch has
/// started, and, for a batch, until every batch of its round has (see
/// [`StartGate`]): when a tick starts a thousand runs, each one's start
/// no longer waits for the bookkeeping of all those before it. If a run
/// is still going after its first poll, the runs behind it go back to
/// the pool for other workers, and what waits to be settled is settled
/// then.
async fn execute_batch(state: &WorkerState, runs: Vec<WorkerRun>, mut ticket: Option<GateTicket>) {
    let mut succeeded = Unsettled {
        state,
        runs: Vec::new(),
    };
    let mut rest = runs.into_iter();
    while let Some(WorkerRun { request, cancel }) = rest.next() {
        let ran = execute(state, request, cancel, || {
            let not_started: Vec<RunId> = rest.by_ref().map(|r| r.request.record.run_id).collect();
            if !not_started.is_empty() {
                let _ = state.args.pool.cast(PoolMsg::NotStarted {
                    worker: state.args.index,
                    runs: not_started,
                });
            }
            drop(ticket.take());
            succeeded.settle();
        })
        .await;
        if let Some(done) = ran {
            succeeded.runs.push(done);
        }
    }
    let gate = ticket.map(GateTicket::started);
    if let Some(gate) = gate
        && !succeeded.runs.is_empty()
    {
        gate.all_started().await;
    }
    succeeded.settle();
}

/// Successes waiting to be settled. Settled when dropped too: if the
/// worker is stopped while it waits its turn, runs that are over are
/// recorded as over, not run again.
struct Unsettled<'a> {
    state: &'a WorkerState,
    runs: Vec<Succeeded>,
}

impl Unsettled<'_> {
    fn settle(&mut self) {
        settle_successes(self.state, std::mem::take(&mut self.runs));
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.settle();
    }
}

/// One attempt. A success with nothing to send comes back to be settled
/// with others; any other outcome goes to the pool. `still_running` is
/// called if the run is not over at its first poll.
async fn execute(
    state: &WorkerState,
    mut request: RunRequest,
    mut cancelled: oneshot::Receiver<()>,
    still_running: impl FnOnce(),
) -> Option<Succeeded> {
    if cancelled.try_recv().is_ok() {
        // Cancelled while it waited behind others of its batch.
        let _ = state.args.pool.cast(PoolMsg::AttemptDone {
            worker: state.args.index,
            request,
            outcome: AttemptOutcome::Cancelled,
        });
        return None;
    }
    request.record.status = RunStatus::Running;
    let now = Utc::now();
    request.record.started_at = Some(now);
    // Lateness is the scheduler's: a tick's first attempt, on time or
    // caught up. Retries and manual runs start when they are meant to.
    if request.record.attempt == 1
        && matches!(
            request.record.trigger,
            Trigger::Schedule | Trigger::Misfire | Trigger::Queued
        )
    {
        let late = (now - request.record.scheduled_at)
            .to_std()
            .unwrap_or_default();
        telemetry::run_started_late(&request.record.job_id, late);
    }
    request.record.retry_at = None;
    request.record.daemon = Some(state.args.daemon_id.clone());
    let run_id = request.record.run_id.clone();
    let handler = state.args.registry.resolve(&request.job.kind);
    let outbox = Outbox::default();
    let notes = RunNotes::default();
    let ctx = RunContext {
        run_id: run_id.clone(),
        job: request.job.clone(),
        scheduled_at: request.record.scheduled_at,
        attempt: request.record.attempt,
        outbox: outbox.clone(),
        save_chat: state.args.save_chat,
        users: state.args.users.clone(),
        store: state.args.store.clone(),
        config: state.args.registry.config(&request.job.id),
        notes: notes.clone(),
    };
    let timeout = request.job.timeout;
    // Everything the job logs carries its job and run ids.
    let span = tracing::info_span!("run", job = %request.job.id, run = %run_id, attempt = request.record.attempt);
    let run = async move {
        match handler {
            Ok(handler) => {
                AssertUnwindSafe(handler.run(ctx).instrument(span))
                    .catch_unwind()
                    .await
            }
            Err(e) => Ok(Err(e)),
        }
    };
    let attempt = async {
        tokio::select! {
            biased;
            // A sender dropped without a word is not a cancellation.
            Ok(()) = cancelled => AttemptOutcome::Cancelled,
            ran = tokio::time::timeout(timeout, run) => match ran {
                Err(_) => AttemptOutcome::Failed(format!("timed out after {timeout:?}")),
                Ok(Ok(Ok(counts))) => AttemptOutcome::Success(counts, outbox.take()),
                Ok(Ok(Err(e))) => AttemptOutcome::Failed(e.to_string()),
                Ok(Err(panic)) => {
                    AttemptOutcome::Failed(format!("panicked: {}", panic_message(panic)))
                }
            },
        }
    };
    let mut attempt = pin!(attempt);
    // The RUNNING record is written only for a run still going after its
    // first poll: one over at once (most short jobs) has its next record
    // written right after this by the worker or the pool, and its RUNNING
    // one would only be replaced in the same flush.
    let outcome = match poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => {
            state.args.store.put_record(request.record.clone());
            still_running();
            attempt.await
        }
    };
    // What the handler noted counts whatever the outcome (a failed
    // digest run still shows its window).
    let notes = notes.take();
    if notes.digest.is_some() {
        request.record.digest = notes.digest;
    }
    if let AttemptOutcome::Success(counts, messages) = &outcome
        && messages.is_empty()
    {
        let finished = Utc::now();
        let record = &mut request.record;
        let duration_ms = record.finish_at(finished).unwrap_or(0);
        record.status = RunStatus::Success;
        record.counts = *counts;
        record.error = None;
        return Some(Succeeded {
            request,
            finished,
            duration_ms,
        });
    }
    let _ = state.args.pool.cast(PoolMsg::AttemptDone {
        worker: state.args.index,
        request,
        outcome,
    });
    None
}

/// A success with nothing to send is final here: the worker writes its
/// record and acknowledges its entry, and the pool only learns that the
/// worker is free (see [`PoolMsg::Settled`]).
fn settle_successes(state: &WorkerState, succeeded: Vec<Succeeded>) {
    if succeeded.is_empty() {
        return;
    }
    let mut settled = Vec::with_capacity(succeeded.len());
    for Succeeded {
        request,
        finished,
        duration_ms,
    } in succeeded
    {
        let RunRequest {
            record,
            job,
            entry_id,
        } = request;
        success_due(&job, finished);
        settled.push(SettledRun {
            worker: state.args.index,
            run_id: record.run_id.clone(),
            job_id: record.job_id.clone(),
            duration_ms,
        });
        write_final(&state.args.store, record, entry_id);
    }
    if state.args.settled.push(settled) {
        // Fails only if the pool is gone, and its workers with it.
        let _ = state.args.pool.cast(PoolMsg::Settled);
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
