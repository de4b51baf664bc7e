//! Graceful shutdown: stop firing, let running runs finish within the
//! grace, cancel what remains (CANCELLED, not lost).

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::handler::{Registry, RunContext};
use herald_actors::memory::RecordQuery;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, RunStatus};
use herald_actors::{TreeConfig, spawn_tree};
use support::{coded, wait_for};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("long", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Counts::default())
    });
    r.register("short", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Counts::default())
    });
    r
}

#[tokio::test]
async fn a_run_still_going_at_the_deadline_is_cancelled_and_one_that_finishes_succeeds() {
    let config = TreeConfig {
        shutdown_grace: Duration::from_millis(800),
        ..TreeConfig::default()
    };
    let mut long = coded("long", "0 0 1 1 *", "long");
    long.timeout = Duration::from_secs(120);
    let jobs = vec![long, coded("short", "0 0 1 1 *", "short")];
    let herald = spawn_tree(config, jobs, registry(), Arc::new(DryRun))
        .await
        .unwrap();
    let long_run = herald
        .scheduler
        .run_now("long".into())
        .await
        .unwrap()
        .unwrap();
    let short_run = herald
        .scheduler
        .run_now("short".into())
        .await
        .unwrap()
        .unwrap();
    wait_for("both runs to start", Duration::from_secs(5), || {
        let store = herald.store.clone();
        async move {
            let running = store
                .query(RecordQuery {
                    status: Some(RunStatus::Running),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .ok()?;
            (running.len() == 2).then_some(())
        }
    })
    .await;
    let memory = herald.memory();
    let started = std::time::Instant::now();
    let report = herald.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!((report.finished, report.cancelled), (1, 1));
    let mem = memory.lock().unwrap();
    let long_rec = mem.record(&long_run).unwrap();
    assert_eq!(long_rec.status, RunStatus::Cancelled);
    assert!(long_rec.error.unwrap().contains("shutdown deadline"));
    assert_eq!(mem.record(&short_run).unwrap().status, RunStatus::Success);
}

/// While running runs drain, the scheduler starts nothing new: with
/// `overlap = allow` an every-second job would otherwise add a run each
/// second of the grace.
#[tokio::test]
async fn no_tick_starts_a_run_while_shutdown_drains() {
    let config = TreeConfig {
        shutdown_grace: Duration::from_secs(3),
        ..TreeConfig::default()
    };
    let mut job = coded("tick", "* * * * * *", "long");
    job.overlap = herald_actors::job::OverlapPolicy::Allow;
    job.timeout = Duration::from_secs(60);
    let herald = spawn_tree(config, vec![job], registry(), Arc::new(DryRun))
        .await
        .unwrap();
    wait_for("a run to start", Duration::from_secs(5), || {
        let store = herald.store.clone();
        async move {
            let running = store
                .query(RecordQuery {
                    status: Some(RunStatus::Running),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .ok()?;
            (!running.is_empty()).then_some(())
        }
    })
    .await;
    let memory = herald.memory();
    let began = chrono::Utc::now();
    herald.shutdown().await;
    let mem = memory.lock().unwrap();
    let late = mem
        .query(&RecordQuery {
            limit: 1000,
            ..Default::default()
        })
        .into_iter()
        .filter(|r| r.created_at > began)
        .count();
    assert_eq!(late, 0, "runs were started during the drain");
}
