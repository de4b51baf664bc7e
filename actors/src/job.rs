//! What a job is: its identity, schedule and policies. Plain data, shared by
//! the config loader, the store and the actors.

use crate::users::Targets;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// What to do with ticks missed while herald was down or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Drop missed ticks; fire at the next one.
    #[default]
    Skip,
    /// One catch-up run for however many ticks were missed.
    FireOnce,
    /// A run per missed tick, up to the job's `misfire_limit`.
    FireAll,
}

/// What to do when a tick comes while the previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start another run alongside.
    Allow,
    /// Drop the tick (recorded as skipped).
    #[default]
    Skip,
    /// Keep at most one tick waiting; it starts when the running one ends.
    QueueOne,
}

/// Default bound on catch-up runs under [`MisfirePolicy::FireAll`]: enough to
/// cover a long outage of an hourly job, small enough that a per-second job
/// coming back from a day down does not flood the queue.
pub const DEFAULT_MISFIRE_LIMIT: u32 = 100;
/// Default per-run timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default attempts per run (first try plus retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubles per attempt. Long enough for a blip in a
/// downstream service to pass.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// Ceiling on the retry delay.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles for each one after.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_RETRY_BACKOFF,
            backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
        }
    }
}

/// Jobs as config and code define them (shared: the store turns edits into
/// overrides of these, the admin API refuses to replace them). Sorted by id
/// and looked up by binary search: 8 bytes a job, where a hash map took 32
/// and its slack.
#[derive(Debug, Clone, Default)]
pub struct Definitions(Arc<[Arc<JobSpec>]>);

impl Definitions {
    pub fn new(mut jobs: Vec<Arc<JobSpec>>) -> Self {
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Definitions(jobs.into())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<JobSpec>> {
        self.0
            .binary_search_by(|j| (*j.id).cmp(id))
            .ok()
            .map(|i| &self.0[i])
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}

/// A job's id, shared (not copied) by every map and queue keyed by it:
/// with 100,000 jobs, a copy per map was a large part of the footprint.
pub type JobId = Arc<str>;

/// A job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub id: JobId,
    pub schedule: Schedule,
    pub enabled: bool,
    pub misfire: MisfirePolicy,
    pub misfire_limit: u32,
    pub overlap: OverlapPolicy,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub kind: JobKind,
    /// Where a message job's message goes. Shared: most jobs have the
    /// default one (see [`DeliverySpec::shared`]), and a spec is copied into
    /// the scheduler and the store (edit it through
    /// [`JobSpec::delivery_mut`]).
    pub delivery: Arc<DeliverySpec>,
}

/// Destinations of a message job (the seed's DM / save / webhook).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliverySpec {
    /// Message users directly (the targets below).
    #[serde(default = "yes")]
    pub dm: bool,
    /// Who: include ∪ packs − exclude; none = every active user.
    #[serde(default)]
    pub targets: Targets,
    /// Also send to the owner chat (`telegram.save_chat`).
    #[serde(default)]
    pub save: bool,
    /// Webhook endpoints (by name) posted to.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Deliver without a notification sound.
    #[serde(default)]
    pub silent: bool,
}

fn yes() -> bool {
    true
}

/// The default destinations, one copy for every job that has them.
static DEFAULT_DELIVERY: LazyLock<Arc<DeliverySpec>> =
    LazyLock::new(|| Arc::new(DeliverySpec::default()));

impl DeliverySpec {
    /// As a job holds it: the one shared copy when it is the default.
    pub fn shared(self) -> Arc<DeliverySpec> {
        if self == **DEFAULT_DELIVERY {
            DEFAULT_DELIVERY.clone()
        } else {
            Arc::new(self)
        }
    }
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec {
            dm: true,
            targets: Targets::default(),
            save: false,
            webhooks: Vec::new(),
            silent: false,
        }
    }
}

impl JobSpec {
    /// A job with default policies; for code and tests that build jobs.
    pub fn new(id: impl Into<JobId>, schedule: Schedule, kind: JobKind) -> Self {
        JobSpec {
            id: id.into(),
            schedule,
            enabled: true,
            misfire: MisfirePolicy::default(),
            misfire_limit: DEFAULT_MISFIRE_LIMIT,
            overlap: OverlapPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            kind,
            delivery: DEFAULT_DELIVERY.clone(),
        }
    }

    /// The job's destinations, to change (copied first if shared).
    pub fn delivery_mut(&mut self) -> &mut DeliverySpec {
        Arc::make_mut(&mut self.delivery)
    }
}

/// What a run of the job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Render a template and send it to the job's targets.
    Message { template: String },
    /// Run the handler registered under this name.
    Coded { handler: String },
}

/// Why a job id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIdError {
    #[error("job id is empty")]
    Empty,
    #[error("job id {0:?} is longer than 64 characters")]
    TooLong(String),
    #[error("job id {0:?} may only contain a-z, A-Z, 0-9, '_', '-' and '.'")]
    BadCharacter(String),
}

/// Job ids appear in Redis keys, URLs and metric labels, so they are short
/// and plain.
pub fn check_job_id(id: &str) -> Result<(), JobIdError> {
    if id.is_empty() {
        Err(JobIdError::Empty)
    } else if id.chars().count() > 64 {
        Err(JobIdError::TooLong(id.to_string()))
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Err(JobIdError::BadCharacter(id.to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    fn job(id: &str) -> Arc<JobSpec> {
        let schedule = Schedule::parse("0 9 * * *", chrono_tz::UTC).unwrap();
        Arc::new(JobSpec::new(
            id,
            schedule,
            JobKind::Coded {
                handler: "noop".into(),
            },
        ))
    }

    #[test]
    fn definitions_find_every_job_whatever_order_they_came_in() {
        let ids = ["m", "a", "zz", "b.2", "b-1", "B"];
        let defs = Definitions::new(ids.iter().map(|id| job(id)).collect());
        for id in ids {
            assert_eq!(defs.get(id).map(|j| &*j.id), Some(id));
        }
        for missing in ["", "c", "zzz", "A"] {
            assert!(!defs.contains_key(missing), "{missing:?}");
        }
        assert!(Definitions::default().get("a").is_none());
    }

    #[test]
    fn the_default_delivery_is_shared_and_an_edit_copies_it() {
        let mut a = (*job("a")).clone();
        let b = job("b");
        assert!(Arc::ptr_eq(&a.delivery, &b.delivery));
        assert!(Arc::ptr_eq(&DeliverySpec::default().shared(), &b.delivery));
        a.delivery_mut().silent = true;
        assert!(!Arc::ptr_eq(&a.delivery, &b.delivery));
        assert!(a.delivery.silent && !b.delivery.silent);
    }
}
