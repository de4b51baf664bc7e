//! Building the tree from plain data and holding the running parts.
//!
//! `TreeConfig` + jobs + registry + transport -> [`spawn_tree`] ->
//! [`Herald`], which holds the handles to talk to the tree and the one way
//! to stop it ([`Herald::shutdown`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::AbortOnDrop;
use crate::custom_jobs::{CustomJobs, JobContext};
use crate::digest::{DigestInbox, DigestJob, DigestProfile};
use crate::execution_store::{
    DEFAULT_MAX_PENDING, PendingWrites, RedisLink, SharedMemory, SharedPending, StoreData,
};
use crate::handler::Registry;
use crate::handles::{
    DEFAULT_CALL_TIMEOUT, Directory, NotifierHandle, PoolHandle, SchedulerHandle, StoreHandle,
};
use crate::health::{
    Health, LeaseClock, LeaseTiming, Mode, PING_TIMEOUT, PeerLeases, first_beat, release_lease,
    watch_redis,
};
use crate::job::{Definitions, JobId, JobKind, JobSpec};
use crate::ledger::DeliveryLedger;
use crate::memory::{MemoryStore, StoreLimits};
use crate::notifier::{NotifierArgs, TelegramLimits, Transport, Webhooks};
use crate::redis_backend::connect::redacted_url;
use crate::redis_backend::{
    BackendError, JobOrigin, PendingWrite, RedisSettings, RedisStore, connect, sync_job,
};
use crate::restart::RestartLimit;
use crate::scheduler::Cluster;
use crate::scheduler::SchedulerArgs;
use crate::subscriptions::Subscriptions;
use crate::supervisor::{Child, RootMsg, RootSupervisor, TreeArgs, TreeExit};
use crate::telemetry;
use crate::users::UserDirectory;
use crate::webhook::{WebhookEndpoint, WebhookSender};
use crate::won_claims::{MAX_WON, WonClaims};
use crate::worker_pool::{DEFAULT_VISIBILITY_TIMEOUT, DrainReport, PoolArgs, QueueArgs};

/// Default worker count: runs mostly wait on the network (Telegram, HTTP
/// services), so more workers than cores.
pub const DEFAULT_WORKERS: usize = 16;
/// Runs waiting for a worker in this daemon's own queue (offline, or
/// started by hand) at most; past it a new run is recorded FAILED.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;
/// A tick more than this late is a misfire, not a late fire.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown lets running runs finish before cancelling them; well
/// inside systemd's default 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything the tree needs besides jobs and code. Plain data.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    pub workers: usize,
    /// Bound of the pool's local queue (memory stays bounded offline).
    pub max_queued: usize,
    pub misfire_grace: Duration,
    pub shutdown_grace: Duration,
    pub restart_limit: RestartLimit,
    pub store_limits: StoreLimits,
    pub call_timeout: Duration,
    /// Shared state in Redis; None runs on memory alone.
    pub redis: Option<RedisSettings>,
    /// This daemon's name among those sharing Redis (default: host, pid and
    /// a random suffix).
    pub daemon_id: Option<String>,
    /// How often a daemon touches the run-queue entries it runs, and how
    /// long one of its own entries stays idle before it takes it back
    /// (one whose run it lost). A dead daemon's entries are taken over
    /// once its lease is over.
    pub visibility_timeout: Duration,
    /// Lease TTL and the clock skew allowed between daemons.
    pub lease: LeaseTiming,
    /// Telegram's limits as kept by the Notifier.
    pub telegram_limits: TelegramLimits,
    /// The owner chat `save` deliveries go to.
    pub save_chat: Option<i64>,
    /// Webhook endpoints messages may be posted to.
    pub webhooks: Vec<WebhookEndpoint>,
    /// Zone of custom jobs that name none.
    pub default_timezone: chrono_tz::Tz,
    /// Digest profiles: each schedule of each runs as a job.
    pub digests: Vec<DigestProfile>,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            workers: DEFAULT_WORKERS,
            max_queued: DEFAULT_MAX_QUEUED,
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            restart_limit: RestartLimit::default(),
            store_limits: StoreLimits::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            redis: None,
            daemon_id: None,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            lease: LeaseTiming::default(),
            telegram_limits: TelegramLimits::default(),
            save_chat: None,
            webhooks: Vec::new(),
            default_timezone: chrono_tz::UTC,
            digests: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("job {job:?} names handler {handler:?}, which is not registered")]
    UnknownHandler { job: String, handler: String },
    #[error("job id {0:?} is defined twice (a digest schedule and another job)")]
    DuplicateJob(String),
    #[error("the actor tree did not start: {0}")]
    Spawn(String),
    #[error(transparent)]
    Redis(#[from] crate::redis_backend::connect::RedisSetupError),
}

