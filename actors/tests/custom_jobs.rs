//! Custom message jobs at run time: validated on the way in, persisted in
//! Redis, surviving restarts (not orphaned by start-up sync), edited,
//! disabled and deleted.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herald_actors::custom_jobs::{CustomJob, JobApiError};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::telegram::TelegramTransport;
use herald_actors::users::User;
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::telegram::FakeTelegram;
use support::{Calls, coded, counting, finished_within};

async fn daemon(redis: &RedisServer, fake: &FakeTelegram) -> Herald {
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        ..TreeConfig::default()
    };
    let transport = TelegramTransport::new("1:T", Some(&fake.api_url())).unwrap();
    // One job defined in code, so start-up sync has something to keep.
    let calls = Calls::default();
    spawn_tree(
        config,
        vec![coded("defined", "0 0 1 1 *", "count")],
        counting(&calls),
        Arc::new(transport),
    )
    .await
    .unwrap()
}

fn custom(json: serde_json::Value) -> CustomJob {
    serde_json::from_value(json).unwrap()
}

#[tokio::test]
async fn a_custom_job_is_validated_persisted_edited_and_deleted() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let herald = daemon(&redis, &fake).await;
    for (id, packs) in [(1, vec!["ops"]), (2, vec![]), (3, vec!["ops"])] {
        herald
            .users
            .put(User {
                chat_id: id,
                name: format!("u{id}"),
                active: true,
                packs: packs.into_iter().map(String::from).collect(),
            })
            .await
            .unwrap();
    }

    // refused with every bad field named
    let bad = custom(serde_json::json!({
        "id": "lunch", "schedule": "0 25 * * *", "timezone": "Nowhere/City",
        "template": "{% if %}", "packs": ["no good"]
    }));
    match herald.custom_jobs.create(bad).await {
        Err(JobApiError::Invalid(errors)) => {
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, vec!["schedule", "timezone", "template", "packs"]);
        }
        other => panic!("expected invalid, got {other:?}"),
    }

    let lunch = custom(serde_json::json!({
        "id": "lunch", "schedule": "0 12 * * *", "timezone": "Asia/Tehran",
        "template": "lunch for {{ job_id }}", "packs": ["ops"], "include": [2], "exclude": [3]
    }));
    herald.custom_jobs.create(lunch.clone()).await.unwrap();
    assert!(matches!(
        herald.custom_jobs.create(lunch.clone()).await,
        Err(JobApiError::Conflict(_))
    ));
    assert!(matches!(
        herald.custom_jobs.delete("defined").await,
        Err(JobApiError::Conflict(_))
    ));
    let run = herald
        .scheduler
        .run_now("lunch".into())
        .await
        .unwrap()
        .unwrap();
    finished_within(&herald, &run, Duration::from_secs(10)).await;
    let reached: BTreeSet<i64> = fake.sent().iter().filter_map(|r| r.chat_id).collect();
    assert_eq!(reached, BTreeSet::from([1, 2]));

    // edited, then the daemon restarts: the edit and the job survive
    let mut edited = lunch.clone();
    edited.schedule = "30 12 * * *".into();
    herald.custom_jobs.update("lunch", edited).await.unwrap();
    herald
        .custom_jobs
        .set_enabled("lunch", false)
        .await
        .unwrap();
    herald.store.flush().await.unwrap();
    herald.shutdown().await;

    let herald = daemon(&redis, &fake).await;
    let jobs = herald.scheduler.jobs().await.unwrap();
    let lunch_now = jobs
        .iter()
        .find(|j| &*j.spec.id == "lunch")
        .expect("the custom job survived the restart");
    assert_eq!(lunch_now.spec.schedule.expr().source(), "30 12 * * *");
    assert!(!lunch_now.spec.enabled);
    assert_eq!(
        lunch_now.spec.delivery.targets.packs,
        vec!["ops".to_string()]
    );

    // deleted: gone, and stays gone after another restart
    herald.custom_jobs.delete("lunch").await.unwrap();
    assert!(matches!(
        herald.custom_jobs.delete("lunch").await,
        Err(JobApiError::NotFound(_))
    ));
    herald.store.flush().await.unwrap();
    herald.shutdown().await;
    let herald = daemon(&redis, &fake).await;
    let ids: Vec<String> = herald
        .scheduler
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.spec.id.to_string())
        .collect();
    assert_eq!(ids, vec!["defined".to_string()]);
    herald.shutdown().await;
}
