//! The WorkerPool actor: a queue of runs and N Worker actors, supervised.
//!
//! The pool hands a run to an idle worker, settles each attempt (SUCCESS,
//! a delayed retry, or FAILED after the last attempt), and keeps N workers:
//! a worker that fails is replaced and the run it held goes back to the
//! front of the queue, so a run never vanishes (ractor's factory would drop
//! it). On a restart the pool re-queues every unfinished record from the
//! store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::AbortOnDrop;
use crate::backoff::retry_delay;
use crate::handler::Registry;
use crate::handles::{NotifierHandle, SchedulerHandle, StoreHandle};
use crate::job::JobSpec;
use crate::record::{ExecutionRecord, RunId, RunStatus};
use crate::worker::{AttemptOutcome, Worker, WorkerArgs, WorkerMsg};

/// A run to execute: its record (carrying run id and attempt) and its job.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub record: ExecutionRecord,
    pub job: Arc<JobSpec>,
}

pub enum PoolMsg {
    Submit(RunRequest),
    /// A run the pool already holds, handed back by a worker that could
    /// not take it: goes to the front of the queue.
    Requeue(RunRequest),
    Cancel(RunId, RpcReplyPort<bool>),
    AttemptDone {
        worker: usize,
        request: RunRequest,
        outcome: AttemptOutcome,
    },
    RetryDue(RunId),
    /// Stop taking runs; let running ones finish within the grace, then
    /// cancel them. Replies when nothing is left.
    Drain {
        grace: Duration,
        reply: RpcReplyPort<DrainReport>,
    },
    DrainDeadline,
    Stats(RpcReplyPort<PoolStats>),
}

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
    pub worker_restarts: u64,
}

#[derive(Clone)]
pub struct PoolArgs {
    pub size: usize,
    pub registry: Arc<Registry>,
    pub store: StoreHandle,
    pub notifier: NotifierHandle,
    pub scheduler: SchedulerHandle,
}

pub struct WorkerPool;

struct Slot {
    worker: ActorRef<WorkerMsg>,
    id: ActorId,
    busy: Option<RunRequest>,
}

struct Draining {
    reply: Option<RpcReplyPort<DrainReport>>,
    report: DrainReport,
    _deadline: AbortOnDrop,
}

