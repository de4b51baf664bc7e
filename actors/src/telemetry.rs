//! herald's Prometheus metrics: every name, its help text, its labels, and
//! the one place each is recorded. The daemon installs the recorder and
//! renders `/metrics`; the actors record through the functions here, so a
//! name is spelt once and the dashboard (`grafana/`) and the alert rules
//! can rely on this list.
//!
//! Herald's jobs are labelled `job_id`, not `job`: Prometheus gives every
//! scraped series a `job` label of its own (the scrape job), and a clash
//! would rename ours to `exported_job` unless every scrape config set
//! `honor_labels`.
//!
//! Label values are bounded: job ids, digest profile ids, actor names,
//! fixed reasons and outcomes. Never user ids or chat ids.
//!
//! Series that may stay at zero for a long time (failures, skips, 429s,
//! restarts) are registered at zero as soon as their labels are known, so
//! every dashboard panel has a series from the first scrape and `rate()`
//! sees the first increment.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::record::{RunStatus, SkipReason};
use crate::supervisor::Child;

pub const BUILD_INFO: &str = "herald_build_info";
/// Counter {job_id, status}: runs that ended, by final status
/// (`success`, `failed`, `cancelled`).
pub const RUNS: &str = "herald_runs_total";
/// Histogram {job_id}: a run's duration: its last attempt's start to its
/// final status (deliveries included).
pub const RUN_DURATION: &str = "herald_run_duration_seconds";
/// Histogram {job_id}: a scheduled run's start minus its scheduled time.
pub const LATENESS: &str = "herald_schedule_lateness_seconds";
/// Counter {job_id, reason}: ticks that did not run, by reason.
pub const SKIPPED_TICKS: &str = "herald_skipped_ticks_total";
/// Counter {job_id}: failed attempts that were retried.
pub const RETRIES: &str = "herald_retries_total";
/// Gauge: entries in the Redis run queue (not yet acknowledged).
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
/// Gauge: queue entries read by a worker and not yet acknowledged.
pub const QUEUE_PENDING: &str = "herald_queue_pending";
/// Gauge: retries waiting for their time in Redis.
pub const QUEUE_RETRIES_WAITING: &str = "herald_queue_retries_waiting";
/// Counter: queue entries taken over from a daemon that left them
/// unacknowledged past the visibility timeout.
pub const QUEUE_RECLAIMED: &str = "herald_queue_reclaimed_total";
pub const REDIS_DATA_LOST: &str = "herald_redis_data_lost_total";
/// Counter {channel, outcome}: messages settled, by destination kind
/// (`dm`, `save`, `webhook`; `dry_run` for Telegram messages logged
/// without a token) and outcome (`sent`, `failed`, `deactivated`,
/// `skipped`).
pub const DELIVERIES: &str = "herald_deliveries_total";
/// Counter: Telegram answers of 429 Too Many Requests.
pub const TELEGRAM_RATE_LIMITED: &str = "herald_telegram_rate_limited_total";
/// Counter: seconds waited on Telegram's `retry_after`.
pub const TELEGRAM_RATE_LIMIT_WAIT: &str = "herald_telegram_rate_limit_wait_seconds_total";
/// Counter {actor}: actors restarted after a failure.
pub const ACTOR_RESTARTS: &str = "herald_actor_restarts_total";
/// Gauge: 1 while Redis is reachable (online), 0 offline.
pub const ONLINE: &str = "herald_online";
/// Counter: seconds spent offline.
pub const OFFLINE_SECONDS: &str = "herald_offline_seconds_total";
/// Counter {op}: Redis commands that failed.
pub const REDIS_ERRORS: &str = "herald_redis_errors_total";
/// Histogram {op}: Redis round trips, timed.
pub const REDIS_DURATION: &str = "herald_redis_command_duration_seconds";
/// Gauge: execution-store writes buffered in memory for Redis.
pub const STORE_BUFFERED: &str = "herald_execution_store_buffered";
/// Counter: execution-store writes dropped because the buffer was full.
pub const STORE_DROPPED: &str = "herald_execution_store_dropped_total";
/// Gauge {job_id}: Unix time of the job's last successful run.
pub const LAST_SUCCESS: &str = "herald_job_last_success_timestamp_seconds";
/// Gauge {job_id}: Unix time by which the job's next success is due: its
/// next fire time after its last success (or after start-up or an edit);
/// 0 when it is disabled or removed. The "no success" alert compares the
/// clock with it.
pub const SUCCESS_DUE: &str = "herald_job_success_due_timestamp_seconds";