/// The Redis watcher's task, and what giving up the lease needs.
struct Watcher {
    stop: watch::Sender<bool>,
    _task: AbortOnDrop,
    url: String,
    keys: crate::redis_backend::Keys,
    lease: Arc<LeaseClock>,
}

/// The running tree.
pub struct Herald {
    root: ActorRef<RootMsg>,
    exit: watch::Receiver<TreeExit>,
    shutdown_grace: Duration,
    memory: SharedMemory,
    daemon_id: String,
    health: watch::Receiver<Health>,
    redis: Option<RedisStore>,
    watcher: Option<Watcher>,
    /// Samples the gauges nothing else updates (queue, store buffer).
    _sampler: AbortOnDrop,
    pub scheduler: SchedulerHandle,
    pub store: StoreHandle,
    pub pool: PoolHandle,
    pub notifier: NotifierHandle,
    /// Users and packs (targeting).
    pub users: UserDirectory,
    /// Custom message jobs: create, edit, enable/disable, delete.
    pub custom_jobs: CustomJobs,
    /// Digest profiles and their inboxes.
    pub digests: Digests,
    subscriptions: std::sync::Mutex<Option<AbortOnDrop>>,
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
    // Jobs added to the registry run on their default definitions, unless
    // the caller defines the same id (config wins; Redis keeps edits).
    let mut jobs = jobs;
    let mut registry = registry;
    for spec in registry.definitions() {
        if !jobs.iter().any(|j| j.id == spec.id) {
            jobs.push(spec.clone());
        }
    }
    let daemon_id = config.daemon_id.clone().unwrap_or_else(default_daemon_id);
    let mut health = Health {
        mode: Mode::Offline,
        peers: BTreeSet::from([daemon_id.clone()]),
        stale: BTreeSet::new(),
        jobs_version: 0,
        epoch: None,
    };
    let lease = LeaseClock::new(config.lease);
    let mut peer_leases = PeerLeases::default();
    let redis = match &config.redis {
        Some(settings) => {
            let store = RedisStore::new(connect(settings)?, &settings.prefix, config.store_limits);
            Some((settings.clone(), store))
        }
        None => None,
    };
    let digests = Digests {
        profiles: Arc::new(config.digests.iter().cloned().map(Arc::new).collect()),
        inbox: DigestInbox::new(redis.as_ref().map(|(_, r)| r.clone())),
    };
    for profile in digests.profiles.iter() {
        for (schedule, spec) in profile.schedules.iter().zip(profile.jobs()) {
            if jobs.iter().any(|j| j.id == spec.id) || registry.contains(&spec.id) {
                return Err(TreeError::DuplicateJob(spec.id.to_string()));
            }
            registry.register(
                spec.id.to_string(),
                DigestJob {
                    profile: profile.clone(),
                    schedule: schedule.name.clone(),
                    inbox: digests.inbox.clone(),
                },
            );
            jobs.push(spec);
        }
    }
    for job in &jobs {
        if let JobKind::Coded { handler } = &job.kind
            && !registry.contains(handler)
        {
            return Err(TreeError::UnknownHandler {
                job: job.id.to_string(),
                handler: handler.clone(),
            });
        }
    }
    let mut last_ticks = HashMap::new();
    // One copy of each defined job, shared by the definitions, the store's
    // memory and the scheduler (unless an operator's edit makes it differ).
    let mut jobs: Vec<Arc<JobSpec>> = jobs.into_iter().map(Arc::new).collect();
    let definitions = Definitions::new(jobs.clone());
    if let Some((settings, store)) = &redis {
        let reachable = matches!(
            tokio::time::timeout(PING_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        let synced = if reachable {
            sync_jobs(store, &jobs).await
        } else {
            Err(BackendError::Unavailable("no answer to PING".into()))
        };
        match synced {
            Ok((effective, ticks)) => {
                tracing::info!(url = %redacted_url(&settings.url), jobs = effective.len(), "redis reachable: online; jobs synced");
                jobs = effective;
                last_ticks = ticks;
                health.mode = Mode::Online;
                // What this start-up read: only later writes mean edits.
                health.jobs_version = store.jobs_version().await.unwrap_or(0);
                if let Some((peers, stale)) = first_beat(
                    &settings.url,
                    store.keys(),
                    &daemon_id,
                    &lease,
                    &mut peer_leases,
                )
                .await
                {
                    health.peers = peers;
                    health.stale = stale;
                }
            }
            Err(e) => {
                tracing::warn!(url = %redacted_url(&settings.url), error = %e, "redis unreachable at start-up: starting offline from config")
            }
        }
    }
    {
        let mut mem = memory.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs {
            mem.put_job(job);
        }
        for (id, at) in last_ticks {
            mem.set_last_tick(&id, at);
        }
    }
    let (health_tx, health_rx) = watch::channel(health.clone());
    let directory = Arc::new(Directory::default());
    let timeout = config.call_timeout;
    let pending = Arc::new(Mutex::new(PendingWrites::new(DEFAULT_MAX_PENDING)));
    let link = redis.as_ref().map(|(_, redis_store)| RedisLink {
        store: redis_store.clone(),
        pending: pending.clone(),
        health: health_rx.clone(),
        definitions: definitions.clone(),
    });
    let store_data = Arc::new(StoreData::new(memory.clone(), link));
    let store = StoreHandle::new(directory.clone(), timeout, store_data.clone());
    let notifier = NotifierHandle::new(directory.clone(), timeout);
    let pool = PoolHandle::new(directory.clone(), timeout);
    let scheduler = SchedulerHandle::new(directory.clone(), timeout);
    let (exit_tx, exit) = watch::channel(TreeExit::Running);
    let won = WonClaims::new(MAX_WON);
    let ledger = DeliveryLedger::new(
        redis.as_ref().map(|(_, r)| (r.clone(), health_rx.clone())),
        daemon_id.clone(),
    );
    let cluster = redis.as_ref().map(|(_, redis_store)| Cluster {
        redis: redis_store.clone(),
        daemon_id: daemon_id.clone(),
        health: health_rx.clone(),
        lease: lease.clone(),
        won: won.clone(),
        ledger: ledger.clone(),
    });
    let queue = redis.as_ref().map(|(settings, redis_store)| QueueArgs {
        redis: redis_store.clone(),
        url: settings.url.clone(),
        consumer: daemon_id.clone(),
        visibility: config.visibility_timeout,
        lease: config.lease,
        connect_timeout: settings.connect_timeout,
        health: health_rx.clone(),
        won: won.clone(),
    });
    let webhooks = Webhooks {
        sender: WebhookSender::new(),
        endpoints: config
            .webhooks
            .iter()
            .map(|w| (w.name.clone(), w.clone()))
            .collect(),
    };
    let custom_jobs = CustomJobs {
        scheduler: scheduler.clone(),
        context: JobContext {
            default_timezone: Some(config.default_timezone),
            save_chat: config.save_chat,
            webhooks: config.webhooks.iter().map(|w| w.name.clone()).collect(),
        },
        defined: definitions,
    };
    let users = UserDirectory::new(redis.as_ref().map(|(_, r)| (r.clone(), health_rx.clone())));
    let args = TreeArgs {
        store: store_data,
        notifier: NotifierArgs {
            users: users.clone(),
            transport,
            webhooks: Arc::new(webhooks),
            ledger,
            limits: config.telegram_limits,
            pool: pool.clone(),
        },
        pool: PoolArgs {
            size: config.workers.max(1),
            max_queued: config.max_queued.max(1),
            daemon_id: daemon_id.clone(),
            registry: Arc::new(registry),
            store: store.clone(),
            notifier: notifier.clone(),
            scheduler: scheduler.clone(),
            queue,
            save_chat: config.save_chat,
            users: users.clone(),
        },
        scheduler: SchedulerArgs {
            misfire_grace: config.misfire_grace,
            store: store.clone(),
            pool: pool.clone(),
            cluster,
        },
        scheduler_handle: scheduler.clone(),
        directory,
        restart_limit: config.restart_limit,
        exit: exit_tx,
    };
    let (root, _) = Actor::spawn(None, RootSupervisor, args)
        .await
        .map_err(|e| TreeError::Spawn(e.to_string()))?;
    let redis_store_handle = redis.as_ref().map(|(_, r)| r.clone());
    telemetry::mode_is_online(health.mode == Mode::Online);
    let sampler = AbortOnDrop::from(tokio::spawn(sample_gauges(
        redis_store_handle.clone(),
        pending,
        health_rx.clone(),
    )));
    let watcher = redis.map(|(settings, redis_store)| {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (store_h, scheduler_h) = (store.clone(), scheduler.clone());
        let task = tokio::spawn(watch_redis(
            settings.url.clone(),
            redis_store.keys().clone(),
            daemon_id.clone(),
            lease.clone(),
            health,
            health_tx,
            move |h: &Health| {
                let _ = store_h.set_mode(h.mode);
                let _ = scheduler_h.health(h.clone());
            },
            stop_rx,
            peer_leases,
        ));
        Watcher {
            stop: stop_tx,
            _task: AbortOnDrop::from(task),
            url: settings.url.clone(),
            keys: redis_store.keys().clone(),
            lease: lease.clone(),
        }
    });
    // The jobs are loaded (the scheduler's start).
    crate::allocator::start_up_done();
    Ok(Herald {
        root,
        exit,
        shutdown_grace: config.shutdown_grace,
        memory,
        daemon_id,
        health: health_rx,
        redis: redis_store_handle,
        watcher,
        _sampler: sampler,
        scheduler,
        store,
        pool,
        notifier,
        users,
        custom_jobs,
        digests,
        subscriptions: std::sync::Mutex::new(None),
    })
}

/// Digest profiles as configured, and the inboxes they collect from.
#[derive(Clone)]
pub struct Digests {
    pub profiles: Arc<Vec<Arc<DigestProfile>>>,
    pub inbox: DigestInbox,
}

/// Start-up sync: writes each defined job's definition (keeping operator
/// overrides), orphans stored jobs no longer defined, and returns the jobs
/// to run (definitions with overrides) and their last ticks.
/// How often the queue and the execution-store buffer are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Keeps the queue and execution-store gauges current: the queue from
/// Redis (while online), the buffer from memory.
async fn sample_gauges(
    redis: Option<RedisStore>,
    pending: SharedPending,
    health: watch::Receiver<Health>,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (buffered, dropped) = {
            let p = pending.lock().unwrap_or_else(|p| p.into_inner());
            (p.len(), p.dropped())
        };
        telemetry::store_buffer(buffered, dropped);
        if let Some(redis) = &redis
            && health.borrow().mode == Mode::Online
        {
            let started = tokio::time::Instant::now();
            let depth = redis.queue_depth().await;
            telemetry::redis_round_trip("queue_depth", started.elapsed(), depth.is_ok());
            if let Ok((depth, pending, retries)) = depth {
                telemetry::queue_sampled(depth, pending, retries);
            }
        }
    }
}

/// Jobs written or read per Redis request at start-up.
const SYNC_SLICE: usize = 1_000;

async fn sync_jobs(
    store: &RedisStore,
    defined: &[Arc<JobSpec>],
) -> Result<(Vec<Arc<JobSpec>>, HashMap<JobId, DateTime<Utc>>), BackendError> {
    let mut leftover: HashSet<String> = store.job_ids().await?.into_iter().collect();
    let mut effective = Vec::with_capacity(defined.len());
    // Slice by slice (read, compare, write what changed), so each request
    // stays well within the response timeout and only one slice of stored
    // jobs is in memory at a time, however many jobs there are.
    for slice in defined.chunks(SYNC_SLICE) {
        let ids: Vec<&str> = slice.iter().map(|j| &*j.id).collect();
        let stored = store.jobs_by_id(&ids).await?;
        let mut writes = Vec::new();
        for (spec, previous) in slice.iter().zip(stored) {
            leftover.remove(&*spec.id);
            let unchanged = previous.clone();
            let Some(synced) = sync_job(Some(spec), previous) else {
                continue;
            };
            // Not edited: the defined job itself (one shared copy).
            let job = if synced.overrides.is_empty() {
                spec.clone()
            } else {
                synced.effective().map(Arc::new).unwrap_or_else(|e| {
                    // An override that no longer parses: run the definition.
                    tracing::warn!(error = %e, "ignoring the operator's overrides of a job");
                    spec.clone()
                })
            };
            effective.push(job);
            // A restart with the same definitions writes nothing.
            if unchanged.as_ref() != Some(&synced) {
                writes.push(PendingWrite::Job(Box::new(synced)));
            }
        }
        store.apply(&writes).await?;
    }
    let leftover: Vec<String> = leftover.into_iter().collect();
    for slice in leftover.chunks(SYNC_SLICE) {
        let ids: Vec<&str> = slice.iter().map(String::as_str).collect();
        let mut writes = Vec::new();
        for stored in store.jobs_by_id(&ids).await?.into_iter().flatten() {
            if stored.origin == JobOrigin::Custom {
                // Created at run time: kept, and scheduled like the others.
                match stored.effective() {
                    Ok(job) => effective.push(Arc::new(job)),
                    Err(e) => tracing::warn!(error = %e, "skipping a custom job redis holds"),
                }
                continue;
            }
            let id = stored.definition.id.clone();
            if let Some(orphaned) = sync_job(None, Some(stored)) {
                tracing::info!(job = %id, "job no longer defined: marked orphaned");
                writes.push(PendingWrite::Job(Box::new(orphaned)));
            }
        }
        store.apply(&writes).await?;
    }
    let ids: Vec<JobId> = effective.iter().map(|j| j.id.clone()).collect();
    let last_ticks = store.last_ticks(&ids).await?;
    Ok((effective, last_ticks))
}

fn default_daemon_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "herald".to_string());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// What the admin API works with: handles into the running tree (cheap to
/// clone, outliving nothing).
#[derive(Clone)]
pub struct AdminHandles {
    pub scheduler: SchedulerHandle,
    pub store: StoreHandle,
    pub pool: PoolHandle,
    pub users: UserDirectory,
    pub custom_jobs: CustomJobs,
    pub digests: Digests,
    pub daemon_id: String,
    health: watch::Receiver<Health>,
    exit: watch::Receiver<TreeExit>,
}

