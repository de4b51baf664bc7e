//! herald half of the herald vs BullMQ benchmark (the BullMQ half is
//! `bench/bullmq/bench.js`; `bench/run` runs both against one Redis).
//!
//! ```sh
//! cargo bench -p herald-actors --bench compare -- <scenario> --redis redis://127.0.0.1:PORT [options]
//! ```
//!
//! Same scenarios, options, JSON fields and exit codes as bench.js: one
//! JSON object on stdout, diagnostics on stderr; exit 0 ok, 1 failed (an
//! error, or a check on the observed work did not hold), 2 usage, 3 hard
//! timeout, 4 did not close. It never starts a redis-server and never
//! flushes Redis (the harness does FLUSHALL between runs); it refuses to
//! start if its key prefix (`--queue`, default `bench-<scenario>`) already
//! holds keys. `cargo bench` appends `--bench`, which is ignored.
//!
//! Each scenario runs a real herald tree (`spawn_tree` with Redis, the
//! DryRun transport, no-op coded jobs) in this process on a 2-thread tokio
//! runtime:
//!
//! * drain: N PENDING runs put on the run queue as the `queue` bench does
//!   (not timed); timed from `spawn_tree` (workers = concurrency) until
//!   every handler ran, every write is flushed and the stream is empty.
//! * max-rate / latency: herald's `queue.add` is an ad-hoc run of a job
//!   (`run_now`, the admin API's `POST /api/jobs/{id}/run`; overlap
//!   `allow`). `--via queue` instead puts each run on the Redis run queue
//!   from a separate producer connection (as a scheduler tick does).
//! * precision: 6-field `* * * * * *` jobs plus jobs whose 6-field
//!   schedule names one instant; lateness = handler start (wall clock) -
//!   the run's scheduled instant (`RunContext::scheduled_at`).
//! * footprint: daily 5-field jobs registered in Redis, then the daemon
//!   in a child process (this binary, `footprint-worker`) idles; its VmRSS.
#![recursion_limit = "256"] // the precision scenario's `json!` report

// The daemon's allocator (src/main.rs), so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use deadpool_redis::redis;
use deadpool_redis::redis::aio::MultiplexedConnection;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobId, JobKind, JobSpec, OverlapPolicy};
use herald_actors::memory::StoreLimits;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, ExecutionRecord, RunId, Trigger};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::schedule::Schedule;
use herald_actors::{Herald, TreeConfig, spawn_tree};
use serde_json::{Map, Value, json};

mod support;
use support::process_cpu_seconds;

const USAGE: &str = "usage: compare <scenario> --redis redis://127.0.0.1:PORT [options]
  drain      --jobs 100000 --concurrency 1
  max-rate   --seconds 30 [--warmup 2] [--max-in-flight 1000] [--add-concurrency 100] [--concurrency 100]
             [--via run-now|queue] [--max-pending-writes 4*max-in-flight]
  latency    --rate 1000 --seconds 30 --concurrency 100 [--grace 30] [--via run-now|queue]
  precision  --schedules 1000 --seconds 120 --burst 10000
             [--concurrency 100] [--lead 5] [--burst-at 5] [--grace 10]
             [--overlap skip|allow|queue_one] (of the per-second jobs; default skip)
  footprint  --schedules 100000 [--idle 10]
common: --queue PREFIX (herald's Redis key prefix; default bench-<scenario>)
        --remove-on-complete keep (herald keeps every run's record, 7-day TTL)
        --timeout SECONDS (hard limit; exits 3)
        --response-timeout SECONDS (herald's redis.response_timeout; default herald's, 0.5)";

/// A run of the scenario that did not succeed: exit 1. The output, if
/// any, is still printed.
struct Fail(String, Option<Value>);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string(), None)
    }
}

fn fail(msg: impl Into<String>) -> Fail {
    Fail(msg.into(), None)
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("compare: {msg}");
    }
    eprintln!("{USAGE}");
    std::process::exit(2);
}

// ---------------------------------------------------------------- arguments

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let Some(key) = args[i].strip_prefix("--") else {
                usage(&format!("unexpected argument {}", args[i]));
            };
            match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    map.insert(key.to_string(), v.clone());
                }
                _ => usage(&format!("option --{key} needs a value")),
            }
            i += 2;
        }
        Opts(map)
    }

    fn int(&self, key: &str, default: u64, min: u64) -> u64 {
        match self.0.get(key) {
            None => default,
            Some(raw) => match raw.parse::<u64>() {
                Ok(v) if v >= min => v,
                _ => usage(&format!("--{key} must be an integer >= {min}, got {raw}")),
            },
        }
    }

    fn float(&self, key: &str, default: f64, min: f64) -> f64 {
        match self.0.get(key) {
            None => default,
            Some(raw) => match raw.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= min => v,
                _ => usage(&format!("--{key} must be a number >= {min}, got {raw}")),
            },
        }
    }

    fn str(&self, key: &str, default: &str, allowed: &[&str]) -> String {
        let v = self.0.get(key).map(String::as_str).unwrap_or(default);
        if !allowed.is_empty() && !allowed.contains(&v) {
            usage(&format!("--{key} must be one of {}", allowed.join(", ")));
        }
        v.to_string()
    }
}

// ---------------------------------------------------------------- helpers

fn round(x: f64, d: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let f = 10f64.powi(d);
    json!((x * f).round() / f)
}

/// Nearest-rank percentile of an ascending slice (as bench.js).
fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

struct Summary {
    min: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

fn summary(values: &mut [f64]) -> Summary {
    values.sort_by(f64::total_cmp);
    Summary {
        min: values.first().copied(),
        p50: pct(values, 50.0),
        p99: pct(values, 99.0),
        max: values.last().copied(),
    }
}

fn opt_ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| round(x, 3))
}

/// VmRSS and VmHWM of this process, in bytes.
fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- redis