/// Histogram buckets for [`RUN_DURATION`] (seconds).
pub const RUN_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Histogram buckets for [`LATENESS`] (seconds): fine below 100 ms, where
/// a healthy scheduler lives.
pub const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Histogram buckets for [`REDIS_DURATION`] (seconds).
pub const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every histogram and its buckets, for the recorder's builder.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (RUN_DURATION, RUN_DURATION_BUCKETS),
    (LATENESS, LATENESS_BUCKETS),
    (REDIS_DURATION, REDIS_BUCKETS),
];

/// The pool's workers, restarted by the pool (the other actors are the
/// supervisor's children, named by [`Child::name`]).
pub const WORKER_ACTOR: &str = "worker";
/// Reasons a tick did not run. `offline` is a tick that nobody ran
/// because the daemon that owned it lost Redis: it died (found when Redis
/// came back, or when its lease ran out) or was cut off past its lease.
pub const SKIP_REASONS: &[&str] = &[
    "misfire",
    "misfire_limit",
    "overlap",
    "disabled",
    "shutdown",
    "offline",
];
pub const CHANNELS: &[&str] = &["dm", "save", "webhook", "dry_run"];
pub const OUTCOMES: &[&str] = &["sent", "failed", "deactivated", "skipped"];
pub const REDIS_OPS: &[&str] = &["heartbeat", "store", "queue_depth", "enqueue"];

/// Help texts and units for every metric, and the label-free series at
/// zero. Call once after installing the recorder.
pub fn describe() {
    describe_gauge!(BUILD_INFO, "herald's version, as a label; always 1.");
    describe_counter!(RUNS, "Runs that ended, by job and final status.");
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Run duration, from start to final status, by job."
    );
    describe_histogram!(
        LATENESS,
        Unit::Seconds,
        "Scheduled runs: start time minus scheduled time, by job."
    );
    describe_counter!(
        SKIPPED_TICKS,
        "Ticks that did not run, by job and reason (misfire, misfire_limit, overlap, disabled, shutdown, offline)."
    );
    describe_counter!(RETRIES, "Failed attempts that were retried, by job.");
    describe_gauge!(
        QUEUE_DEPTH,
        "Entries in the Redis run queue not yet acknowledged."
    );
    describe_gauge!(
        QUEUE_PENDING,
        "Run-queue entries read by a worker and not yet acknowledged."
    );
    describe_gauge!(
        QUEUE_RETRIES_WAITING,
        "Retries waiting in Redis for their time."
    );
    describe_counter!(
        QUEUE_RECLAIMED,
        "Run-queue entries taken over from a daemon that left them unacknowledged."
    );
    describe_counter!(
        REDIS_DATA_LOST,
        "Times this daemon found Redis had lost its data (a new epoch) and wrote back what it knew."
    );
    describe_counter!(
        DELIVERIES,
        "Messages settled, by channel (dm, save, webhook, dry_run) and outcome (sent, failed, deactivated, skipped)."
    );
    describe_counter!(
        TELEGRAM_RATE_LIMITED,
        "Telegram answers of 429 Too Many Requests."
    );
    describe_counter!(
        TELEGRAM_RATE_LIMIT_WAIT,
        Unit::Seconds,
        "Seconds waited on Telegram's retry_after."
    );
    describe_counter!(
        ACTOR_RESTARTS,
        "Actors restarted after a failure, by actor."
    );
    describe_gauge!(ONLINE, "1 while Redis is reachable (online), 0 offline.");
    describe_counter!(OFFLINE_SECONDS, Unit::Seconds, "Seconds spent offline.");
    describe_counter!(REDIS_ERRORS, "Redis commands that failed, by operation.");
    describe_histogram!(
        REDIS_DURATION,
        Unit::Seconds,
        "Redis round trips, by operation."
    );
    describe_gauge!(
        STORE_BUFFERED,
        "Execution-store writes buffered in memory for Redis."
    );
    describe_counter!(
        STORE_DROPPED,
        "Execution-store writes dropped because the buffer was full."
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the job's last successful run on this daemon."
    );
    describe_gauge!(
        SUCCESS_DUE,
        Unit::Seconds,
        "Unix time by which the job's next success is due (its next fire after the last success); 0 when disabled."
    );

    for actor in Child::ALL.iter().map(|c| c.name()).chain([WORKER_ACTOR]) {
        counter!(ACTOR_RESTARTS, "actor" => actor).absolute(0);
    }
    for channel in CHANNELS {
        for outcome in OUTCOMES {
            counter!(DELIVERIES, "channel" => *channel, "outcome" => *outcome).absolute(0);
        }
    }
    for op in REDIS_OPS {
        counter!(REDIS_ERRORS, "op" => *op).absolute(0);
    }
    counter!(TELEGRAM_RATE_LIMITED).absolute(0);
    counter!(TELEGRAM_RATE_LIMIT_WAIT).absolute(0);
    counter!(QUEUE_RECLAIMED).absolute(0);
    counter!(REDIS_DATA_LOST).absolute(0);
    counter!(STORE_DROPPED).absolute(0);
    counter!(OFFLINE_SECONDS).absolute(0);
    gauge!(STORE_BUFFERED).set(0.0);
    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(QUEUE_PENDING).set(0.0);
    gauge!(QUEUE_RETRIES_WAITING).set(0.0);
}