impl AdminHandles {
    pub fn mode(&self) -> Mode {
        self.health.borrow().mode
    }

    /// The daemons sharing Redis that the last heartbeat saw alive, this
    /// one included (kept as they were while offline).
    pub fn peers(&self) -> Vec<String> {
        self.health.borrow().peers.iter().cloned().collect()
    }

    /// The tree is up (not stopped or given up).
    pub fn running(&self) -> bool {
        *self.exit.borrow() == TreeExit::Running
    }
}

impl Herald {
    /// Handles for the admin API.
    pub fn admin(&self) -> AdminHandles {
        AdminHandles {
            scheduler: self.scheduler.clone(),
            store: self.store.clone(),
            pool: self.pool.clone(),
            users: self.users.clone(),
            custom_jobs: self.custom_jobs.clone(),
            digests: self.digests.clone(),
            daemon_id: self.daemon_id.clone(),
            health: self.health.clone(),
            exit: self.exit.clone(),
        }
    }

    /// Starts taking `/start` and `/stop` from Telegram (long polling with
    /// `bot`), until the daemon stops. `long_poll`: how long one poll waits.
    pub fn start_subscriptions(&self, bot: teloxide::Bot, long_poll: Duration) {
        let subscriptions = Subscriptions {
            bot,
            users: self.users.clone(),
            lease: self
                .redis
                .clone()
                .map(|r| (r, self.health.clone(), self.daemon_id.clone())),
            long_poll,
        };
        let task = AbortOnDrop::from(tokio::spawn(subscriptions.run()));
        if let Ok(mut slot) = self.subscriptions.lock() {
            *slot = Some(task);
        }
    }

    /// This daemon's name among those sharing Redis.
    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// Online (Redis reachable) or offline, as the watcher last saw it.
    pub fn mode(&self) -> Mode {
        self.health.borrow().mode
    }

    /// Round trips this daemon has made to Redis (the watcher's pings
    /// excepted); None without Redis.
    pub fn redis_round_trips(&self) -> Option<u64> {
        self.redis.as_ref().map(RedisStore::round_trips)
    }

    /// Mode and live daemons, as a watch channel.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

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
        // Nothing fires here any more: the peers may take every job over
        // now rather than after the lease.
        if let Some(w) = &self.watcher {
            let _ = w.stop.send(true);
            w.lease.released();
            let released = tokio::time::timeout(
                2 * PING_TIMEOUT,
                release_lease(&w.url, &w.keys, &self.daemon_id),
            )
            .await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!(
                    "could not give the lease up; peers take this daemon's jobs over once it expires"
                );
            }
        }
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
