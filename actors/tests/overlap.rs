//! Overlap policies with a slow job: an every-second job whose runs take
//! 1.5 s.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::OverlapPolicy;
use herald_actors::memory::RecordQuery;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, ExecutionRecord, RunStatus, SkipReason, Trigger};
use herald_actors::{TreeConfig, spawn_tree};
use support::{coded, wait_for};

async fn run_slow_job(policy: OverlapPolicy) -> (Vec<ExecutionRecord>, u64) {
    let mut spec = coded("slow", "* * * * * *", "slow");
    spec.overlap = policy;
    let mut registry = Registry::new();
    registry.register("slow", |_ctx: RunContext| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(Counts::default())
    });
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![spec],
        registry,
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    let store = herald.store.clone();
    let records = wait_for("three finished runs", Duration::from_secs(15), || {
        let store = store.clone();
        async move {
            let recs = store
                .query(RecordQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .ok()?;
            let done = recs
                .iter()
                .filter(|r| r.status == RunStatus::Success)
                .count();
            (done >= 3).then_some(recs)
        }
    })
    .await;
    let skipped: u64 = herald
        .store
        .skipped(Some("slow".into()), 100)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.reason == SkipReason::Overlap)
        .map(|s| s.count)
        .sum();
    herald.shutdown().await;
    (records, skipped)
}

/// Do any two finished runs overlap in time?
fn overlapping(records: &[ExecutionRecord]) -> bool {
    let mut spans: Vec<_> = records
        .iter()
        .filter(|r| r.status == RunStatus::Success)
        .filter_map(|r| Some((r.started_at?, r.finished_at?)))
        .collect();
    spans.sort();
    spans.windows(2).any(|w| w[1].0 < w[0].1)
}

#[tokio::test]
async fn skip_never_overlaps_and_records_the_dropped_ticks() {
    let (records, skipped) = run_slow_job(OverlapPolicy::Skip).await;
    assert!(!overlapping(&records), "{records:#?}");
    assert!(
        skipped >= 2,
        "ticks during a run are recorded as skipped: {skipped}"
    );
    assert!(records.iter().all(|r| r.trigger == Trigger::Schedule));
}

#[tokio::test]
async fn allow_runs_alongside() {
    let (records, skipped) = run_slow_job(OverlapPolicy::Allow).await;
    assert!(overlapping(&records), "{records:#?}");
    assert_eq!(skipped, 0);
}

#[tokio::test]
async fn queue_one_holds_a_tick_and_runs_it_after() {
    let (records, skipped) = run_slow_job(OverlapPolicy::QueueOne).await;
    assert!(!overlapping(&records), "{records:#?}");
    assert!(
        records
            .iter()
            .any(|r| r.trigger == Trigger::Queued && r.status == RunStatus::Success),
        "{records:#?}"
    );
    // a run takes 1.5 s, ticks come every second: one waits, the next is dropped
    assert!(skipped >= 1, "{skipped}");
}
