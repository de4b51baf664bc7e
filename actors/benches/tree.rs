//! In-memory end to end (tick -> worker -> record) for no-op jobs.
//!
//! `cargo bench -p herald-actors --bench tree`
//!
//! 1. 10,000 jobs due in the same second: runs per second (first
//!    scheduled instant to last record written) and lateness of each run's
//!    start against its scheduled time (p50, p99, max). Median of 3 rounds.
//! 2. Idle cost with 100,000 jobs registered (daily schedules, none due):
//!    process CPU time over 10 s of wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Timelike, Utc};
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::memory::{RecordQuery, StoreLimits};
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, RunStatus};
use herald_actors::schedule::Schedule;
use herald_actors::{TreeConfig, spawn_tree};

mod support;
use support::process_cpu_seconds;

const JOBS: usize = 10_000;
const IDLE_JOBS: usize = 100_000;

fn noop_registry() -> Registry {
    let mut r = Registry::new();
    r.register("noop", |_ctx: RunContext| async { Ok(Counts::default()) });
    r
}

fn job(id: String, expr: &str) -> JobSpec {
    JobSpec::new(
        id,
        Schedule::parse(expr, chrono_tz::UTC).expect("bench expression"),
        JobKind::Coded {
            handler: "noop".into(),
        },
    )
}

fn config() -> TreeConfig {
    TreeConfig {
        workers: 16,
        store_limits: StoreLimits {
            max_records: 2 * IDLE_JOBS,
            ..StoreLimits::default()
        },
        ..TreeConfig::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn burst() -> (f64, f64, f64, f64) {
    let target = (Utc::now() + TimeDelta::seconds(3))
        .with_nanosecond(0)
        .unwrap();
    let expr = format!(
        "{} {} {} * * *",
        target.second(),
        target.minute(),
        target.hour()
    );
    let jobs = (0..JOBS).map(|i| job(format!("job-{i}"), &expr)).collect();
    let herald = spawn_tree(config(), jobs, noop_registry(), Arc::new(DryRun))
        .await
        .expect("tree starts");
    let records = loop {
        let done = herald
            .store
            .query(RecordQuery {
                status: Some(RunStatus::Success),
                limit: JOBS + 1,
                ..Default::default()
            })
            .await
            .expect("store answers");
        if done.len() >= JOBS {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let last_finish = records
        .iter()
        .filter_map(|r| r.finished_at)
        .max()
        .expect("finished runs");
    let elapsed = (last_finish - target).num_microseconds().unwrap_or(1) as f64 / 1e6;
    let mut lateness: Vec<f64> = records
        .iter()
        .filter_map(|r| r.started_at)
        .map(|s| (s - target).num_microseconds().unwrap_or(0) as f64 / 1e3)
        .collect();
    lateness.sort_by(f64::total_cmp);
    herald.shutdown().await;
    (
        JOBS as f64 / elapsed,
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        *lateness.last().unwrap_or(&0.0),
    )
}

async fn idle() -> (f64, f64) {
    let jobs = (0..IDLE_JOBS)
        .map(|i| {
            job(
                format!("idle-{i}"),
                &format!("{} {} * * *", i % 60, (i / 60) % 24),
            )
        })
        .collect();
    let started = Instant::now();
    let herald = spawn_tree(config(), jobs, noop_registry(), Arc::new(DryRun))
        .await
        .expect("tree starts");
    // wait until the scheduler has loaded every job
    let views = herald.scheduler.jobs().await.expect("jobs");
    assert_eq!(views.len(), IDLE_JOBS);
    let startup = started.elapsed().as_secs_f64();
    let before = process_cpu_seconds();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = process_cpu_seconds() - before;
    herald.shutdown().await;
    (startup, idle_cpu)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(burst().await);
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rate, p50, p99, max) = rounds[1];
    println!(
        "tree: {JOBS} no-op jobs due in the same second, 16 workers, in-memory (median of 3 rounds by rate)"
    );
    println!("  runs/s (scheduled instant -> last record): {rate:.0}");
    println!("  start lateness: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    for (i, r) in rounds.iter().enumerate() {
        println!("  round {}: {:.0} runs/s, p99 {:.1} ms", i + 1, r.0, r.2);
    }
    let (startup, idle_cpu) = idle().await;
    println!("tree: {IDLE_JOBS} jobs registered, none due");
    println!("  start-up (spawn to scheduler ready): {startup:.2} s");
    println!(
        "  CPU over 10 s idle: {:.3} s ({:.2}% of one core)",
        idle_cpu,
        idle_cpu * 10.0
    );
}
