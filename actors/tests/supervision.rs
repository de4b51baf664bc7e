//! One-for-one restarts: a killed child comes back and rebuilds from the
//! store; a child failing past the restart limit stops the tree with the
//! actor and the reason.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::handler::{Registry, RunContext};
use herald_actors::memory::RecordQuery;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, RunStatus};
use herald_actors::restart::RestartLimit;
use herald_actors::supervisor::{Child, TreeExit};
use herald_actors::{TreeConfig, spawn_tree};
use support::{Calls, coded, counting, finished, started, wait_for};

async fn successes(herald: &herald_actors::Herald) -> usize {
    herald
        .store
        .query(RecordQuery {
            status: Some(RunStatus::Success),
            limit: 1000,
            ..Default::default()
        })
        .await
        .map_or(0, |r| r.len())
}

#[tokio::test]
async fn killed_children_restart_and_ticks_still_run_exactly_once() {
    let calls = Calls::default();
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("every-second", "* * * * * *", "count")],
        counting(&calls),
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    for child in [
        Child::Scheduler,
        Child::WorkerPool,
        Child::ExecutionStore,
        Child::Notifier,
    ] {
        let before = successes(&herald).await;
        herald.kill(child);
        wait_for(
            &format!("runs to continue after killing {child:?}"),
            Duration::from_secs(10),
            || {
                let herald = &herald;
                async move { (successes(herald).await >= before + 2).then_some(()) }
            },
        )
        .await;
    }
    assert_eq!(herald.exit_status(), TreeExit::Running);
    assert_eq!(calls.max_per_tick(), 1, "no tick ran twice across restarts");
    // the store kept every record through its own restart
    assert_eq!(successes(&herald).await as u32, calls.total());
    herald.shutdown().await;
}

#[tokio::test]
async fn a_run_held_by_a_killed_pool_is_not_lost() {
    let mut registry = Registry::new();
    registry.register("slow", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok(Counts::default())
    });
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("slow", "0 0 1 1 *", "slow")],
        registry,
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    let run = herald
        .scheduler
        .run_now("slow".into())
        .await
        .unwrap()
        .unwrap();
    started(&herald, &run).await;
    herald.kill(Child::WorkerPool);
    let rec = finished(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Success);
    herald.shutdown().await;
}

#[tokio::test]
async fn a_child_failing_past_the_restart_limit_stops_the_tree() {
    let config = TreeConfig {
        restart_limit: RestartLimit {
            max_restarts: 2,
            window: Duration::from_secs(60),
        },
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, Vec::new(), Registry::new(), Arc::new(DryRun))
        .await
        .unwrap();
    // Three failures of one child within the window: two restarts are
    // allowed, the third failure stops the tree.
    for _ in 0..3 {
        herald.kill(Child::Notifier);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(15), herald.stopped())
        .await
        .expect("the tree gives up within 15 s");
    match exit {
        TreeExit::Failed { actor, reason } => {
            assert_eq!(actor, "notifier");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a failure exit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restarted_scheduler_still_knows_a_run_is_in_flight() {
    let mut registry = Registry::new();
    registry.register("slow", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(Counts::default())
    });
    // overlap = skip (the default): while a run is going, ticks are dropped
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("slow", "* * * * * *", "slow")],
        registry,
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    wait_for("the first run to start", Duration::from_secs(5), || {
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
    herald.kill(Child::Scheduler);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let live = herald
        .store
        .query(RecordQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| !r.status.is_terminal())
        .count();
    assert_eq!(
        live, 1,
        "the restarted scheduler must not start a second, overlapping run"
    );
    herald.shutdown().await;
}
