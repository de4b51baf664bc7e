//! Shared test support: building jobs, waiting for conditions, recording
//! transports and handlers that count their calls.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use herald_actors::Herald;
use herald_actors::delivery::SendResult;
use herald_actors::handler::BoxFuture;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec, RetryPolicy};
use herald_actors::notifier::Transport;
use herald_actors::record::{Counts, ExecutionRecord, RunId, RunStatus};
use herald_actors::schedule::Schedule;

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `within` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn coded(id: &str, expr: &str, handler: &str) -> JobSpec {
    JobSpec::new(
        id,
        Schedule::parse(expr, chrono_tz::UTC).expect("valid expression"),
        JobKind::Coded {
            handler: handler.to_string(),
        },
    )
}

/// Fast retries for tests.
pub fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    }
}

type Tick = (String, DateTime<Utc>);

/// Counts calls per (job, scheduled instant).
#[derive(Clone, Default)]
pub struct Calls(pub Arc<Mutex<HashMap<Tick, u32>>>);

impl Calls {
    pub fn note(&self, job: &str, at: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((job.to_string(), at))
            .or_default() += 1;
    }

    pub fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }

    pub fn max_per_tick(&self) -> u32 {
        self.0.lock().unwrap().values().copied().max().unwrap_or(0)
    }

    pub fn distinct_jobs(&self) -> usize {
        let map = self.0.lock().unwrap();
        let mut jobs: Vec<&String> = map.keys().map(|(j, _)| j).collect();
        jobs.sort();
        jobs.dedup();
        jobs.len()
    }
}

/// A registry whose handler "count" notes each call in `calls`.
pub fn counting(calls: &Calls) -> Registry {
    let mut registry = Registry::new();
    let c = calls.clone();
    registry.register("count", move |ctx: RunContext| {
        let c = c.clone();
        async move {
            c.note(&ctx.job.id, ctx.scheduled_at);
            Ok(Counts::default())
        }
    });
    registry
}

/// Waits until the run's record reaches a final status.
pub async fn finished(herald: &Herald, run: &RunId) -> ExecutionRecord {
    finished_within(herald, run, Duration::from_secs(10)).await
}

/// Waits up to `within` until the run's record reaches a final status.
pub async fn finished_within(herald: &Herald, run: &RunId, within: Duration) -> ExecutionRecord {
    wait_for("the run to finish", within, || {
        let (store, run) = (herald.store.clone(), run.clone());
        async move {
            let r = store.record(run).await.ok()??;
            r.status.is_terminal().then_some(r)
        }
    })
    .await
}

/// A whole second `secs` ahead, and a six-field cron expression that
/// fires at it (and then only a year later).
pub fn once_ahead(secs: i64) -> (DateTime<Utc>, String) {
    let at = Utc::now() + chrono::TimeDelta::seconds(secs);
    let at = at.with_nanosecond(0).unwrap_or(at);
    let expr = format!(
        "{} {} {} {} {} *",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    );
    (at, expr)
}

/// Runs `job` now `n` times, one after the other, each to its end: the
/// pool hands out batches only once the runs it has seen are short.
pub async fn warm_up(herald: &Herald, job: &str, n: usize) {
    for _ in 0..n {
        let run = herald.scheduler.run_now(job.into()).await.unwrap().unwrap();
        finished(herald, &run).await;
    }
}

/// Waits until the run's record is RUNNING.
pub async fn started(herald: &Herald, run: &RunId) {
    wait_for("the run to start", Duration::from_secs(5), || {
        let (store, run) = (herald.store.clone(), run.clone());
        async move { (store.record(run).await.ok()??.status == RunStatus::Running).then_some(()) }
    })
    .await
}

/// A transport that keeps what it was given: (chat, text, silent).
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(i64, String, bool)>>);

impl Transport for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn send(&self, chat_id: i64, html: &str, silent: bool) -> BoxFuture<SendResult> {
        self.0
            .lock()
            .unwrap()
            .push((chat_id, html.to_string(), silent));
        Box::pin(async { SendResult::Sent })
    }
}

/// A transport that panics on every send.
pub struct Exploding;

impl Transport for Exploding {
    fn name(&self) -> &'static str {
        "exploding"
    }

    fn send(&self, _: i64, _: &str, _: bool) -> BoxFuture<SendResult> {
        panic!("transport exploded");
    }
}

/// A TCP relay on a loopback port in front of `127.0.0.1:upstream`. Cut,
/// it drops every connection through it and each new one as it comes: a
/// daemon using it loses Redis while others keep it.
pub struct Relay {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, is_open) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut is_open = is_open.clone();
                tokio::spawn(async move {
                    if !*is_open.borrow_and_update() {
                        return;
                    }
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = is_open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { port, open }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}
