//! Building the tree from plain data and holding the running parts.
//!
//! `TreeConfig` + jobs + registry + transport -> [`spawn_tree`] ->
//! [`Herald`], which holds the handles to talk to the tree and the one way
//! to stop it ([`Herald::shutdown`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::execution_store::SharedMemory;
use crate::handler::Registry;
use crate::handles::{
    DEFAULT_CALL_TIMEOUT, Directory, NotifierHandle, PoolHandle, SchedulerHandle, StoreHandle,
};
use crate::job::{JobKind, JobSpec};
use crate::memory::{MemoryStore, StoreLimits};
use crate::notifier::Transport;
use crate::restart::RestartLimit;
use crate::scheduler::SchedulerArgs;
use crate::supervisor::{Child, RootMsg, RootSupervisor, TreeArgs, TreeExit};
use crate::worker_pool::{DrainReport, PoolArgs};

/// Default worker count: runs mostly wait on the network (Telegram, HTTP
/// services), so more workers than cores.
pub const DEFAULT_WORKERS: usize = 16;
/// A tick more than this late is a misfire, not a late fire.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown lets running runs finish before cancelling them; well
/// inside systemd's default 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything the tree needs besides jobs and code. Plain data.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    pub workers: usize,
    pub misfire_grace: Duration,
    pub shutdown_grace: Duration,
    pub restart_limit: RestartLimit,
    pub store_limits: StoreLimits,
    pub call_timeout: Duration,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            workers: DEFAULT_WORKERS,
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            restart_limit: RestartLimit::default(),
            store_limits: StoreLimits::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("job {job:?} names handler {handler:?}, which is not registered")]
    UnknownHandler { job: String, handler: String },
    #[error("the actor tree did not start: {0}")]
    Spawn(String),
}

/// The running tree.
pub struct Herald {
    root: ActorRef<RootMsg>,
    exit: watch::Receiver<TreeExit>,
    shutdown_grace: Duration,
    memory: SharedMemory,
    pub scheduler: SchedulerHandle,
    pub store: StoreHandle,
    pub pool: PoolHandle,
    pub notifier: NotifierHandle,
}

/// Starts the tree on a fresh in-memory store.
pub async fn spawn_tree(
    config: TreeConfig,
    jobs: Vec<JobSpec>,
    registry: Registry,
    transport: Arc<dyn Transport>,
) -> Result<Herald, TreeError> {
    let memory = Arc::new(Mutex::new(MemoryStore::new(config.store_limits)));
    spawn_tree_on(config, jobs, registry, transport, memory).await
}

/// Starts the tree on an existing store: what a restart of the daemon finds
/// (last ticks, unfinished runs) is resumed from it.
pub async fn spawn_tree_on(
    config: TreeConfig,
    jobs: Vec<JobSpec>,
    registry: Registry,
    transport: Arc<dyn Transport>,
    memory: SharedMemory,
) -> Result<Herald, TreeError> {
    for job in &jobs {
        if let JobKind::Coded { handler } = &job.kind
            && !registry.contains(handler)
        {
            return Err(TreeError::UnknownHandler {
                job: job.id.clone(),
                handler: handler.clone(),
            });
        }
    }
    {
        let mut mem = memory.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs {
            mem.put_job(Arc::new(job));
        }
    }
    let directory = Arc::new(Directory::default());
    let timeout = config.call_timeout;
    let store = StoreHandle::new(directory.clone(), timeout);
    let notifier = NotifierHandle::new(directory.clone(), timeout);
    let pool = PoolHandle::new(directory.clone(), timeout);
    let scheduler = SchedulerHandle::new(directory.clone(), timeout);
    let (exit_tx, exit) = watch::channel(TreeExit::Running);
    let args = TreeArgs {
        memory: memory.clone(),
        transport,
        pool: PoolArgs {
            size: config.workers.max(1),
            registry: Arc::new(registry),
            store: store.clone(),
            notifier: notifier.clone(),
            scheduler: scheduler.clone(),
        },
        scheduler: SchedulerArgs {
            misfire_grace: config.misfire_grace,
            store: store.clone(),
            pool: pool.clone(),
        },
        scheduler_handle: scheduler.clone(),
        directory,
        restart_limit: config.restart_limit,
        exit: exit_tx,
    };
    let (root, _) = Actor::spawn(None, RootSupervisor, args)
        .await
        .map_err(|e| TreeError::Spawn(e.to_string()))?;
    Ok(Herald {
        root,
        exit,
        shutdown_grace: config.shutdown_grace,
        memory,
        scheduler,
        store,
        pool,
        notifier,
    })
}

impl Herald {
    /// Stops firing, lets running runs finish within the shutdown grace,
    /// cancels the rest (CANCELLED), and stops every actor.
    pub async fn shutdown(self) -> DrainReport {
        let grace = self.shutdown_grace;
        let wait = grace + Duration::from_secs(30);
        let report = match self
            .root
            .call(|reply| RootMsg::Shutdown { grace, reply }, Some(wait))
            .await
        {
            Ok(CallResult::Success(report)) => report,
            _ => DrainReport::default(),
        };
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            exit.wait_for(|e| *e != TreeExit::Running),
        )
        .await;
        report
    }

    /// Resolves when the tree stops by itself: a child failed past its
    /// restart limit (or the tree was stopped from elsewhere).
    pub async fn stopped(&self) -> TreeExit {
        let mut exit = self.exit.clone();
        match exit.wait_for(|e| *e != TreeExit::Running).await {
            Ok(e) => e.clone(),
            Err(_) => TreeExit::Stopped,
        }
    }

    /// How the tree stands now.
    pub fn exit_status(&self) -> TreeExit {
        self.exit.borrow().clone()
    }

    /// Fault injection: kill a child as a crash would.
    pub fn kill(&self, child: Child) {
        let _ = self.root.cast(RootMsg::Kill(child));
    }

    /// The backing store, to hand to a later tree (a simulated restart).
    pub fn memory(&self) -> SharedMemory {
        self.memory.clone()
    }
}
