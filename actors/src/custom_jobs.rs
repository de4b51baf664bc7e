//! Custom message jobs: created, edited, enabled/disabled and deleted at
//! run time (the admin API's routes call this), persisted in Redis with
//! origin "custom" so start-up sync keeps them instead of orphaning them.
//!
//! [`CustomJob`] is what a caller sends; [`CustomJob::validate`] turns it
//! into a [`JobSpec`] or says what is wrong with each field.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handles::{HandleError, SchedulerHandle};
use crate::job::{
    DeliverySpec, JobKind, JobSpec, MisfirePolicy, OverlapPolicy, RetryPolicy, check_job_id,
};
use crate::schedule::{CronExpr, Schedule, parse_zone};
use crate::template;
use crate::users::{Targets, check_pack_name};

/// A custom message job as a caller writes it (JSON in the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomJob {
    pub id: String,
    pub schedule: String,
    /// IANA zone; default: the daemon's (`scheduler.timezone`).
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub template: String,
    #[serde(default)]
    pub include: Vec<i64>,
    #[serde(default)]
    pub exclude: Vec<i64>,
    #[serde(default)]
    pub packs: Vec<String>,
    #[serde(default = "yes")]
    pub dm: bool,
    #[serde(default)]
    pub save: bool,
    #[serde(default)]
    pub webhooks: Vec<String>,
    #[serde(default)]
    pub silent: bool,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    #[serde(default)]
    pub overlap: OverlapPolicy,
}

fn yes() -> bool {
    true
}

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// What a custom-job call refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobApiError {
    Invalid(Vec<FieldError>),
    NotFound(String),
    /// A job with this id exists already (create), or the job is defined
    /// by config or code and cannot be replaced or deleted here.
    Conflict(String),
    Unavailable(String),
}

impl fmt::Display for JobApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobApiError::Invalid(errors) => {
                let parts: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                write!(f, "invalid job: {}", parts.join("; "))
            }
            JobApiError::NotFound(id) => write!(f, "no job {id:?}"),
            JobApiError::Conflict(why) => f.write_str(why),
            JobApiError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl std::error::Error for JobApiError {}

impl From<HandleError> for JobApiError {
    fn from(e: HandleError) -> Self {
        JobApiError::Unavailable(e.to_string())
    }
}

/// What a custom job may refer to: the daemon's configuration.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    pub default_timezone: Option<chrono_tz::Tz>,
    pub save_chat: Option<i64>,
    pub webhooks: Vec<String>,
}

impl CustomJob {
    /// The job to schedule, or every problem found, each naming its field.
    pub fn validate(&self, ctx: &JobContext) -> Result<JobSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_string(),
                message,
            })
        };
        if let Err(e) = check_job_id(&self.id) {
            fail("id", e.to_string());
        } else if self.id.starts_with(crate::digest::JOB_PREFIX) {
            fail(
                "id",
                format!(
                    "ids starting with {:?} belong to digest profiles",
                    crate::digest::JOB_PREFIX
                ),
            );
        }
        let expr = CronExpr::parse(&self.schedule)
            .map_err(|e| fail("schedule", e.to_string()))
            .ok();
        let tz = match &self.timezone {
            Some(name) => parse_zone(name)
                .map_err(|e| fail("timezone", e.to_string()))
                .ok(),
            None => Some(ctx.default_timezone.unwrap_or(chrono_tz::UTC)),
        };
        if let Err(e) = template::check(&self.template) {
            fail("template", e.to_string());
        }
        for pack in &self.packs {
            if let Err(e) = check_pack_name(pack) {
                fail("packs", e);
            }
        }
        if self.save && ctx.save_chat.is_none() {
            fail(
                "save",
                "save needs telegram.save_chat to be configured".into(),
            );
        }
        for name in &self.webhooks {
            if !ctx.webhooks.contains(name) {
                fail("webhooks", format!("no webhook endpoint is named {name:?}"));
            }
        }
        let (Some(expr), Some(tz)) = (expr, tz) else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut spec = JobSpec::new(
            self.id.clone(),
            Schedule::new(expr, tz),
            JobKind::Message {
                template: self.template.clone(),
            },
        );
        spec.enabled = self.enabled;
        spec.misfire = self.misfire;
        spec.overlap = self.overlap;
        spec.retry = RetryPolicy::default();
        spec.timeout = Duration::from_secs(300);
        spec.delivery = DeliverySpec {
            dm: self.dm,
            targets: Targets {
                include: self.include.clone(),
                exclude: self.exclude.clone(),
                packs: self.packs.clone(),
            },
            save: self.save,
            webhooks: self.webhooks.clone(),
            silent: self.silent,
        }
        .shared();
        Ok(spec)
    }
}

