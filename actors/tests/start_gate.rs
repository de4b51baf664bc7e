//! When an instant starts many short runs, handed out in batches, no run
//! is settled (its final record written, its "run finished" logged) until
//! every run handed out has started: the bookkeeping would otherwise take
//! the cores from the starts still to come (see `worker::StartGate`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::OverlapPolicy;
use herald_actors::notifier::DryRun;
use herald_actors::record::Counts;
use herald_actors::{TreeConfig, spawn_tree};
use support::{coded, once_ahead, wait_for, warm_up};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry as Subscribers};

const WORKERS: usize = 8;
/// Eight runs for each worker: one batch each.
const RUNS: usize = 64;

/// Runs settled so far: the pool's "run finished" log lines.
static SETTLED: AtomicUsize = AtomicUsize::new(0);

struct CountSettled;

struct IsRunFinished(bool);

impl Visit for IsRunFinished {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "run finished" {
            self.0 = true;
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for CountSettled {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut visit = IsRunFinished(false);
        event.record(&mut visit);
        if visit.0 {
            SETTLED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_run_of_an_instant_is_settled_before_all_its_batches_started() {
    tracing::subscriber::set_global_default(Subscribers::default().with(CountSettled))
        .expect("the only subscriber of this test binary");
    // What each run saw settled when it started.
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let mut registry = Registry::new();
    registry.register("warm", |_ctx: RunContext| async { Ok(Counts::default()) });
    {
        let seen = seen.clone();
        registry.register("tick", move |_ctx: RunContext| {
            if let Ok(mut s) = seen.lock() {
                s.push(SETTLED.load(Ordering::SeqCst));
            }
            async { Ok(Counts::default()) }
        });
    }
    let (at, once) = once_ahead(5);
    let mut jobs = vec![coded("warm", "0 0 1 1 *", "warm")];
    for i in 0..RUNS {
        let mut tick = coded(&format!("tick-{i}"), &once, "tick");
        tick.overlap = OverlapPolicy::Allow;
        jobs.push(tick);
    }
    let config = TreeConfig {
        workers: WORKERS,
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, jobs, registry, Arc::new(DryRun))
        .await
        .unwrap();
    warm_up(&herald, "warm", 20).await;
    let before = SETTLED.load(Ordering::SeqCst);
    assert!(before >= 20, "the warm-up's runs were logged as finished");
    assert!(
        Utc::now() < at - chrono::TimeDelta::milliseconds(1_600),
        "warm-up overran the fire-ahead"
    );

    let seen = wait_for(
        "every run of the instant to start",
        Duration::from_secs(15),
        || {
            let seen = seen.clone();
            async move {
                let s = seen.lock().ok()?;
                (s.len() == RUNS).then(|| s.clone())
            }
        },
    )
    .await;
    let early: Vec<usize> = seen.iter().map(|n| n - before).filter(|n| *n > 0).collect();
    assert!(
        early.is_empty(),
        "{} of {RUNS} runs started after runs of their instant were settled ({early:?} settled by then)",
        early.len()
    );
    wait_for(
        "every run of the instant to settle",
        Duration::from_secs(5),
        || async { (SETTLED.load(Ordering::SeqCst) == before + RUNS).then_some(()) },
    )
    .await;
    herald.shutdown().await;
}
