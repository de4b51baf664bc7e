//! The timer: edits re-arm it at once, and many jobs due in the same second
//! each run exactly once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Timelike, Utc};
use herald_actors::handler::Registry;
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::memory::RecordQuery;
use herald_actors::notifier::DryRun;
use herald_actors::record::{RunStatus, Trigger};
use herald_actors::schedule::Schedule;
use herald_actors::{TreeConfig, spawn_tree};
use support::{Calls, Recorder, coded, counting, finished, wait_for};

#[tokio::test]
async fn a_schedule_edit_rearms_the_timer_at_once() {
    let calls = Calls::default();
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("yearly", "0 0 1 1 *", "count")],
        counting(&calls),
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    let next = herald
        .scheduler
        .upsert_job(coded("yearly", "* * * * * *", "count"))
        .await
        .unwrap();
    let next = next.expect("an every-second job has a next fire");
    assert!(next <= Utc::now() + TimeDelta::seconds(1));
    wait_for("a run at the new schedule", Duration::from_secs(3), || {
        let calls = calls.clone();
        async move { (calls.total() >= 1).then_some(()) }
    })
    .await;
    // disabling stops it; enabling starts it again
    herald
        .scheduler
        .set_enabled("yearly".into(), false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_disable = calls.total();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls.total(), after_disable, "a disabled job does not fire");
    let views = herald.scheduler.jobs().await.unwrap();
    assert!(!views[0].spec.enabled && views[0].next_fire.is_none());
    herald
        .scheduler
        .set_enabled("yearly".into(), true)
        .await
        .unwrap();
    wait_for("runs after re-enabling", Duration::from_secs(3), || {
        let calls = calls.clone();
        async move { (calls.total() > after_disable).then_some(()) }
    })
    .await;
    herald.shutdown().await;
}

#[tokio::test]
async fn a_thousand_jobs_due_in_the_same_second_each_run_exactly_once() {
    let target = (Utc::now() + TimeDelta::seconds(3))
        .with_nanosecond(0)
        .unwrap();
    let expr = format!(
        "{} {} {} * * *",
        target.second(),
        target.minute(),
        target.hour()
    );
    let jobs: Vec<JobSpec> = (0..1000)
        .map(|i| coded(&format!("job-{i}"), &expr, "count"))
        .collect();
    let calls = Calls::default();
    let herald = spawn_tree(
        TreeConfig::default(),
        jobs,
        counting(&calls),
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    wait_for("1,000 runs", Duration::from_secs(15), || {
        let calls = calls.clone();
        async move { (calls.total() >= 1000).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls.total(), 1000);
    assert_eq!(calls.distinct_jobs(), 1000);
    assert_eq!(calls.max_per_tick(), 1);
    let done = herald
        .store
        .query(RecordQuery {
            status: Some(RunStatus::Success),
            limit: 2000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1000);
    assert!(
        done.iter()
            .all(|r| r.scheduled_at == target && r.trigger == Trigger::Schedule)
    );
    herald.shutdown().await;
}

#[tokio::test]
async fn a_message_job_renders_its_template_and_hands_it_to_the_notifier() {
    let recorder = Arc::new(Recorder::default());
    let mut job = JobSpec::new(
        "greeting",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: "<b>{{ job_id }}</b> says {{ '<hi>' }}".into(),
        },
    );
    job.delivery_mut().targets.include = vec![42];
    job.delivery_mut().silent = true;
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![job],
        Registry::new(),
        recorder.clone(),
    )
    .await
    .unwrap();
    let run = herald
        .scheduler
        .run_now("greeting".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished(&herald, &run).await;
    assert_eq!((rec.status, rec.counts.sent), (RunStatus::Success, 1));
    let sent = recorder.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0],
        (42, "<b>greeting</b> says &lt;hi&gt;".to_string(), true)
    );
    let report = rec.deliveries.expect("the record carries the deliveries");
    assert_eq!(report.by_destination["dm"].sent, 1);
    assert_eq!(report.pending, 0);
    herald.shutdown().await;
}
