//! The metrics the actors record, read back from a real Prometheus
//! recorder's rendering (the text `/metrics` serves): a run counts by its
//! final status, a retry, lateness, deliveries, the last success, skipped
//! ticks by reason, actor restarts, and the mode with Redis going away.
//!
//! One recorder per test binary (it is process-global); tests use their own
//! job ids, and run one at a time since the mode gauge is shared.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use herald_actors::handler::{JobError, Registry, RunContext};
use herald_actors::job::OverlapPolicy;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, RunStatus};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::supervisor::Child;
use herald_actors::{Herald, TreeConfig, spawn_tree, telemetry};
use herald_testkit::RedisServer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use support::{coded, finished, quick_retry, wait_for};

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in telemetry::HISTOGRAMS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
                .unwrap();
        }
        let handle = builder.install_recorder().unwrap();
        telemetry::describe();
        handle
    })
}

/// The value of one series in the rendering: `name{labels} value`, labels
/// given in the order the exporter writes them (as passed to the macro).
fn value(name: &str, labels: &str) -> Option<f64> {
    let text = recorder().render();
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn value_or_zero(name: &str, labels: &str) -> f64 {
    value(name, labels).unwrap_or(0.0)
}

async fn metric_reaches(name: &str, labels: &str, at_least: f64) -> f64 {
    wait_for(
        &format!("{name}{{{labels}}} >= {at_least}"),
        Duration::from_secs(10),
        || async { value(name, labels).filter(|v| *v >= at_least) },
    )
    .await
}

fn registry(fails_first: Arc<AtomicU32>) -> Registry {
    let mut r = Registry::new();
    // Fails its first attempt, then sends one message.
    r.register("flaky", move |ctx: RunContext| {
        let fails_first = fails_first.clone();
        async move {
            if fails_first.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(JobError::new("first attempt fails"));
            }
            ctx.send_dm(42, "hello".into());
            Ok(Counts::default())
        }
    });
    r.register("slow", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        Ok(Counts::default())
    });
    r.register("quick", |_ctx: RunContext| async { Ok(Counts::default()) });
    r
}

