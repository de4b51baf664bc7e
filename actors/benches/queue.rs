//! Drain 100,000 pre-loaded no-op runs through the Redis run queue at
//! worker concurrency 1 and 100.
//!
//! `cargo bench -p herald-actors --bench queue` (needs `redis-server`).
//!
//! For each concurrency: a fresh redis-server (testkit, no persistence),
//! 100,000 PENDING runs of a no-op coded job enqueued, then one daemon
//! started and timed until the queue is empty (every entry acknowledged
//! after its final record was written) and no write is pending. Reported:
//! runs per second, CPU time per run of this process (herald) and of
//! redis-server (INFO cpu), Redis commands per run (INFO commandstats,
//! which counts commands run inside scripts too) and round trips per run
//! (requests the daemon sent; a pipeline is one), all over the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::memory::StoreLimits;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, ExecutionRecord, RunId, Trigger};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::schedule::Schedule;
use herald_actors::{TreeConfig, spawn_tree};
use herald_testkit::RedisServer;

mod support;
use support::process_cpu_seconds;

const RUNS: usize = 100_000;

/// (total commands, redis CPU seconds)
async fn redis_counters(url: &str) -> (u64, f64) {
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let calls = stats
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum();
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut c)
        .await
        .unwrap();
    let used = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    (calls, used)
}

fn noop_job() -> JobSpec {
    JobSpec::new(
        "noop",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Coded {
            handler: "noop".into(),
        },
    )
}

async fn drain(workers: usize) -> (f64, f64, f64, f64, f64) {
    let server = RedisServer::start();
    let settings = RedisSettings::new(server.url(), "herald");
    let store = RedisStore::new(
        connect(&settings).unwrap(),
        "herald",
        StoreLimits::default(),
    );
    store.ensure_queue().await.unwrap();
    let base = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let now = Utc::now();
    for chunk in (0..RUNS).collect::<Vec<_>>().chunks(1_000) {
        let records: Vec<ExecutionRecord> = chunk
            .iter()
            .map(|&i| {
                let at = base + chrono::TimeDelta::seconds(i as i64);
                ExecutionRecord::pending(
                    RunId::for_tick("noop", at),
                    "noop",
                    Trigger::Schedule,
                    at,
                    1,
                    now,
                )
            })
            .collect();
        store.enqueue(&records).await.unwrap();
    }
    let mut registry = Registry::new();
    registry.register("noop", |_ctx: RunContext| async { Ok(Counts::default()) });
    let config = TreeConfig {
        workers,
        redis: Some(settings),
        ..TreeConfig::default()
    };
    let (calls_before, redis_cpu_before) = redis_counters(&server.url()).await;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let herald = spawn_tree(config, vec![noop_job()], registry, Arc::new(DryRun))
        .await
        .unwrap();
    loop {
        let (len, pending, _) = store.queue_depth().await.unwrap();
        let writes = herald
            .store
            .stats()
            .await
            .map(|s| s.pending_writes)
            .unwrap_or(1);
        if len == 0 && pending == 0 && writes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let round_trips = herald.redis_round_trips().unwrap_or(0) as f64;
    let cpu = process_cpu_seconds() - cpu_before;
    let (calls_after, redis_cpu_after) = redis_counters(&server.url()).await;
    herald.shutdown().await;
    let n = RUNS as f64;
    (
        n / elapsed,
        cpu / n * 1e6,
        (redis_cpu_after - redis_cpu_before) / n * 1e6,
        (calls_after - calls_before) as f64 / n,
        round_trips / n,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("queue: drain {RUNS} pre-loaded no-op runs through the Redis run queue");
    for workers in [1, 100] {
        let (rate, cpu_us, redis_us, commands, round_trips) = drain(workers).await;
        println!(
            "  concurrency {workers:>3}: {rate:>7.0} runs/s, herald CPU {cpu_us:.1} us/run, redis CPU {redis_us:.1} us/run, {commands:.2} redis commands/run, {round_trips:.2} round trips/run"
        );
    }
}
