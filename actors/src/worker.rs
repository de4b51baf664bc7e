//! A Worker actor: executes one run at a time for the WorkerPool.
//!
//! The job's handler runs in a task of its own, which also applies the
//! timeout and catches a panic; a panic, an error, a timeout or a
//! cancellation becomes an [`AttemptOutcome`] that the task sends straight
//! to the pool (one message per run fewer than going through this actor),
//! so the worker itself never fails because of a job. The task is aborted
//! if the worker goes away. (A handler that blocks its thread instead of
//! awaiting also holds up its own timeout: handlers must be async.)

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::AbortOnDrop;
use crate::delivery::{Message, Outbox};
use crate::handler::{Registry, RunContext, RunNotes};
use crate::handles::StoreHandle;
use crate::record::{Counts, RunId, RunStatus, Trigger};
use crate::telemetry;
use crate::users::UserDirectory;
use crate::worker_pool::{PoolMsg, RunRequest};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The handler's counts, and the messages it left to send.
    Success(Counts, Vec<Message>),
    Failed(String),
    Cancelled,
}

pub enum WorkerMsg {
    Execute(Box<RunRequest>),
    Cancel(RunId),
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub index: usize,
    pub daemon_id: String,
    pub pool: ActorRef<PoolMsg>,
    pub registry: Arc<Registry>,
    pub store: StoreHandle,
    pub save_chat: Option<i64>,
    pub users: UserDirectory,
}

pub struct Worker;

struct Current {
    run_id: RunId,
    /// Set by the watcher just before it reports the outcome to the pool:
    /// from then on this worker is free for the next run.
    done: Arc<AtomicBool>,
    /// Ends the handler (dropped at its next await) and reports Cancelled.
    cancel: Option<oneshot::Sender<()>>,
    _task: AbortOnDrop,
}

impl Current {
    fn busy(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }
}

pub struct WorkerState {
    args: WorkerArgs,
    current: Option<Current>,
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
        Ok(WorkerState {
            args,
            current: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Execute(request) => start(state, *request),
            WorkerMsg::Cancel(run_id) => {
                if let Some(current) = &mut state.current
                    && current.run_id == run_id
                    && let Some(cancel) = current.cancel.take()
                {
                    let _ = cancel.send(());
                }
            }
        }
        Ok(())
    }
}

fn start(state: &mut WorkerState, mut request: RunRequest) {
    if let Some(current) = state.current.as_ref().filter(|c| c.busy()) {
        // The pool only hands work to idle workers; refuse rather than drop.
        tracing::error!(
            worker = state.args.index,
            busy_with = %current.run_id,
            refused = %request.record.run_id,
            "worker asked to run two runs at once; handing the new one back"
        );
        let _ = state.args.pool.cast(PoolMsg::Requeue(request));
        return;
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
    state.args.store.put_record(request.record.clone());
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
    let (cancel, cancelled) = oneshot::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let pool = state.args.pool.clone();
    let worker = state.args.index;
    let current_run = run_id.clone();
    // One task per run: the handler, its timeout, cancellation and panics
    // are all watched here (a second task and its wake-up per run cost
    // more than the run of a short job).
    let task = tokio::spawn(async move {
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
        let outcome = tokio::select! {
            biased;
            Ok(()) = cancelled => AttemptOutcome::Cancelled,
            ran = tokio::time::timeout(timeout, run) => match ran {
                Err(_) => AttemptOutcome::Failed(format!("timed out after {timeout:?}")),
                Ok(Ok(Ok(counts))) => AttemptOutcome::Success(counts, outbox.take()),
                Ok(Ok(Err(e))) => AttemptOutcome::Failed(e.to_string()),
                Ok(Err(panic)) => {
                    AttemptOutcome::Failed(format!("panicked: {}", panic_message(panic)))
                }
            },
        };
        // What the handler noted counts whatever the outcome (a failed
        // digest run still shows its window).
        let notes = notes.take();
        if notes.digest.is_some() {
            request.record.digest = notes.digest;
        }
        finished.store(true, Ordering::Release);
        let _ = pool.cast(PoolMsg::AttemptDone {
            worker,
            request,
            outcome,
        });
    });
    state.current = Some(Current {
        run_id: current_run,
        done,
        cancel: Some(cancel),
        _task: AbortOnDrop::from(task),
    });
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
