//! Execution records: one per run, PENDING -> RUNNING -> SUCCESS | FAILED |
//! CANCELLED, with retries going back through PENDING on the same record.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Identifies a run. A scheduled tick's id is derived from (job, instant),
/// so the same tick always has the same id: `{job}@{unix seconds}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    pub fn for_tick(job_id: &str, scheduled_at: DateTime<Utc>) -> Self {
        RunId(format!("{job_id}@{}", scheduled_at.timestamp()))
    }

    /// A run started by hand: time plus randomness, never equal to a tick's.
    pub fn manual(job_id: &str, now: DateTime<Utc>) -> Self {
        RunId(format!(
            "{job_id}@manual-{}-{:08x}",
            now.timestamp_millis(),
            rand::random::<u32>()
        ))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Pending,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
        }
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Ok(RunStatus::Pending),
            "RUNNING" => Ok(RunStatus::Running),
            "SUCCESS" => Ok(RunStatus::Success),
            "FAILED" => Ok(RunStatus::Failed),
            "CANCELLED" => Ok(RunStatus::Cancelled),
            _ => Err(format!(
                "{s:?} is not a run status (PENDING, RUNNING, SUCCESS, FAILED, CANCELLED)"
            )),
        }
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A tick on time (within the misfire grace).
    Schedule,
    /// A catch-up run for a tick missed while herald was down or behind.
    Misfire,
    /// A tick held back by the `queue_one` overlap policy.
    Queued,
    /// Started by hand.
    Manual,
}

/// What a run delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub sent: u64,
    pub failed: u64,
    pub deactivated: u64,
    pub skipped: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, other: Counts) -> Counts {
        Counts {
            sent: self.sent + other.sent,
            failed: self.failed + other.failed,
            deactivated: self.deactivated + other.deactivated,
            skipped: self.skipped + other.skipped,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub run_id: RunId,
    pub job_id: String,
    pub trigger: Trigger,
    // Instants are written by `rfc3339` (chrono's text, faster), read by
    // chrono.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub scheduled_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub status: RunStatus,
    /// 1 for the first try.
    pub attempt: u32,
    pub max_attempts: u32,
    pub counts: Counts,
    /// The last attempt's error, kept while a retry is pending.
    pub error: Option<String>,
    /// When the next attempt is due, while a retry is pending.
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The daemon that ran (or runs) the current attempt.
    #[serde(default)]
    pub daemon: Option<String>,
    /// The daemon this attempt was taken over from (its queue entry sat
    /// unacknowledged past the visibility timeout while that daemon held
    /// it): the one daemon whose record this daemon's may replace within
    /// the attempt (fencing; see the record script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
    /// The run travels through the shared Redis queue (which redelivers
    /// it), rather than being handed to this daemon's pool directly.
    #[serde(default)]
    pub queued: bool,
    /// The run's messages: per destination, while they go out and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<crate::delivery::DeliveryReport>,
    /// A digest run's window and how many items it held (`message_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<crate::digest::DigestSummary>>,
}

impl ExecutionRecord {
    /// Marks the attempt finished at `now`: `finished_at`, and the
    /// duration from its start (none if it never started), returned.
    pub fn finish_at(&mut self, now: DateTime<Utc>) -> Option<u64> {
        self.finished_at = Some(now);
        self.duration_ms = self
            .started_at
            .map(|s| (now - s).num_milliseconds().max(0) as u64);
        self.duration_ms
    }

    /// Where this write stands in a run's life: (attempt, phase) with
    /// PENDING < RUNNING < final. Stores only move a record forward, so a
    /// late or repeated write never undoes a later one.
    pub fn progress(&self) -> (u32, u8) {
        let phase = match self.status {
            RunStatus::Pending => 0,
            RunStatus::Running => 1,
            _ => 2,
        };
        (self.attempt, phase)
    }

    pub fn pending(
        run_id: RunId,
        job_id: &str,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Self {
        ExecutionRecord {
            run_id,
            job_id: job_id.to_string(),
            trigger,
            scheduled_at,
            created_at: now,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            status: RunStatus::Pending,
            attempt: 1,
            max_attempts,
            counts: Counts::default(),
            error: None,
            retry_at: None,
            daemon: None,
            taken_over_from: None,
            queued: false,
            deliveries: None,
            digest: None,
        }
    }
}

/// Why a tick did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Missed while down or behind, and the misfire policy dropped it.
    Misfire,
    /// Missed, and beyond the `fire_all` bound.
    MisfireLimit,
    /// The previous run was still going.
    Overlap,
    /// The job was disabled while a tick waited.
    Disabled,
    /// Shutting down.
    Shutdown,
    /// Owned by a daemon that lost Redis (cut off, or dead): left to it
    /// while its lease could let it run them offline, and not run by it.
    Offline,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Misfire => "misfire",
            SkipReason::MisfireLimit => "misfire_limit",
            SkipReason::Overlap => "overlap",
            SkipReason::Disabled => "disabled",
            SkipReason::Shutdown => "shutdown",
            SkipReason::Offline => "offline",
        }
    }
}

/// One or more consecutive ticks of a job that did not run, for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedTicks {
    pub job_id: String,
    pub reason: SkipReason,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: u64,
    pub recorded_at: DateTime<Utc>,
}

impl SkippedTicks {
    /// What makes two entries the same skip: job, reason and window (not
    /// when or by which daemon it was recorded).
    pub fn dedup_id(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.job_id,
            self.reason.as_str(),
            self.first.timestamp(),
            self.last.timestamp()
        )
    }
}
