//! Misfire policies after a simulated downtime: the store says the job last
//! handled a tick five minutes ago, and the tree starts now.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use herald_actors::job::MisfirePolicy;
use herald_actors::memory::{MemoryStore, RecordQuery, StoreLimits};
use herald_actors::notifier::DryRun;
use herald_actors::record::{RunStatus, SkipReason, Trigger};
use herald_actors::{Herald, TreeConfig, spawn_tree_on};
use support::{Calls, coded, counting, wait_for};

/// A minutely job whose last handled tick was 5 minutes before this
/// minute: the ticks of the last 5 minutes (this minute's included) were
/// missed. Returns the tree and the missed ticks.
async fn down_for_five_minutes(
    policy: MisfirePolicy,
    limit: u32,
    calls: &Calls,
) -> (Herald, Vec<DateTime<Utc>>) {
    let mut now = Utc::now();
    if now.timestamp() % 60 >= 57 {
        // Too close to a minute boundary: the tree could start in the next one.
        tokio::time::sleep(Duration::from_secs(4)).await;
        now = Utc::now();
    }
    let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap();
    let last = this_minute - TimeDelta::minutes(5);
    let missed: Vec<_> = (1..=5).map(|m| last + TimeDelta::minutes(m)).collect();
    let mut spec = coded("minutely", "* * * * *", "count");
    spec.misfire = policy;
    spec.misfire_limit = limit;
    let memory = Arc::new(Mutex::new(MemoryStore::new(StoreLimits::default())));
    memory.lock().unwrap().set_last_tick("minutely", last);
    let herald = spawn_tree_on(
        TreeConfig::default(),
        vec![spec],
        counting(calls),
        Arc::new(DryRun),
        memory,
    )
    .await
    .expect("tree starts");
    (herald, missed)
}

async fn misfire_runs(herald: &Herald, expected: usize) -> Vec<DateTime<Utc>> {
    let store = herald.store.clone();
    wait_for("catch-up runs to finish", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let recs = store
                .query(RecordQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .ok()?;
            let done: Vec<_> = recs
                .iter()
                .filter(|r| r.trigger == Trigger::Misfire && r.status == RunStatus::Success)
                .map(|r| r.scheduled_at)
                .collect();
            (done.len() >= expected).then_some(done)
        }
    })
    .await
}

#[tokio::test]
async fn skip_runs_nothing_and_records_every_missed_tick() {
    let calls = Calls::default();
    let (herald, missed) = down_for_five_minutes(MisfirePolicy::Skip, 100, &calls).await;
    let skipped = wait_for("the skip record", Duration::from_secs(5), || {
        let store = herald.store.clone();
        async move {
            let s = store.skipped(Some("minutely".into()), 10).await.ok()?;
            (!s.is_empty()).then_some(s)
        }
    })
    .await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason, SkipReason::Misfire);
    assert_eq!(
        (skipped[0].first, skipped[0].last, skipped[0].count),
        (missed[0], missed[4], 5)
    );
    let recs = herald
        .store
        .query(RecordQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        recs.iter().all(|r| r.trigger != Trigger::Misfire),
        "{recs:?}"
    );
    herald.shutdown().await;
}

#[tokio::test]
async fn fire_once_runs_only_the_latest_missed_tick() {
    let calls = Calls::default();
    let (herald, missed) = down_for_five_minutes(MisfirePolicy::FireOnce, 100, &calls).await;
    let runs = misfire_runs(&herald, 1).await;
    assert_eq!(runs, vec![missed[4]]);
    let skipped = herald
        .store
        .skipped(Some("minutely".into()), 10)
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].first, skipped[0].last, skipped[0].count),
        (missed[0], missed[3], 4)
    );
    herald.shutdown().await;
}

#[tokio::test]
async fn fire_all_runs_each_missed_tick_once_up_to_the_bound() {
    let calls = Calls::default();
    let (herald, missed) = down_for_five_minutes(MisfirePolicy::FireAll, 100, &calls).await;
    let mut runs = misfire_runs(&herald, 5).await;
    runs.sort();
    assert_eq!(runs, missed);
    assert_eq!(calls.max_per_tick(), 1);
    herald.shutdown().await;

    let calls = Calls::default();
    let (herald, missed) = down_for_five_minutes(MisfirePolicy::FireAll, 3, &calls).await;
    let mut runs = misfire_runs(&herald, 3).await;
    runs.sort();
    assert_eq!(runs, missed[..3]);
    let skipped = herald
        .store
        .skipped(Some("minutely".into()), 10)
        .await
        .unwrap();
    assert_eq!(skipped[0].reason, SkipReason::MisfireLimit);
    assert_eq!(
        (skipped[0].first, skipped[0].last, skipped[0].count),
        (missed[3], missed[4], 2)
    );
    herald.shutdown().await;
}