/// Up to this many jobs, each gets its per-job series at zero and its
/// success due time at load; past it (a label set per job becomes a memory and
/// cardinality cost), per-job series appear with their first event.
pub const JOB_SERIES_UP_TO: usize = 1_000;

/// The series a job's every run updates, registered once per job: a run
/// then neither builds their label sets again nor has the recorder look
/// each up (five per run, with a job id to hash each time). The recorder
/// must be installed before the first job is known, as the daemon does.
/// A series is registered when first updated, as before the cache: a job
/// that never succeeded has no last-success series (not one at 0), and a
/// job only run by hand has no lateness.
struct JobSeries {
    job: String,
    runs_success: Counter,
    runs_failed: Counter,
    runs_cancelled: Counter,
    duration: OnceLock<Histogram>,
    lateness: OnceLock<Histogram>,
    last_success: OnceLock<Gauge>,
    success_due: Gauge,
}

impl JobSeries {
    fn register(job: &str) -> Self {
        let runs =
            |status: &'static str| counter!(RUNS, "job_id" => job.to_string(), "status" => status);
        JobSeries {
            job: job.to_string(),
            runs_success: runs("success"),
            runs_failed: runs("failed"),
            runs_cancelled: runs("cancelled"),
            duration: OnceLock::new(),
            lateness: OnceLock::new(),
            last_success: OnceLock::new(),
            success_due: gauge!(SUCCESS_DUE, "job_id" => job.to_string()),
        }
    }

    fn duration(&self) -> &Histogram {
        self.duration
            .get_or_init(|| histogram!(RUN_DURATION, "job_id" => self.job.clone()))
    }

    fn lateness(&self) -> &Histogram {
        self.lateness
            .get_or_init(|| histogram!(LATENESS, "job_id" => self.job.clone()))
    }

    fn last_success(&self) -> &Gauge {
        self.last_success
            .get_or_init(|| gauge!(LAST_SUCCESS, "job_id" => self.job.clone()))
    }
}

static JOB_SERIES: LazyLock<RwLock<HashMap<String, Arc<JobSeries>>>> =
    LazyLock::new(Default::default);

fn job_series(job: &str) -> Arc<JobSeries> {
    if let Some(series) = JOB_SERIES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(job)
    {
        return series.clone();
    }
    JOB_SERIES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(job.to_string())
        .or_insert_with(|| Arc::new(JobSeries::register(job)))
        .clone()
}

/// A job was removed: no success is due any more.
pub fn job_gone(job: &str) {
    gauge!(SUCCESS_DUE, "job_id" => job.to_string()).set(0.0);
    JOB_SERIES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(job);
}