pub struct PoolState {
    args: PoolArgs,
    slots: Vec<Slot>,
    queue: VecDeque<RunRequest>,
    retries: HashMap<RunId, (RunRequest, AbortOnDrop)>,
    /// Runs this pool holds: queued, running or waiting to retry.
    known: HashSet<RunId>,
    draining: Option<Draining>,
    worker_restarts: u64,
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
        let mut state = PoolState {
            args,
            slots: Vec::new(),
            queue: VecDeque::new(),
            retries: HashMap::new(),
            known: HashSet::new(),
            draining: None,
            worker_restarts: 0,
        };
        for index in 0..state.args.size.max(1) {
            let slot = spawn_worker(&myself, &state.args, index).await?;
            state.slots.push(slot);
        }
        restore(&myself, &mut state).await;
        dispatch(&mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Submit(request) => submit(state, request),
            PoolMsg::Requeue(request) => {
                for slot in &mut state.slots {
                    if slot
                        .busy
                        .as_ref()
                        .is_some_and(|b| b.record.run_id == request.record.run_id)
                    {
                        slot.busy = None;
                    }
                }
                state.queue.push_front(request);
            }
            PoolMsg::AttemptDone {
                worker,
                request,
                outcome,
            } => attempt_done(&myself, state, worker, request, outcome),
            PoolMsg::RetryDue(run_id) => {
                if let Some((request, _timer)) = state.retries.remove(&run_id) {
                    state.queue.push_back(request);
                }
            }
            PoolMsg::Cancel(run_id, reply) => {
                let _ = reply.send(cancel(state, &run_id));
            }
            PoolMsg::Drain { grace, reply } => {
                let deadline = myself.send_after(grace, || PoolMsg::DrainDeadline);
                let mut draining = Draining {
                    reply: Some(reply),
                    report: DrainReport::default(),
                    _deadline: AbortOnDrop::from(deadline),
                };
                for request in std::mem::take(&mut state.queue) {
                    settle_cancelled(state, request, "cancelled: herald is shutting down");
                    draining.report.cancelled += 1;
                }
                for (_, (request, _timer)) in std::mem::take(&mut state.retries) {
                    settle_cancelled(state, request, "cancelled: herald is shutting down");
                    draining.report.cancelled += 1;
                }
                state.draining = Some(draining);
            }
            PoolMsg::DrainDeadline => {
                for slot in &state.slots {
                    if let Some(request) = &slot.busy {
                        let _ = slot
                            .worker
                            .cast(WorkerMsg::Cancel(request.record.run_id.clone()));
                    }
                }
            }
            PoolMsg::Stats(reply) => {
                let _ = reply.send(PoolStats {
                    workers: state.slots.len(),
                    busy: state.slots.iter().filter(|s| s.busy.is_some()).count(),
                    queued: state.queue.len(),
                    waiting_retry: state.retries.len(),
                    worker_restarts: state.worker_restarts,
                });
            }
        }
        dispatch(state);
        finish_drain_if_idle(state);
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
        tracing::warn!(worker = index, %reason, "worker died; replacing it");
        state.worker_restarts += 1;
        let slot = spawn_worker(&myself, &state.args, index).await?;
        let lost = std::mem::replace(&mut state.slots[index], slot).busy;
        if let Some(request) = lost {
            if state.draining.is_some() {
                settle_cancelled(state, request, "cancelled: worker died during shutdown");
            } else {
                // Same attempt again: the worker died, not the job.
                state.queue.push_front(request);
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
    index: usize,
) -> Result<Slot, ActorProcessingErr> {
    let worker_args = WorkerArgs {
        index,
        pool: pool.clone(),
        registry: args.registry.clone(),
        store: args.store.clone(),
        notifier: args.notifier.clone(),
    };
    let (worker, _) = Actor::spawn_linked(None, Worker, worker_args, pool.get_cell()).await?;
    Ok(Slot {
        id: worker.get_id(),
        worker,
        busy: None,
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
        let Some(job) = snapshot
            .jobs
            .iter()
            .find(|j| j.id == record.job_id)
            .cloned()
        else {
            record.status = RunStatus::Failed;
            record.finished_at = Some(now);
            record.error = Some(format!("job {:?} no longer exists", record.job_id));
            let _ = state.args.store.put_record(record.clone());
            let _ = state.args.scheduler.run_settled(record.job_id);
            continue;
        };
        let request = RunRequest { record, job };
        state.known.insert(request.record.run_id.clone());
        match request.record.retry_at {
            Some(at) if at > now => schedule_retry(myself, state, request, at),
            _ => state.queue.push_back(request),
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
    if state.known.insert(request.record.run_id.clone()) {
        state.queue.push_back(request);
    }
}

fn dispatch(state: &mut PoolState) {
    for slot in state.slots.iter_mut().filter(|s| s.busy.is_none()) {
        let Some(request) = state.queue.pop_front() else {
            return;
        };
        match slot.worker.cast(WorkerMsg::Execute(request.clone())) {
            Ok(()) => slot.busy = Some(request),
            Err(_) => {
                // The worker is dying; its replacement will take the run.
                state.queue.push_front(request);
            }
        }
    }
}

fn attempt_done(
    myself: &ActorRef<PoolMsg>,
    state: &mut PoolState,
    worker: usize,
    request: RunRequest,
    outcome: AttemptOutcome,
) {
    if let Some(slot) = state.slots.get_mut(worker)
        && slot
            .busy
            .as_ref()
            .is_some_and(|b| b.record.run_id == request.record.run_id)
    {
        slot.busy = None;
    }
    let mut record = request.record.clone();
    let now = Utc::now();
    record.finished_at = Some(now);
    record.duration_ms = record
        .started_at
        .map(|s| (now - s).num_milliseconds().max(0) as u64);
    if let Some(d) = &mut state.draining {
        match outcome {
            AttemptOutcome::Cancelled => d.report.cancelled += 1,
            _ => d.report.finished += 1,
        }
    }
    match outcome {
        AttemptOutcome::Success(counts) => {
            record.status = RunStatus::Success;
            record.counts = counts;
            record.error = None;
            settle(state, record);
        }
        AttemptOutcome::Cancelled => {
            record.status = RunStatus::Cancelled;
            record.error = Some(if state.draining.is_some() {
                "cancelled: still running at the shutdown deadline".to_string()
            } else {
                "cancelled".to_string()
            });
            settle(state, record);
        }
        AttemptOutcome::Failed(error) => {
            let job = request.job.clone();
            if record.attempt < job.retry.max_attempts && state.draining.is_none() {
                let next = record.attempt + 1;
                let delay = retry_delay(&job.retry, next, rand::random::<f64>());
                tracing::warn!(run = %record.run_id, attempt = record.attempt, %error, retry_in = ?delay, "attempt failed; retrying");
                record.status = RunStatus::Pending;
                record.attempt = next;
                record.error = Some(error);
                record.started_at = None;
                record.finished_at = None;
                record.duration_ms = None;
                let at = now + chrono::TimeDelta::from_std(delay).unwrap_or_default();
                record.retry_at = Some(at);
                let _ = state.args.store.put_record(record.clone());
                schedule_retry(myself, state, RunRequest { record, job }, at);
            } else {
                tracing::warn!(run = %record.run_id, attempt = record.attempt, %error, "run failed");
                record.status = RunStatus::Failed;
                record.error = Some(error);
                settle(state, record);
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

fn cancel(state: &mut PoolState, run_id: &RunId) -> bool {
    if let Some(pos) = state.queue.iter().position(|r| &r.record.run_id == run_id) {
        if let Some(request) = state.queue.remove(pos) {
            settle_cancelled(state, request, "cancelled");
        }
        return true;
    }
    if let Some((request, _timer)) = state.retries.remove(run_id) {
        settle_cancelled(state, request, "cancelled");
        return true;
    }
    if let Some(slot) = state
        .slots
        .iter()
        .find(|s| s.busy.as_ref().is_some_and(|b| &b.record.run_id == run_id))
    {
        let _ = slot.worker.cast(WorkerMsg::Cancel(run_id.clone()));
        return true;
    }
    false
}

fn settle_cancelled(state: &mut PoolState, request: RunRequest, why: &str) {
    let mut record = request.record;
    record.status = RunStatus::Cancelled;
    record.finished_at = Some(Utc::now());
    record.retry_at = None;
    record.error = Some(why.to_string());
    settle(state, record);
}

/// Writes a final record and tells the scheduler the run is over.
fn settle(state: &mut PoolState, record: ExecutionRecord) {
    state.known.remove(&record.run_id);
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
    let job_id = record.job_id.clone();
    if let Err(e) = state.args.store.put_record(record) {
        tracing::error!(error = %e, "could not record a finished run");
    }
    // If the scheduler is restarting it recounts from the store.
    let _ = state.args.scheduler.run_settled(job_id);
}

fn finish_drain_if_idle(state: &mut PoolState) {
    let idle = state.slots.iter().all(|s| s.busy.is_none());
    if idle
        && let Some(d) = &mut state.draining
        && let Some(reply) = d.reply.take()
    {
        let _ = reply.send(d.report);
    }
}
