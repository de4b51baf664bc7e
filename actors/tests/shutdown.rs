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

#[tokio::test]
async fn shutdown_stops_firing() {
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("tick", "* * * * * *", "short")],
        registry(),
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    let memory = herald.memory();
    herald.shutdown().await;
    let count = memory.lock().unwrap().record_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        memory.lock().unwrap().record_count(),
        count,
        "nothing fires after shutdown"
    );
}
