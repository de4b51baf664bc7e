//! How a job is kept in Redis, and how definitions from config and code
//! sync with what operators changed.
//!
//! A stored job is its *definition* (from config or code, replaced at every
//! start-up) plus the operator's *overrides* (schedule, zone, enabled,
//! policies, set through the admin API and never touched by a sync), plus an
//! *orphaned* flag for jobs no longer defined anywhere. The job that runs is
//! the definition with the overrides applied. So an operator's edit
//! survives restarts, and a config change still takes effect for what the
//! operator did not override.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{DeliverySpec, JobKind, JobSpec, MisfirePolicy, OverlapPolicy, RetryPolicy};
use crate::schedule::{CronExpr, Schedule, parse_zone};

/// A job definition in plain, serializable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub id: String,
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    pub misfire: MisfirePolicy,
    pub misfire_limit: u32,
    pub overlap: OverlapPolicy,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub kind: StoredKind,
    #[serde(default)]
    pub delivery: DeliverySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredKind {
    Message { template: String },
    Coded { handler: String },
}

/// What an operator changed; `None` = as defined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<MisfirePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
}

impl Overrides {
    /// Nothing changed: the job runs as defined.
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// A job as stored under `{prefix}:job:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJob {
    pub definition: JobDefinition,
    #[serde(default)]
    pub overrides: Overrides,
    /// Not defined by config or code any more: kept for its history and
    /// operator state, never scheduled.
    #[serde(default)]
    pub orphaned: bool,
    /// Where the job comes from: config/code (synced at start-up) or
    /// created at run time (kept by start-up sync, never orphaned).
    #[serde(default)]
    pub origin: JobOrigin,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOrigin {
    /// Defined by the config file or registered in code.
    #[default]
    Defined,
    /// Created at run time (the admin API).
    Custom,
}

/// A stored job that no longer makes a valid [`JobSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored job {id:?}: {message}")]
pub struct StoredJobError {
    pub id: String,
    pub message: String,
}

impl From<&JobSpec> for JobDefinition {
    fn from(spec: &JobSpec) -> Self {
        JobDefinition {
            id: spec.id.to_string(),
            schedule: spec.schedule.expr().source().to_string(),
            timezone: spec.schedule.tz().name().to_string(),
            enabled: spec.enabled,
            misfire: spec.misfire,
            misfire_limit: spec.misfire_limit,
            overlap: spec.overlap,
            timeout_ms: millis(spec.timeout),
            max_attempts: spec.retry.max_attempts,
            retry_backoff_ms: millis(spec.retry.backoff),
            retry_backoff_max_ms: millis(spec.retry.backoff_max),
            kind: match &spec.kind {
                JobKind::Message { template } => StoredKind::Message {
                    template: template.clone(),
                },
                JobKind::Coded { handler } => StoredKind::Coded {
                    handler: handler.clone(),
                },
            },
            delivery: (*spec.delivery).clone(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StoredJob {
    pub fn new(definition: JobDefinition) -> Self {
        StoredJob {
            definition,
            overrides: Overrides::default(),
            orphaned: false,
            origin: JobOrigin::Defined,
        }
    }

    /// The job that runs: the definition with the overrides applied.
    pub fn effective(&self) -> Result<JobSpec, StoredJobError> {
        let d = &self.definition;
        let o = &self.overrides;
        let fail = |message: String| StoredJobError {
            id: d.id.clone(),
            message,
        };
        let expr = CronExpr::parse(o.schedule.as_deref().unwrap_or(&d.schedule))
            .map_err(|e| fail(e.to_string()))?;
        let tz = parse_zone(o.timezone.as_deref().unwrap_or(&d.timezone))
            .map_err(|e| fail(e.to_string()))?;
        Ok(JobSpec {
            id: d.id.as_str().into(),
            schedule: Schedule::new(expr, tz),
            enabled: o.enabled.unwrap_or(d.enabled),
            misfire: o.misfire.unwrap_or(d.misfire),
            misfire_limit: d.misfire_limit,
            overlap: o.overlap.unwrap_or(d.overlap),
            timeout: Duration::from_millis(d.timeout_ms),
            retry: RetryPolicy {
                max_attempts: d.max_attempts,
                backoff: Duration::from_millis(d.retry_backoff_ms),
                backoff_max: Duration::from_millis(d.retry_backoff_max_ms),
            },
            kind: match &d.kind {
                StoredKind::Message { template } => JobKind::Message {
                    template: template.clone(),
                },
                StoredKind::Coded { handler } => JobKind::Coded {
                    handler: handler.clone(),
                },
            },
            delivery: d.delivery.clone().shared(),
        })
    }
}

/// What an edit changed relative to the definition, as overrides.
pub fn overrides_for(edited: &JobSpec, definition: &JobDefinition) -> Overrides {
    let edited_def = JobDefinition::from(edited);
    Overrides {
        schedule: (edited_def.schedule != definition.schedule).then_some(edited_def.schedule),
        timezone: (edited_def.timezone != definition.timezone).then_some(edited_def.timezone),
        enabled: (edited.enabled != definition.enabled).then_some(edited.enabled),
        misfire: (edited.misfire != definition.misfire).then_some(edited.misfire),
        overlap: (edited.overlap != definition.overlap).then_some(edited.overlap),
    }
}

/// Start-up sync of one job id: `defined` is what config and code define
/// now (None: nothing does), `stored` what Redis holds. Returns what Redis
/// should hold, or None to leave it alone.
pub fn sync_job(defined: Option<&JobSpec>, stored: Option<StoredJob>) -> Option<StoredJob> {
    match (defined, stored) {
        (Some(spec), None) => Some(StoredJob::new(spec.into())),
        (Some(spec), Some(mut stored)) => {
            stored.definition = spec.into();
            stored.orphaned = false;
            Some(stored)
        }
        // Created at run time: not config's to orphan.
        (None, Some(stored)) if stored.origin == JobOrigin::Custom => None,
        (None, Some(mut stored)) if !stored.orphaned => {
            stored.orphaned = true;
            Some(stored)
        }
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expr: &str) -> JobSpec {
        JobSpec::new(
            "report",
            Schedule::parse(expr, chrono_tz::Asia::Tehran).unwrap(),
            JobKind::Message {
                template: "hi".into(),
            },
        )
    }

    #[test]
    fn a_new_job_is_stored_as_defined() {
        let stored = sync_job(Some(&spec("0 22 * * *")), None).unwrap();
        assert_eq!(stored.effective().unwrap(), spec("0 22 * * *"));
        assert!(!stored.orphaned);
    }

    #[test]
    fn operator_overrides_survive_a_sync_and_config_changes_apply_elsewhere() {
        let mut stored = sync_job(Some(&spec("0 22 * * *")), None).unwrap();
        stored.overrides.schedule = Some("30 21 * * *".into());
        stored.overrides.enabled = Some(false);
        let mut redefined = spec("0 23 * * *");
        redefined.timeout = Duration::from_secs(9);
        let synced = sync_job(Some(&redefined), Some(stored)).unwrap();
        let effective = synced.effective().unwrap();
        assert_eq!(effective.schedule.expr().source(), "30 21 * * *");
        assert!(!effective.enabled);
        assert_eq!(effective.timeout, Duration::from_secs(9));
        assert_eq!(synced.definition.schedule, "0 23 * * *");
    }

    #[test]
    fn a_job_no_longer_defined_is_orphaned_not_deleted_and_comes_back() {
        let stored = sync_job(Some(&spec("0 22 * * *")), None).unwrap();
        let orphaned = sync_job(None, Some(stored)).unwrap();
        assert!(orphaned.orphaned);
        assert_eq!(
            sync_job(None, Some(orphaned.clone())),
            None,
            "already orphaned: no write"
        );
        let back = sync_job(Some(&spec("0 22 * * *")), Some(orphaned)).unwrap();
        assert!(!back.orphaned);
    }

    #[test]
    fn an_edit_becomes_overrides_of_what_changed() {
        let defined = JobDefinition::from(&spec("0 22 * * *"));
        let mut edited = spec("0 21 * * *");
        edited.enabled = false;
        let o = overrides_for(&edited, &defined);
        assert_eq!(o.schedule.as_deref(), Some("0 21 * * *"));
        assert_eq!(o.enabled, Some(false));
        assert_eq!((o.timezone, o.misfire, o.overlap), (None, None, None));
        assert_eq!(
            overrides_for(&spec("0 22 * * *"), &defined),
            Overrides::default()
        );
    }

    #[test]
    fn round_trips_through_json() {
        let mut stored = sync_job(Some(&spec("*/5 * * * * *")), None).unwrap();
        stored.overrides.overlap = Some(OverlapPolicy::QueueOne);
        let json = serde_json::to_string(&stored).unwrap();
        let back: StoredJob = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
        assert_eq!(back.effective().unwrap().overlap, OverlapPolicy::QueueOne);
    }
}
