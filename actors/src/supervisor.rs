//! The RootSupervisor: starts ExecutionStore, Notifier, WorkerPool and
//! Scheduler, restarts a child that fails (one-for-one), and gives up when
//! one child fails more than the restart limit allows within its window.
//!
//! ractor has no restart strategies (its default stops the supervisor on
//! any child exit), so this is written here: each child is restarted with
//! the arguments it first got, which point at state that outlives it (the
//! shared memory store, handles through the directory), and rebuilds what
//! it needs in `pre_start`. Past the limit the supervisor logs which actor
//! failed and why, stops the tree and reports [`TreeExit::Failed`], and the
//! daemon exits non-zero so systemd restarts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;

use crate::execution_store::{ExecutionStore, StoreArgs};
use crate::handles::{Directory, SchedulerHandle};
use crate::notifier::{Notifier, NotifierArgs};
use crate::restart::{RestartLimit, RestartTracker};
use crate::scheduler::{Scheduler, SchedulerArgs};
use crate::worker_pool::{DrainReport, PoolArgs, PoolMsg, WorkerPool};

/// The supervised children, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Child {
    ExecutionStore,
    Notifier,
    WorkerPool,
    Scheduler,
}

impl Child {
    pub const ALL: [Child; 4] = [
        Child::ExecutionStore,
        Child::Notifier,
        Child::WorkerPool,
        Child::Scheduler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Child::ExecutionStore => "execution_store",
            Child::Notifier => "notifier",
            Child::WorkerPool => "worker_pool",
            Child::Scheduler => "scheduler",
        }
    }
}

/// How the tree ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeExit {
    Running,
    /// Stopped by a shutdown request.
    Stopped,
    /// A child failed past the restart limit.
    Failed {
        actor: &'static str,
        reason: String,
    },
}

pub enum RootMsg {
    /// Graceful shutdown: stop firing, drain the pool within `grace`.
    Shutdown {
        grace: Duration,
        reply: RpcReplyPort<DrainReport>,
    },
    /// Fault injection for tests and chaos drills: kill a child as a crash
    /// would, so the restart path runs.
    Kill(Child),
}

/// What the children are built from; cloned into every restart.
#[derive(Clone)]
pub struct TreeArgs {
    pub store: StoreArgs,
    pub notifier: NotifierArgs,
    pub pool: PoolArgs,
    pub scheduler: SchedulerArgs,
    pub scheduler_handle: SchedulerHandle,
    pub directory: Arc<Directory>,
    pub restart_limit: RestartLimit,
    pub exit: watch::Sender<TreeExit>,
}

pub struct RootSupervisor;