/// CPU seconds, calls over all commands but INFO, calls by command,
/// used_memory, version: one `INFO` (as bench.js's redisSnapshot).
#[derive(Default)]
struct Snap {
    cpu: f64,
    calls: u64,
    by_cmd: BTreeMap<String, u64>,
    used_memory: u64,
    version: String,
}

async fn snapshot(c: &mut MultiplexedConnection) -> Result<Snap, Fail> {
    let text: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("commandstats")
        .arg("memory")
        .arg("server")
        .query_async(c)
        .await?;
    let mut s = Snap::default();
    for line in text.lines() {
        let value = || line.split(':').nth(1).unwrap_or("").trim();
        if line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:") {
            s.cpu += value().parse::<f64>().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            let calls = stats
                .strip_prefix("calls=")
                .and_then(|s| s.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if name != "info" {
                s.by_cmd.insert(name.to_string(), calls);
                s.calls += calls;
            }
        } else if line.starts_with("used_memory:") {
            s.used_memory = value().parse().unwrap_or(0);
        } else if line.starts_with("redis_version:") {
            s.version = value().to_string();
        }
    }
    Ok(s)
}

struct Delta {
    cpu: f64,
    calls: u64,
    by_cmd: Value,
}

fn delta(a: &Snap, b: &Snap, per_unit: Option<f64>) -> Delta {
    let mut by_cmd = Map::new();
    for (k, v) in &b.by_cmd {
        let d = v.saturating_sub(a.by_cmd.get(k).copied().unwrap_or(0));
        if d > 0 {
            by_cmd.insert(
                k.clone(),
                per_unit.map_or(json!(d), |n| round(d as f64 / n, 3)),
            );
        }
    }
    Delta {
        cpu: b.cpu - a.cpu,
        calls: b.calls.saturating_sub(a.calls),
        by_cmd: Value::Object(by_cmd),
    }
}