/// When the job's next success is due (its next fire), or None if it is
/// disabled or never fires again.
pub fn success_due(job: &str, next_fire: Option<chrono::DateTime<chrono::Utc>>) {
    let at = next_fire.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
    job_series(job).success_due.set(at);
}

/// A job is known to the scheduler (loaded or edited): its per-job series
/// start at zero, and its next success is due at its next fire.
pub fn job_known(job: &str, next_fire: Option<chrono::DateTime<chrono::Utc>>) {
    // The runs counters by status are the cached ones (see `JobSeries`).
    let series = job_series(job);
    for runs in [
        &series.runs_success,
        &series.runs_failed,
        &series.runs_cancelled,
    ] {
        runs.increment(0);
    }
    let job = job.to_string();
    for reason in SKIP_REASONS {
        counter!(SKIPPED_TICKS, "job_id" => job.clone(), "reason" => *reason).increment(0);
    }
    counter!(RETRIES, "job_id" => job.clone()).increment(0);
    success_due(&job, next_fire);
}

/// A run reached its final status.
pub fn run_ended(job: &str, status: RunStatus, duration: Option<Duration>, finished_unix: f64) {
    if !matches!(
        status,
        RunStatus::Success | RunStatus::Failed | RunStatus::Cancelled
    ) {
        // Not final: nothing to count.
        return;
    }
    let series = job_series(job);
    match status {
        RunStatus::Success => {
            series.runs_success.increment(1);
            series.last_success().set(finished_unix);
        }
        RunStatus::Failed => series.runs_failed.increment(1),
        _ => series.runs_cancelled.increment(1),
    }
    if let Some(d) = duration {
        series.duration().record(d.as_secs_f64());
    }
}

/// A scheduled run started this late.
pub fn run_started_late(job: &str, lateness: Duration) {
    job_series(job).lateness().record(lateness.as_secs_f64());
}

pub fn ticks_skipped(job: &str, reason: SkipReason, count: u64, after_offline: bool) {
    let reason = if after_offline && reason == SkipReason::Misfire {
        "offline"
    } else {
        reason.as_str()
    };
    counter!(SKIPPED_TICKS, "job_id" => job.to_string(), "reason" => reason).increment(count);
}

pub fn retried(job: &str) {
    counter!(RETRIES, "job_id" => job.to_string()).increment(1);
}

pub fn queue_sampled(depth: u64, pending: u64, retries_waiting: u64) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_PENDING).set(pending as f64);
    gauge!(QUEUE_RETRIES_WAITING).set(retries_waiting as f64);
}

pub fn reclaimed(entries: usize) {
    counter!(QUEUE_RECLAIMED).increment(entries as u64);
}

pub fn redis_data_lost() {
    counter!(REDIS_DATA_LOST).increment(1);
}

pub fn delivered(channel: &'static str, outcome: &'static str) {
    counter!(DELIVERIES, "channel" => channel, "outcome" => outcome).increment(1);
}

pub fn telegram_rate_limited(wait: Duration) {
    counter!(TELEGRAM_RATE_LIMITED).increment(1);
    // Whole seconds are what Telegram's retry_after carries.
    counter!(TELEGRAM_RATE_LIMIT_WAIT).increment(wait.as_secs());
}

pub fn actor_restarted(actor: &'static str) {
    counter!(ACTOR_RESTARTS, "actor" => actor).increment(1);
}

pub fn mode_is_online(online: bool) {
    gauge!(ONLINE).set(if online { 1.0 } else { 0.0 });
}

pub fn offline_for(elapsed: Duration) {
    // Counters are integers in `metrics`; whole seconds, the remainder
    // carried by the caller.
    counter!(OFFLINE_SECONDS).increment(elapsed.as_secs());
}

pub fn redis_round_trip(op: &'static str, took: Duration, ok: bool) {
    metrics::histogram!(REDIS_DURATION, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(REDIS_ERRORS, "op" => op).increment(1);
    }
}

pub fn store_buffer(buffered: usize, dropped_total: u64) {
    gauge!(STORE_BUFFERED).set(buffered as f64);
    counter!(STORE_DROPPED).absolute(dropped_total);
}