pub struct RootState {
    args: TreeArgs,
    children: Vec<(Child, ActorCell)>,
    tracker: RestartTracker,
    shutting_down: bool,
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = TreeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: TreeArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            tracker: RestartTracker::new(args.restart_limit),
            args,
            children: Vec::new(),
            shutting_down: false,
        };
        for child in Child::ALL {
            let cell = spawn_child(&myself, &state.args, child).await?;
            state.children.push((child, cell));
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.exit.send_if_modified(|exit| {
            if *exit == TreeExit::Running {
                *exit = TreeExit::Stopped;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Shutdown { grace, reply } => {
                state.shutting_down = true;
                if let Err(e) = state.args.scheduler_handle.stop_firing().await {
                    tracing::warn!(error = %e, "scheduler did not stop cleanly");
                }
                let report = drain_pool(state, grace).await;
                tracing::info!(
                    finished = report.finished,
                    cancelled = report.cancelled,
                    "worker pool drained"
                );
                stop_children(state).await;
                let _ = reply.send(report);
                state.args.exit.send_replace(TreeExit::Stopped);
                myself.stop(None);
            }
            RootMsg::Kill(child) => {
                if let Some((_, cell)) = state.children.iter().find(|(c, _)| *c == child) {
                    tracing::warn!(actor = child.name(), "killing actor (fault injection)");
                    cell.kill();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "stopped unexpectedly".to_string()),
            ),
            _ => return Ok(()),
        };
        if state.shutting_down {
            return Ok(());
        }
        let Some(index) = state
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let child = state.children[index].0;
        clear_directory(&state.args.directory, child);
        let mut reason = reason;
        loop {
            if !state.tracker.allow_restart(child.name(), Instant::now()) {
                let limit = state.args.restart_limit;
                tracing::error!(
                    actor = child.name(),
                    %reason,
                    max_restarts = limit.max_restarts,
                    window = ?limit.window,
                    "actor failed past its restart limit; shutting herald down"
                );
                state.shutting_down = true;
                state.args.exit.send_replace(TreeExit::Failed {
                    actor: child.name(),
                    reason,
                });
                for (_, cell) in state.children.iter().rev() {
                    let _ = cell.stop_and_wait(None, Some(Duration::from_secs(5))).await;
                }
                myself.stop(Some(format!(
                    "{} failed past its restart limit",
                    child.name()
                )));
                return Ok(());
            }
            tracing::warn!(actor = child.name(), %reason, "actor failed; restarting it");
            crate::telemetry::actor_restarted(child.name());
            match spawn_child(&myself, &state.args, child).await {
                Ok(cell) => {
                    state.children[index].1 = cell;
                    return Ok(());
                }
                Err(e) => reason = format!("restart failed: {e}"),
            }
        }
    }
}

/// Stops the children in reverse start order. The store is drained rather
/// than stopped: `stop` would discard the writes still in its mailbox, and
/// its `post_stop` flushes them to Redis.
async fn stop_children(state: &RootState) {
    for (child, cell) in state.children.iter().rev() {
        let done = if *child == Child::ExecutionStore {
            cell.drain_and_wait(Some(Duration::from_secs(10)))
                .await
                .is_ok()
        } else {
            cell.stop_and_wait(None, Some(Duration::from_secs(5)))
                .await
                .is_ok()
        };
        if !done {
            tracing::warn!(actor = child.name(), "did not stop in time; killing it");
            cell.kill();
        }
    }
}

async fn drain_pool(state: &RootState, grace: Duration) -> DrainReport {
    let Some(pool) = state
        .children
        .iter()
        .find(|(c, _)| *c == Child::WorkerPool)
        .map(|(_, cell)| ActorRef::<PoolMsg>::from(cell.clone()))
    else {
        return DrainReport::default();
    };
    // The pool answers by the grace deadline plus the time cancelled runs
    // take to report; give it a margin beyond that before giving up.
    let wait = grace + Duration::from_secs(10);
    match pool
        .call(|reply| PoolMsg::Drain { grace, reply }, Some(wait))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(report)) => report,
        _ => {
            tracing::error!("worker pool did not drain in time");
            DrainReport::default()
        }
    }
}

fn clear_directory(dir: &Directory, child: Child) {
    match child {
        Child::ExecutionStore => dir.set_store(None),
        Child::Notifier => dir.set_notifier(None),
        Child::WorkerPool => dir.set_pool(None),
        Child::Scheduler => dir.set_scheduler(None),
    }
}

async fn spawn_child(
    root: &ActorRef<RootMsg>,
    args: &TreeArgs,
    child: Child,
) -> Result<ActorCell, ActorProcessingErr> {
    let supervisor = root.get_cell();
    let dir = &args.directory;
    Ok(match child {
        Child::ExecutionStore => {
            let (r, _) =
                Actor::spawn_linked(None, ExecutionStore, args.store.clone(), supervisor).await?;
            dir.set_store(Some(r.clone()));
            r.get_cell()
        }
        Child::Notifier => {
            let (r, _) =
                Actor::spawn_linked(None, Notifier, args.notifier.clone(), supervisor).await?;
            dir.set_notifier(Some(r.clone()));
            r.get_cell()
        }
        Child::WorkerPool => {
            let (r, _) =
                Actor::spawn_linked(None, WorkerPool, args.pool.clone(), supervisor).await?;
            dir.set_pool(Some(r.clone()));
            r.get_cell()
        }
        Child::Scheduler => {
            let (r, _) =
                Actor::spawn_linked(None, Scheduler, args.scheduler.clone(), supervisor).await?;
            dir.set_scheduler(Some(r.clone()));
            r.get_cell()
        }
    })
}
