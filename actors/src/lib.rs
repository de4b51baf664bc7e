//! herald-actors: the supervision tree of the herald daemon and the pure
//! logic its actors share.
//!
//! # Layout
//!
//! Pure logic, tested without actors:
//! * [`schedule`]: cron expressions (crontab(5) and 6-field), IANA zones and
//!   cronie's DST rules; "when does this job fire next?"
//! * [`job`]: what a job is (id, schedule, misfire/overlap/retry policies).
//! * [`template`]: message templates (minijinja, HTML auto-escaping).
//!
//! * [`record`]: execution records and skipped ticks.
//! * [`memory`]: the bounded in-memory backend (jobs, last ticks, records).
//! * [`timetable`]: the scheduler's heap and its misfire/overlap decisions.
//! * [`backoff`]: retry delays; [`restart`]: restart intensity;
//!   [`precise_timer`]: sub-millisecond one-shot timer (held runs' release).
//! * [`redis_backend`]: key names, connections, stored jobs, the Redis
//!   store, the run queue, the delivery ledger, users and digest inboxes.
//! * [`users`]: users, packs and targeting; [`digest`]: digest profiles,
//!   windows and rendering; [`delivery`]: messages and delivery reports.
//! * [`jobs`]: herald's coded jobs (the food reminder), one file each.
//! * [`allocator`]: how the daemon's allocator returns memory to the OS.
//! * [`won_claims`]: the tick claims a daemon won, written back if Redis
//!   loses its data.
//!
//! The actor tree (DESIGN.md), one module per actor:
//!
//! ```text
//! RootSupervisor    supervisor.rs     one-for-one restarts, intensity limit
//!  |-- ExecutionStore  execution_store.rs  records, job table, last ticks
//!  |-- Notifier        notifier.rs         delivery through a Transport
//!  |-- WorkerPool      worker_pool.rs      queue, retries, N Workers (worker.rs)
//!  `-- Scheduler       scheduler.rs        one timer, fires due ticks
//! ```
//!
//! [`handles`] are the typed ways to talk to them; [`handler`] is what a
//! run executes; [`tree`] builds the tree from plain data ([`spawn_tree`]).

pub mod allocator;
pub mod backoff;
pub mod custom_jobs;
pub mod delivery;
pub mod digest;
pub mod execution_store;
pub mod handler;
pub mod handles;
pub mod health;
pub mod job;
pub mod jobs;
pub mod ledger;
pub mod memory;
pub mod notifier;
pub mod precise_timer;
pub mod record;
pub mod redis_backend;
pub mod restart;
pub mod rfc3339;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod subscriptions;
pub mod supervisor;
pub mod telegram;
pub mod telemetry;
pub mod template;
pub mod timetable;
pub mod tree;
pub mod users;
pub mod webhook;
pub mod won_claims;
pub mod worker;
pub mod worker_pool;

pub use tree::{Herald, TreeConfig, spawn_tree, spawn_tree_on};

/// Aborts a task when dropped: tasks tied to an actor's state die with it,
/// even when the actor panics and `post_stop` never runs.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl<T> From<tokio::task::JoinHandle<T>> for AbortOnDrop {
    fn from(handle: tokio::task::JoinHandle<T>) -> Self {
        AbortOnDrop(handle.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
