//! While runs are short and more are due than workers are idle, the pool
//! hands each worker a batch. A run in a batch that keeps running must not
//! hold up the runs behind it: they go back to the pool for other workers.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::OverlapPolicy;
use herald_actors::notifier::DryRun;
use herald_actors::record::Counts;
use herald_actors::{TreeConfig, spawn_tree};
use support::{coded, once_ahead, wait_for, warm_up};

const QUICK_JOBS: usize = 8;
/// How long the slow run keeps its worker.
const SLOW: Duration = Duration::from_secs(3);

type Starts = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

#[tokio::test]
async fn runs_behind_one_that_keeps_running_are_given_back_and_start_on_time() {
    let starts: Starts = Arc::default();
    let mut registry = Registry::new();
    registry.register("warm", |_ctx: RunContext| async { Ok(Counts::default()) });
    {
        let starts = starts.clone();
        registry.register("quick", move |ctx: RunContext| {
            if let Ok(mut s) = starts.lock() {
                s.insert(ctx.job.id.to_string(), Utc::now());
            }
            async { Ok(Counts::default()) }
        });
    }
    registry.register("slow", |_ctx: RunContext| async {
        tokio::time::sleep(SLOW).await;
        Ok(Counts::default())
    });

    // Every job fires at T (fired ahead, held, and released together).
    // The slow job fires again a minute later, the quick ones only next
    // year: the slow run's deadline is the earliest, so it is first in
    // the queue and first in its worker's batch, with quick runs behind it.
    let (at, once) = once_ahead(5);
    let mut slow = coded("slow", &format!("{} * * * * *", at.second()), "slow");
    slow.overlap = OverlapPolicy::Allow;
    slow.timeout = Duration::from_secs(30);
    let mut jobs = vec![slow, coded("warm", "0 0 1 1 *", "warm")];
    for i in 0..QUICK_JOBS {
        let mut quick = coded(&format!("quick-{i}"), &once, "quick");
        quick.overlap = OverlapPolicy::Allow;
        jobs.push(quick);
    }
    let config = TreeConfig {
        workers: 2,
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, jobs, registry, Arc::new(DryRun))
        .await
        .unwrap();

    warm_up(&herald, "warm", 20).await;
    assert!(
        Utc::now() < at - chrono::TimeDelta::milliseconds(1_600),
        "warm-up overran the fire-ahead"
    );

    let started = wait_for("every quick run to start", Duration::from_secs(15), || {
        let starts = starts.clone();
        async move {
            let s = starts.lock().ok()?;
            (s.len() == QUICK_JOBS).then(|| s.clone())
        }
    })
    .await;
    for (job, start) in &started {
        let late = (*start - at).to_std().unwrap_or_default();
        assert!(
            late < Duration::from_secs(1),
            "{job} started {late:?} after its tick, behind the slow run ({SLOW:?})"
        );
    }
    herald.shutdown().await;
}