/// Refuses a prefix that already holds keys: the harness flushes Redis
/// before each run.
async fn assert_prefix_empty(c: &mut MultiplexedConnection, prefix: &str) -> Result<(), Fail> {
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        if let Some(k) = keys.first() {
            return Err(fail(format!(
                "redis prefix {prefix} is not empty (found {k}); the harness must FLUSHALL before each run"
            )));
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

struct Ctx {
    url: String,
    prefix: String,
    /// `redis.response_timeout` (None: herald's default).
    response_timeout: Option<Duration>,
    stats: MultiplexedConnection,
    redis_version: String,
}

impl Ctx {
    fn settings(&self) -> RedisSettings {
        let mut s = RedisSettings::new(self.url.clone(), self.prefix.clone());
        if let Some(t) = self.response_timeout {
            s.response_timeout = t;
        }
        s
    }

    fn store(&self) -> Result<RedisStore, Fail> {
        Ok(RedisStore::new(
            connect(&self.settings())?,
            &self.prefix,
            StoreLimits::default(),
        ))
    }

    async fn snap(&mut self) -> Result<Snap, Fail> {
        snapshot(&mut self.stats).await
    }
}

fn common(scenario: &str, ctx: &Ctx) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert("system".into(), json!("herald"));
    m.insert("herald_version".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert("tokio_worker_threads".into(), json!(2));
    m.insert("redis_version".into(), json!(ctx.redis_version));
    m.insert("key_prefix".into(), json!(ctx.prefix));
    m.insert(
        "redis_response_timeout_ms".into(),
        json!(ctx.settings().response_timeout.as_millis() as u64),
    );
    m
}

fn extend(mut m: Map<String, Value>, more: Value) -> Value {
    if let Value::Object(o) = more {
        m.extend(o);
    }
    Value::Object(m)
}

// ---------------------------------------------------------------- herald

/// Set when a tree did not stop in time: the process exits 4.
static NOT_CLOSED: AtomicBool = AtomicBool::new(false);

fn noop_job(id: &str, expr: &str) -> Result<JobSpec, Fail> {
    let mut spec = JobSpec::new(
        id,
        Schedule::parse(expr, chrono_tz::UTC).map_err(|e| fail(format!("{expr}: {e}")))?,
        JobKind::Coded {
            handler: "noop".into(),
        },
    );
    // Ad-hoc runs of one job go side by side, as BullMQ jobs do.
    spec.overlap = OverlapPolicy::Allow;
    Ok(spec)
}

fn config(ctx: &Ctx, workers: usize) -> TreeConfig {
    TreeConfig {
        workers,
        redis: Some(ctx.settings()),
        shutdown_grace: Duration::from_secs(10),
        ..TreeConfig::default()
    }
}

async fn close(herald: Herald) {
    if tokio::time::timeout(Duration::from_secs(60), herald.shutdown())
        .await
        .is_err()
    {
        eprintln!("compare: the herald tree did not stop within 60 s");
        NOT_CLOSED.store(true, Ordering::SeqCst);
    }
}

/// Runs handled: the no-op handler counts, and wakes whoever waits.
#[derive(Default)]
struct Done {
    count: AtomicU64,
    notify: tokio::sync::Notify,
}

fn counting_registry(done: Arc<Done>) -> Registry {
    let mut registry = Registry::new();
    registry.register("noop", move |_ctx: RunContext| {
        let done = done.clone();
        async move {
            done.count.fetch_add(1, Ordering::SeqCst);
            done.notify.notify_waiters();
            Ok(Counts::default())
        }
    });
    registry
}

// ---------------------------------------------------------------- drain

async fn drain(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let n = o.int("jobs", 100_000, 1);
    let c = o.int("concurrency", 1, 1) as usize;
    let chunk = o.int("chunk", 1000, 1) as usize;
    let store = ctx.store()?;
    store.ensure_queue().await?;

    // Pre-load (not timed): PENDING runs of a no-op job on the run queue,
    // one per (job, scheduled second), as the `queue` bench does.
    let tl0 = Instant::now();
    if support::preload_noop_runs(&store, n, chunk).await? > 0 {
        return Err(fail("a pre-loaded run was refused by the queue"));
    }
    let load_seconds = tl0.elapsed().as_secs_f64();
    let (len, _, _) = store.queue_depth().await?;
    if len != n {
        return Err(fail(format!("loaded {len} queue entries, expected {n}")));
    }

    let done = Arc::new(Done::default());
    let registry = counting_registry(done.clone());
    let jobs = vec![noop_job("noop", "0 0 1 1 *")?];

    // Timed: from spawn_tree to the last run's final record written and
    // its entry acknowledged and deleted.
    let r0 = ctx.snap().await?;
    let c0 = process_cpu_seconds();
    let t0 = Instant::now();
    let herald = spawn_tree(config(ctx, c), jobs, registry, Arc::new(DryRun)).await?;
    let deadline = t0 + Duration::from_secs(840);
    loop {
        if done.count.load(Ordering::SeqCst) >= n {
            let writes = herald.store.stats().await.map_or(1, |s| s.pending_writes);
            let pool = herald.pool.stats().await.ok();
            let idle = pool.is_some_and(|p| p.busy == 0 && p.queued == 0);
            if writes == 0 && idle {
                // Only now ask Redis (a few commands, not per run).
                let (len, pending, _) = store.queue_depth().await?;
                if len == 0 && pending == 0 {
                    break;
                }
            }
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "drain not finished after 840 s ({} of {n} handled)",
                done.count.load(Ordering::SeqCst)
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - c0;
    let r1 = ctx.snap().await?;
    let round_trips = herald.redis_round_trips().unwrap_or(0);
    let completed = done.count.load(Ordering::SeqCst);
    let failed = herald
        .store
        .query(herald_actors::memory::RecordQuery {
            status: Some(herald_actors::record::RunStatus::Failed),
            limit: 1000,
            ..Default::default()
        })
        .await
        .map_or(0, |r| r.len());
    close(herald).await;
    if failed > 0 {
        return Err(fail(format!("{failed} of {n} no-op runs failed")));
    }
    let nf = n as f64;
    let rd = delta(&r0, &r1, None);
    let by_name = delta(&r0, &r1, Some(nf)).by_cmd;
    Ok(extend(
        common("drain", ctx),
        json!({
            "jobs": n,
            "concurrency": c,
            "remove_on_complete": "keep",
            "seconds": round(seconds, 4),
            "jobs_per_second": round(completed as f64 / seconds, 1),
            "worker_cpu_seconds": round(cpu, 4),
            "redis_cpu_seconds": round(rd.cpu, 4),
            "redis_commands": rd.calls,
            "worker_cpu_us_per_job": round(cpu * 1e6 / nf, 2),
            "redis_cpu_us_per_job": round(rd.cpu * 1e6 / nf, 2),
            "redis_commands_per_job": round(rd.calls as f64 / nf, 3),
            "redis_commands_per_job_by_name": by_name,
            "redis_round_trips_per_job": round(round_trips as f64 / nf, 3),
            "completed": completed,
            "completed_kept_in_redis": "records kept (7-day TTL)",
            "load_seconds": round(load_seconds, 3),
            "errors": 0,
        }),
    ))
}

// ---------------------------------------------------------------- producer

/// How the benchmark starts a run: herald's `queue.add`.
#[derive(Clone)]
enum Producer {
    /// `run_now` of the job (the admin API's `POST /api/jobs/{id}/run`):
    /// PENDING record written through the store, run handed to this
    /// daemon's pool.
    RunNow(herald_actors::handles::SchedulerHandle),
    /// A PENDING run put on the Redis run queue (one script call) from a
    /// separate connection; the daemon's pool reads it (`XREADGROUP`).
    Queue(RedisStore, Arc<AtomicU64>),
}

impl Producer {
    fn new(via: &str, herald: &Herald, ctx: &Ctx) -> Result<Producer, Fail> {
        Ok(match via {
            "queue" => Producer::Queue(ctx.store()?, Arc::new(AtomicU64::new(0))),
            _ => Producer::RunNow(herald.scheduler.clone()),
        })
    }

    /// Starts one run; its run id.
    async fn add(&self) -> Result<String, String> {
        match self {
            Producer::RunNow(s) => match s.run_now("noop".to_string()).await {
                Ok(Some(id)) => Ok(id.0),
                Ok(None) => Err("no such job".into()),
                Err(e) => Err(e.to_string()),
            },
            Producer::Queue(store, seq) => {
                // A distinct (job, second) per run: the enqueue script
                // marks each tick's claim and refuses it twice.
                let k = seq.fetch_add(1, Ordering::SeqCst) as i64;
                let at = DateTime::from_timestamp(1_000_000_000 + k, 0).unwrap_or_default();
                let record = ExecutionRecord::pending(
                    RunId::for_tick("noop", at),
                    "noop",
                    Trigger::Manual,
                    at,
                    1,
                    Utc::now(),
                );
                let id = record.run_id.0.clone();
                match store.enqueue(&[record], "bench-producer", None).await {
                    Ok(q) if q.first() == Some(&true) => Ok(id),
                    Ok(_) => Err("refused by the queue".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

// ---------------------------------------------------------------- max-rate

async fn max_rate(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let s = o.float("seconds", 30.0, 1.0);
    let warmup = o.float("warmup", 2.0, 0.0);
    let max_in_flight = o.int("max-in-flight", 1000, 1);
    let add_conc = o.int("add-concurrency", 100, 1);
    let c = o.int("concurrency", 100, 1) as usize;
    let via = o.str("via", "run-now", &["run-now", "queue"]);
    let max_pending_writes = o.int("max-pending-writes", 4 * max_in_flight, 1) as usize;
    if via == "queue" {
        ctx.store()?.ensure_queue().await?;
    }

    let done = Arc::new(Done::default());
    let mut cfg = config(ctx, c);
    cfg.max_queued = 1_000_000;
    let herald = spawn_tree(
        cfg,
        vec![noop_job("noop", "0 0 1 1 *")?],
        counting_registry(done.clone()),
        Arc::new(DryRun),
    )
    .await?;
    let producer = Producer::new(&via, &herald, ctx)?;

    // A run counts as done when its handler returned; its records reach
    // Redis later, through the store's write queue. `run_now` does not
    // wait for that queue, so the producer holds back while more than
    // `max_pending_writes` writes wait (else the rate measured would be
    // the handlers', with an ever-growing backlog of unwritten records).
    let backlog = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (backlog, store) = (backlog.clone(), herald.store.clone());
        tokio::spawn(async move {
            loop {
                // The store answers after its flush in progress: while it
                // is that busy, hold the producer back too.
                let call = store.stats();
                tokio::pin!(call);
                let stats = match tokio::time::timeout(Duration::from_millis(1), &mut call).await {
                    Ok(r) => r,
                    Err(_) => {
                        backlog.store(true, Ordering::SeqCst);
                        call.await
                    }
                };
                let pending = stats.map_or(0, |s| s.pending_writes);
                backlog.store(pending > max_pending_writes, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    // add_conc lanes, each awaiting its add, together keeping at most
    // max_in_flight runs added but not handled.
    let added = Arc::new(AtomicU64::new(0));
    let add_errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut lanes = Vec::new();
    for _ in 0..add_conc {
        let (done, added, add_errors, stop, producer, backlog) = (
            done.clone(),
            added.clone(),
            add_errors.clone(),
            stop.clone(),
            producer.clone(),
            backlog.clone(),
        );
        lanes.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if backlog.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let notified = done.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let in_flight = added.load(Ordering::SeqCst)
                    - done.count.load(Ordering::SeqCst)
                    - add_errors.load(Ordering::SeqCst);
                if in_flight >= max_in_flight {
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                    continue;
                }
                added.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = producer.add().await {
                    let n = add_errors.fetch_add(1, Ordering::SeqCst);
                    if n < 5 {
                        eprintln!("compare: add failed: {e}");
                    }
                }
            }
        }));
    }

    let t0 = Instant::now();
    tokio::time::sleep_until((t0 + Duration::from_secs_f64(warmup)).into()).await;
    let (ta, done_a, added_a, cpu_a) = (
        Instant::now(),
        done.count.load(Ordering::SeqCst),
        added.load(Ordering::SeqCst),
        process_cpu_seconds(),
    );
    let ra = ctx.snap().await?;
    let stats_a = herald.store.stats().await?;
    tokio::time::sleep_until((ta + Duration::from_secs_f64(s)).into()).await;
    let (tb, done_b, added_b, cpu_b) = (
        Instant::now(),
        done.count.load(Ordering::SeqCst),
        added.load(Ordering::SeqCst),
        process_cpu_seconds(),
    );
    let rb = ctx.snap().await?;
    let stats_b = herald.store.stats().await?;
    stop.store(true, Ordering::SeqCst);
    sampler.abort();
    done.notify.notify_waiters();
    for lane in lanes {
        let _ = lane.await;
    }
    close(herald).await;

    let seconds = (tb - ta).as_secs_f64();
    let processed = done_b - done_a;
    if processed == 0 {
        return Err(fail("no run completed in the measurement window"));
    }
    let cpu = cpu_b - cpu_a;
    let rd = delta(&ra, &rb, None);
    let p = processed as f64;
    Ok(extend(
        common("max-rate", ctx),
        json!({
            "seconds": round(seconds, 3),
            "warmup_seconds": warmup,
            "concurrency": c,
            "max_in_flight": max_in_flight,
            "add_concurrency": add_conc,
            "via": via,
            "remove_on_complete": "keep",
            "jobs_per_second": round(p / seconds, 1),
            "processed_in_window": processed,
            "added_in_window": added_b - added_a,
            "process_cpu_seconds": round(cpu, 4),
            "redis_cpu_seconds": round(rd.cpu, 4),
            "redis_commands": rd.calls,
            "process_cpu_us_per_job": round(cpu * 1e6 / p, 2),
            "redis_cpu_us_per_job": round(rd.cpu * 1e6 / p, 2),
            "redis_commands_per_job": round(rd.calls as f64 / p, 3),
            "max_pending_writes": max_pending_writes,
            "store_pending_writes_window_start": stats_a.pending_writes,
            "store_pending_writes_window_end": stats_b.pending_writes,
            "store_dropped_writes": stats_b.dropped_writes,
            "add_errors": add_errors.load(Ordering::SeqCst),
            "errors": 0,
        }),
    ))
}

// ---------------------------------------------------------------- latency

async fn latency(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let rate = o.float("rate", 1000.0, 1.0);
    let s = o.float("seconds", 30.0, 1.0);
    let c = o.int("concurrency", 100, 1) as usize;
    let grace = o.float("grace", 30.0, 0.0);
    let via = o.str("via", "run-now", &["run-now", "queue"]);
    if via == "queue" {
        ctx.store()?.ensure_queue().await?;
    }
    let total = (rate * s).floor() as usize;

    // Handler starts, keyed by run id (joined with the sends at the end).
    let starts: Arc<Mutex<Vec<(String, Instant)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total)));
    let started = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::new();
    {
        let (starts, started) = (starts.clone(), started.clone());
        registry.register("noop", move |ctx: RunContext| {
            let now = Instant::now();
            if let Ok(mut s) = starts.lock() {
                s.push((ctx.run_id.0.clone(), now));
            }
            started.fetch_add(1, Ordering::SeqCst);
            async { Ok(Counts::default()) }
        });
    }
    let mut cfg = config(ctx, c);
    cfg.max_queued = 1_000_000;
    let herald = spawn_tree(
        cfg,
        vec![noop_job("noop", "0 0 1 1 *")?],
        registry,
        Arc::new(DryRun),
    )
    .await?;
    let producer = Producer::new(&via, &herald, ctx)?;

    // Open loop: run i is due at t0 + i/R and sent (not awaited) as soon
    // as the clock passes its instant; late wake-ups catch up at once.
    // (send index, actual send, intended send, run id)
    let sends: Arc<Mutex<Vec<(Instant, Instant, String)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total)));
    let add_errors = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut sent = 0usize;
    let mut max_lag = 0f64;
    let r0 = ctx.snap().await?;
    let c0 = process_cpu_seconds();
    let t0 = Instant::now() + Duration::from_millis(10);
    let interval = Duration::from_secs_f64(1.0 / rate);
    while sent < total {
        let now = Instant::now();
        while sent < total && t0 + interval * sent as u32 <= now {
            let due = t0 + interval * sent as u32;
            let sent_at = Instant::now();
            max_lag = max_lag.max((sent_at - due).as_secs_f64() * 1e3);
            let (producer, sends, add_errors, acked) = (
                producer.clone(),
                sends.clone(),
                add_errors.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                match producer.add().await {
                    Ok(id) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut s) = sends.lock() {
                            s.push((sent_at, due, id));
                        }
                    }
                    Err(e) => {
                        let n = add_errors.fetch_add(1, Ordering::SeqCst);
                        if n < 5 {
                            eprintln!("compare: add failed: {e}");
                        }
                    }
                }
            });
            sent += 1;
        }
        if sent >= total {
            break;
        }
        let next = t0 + interval * sent as u32;
        let wait = next.saturating_duration_since(Instant::now());
        if wait >= Duration::from_millis(1) {
            tokio::time::sleep_until(next.into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let t_send_end = Instant::now();
    let deadline = t_send_end + Duration::from_secs_f64(grace);
    let all_started = loop {
        let errs = add_errors.load(Ordering::SeqCst);
        if started.load(Ordering::SeqCst) + errs >= sent as u64
            && acked.load(Ordering::SeqCst) + errs >= sent as u64
        {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = process_cpu_seconds() - c0;
    let r1 = ctx.snap().await?;
    let store_stats = herald.store.stats().await?;
    close(herald).await;

    let starts = std::mem::take(&mut *starts.lock().map_err(|_| fail("poisoned"))?);
    let sends = std::mem::take(&mut *sends.lock().map_err(|_| fail("poisoned"))?);
    let by_id: HashMap<&str, (Instant, Instant)> = sends
        .iter()
        .map(|(at, due, id)| (id.as_str(), (*at, *due)))
        .collect();
    let mut seen = HashSet::new();
    let mut duplicates = 0u64;
    let mut unknown = 0u64;
    let mut from_send = Vec::with_capacity(starts.len());
    let mut from_intended = Vec::with_capacity(starts.len());
    for (id, at) in &starts {
        if !seen.insert(id.as_str()) {
            duplicates += 1;
            continue;
        }
        match by_id.get(id.as_str()) {
            Some((sent_at, due)) => {
                from_send.push(at.saturating_duration_since(*sent_at).as_secs_f64() * 1e3);
                from_intended.push(at.saturating_duration_since(*due).as_secs_f64() * 1e3);
            }
            None => unknown += 1,
        }
    }
    let n_started = seen.len() as u64;
    let ss = summary(&mut from_send);
    let si = summary(&mut from_intended);
    let rd = delta(&r0, &r1, None);
    let errs = add_errors.load(Ordering::SeqCst);
    let out = extend(
        common("latency", ctx),
        json!({
            "rate": rate,
            "seconds": s,
            "concurrency": c,
            "via": via,
            "remove_on_complete": "keep",
            "p50_ms": opt_ms(ss.p50),
            "p99_ms": opt_ms(ss.p99),
            "max_ms": opt_ms(ss.max),
            "sent": sent,
            "started": n_started,
            "acked": acked.load(Ordering::SeqCst),
            "not_started": (sent as u64).saturating_sub(errs + n_started),
            "add_errors": errs,
            "duplicates": duplicates,
            "unmatched_starts": unknown,
            "failed": 0,
            "achieved_send_rate": round(sent as f64 / (t_send_end - t0).as_secs_f64(), 1),
            "producer_max_lag_ms": round(max_lag, 3),
            "from_intended_p50_ms": opt_ms(si.p50),
            "from_intended_p99_ms": opt_ms(si.p99),
            "from_intended_max_ms": opt_ms(si.max),
            "process_cpu_seconds": round(cpu, 4),
            "redis_cpu_seconds": round(rd.cpu, 4),
            "redis_commands": rd.calls,
            "store_pending_writes_at_end": store_stats.pending_writes,
            "store_dropped_writes": store_stats.dropped_writes,
            "errors": 0,
        }),
    );
    if !all_started {
        let missing = (sent as u64).saturating_sub(errs + n_started);
        return Err(Fail(
            format!("{missing} sent runs had not started {grace} s after the last send"),
            Some(out),
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------- precision

/// One handler start: (job, run id, scheduled instant ms, start ms). The
/// job and the run id are the run's own, moved or shared, not copied:
/// recording a start must not add work to the ticks it measures.
type Start = (Arc<JobSpec>, String, i64, f64);

async fn precision(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let k = o.int("schedules", 1000, 1) as usize;
    let s = o.int("seconds", 120, 1) as i64;
    let b = o.int("burst", 10_000, 0) as usize;
    let c = o.int("concurrency", 100, 1) as usize;
    let lead = o.float("lead", 5.0, 1.0);
    let burst_at = o.int("burst-at", 5, 1) as i64;
    let grace = o.float("grace", 10.0, 0.0);
    let _ = o.str("mode", "cron", &["cron", "every"]);
    let overlap_name = o.str("overlap", "skip", &["skip", "allow", "queue_one"]);
    let overlap = match overlap_name.as_str() {
        "allow" => OverlapPolicy::Allow,
        "queue_one" => OverlapPolicy::QueueOne,
        _ => OverlapPolicy::Skip,
    };
    if burst_at > s {
        usage("--burst-at must be within --seconds");
    }

    // Wall-clock grid: T0 a whole second `lead` s ahead; window ticks
    // T0 + 1..=S s; the burst due at T0 + burst_at s (on a tick).
    let now_ms = millis(Utc::now());
    let t0_ms = (now_ms + (lead * 1000.0) as i64 + 999) / 1000 * 1000;
    let burst_due_ms = t0_ms + burst_at * 1000;
    let window_end_ms = t0_ms + s * 1000;
    let burst_due =
        DateTime::from_timestamp_millis(burst_due_ms).ok_or_else(|| fail("burst instant"))?;

    // Room for every start up front: a list doubling mid-run would copy
    // megabytes during the very ticks it measures.
    let expected_starts = k * (s as usize + lead as usize + grace as usize + 2) + b;
    let starts: Arc<Mutex<Vec<Start>>> = Arc::new(Mutex::new(Vec::with_capacity(expected_starts)));
    let mut registry = Registry::new();
    {
        let starts = starts.clone();
        registry.register("noop", move |ctx: RunContext| {
            let start = Utc::now().timestamp_micros() as f64 / 1e3;
            let scheduled = millis(ctx.scheduled_at);
            if let Ok(mut s) = starts.lock() {
                s.push((ctx.job, ctx.run_id.0, scheduled, start));
            }
            async { Ok(Counts::default()) }
        });
    }
    let mut jobs = Vec::with_capacity(k + b);
    for j in 0..k {
        let mut spec = noop_job(&format!("tick-{j}"), "* * * * * *")?;
        spec.overlap = overlap; // default skip, herald's default
        jobs.push(spec);
    }
    // A 6-field expression naming one instant (sec min hour day month *).
    let once = format!(
        "{} {} {} {} {} *",
        burst_due.second(),
        burst_due.minute(),
        burst_due.hour(),
        burst_due.day(),
        burst_due.month()
    );
    for j in 0..b {
        jobs.push(noop_job(&format!("burst-{j}"), &once)?);
    }

    let herald = spawn_tree(config(ctx, c), jobs, registry, Arc::new(DryRun)).await?;
    let registered_at = millis(Utc::now());
    if registered_at >= t0_ms - 200 {
        close(herald).await;
        return Err(fail(format!(
            "registration finished {} ms after T0-200ms; raise --lead",
            registered_at - t0_ms
        )));
    }
    let views = herald.scheduler.jobs().await?;
    if views.len() != k + b {
        close(herald).await;
        return Err(fail(format!(
            "{} jobs scheduled, expected {}",
            views.len(),
            k + b
        )));
    }
    drop(views);

    let r0 = ctx.snap().await?;
    let c0 = process_cpu_seconds();
    let end_ms = window_end_ms + (grace * 1000.0) as i64;
    let wait = (end_ms - millis(Utc::now())).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let cpu = process_cpu_seconds() - c0;
    let r1 = ctx.snap().await?;
    let skipped = herald
        .store
        .skipped(None, 100_000)
        .await
        .unwrap_or_default();
    close(herald).await;

    let starts = std::mem::take(&mut *starts.lock().map_err(|_| fail("poisoned"))?);
    let mut seen_tick: HashSet<(JobId, i64)> = HashSet::new();
    let (mut duplicates, mut off_grid, mut outside, mut id_mismatch, mut early) = (0, 0, 0, 0, 0);
    let mut tick_late = Vec::new();
    let mut per_tick: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut burst_seen: HashSet<JobId> = HashSet::new();
    let mut burst_late = Vec::new();
    let mut burst_duplicates = 0;
    let mut sample = Value::Null;
    for (spec, run, sched, start) in &starts {
        let job = &spec.id;
        let expected_id = DateTime::from_timestamp_millis(*sched)
            .map(|t| RunId::for_tick(job, t).0)
            .unwrap_or_default();
        if *run != expected_id {
            id_mismatch += 1;
        }
        if (*start) < *sched as f64 {
            early += 1;
        }
        if job.starts_with("burst-") {
            if !burst_seen.insert(job.clone()) {
                burst_duplicates += 1;
                continue;
            }
            burst_late.push(start - burst_due_ms as f64);
            continue;
        }
        if sample.is_null() && *sched > t0_ms + 1000 {
            sample =
                json!({"job": job.as_ref(), "run_id": run, "scheduled": sched, "start": start});
        }
        let kk = ((*sched - t0_ms) as f64 / 1000.0).round() as i64;
        if *sched != t0_ms + kk * 1000 {
            off_grid += 1;
        }
        if kk < 1 || kk > s {
            outside += 1;
            continue;
        }
        if !seen_tick.insert((job.clone(), kk)) {
            duplicates += 1;
            continue;
        }
        tick_late.push(start - *sched as f64);
        per_tick.entry(kk).or_default().push(start - *sched as f64);
    }
    let expected = k as i64 * s;
    let lt = summary(&mut tick_late);
    // Per tick (second) of the window: when its first run started and
    // when its last did, to tell a tick's spread from a few bad seconds.
    let (mut tick_first, mut tick_last): (Vec<f64>, Vec<f64>) = per_tick
        .values_mut()
        .map(|l| {
            let t = summary(l);
            (t.min.unwrap_or(0.0), t.max.unwrap_or(0.0))
        })
        .unzip();
    let ticks_over_10ms = tick_last.iter().filter(|l| **l > 10.0).count();
    // Each second's last start in order, rounded to 0.1 ms: shows which
    // seconds (the burst's, its neighbours) make the tail.
    let tick_last_each: Vec<f64> = tick_last
        .iter()
        .map(|l| (l * 10.0).round() / 10.0)
        .collect();
    let tf = summary(&mut tick_first);
    let tl = summary(&mut tick_last);
    let bl = summary(&mut burst_late);
    let within_250 = burst_late.iter().filter(|l| **l <= 250.0).count();
    let mut skipped_by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for sk in &skipped {
        *skipped_by_reason.entry(sk.reason.as_str()).or_default() += sk.count;
    }
    let skipped_in_window: u64 = skipped_by_reason.values().sum();
    let rd = delta(&r0, &r1, None);
    Ok(extend(
        common("precision", ctx),
        json!({
            "schedules": k,
            "seconds": s,
            "mode": "cron:'* * * * * *'",
            "concurrency": c,
            "remove_on_complete": "keep",
            "grace_seconds": grace,
            "window_start": iso(t0_ms + 1000),
            "expected_runs": expected,
            "observed_runs": seen_tick.len(),
            "missed": expected - seen_tick.len() as i64,
            "duplicates": duplicates,
            "off_grid_runs": off_grid,
            "runs_outside_window": outside,
            "id_mismatches": id_mismatch,
            "due_before_scheduled": early,
            "lateness_p50_ms": opt_ms(lt.p50),
            "lateness_p99_ms": opt_ms(lt.p99),
            "lateness_max_ms": opt_ms(lt.max),
            "tick_first_start_p50_ms": opt_ms(tf.p50),
            "tick_last_start_p50_ms": opt_ms(tl.p50),
            "tick_last_start_max_ms": opt_ms(tl.max),
            "ticks_last_start_over_10ms": ticks_over_10ms,
            "tick_last_start_ms_each": tick_last_each,
            "lateness_min_ms": opt_ms(lt.min),
            "burst": b,
            "burst_due": iso(burst_due_ms),
            "burst_started": burst_seen.len(),
            "burst_duplicates": burst_duplicates,
            "burst_last_start_ms": opt_ms(bl.max),
            "burst_first_start_ms": opt_ms(bl.min),
            "burst_p50_ms": opt_ms(bl.p50),
            "burst_p99_ms": opt_ms(bl.p99),
            "burst_started_within_250ms": within_250,
            "burst_all_within_250ms": b == 0 || within_250 == b,
            "skipped_ticks_recorded": skipped_in_window,
            "skipped_ticks_by_reason": skipped_by_reason,
            "overlap": overlap_name,
            "failed": 0,
            "process_cpu_seconds": round(cpu, 3),
            "redis_cpu_seconds": round(rd.cpu, 3),
            "redis_commands": rd.calls,
            "redis_commands_by_name": rd.by_cmd,
            "sample_job": sample,
            "errors": 0,
        }),
    ))
}

// ---------------------------------------------------------------- footprint

/// Daily 5-field crons `m h * * *` over the 1440 minutes of the day, none
/// within 15 minutes of `now_min` (as bench.js).
fn daily_jobs(k: usize, now_min: usize) -> Result<Vec<JobSpec>, Fail> {
    (0..k)
        .map(|i| {
            let mut m = i % 1440;
            if (m + 1440 - now_min) % 1440 < 15 {
                m = (m + 30) % 1440;
            }
            noop_job(
                &format!("daily-{i}"),
                &format!("{} {} * * *", m % 60, m / 60),
            )
        })
        .collect()
}

fn idle_registry(done: Arc<Done>) -> Registry {
    counting_registry(done)
}

async fn footprint(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let k = o.int("schedules", 100_000, 1) as usize;
    let idle = o.float("idle", 10.0, 1.0);
    let mem0 = ctx.snap().await?.used_memory;
    let now = Utc::now();
    let now_min = (now.hour() * 60 + now.minute()) as usize;

    // Registration: a daemon started with the jobs syncs them into Redis;
    // it is stopped once its scheduler holds them all.
    let t0 = Instant::now();
    let mut cfg = config(ctx, 1);
    cfg.store_limits.max_records = 2 * k.max(1);
    let herald = spawn_tree(
        cfg,
        daily_jobs(k, now_min)?,
        idle_registry(Arc::new(Done::default())),
        Arc::new(DryRun),
    )
    .await?;
    let views = herald.scheduler.jobs().await?.len();
    close(herald).await;
    let register_seconds = t0.elapsed().as_secs_f64();
    if views != k {
        return Err(fail(format!("{views} jobs scheduled, expected {k}")));
    }
    let registered = ctx.store()?.jobs().await?.len();
    if registered != k {
        return Err(fail(format!("{registered} jobs in redis, expected {k}")));
    }
    let (registrar_rss, _) = rss_bytes();

    // The daemon in its own process (this binary), so its RSS is not
    // inflated by the registration above.
    let r0 = ctx.snap().await?;
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args([
            "footprint-worker",
            "--redis",
            &ctx.url,
            "--queue",
            &ctx.prefix,
            "--idle",
            &idle.to_string(),
            "--schedules",
            &k.to_string(),
            "--now-min",
            &now_min.to_string(),
            "--response-timeout",
            &ctx.settings().response_timeout.as_secs_f64().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let r1 = ctx.snap().await?;
    if !output.status.success() {
        return Err(fail(format!(
            "footprint worker process exited with {}",
            output.status
        )));
    }
    let w: Value = serde_json::from_slice(&output.stdout)?;
    let rss = w["rss"].as_u64().unwrap_or(0);
    let rd = delta(&r0, &r1, None);
    Ok(extend(
        common("footprint", ctx),
        json!({
            "schedules": k,
            "registered": registered,
            "delayed_jobs": 0,
            "register_seconds": round(register_seconds, 2),
            "idle_seconds": idle,
            "worker_rss_bytes": rss,
            "worker_rss_mb": round(rss as f64 / 1_048_576.0, 1),
            "worker_rss_peak_bytes": w["hwm"],
            "worker_startup_seconds": w["startup_seconds"],
            "worker_idle_cpu_seconds": w["idle_cpu_seconds"],
            "worker_jobs_processed": w["processed"],
            "redis_used_memory_bytes": r1.used_memory,
            "redis_used_memory_mb": round(r1.used_memory as f64 / 1_048_576.0, 1),
            "redis_used_memory_before_bytes": mem0,
            "redis_cpu_seconds_worker_lifetime": round(rd.cpu, 4),
            "redis_commands_worker_lifetime": rd.calls,
            "redis_commands_by_name_worker_lifetime": rd.by_cmd,
            "registrar_rss_bytes": registrar_rss,
            "errors": w["errors"],
        }),
    ))
}

/// Internal: the footprint scenario's daemon process.
async fn footprint_worker(o: &Opts, ctx: &mut Ctx) -> Result<Value, Fail> {
    let k = o.int("schedules", 100_000, 1) as usize;
    let idle = o.float("idle", 10.0, 1.0);
    let now_min = o.int("now-min", 0, 0) as usize;
    let done = Arc::new(Done::default());
    let t0 = Instant::now();
    let herald = spawn_tree(
        config(ctx, 1),
        daily_jobs(k, now_min)?,
        idle_registry(done.clone()),
        Arc::new(DryRun),
    )
    .await?;
    let views = herald.scheduler.jobs().await?.len();
    let startup = t0.elapsed().as_secs_f64();
    if views != k {
        return Err(fail(format!("{views} jobs scheduled, expected {k}")));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c0 = process_cpu_seconds();
    tokio::time::sleep(Duration::from_secs_f64(idle)).await;
    let cpu = process_cpu_seconds() - c0;
    let (rss, hwm) = rss_bytes();
    close(herald).await;
    Ok(json!({
        "rss": rss,
        "hwm": hwm,
        "startup_seconds": round(startup, 3),
        "idle_cpu_seconds": round(cpu, 4),
        "processed": done.count.load(Ordering::SeqCst),
        "errors": 0,
    }))
}

// ---------------------------------------------------------------- main

fn default_timeout(scenario: &str, o: &Opts) -> f64 {
    let f = |k: &str, d: f64| o.float(k, d, 0.0);
    match scenario {
        "max-rate" => f("seconds", 30.0) + f("warmup", 2.0) + 120.0,
        "latency" => f("seconds", 30.0) + f("grace", 30.0) + 120.0,
        "precision" => f("seconds", 120.0) + f("lead", 5.0) + f("grace", 10.0) + 120.0,
        "footprint-worker" => f("idle", 10.0) + 120.0,
        _ => 900.0,
    }
}

async fn run(scenario: &str, o: &Opts) -> Result<Value, Fail> {
    let url = o.0.get("redis").cloned().unwrap_or_default();
    let client = redis::Client::open(url.as_str())?;
    let stats = client.get_multiplexed_async_connection().await?;
    let prefix = o.str("queue", &format!("bench-{scenario}"), &[]);
    let response_timeout =
        o.0.contains_key("response-timeout")
            .then(|| Duration::from_secs_f64(o.float("response-timeout", 0.5, 0.001)));
    let mut ctx = Ctx {
        url,
        prefix,
        response_timeout,
        stats,
        redis_version: String::new(),
    };
    ctx.redis_version = ctx.snap().await?.version;
    match scenario {
        "footprint-worker" => return footprint_worker(o, &mut ctx).await,
        _ => assert_prefix_empty(&mut ctx.stats, &ctx.prefix).await?,
    }
    match scenario {
        "drain" => drain(o, &mut ctx).await,
        "max-rate" => max_rate(o, &mut ctx).await,
        "latency" => latency(o, &mut ctx).await,
        "precision" => precision(o, &mut ctx).await,
        "footprint" => footprint(o, &mut ctx).await,
        _ => unreachable!("checked in main"),
    }
}

fn main() -> ExitCode {
    // As the daemon's main does.
    herald_actors::allocator::release_freed_memory_promptly();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(scenario) = args.first().cloned() else {
        usage("");
    };
    if scenario == "--help" || scenario == "-h" {
        usage("");
    }
    let known = [
        "drain",
        "max-rate",
        "latency",
        "precision",
        "footprint",
        "footprint-worker",
    ];
    if !known.contains(&scenario.as_str()) {
        usage(&format!("unknown scenario {scenario}"));
    }
    let o = Opts::parse(&args[1..]);
    // The tree's own log, to stderr, only when asked for (it costs time).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match o.0.get("redis") {
        None => usage("--redis redis://127.0.0.1:PORT is required"),
        Some(u) if !u.starts_with("redis://") => usage("--redis must be a redis:// URL"),
        Some(_) => {}
    }
    if o.str("remove-on-complete", "keep", &[]) != "keep" {
        usage("--remove-on-complete: herald keeps every run's record (7-day TTL); only keep");
    }
    let timeout = match o.0.get("timeout") {
        Some(_) => o.float("timeout", 0.0, 1.0),
        None => default_timeout(&scenario, &o),
    };
    {
        let scenario = scenario.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(timeout));
            eprintln!("compare: hard timeout of {timeout} s hit in {scenario}; giving up");
            std::process::exit(3);
        });
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare: no tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(&scenario, &o));
    rt.shutdown_timeout(Duration::from_secs(10));
    let code = match result {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(Fail(msg, out)) => {
            eprintln!("compare: {scenario} failed: {msg}");
            if let Some(out) = out {
                println!("{out}");
            }
            1
        }
    };
    if code == 0 && NOT_CLOSED.load(Ordering::SeqCst) {
        return ExitCode::from(4);
    }
    ExitCode::from(code)
}