/// Held by each test: the mode gauge and restart counters are process-wide.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn tree(jobs: Vec<herald_actors::job::JobSpec>, redis: Option<&RedisServer>) -> Herald {
    recorder();
    let config = TreeConfig {
        redis: redis.map(|r| RedisSettings::new(r.url(), "herald")),
        ..TreeConfig::default()
    };
    spawn_tree(
        config,
        jobs,
        registry(Arc::new(AtomicU32::new(0))),
        Arc::new(DryRun),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_retried_run_counts_once_as_success_with_its_retry_lateness_and_delivery() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut job = coded("metrics-flaky", "* * * * * *", "flaky");
    job.retry = quick_retry(3);
    let delivered_before = value_or_zero(
        "herald_deliveries_total",
        r#"channel="dry_run",outcome="sent""#,
    );
    let herald = tree(vec![job], None).await;

    // Registered at zero before anything ran.
    assert_eq!(
        value(
            "herald_runs_total",
            r#"job_id="metrics-flaky",status="failed""#
        ),
        Some(0.0)
    );
    let due = value(
        "herald_job_success_due_timestamp_seconds",
        r#"job_id="metrics-flaky""#,
    )
    .unwrap_or(0.0);
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        (now - 1.0..=now + 1.0).contains(&due),
        "a job firing every second has its next success due within a second ({due} vs {now})"
    );

    metric_reaches(
        "herald_runs_total",
        r#"job_id="metrics-flaky",status="success""#,
        1.0,
    )
    .await;
    herald.shutdown().await;

    assert_eq!(
        value("herald_retries_total", r#"job_id="metrics-flaky""#),
        Some(1.0),
        "only the first attempt failed"
    );
    assert_eq!(
        value(
            "herald_runs_total",
            r#"job_id="metrics-flaky",status="failed""#
        ),
        Some(0.0),
        "a retried attempt is not a failed run"
    );
    let lateness = value(
        "herald_schedule_lateness_seconds_count",
        r#"job_id="metrics-flaky""#,
    )
    .unwrap_or(0.0);
    assert!(lateness >= 1.0, "lateness recorded per scheduled run");
    let on_time = value(
        "herald_schedule_lateness_seconds_bucket",
        r#"job_id="metrics-flaky",le="1""#,
    )
    .unwrap_or(0.0);
    assert!(
        on_time >= 1.0,
        "a run of an idle daemon starts within a second of its tick"
    );
    assert!(
        value(
            "herald_run_duration_seconds_count",
            r#"job_id="metrics-flaky""#
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let last = value(
        "herald_job_last_success_timestamp_seconds",
        r#"job_id="metrics-flaky""#,
    )
    .unwrap_or(0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 30.0..=now + 1.0).contains(&last),
        "last success {last} is a Unix time of the last few seconds ({now})"
    );
    let due_after = value(
        "herald_job_success_due_timestamp_seconds",
        r#"job_id="metrics-flaky""#,
    )
    .unwrap_or(0.0);
    assert!(
        due_after > last && due_after <= last + 1.5,
        "after a success the next is due at the next fire ({due_after} vs last success {last})"
    );
    let delivered = value_or_zero(
        "herald_deliveries_total",
        r#"channel="dry_run",outcome="sent""#,
    );
    assert!(
        delivered > delivered_before,
        "the successful run's message counts as delivered ({delivered_before} -> {delivered})"
    );
}

#[tokio::test]
async fn ticks_skipped_for_overlap_and_a_failed_run_count_by_reason_and_status() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // A run takes 2.5 s, the job fires every second, overlap skip.
    let mut slow = coded("metrics-slow", "* * * * * *", "slow");
    slow.overlap = OverlapPolicy::Skip;
    let mut failing = coded("metrics-failing", "0 0 1 1 *", "flaky");
    failing.retry = quick_retry(1);
    let herald = tree(vec![slow, failing], None).await;
    metric_reaches(
        "herald_skipped_ticks_total",
        r#"job_id="metrics-slow",reason="overlap""#,
        1.0,
    )
    .await;
    let run = herald
        .scheduler
        .run_now("metrics-failing".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished(&herald, &run).await.status, RunStatus::Failed);
    metric_reaches(
        "herald_runs_total",
        r#"job_id="metrics-failing",status="failed""#,
        1.0,
    )
    .await;
    assert_eq!(
        value(
            "herald_skipped_ticks_total",
            r#"job_id="metrics-slow",reason="misfire""#
        ),
        Some(0.0)
    );
    assert_eq!(
        value("herald_retries_total", r#"job_id="metrics-failing""#),
        Some(0.0),
        "one attempt allowed: nothing retried"
    );
    assert_eq!(
        value(
            "herald_schedule_lateness_seconds_count",
            r#"job_id="metrics-failing""#
        ),
        None,
        "a manual run has no lateness"
    );
    herald.shutdown().await;
}

#[tokio::test]
async fn a_restarted_actor_is_counted_by_name() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let herald = tree(vec![coded("metrics-quick", "0 0 1 1 *", "quick")], None).await;
    let before = value_or_zero("herald_actor_restarts_total", r#"actor="notifier""#);
    herald.kill(Child::Notifier);
    metric_reaches(
        "herald_actor_restarts_total",
        r#"actor="notifier""#,
        before + 1.0,
    )
    .await;
    herald.shutdown().await;
}

#[tokio::test]
async fn mode_redis_latency_and_seconds_offline_follow_redis() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start();
    let herald = tree(
        vec![coded("metrics-online", "0 0 1 1 *", "quick")],
        Some(&redis),
    )
    .await;
    metric_reaches("herald_online", "", 1.0).await;
    metric_reaches(
        "herald_redis_command_duration_seconds_count",
        r#"op="heartbeat""#,
        3.0,
    )
    .await;
    metric_reaches(
        "herald_redis_command_duration_seconds_count",
        r#"op="queue_depth""#,
        1.0,
    )
    .await;
    let offline_before = value_or_zero("herald_offline_seconds_total", "");
    let errors_before = value_or_zero("herald_redis_errors_total", r#"op="heartbeat""#);

    redis.stop();
    wait_for("herald_online 0", Duration::from_secs(5), || async {
        (value("herald_online", "") == Some(0.0)).then_some(())
    })
    .await;
    metric_reaches("herald_offline_seconds_total", "", offline_before + 2.0).await;
    assert!(value_or_zero("herald_redis_errors_total", r#"op="heartbeat""#) > errors_before);

    redis.restart();
    metric_reaches("herald_online", "", 1.0).await;
    herald.shutdown().await;
}