/// Custom jobs at run time: validation, then the Scheduler (which persists
/// through the store: in Redis with origin "custom").
#[derive(Clone)]
pub struct CustomJobs {
    pub(crate) scheduler: SchedulerHandle,
    pub(crate) context: JobContext,
    /// Ids defined by config or code: not replaceable or deletable here.
    pub(crate) defined: crate::job::Definitions,
}

impl CustomJobs {
    /// Defined by config or code (not created at run time).
    pub fn is_defined(&self, id: &str) -> bool {
        self.defined.contains_key(id)
    }

    async fn exists(&self, id: &str) -> Result<bool, JobApiError> {
        Ok(self
            .scheduler
            .jobs()
            .await?
            .iter()
            .any(|j| &*j.spec.id == id))
    }

    pub async fn create(&self, job: CustomJob) -> Result<JobSpec, JobApiError> {
        let spec = job.validate(&self.context).map_err(JobApiError::Invalid)?;
        if self.defined.contains_key(&spec.id) || self.exists(&spec.id).await? {
            return Err(JobApiError::Conflict(format!(
                "a job {:?} exists already",
                spec.id
            )));
        }
        self.scheduler.upsert_job(spec.clone()).await?;
        Ok(spec)
    }

    /// Replaces a custom job (its id stays).
    pub async fn update(&self, id: &str, mut job: CustomJob) -> Result<JobSpec, JobApiError> {
        job.id = id.to_string();
        let spec = job.validate(&self.context).map_err(JobApiError::Invalid)?;
        if self.defined.contains_key(id) {
            return Err(JobApiError::Conflict(format!(
                "job {id:?} is defined by config or code; change its schedule, zone or enabled flag instead"
            )));
        }
        if !self.exists(id).await? {
            return Err(JobApiError::NotFound(id.to_string()));
        }
        self.scheduler.upsert_job(spec.clone()).await?;
        Ok(spec)
    }

    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), JobApiError> {
        match self.scheduler.set_enabled(id.to_string(), enabled).await? {
            Some(_) => Ok(()),
            None => Err(JobApiError::NotFound(id.to_string())),
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), JobApiError> {
        if self.defined.contains_key(id) {
            return Err(JobApiError::Conflict(format!(
                "job {id:?} is defined by config or code; disable it instead"
            )));
        }
        if self.scheduler.remove_job(id.to_string()).await? {
            Ok(())
        } else {
            Err(JobApiError::NotFound(id.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CustomJob {
        serde_json::from_value(serde_json::json!({
            "id": "lunch",
            "schedule": "0 12 * * mon-fri",
            "timezone": "Asia/Tehran",
            "template": "<b>Lunch</b> {{ job_id }}",
            "packs": ["ops"],
            "include": [7],
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_job_becomes_a_spec() {
        let spec = job().validate(&JobContext::default()).unwrap();
        assert_eq!(&*spec.id, "lunch");
        assert_eq!(spec.schedule.tz(), chrono_tz::Asia::Tehran);
        assert_eq!(spec.delivery.targets.packs, vec!["ops".to_string()]);
        assert!(spec.delivery.dm && spec.enabled);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad = job();
        bad.id = "no spaces".into();
        bad.schedule = "61 * * * *".into();
        bad.timezone = Some("Mars/Olympus".into());
        bad.template = "{{ unclosed".into();
        bad.packs = vec!["a b".into()];
        bad.save = true;
        bad.webhooks = vec!["ops".into()];
        let errors = bad.validate(&JobContext::default()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "id", "schedule", "timezone", "template", "packs", "save", "webhooks"
            ]
        );
        let text = JobApiError::Invalid(errors).to_string();
        assert!(text.contains("schedule: "), "{text}");
        assert!(text.contains("Mars/Olympus"), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<CustomJob>(serde_json::json!({
            "id": "x", "schedule": "@daily", "template": "t", "colour": "red"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
