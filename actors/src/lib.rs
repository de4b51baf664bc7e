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
//! The actor tree (RootSupervisor, ExecutionStore, Notifier, WorkerPool,
//! Scheduler; see DESIGN.md) is built on top of these.

pub mod job;
pub mod schedule;
pub mod template;
