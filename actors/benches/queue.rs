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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::memory::StoreLimits;
use herald_actors::notifier::DryRun;
use herald_actors::record::Counts;
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::schedule::Schedule;
use herald_actors::{TreeConfig, spawn_tree};
use herald_testkit::RedisServer;

mod support;
use support::process_cpu_seconds;

const RUNS: usize = 100_000;

/// (calls per command, redis CPU seconds)
async fn redis_counters(url: &str) -> (HashMap<String, u64>, f64) {
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
    // cmdstat_evalsha:calls=123,usec=...
    let calls = stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let n = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), n))
        })
        .collect();
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

async fn drain(workers: usize) -> (f64, f64, f64, f64, f64, String) {
    let server = RedisServer::start();
    let settings = RedisSettings::new(server.url(), "herald");
    let store = RedisStore::new(
        connect(&settings).unwrap(),
        "herald",
        StoreLimits::default(),
    );
    store.ensure_queue().await.unwrap();
    let refused = support::preload_noop_runs(&store, RUNS as u64, 1_000)
        .await
        .unwrap();
    assert_eq!(refused, 0, "pre-loaded runs refused");
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
    let mut per_command: Vec<(String, f64)> = calls_after
        .iter()
        .map(|(name, after)| {
            let before = calls_before.get(name).copied().unwrap_or(0);
            (name.clone(), (after - before) as f64 / n)
        })
        .filter(|(_, per_run)| *per_run >= 0.01)
        .collect();
    per_command.sort_by(|a, b| b.1.total_cmp(&a.1));
    let commands = per_command.iter().map(|(_, c)| c).sum();
    let breakdown = per_command
        .iter()
        .map(|(name, c)| format!("{name} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    (
        n / elapsed,
        cpu / n * 1e6,
        (redis_cpu_after - redis_cpu_before) / n * 1e6,
        commands,
        round_trips / n,
        breakdown,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("queue: drain {RUNS} pre-loaded no-op runs through the Redis run queue");
    // HERALD_BENCH_CONCURRENCY=1 measures one concurrency only.
    let only: Option<usize> = std::env::var("HERALD_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok());
    for workers in [1, 100]
        .into_iter()
        .filter(|w| only.is_none_or(|o| o == *w))
    {
        let (rate, cpu_us, redis_us, commands, round_trips, breakdown) = drain(workers).await;
        println!(
            "  concurrency {workers:>3}: {rate:>7.0} runs/s, herald CPU {cpu_us:.1} us/run, redis CPU {redis_us:.1} us/run, {commands:.2} redis commands/run, {round_trips:.2} round trips/run"
        );
        println!("    commands per run: {breakdown}");
    }
}
