//! Users, packs and targeting, on a real redis-server, through teloxide to
//! the fake Bot API server.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herald_actors::handler::Registry;
use herald_actors::job::{JobKind, JobSpec, OverlapPolicy};
use herald_actors::record::{ExecutionRecord, RunStatus};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::schedule::Schedule;
use herald_actors::telegram::TelegramTransport;
use herald_actors::users::{Targets, User};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::telegram::{FakeTelegram, Fault};
use support::finished_within;

fn job(id: &str, targets: Targets) -> JobSpec {
    let mut job = JobSpec::new(
        id,
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: format!("from {id}"),
        },
    );
    job.delivery_mut().targets = targets;
    job.overlap = OverlapPolicy::Allow;
    job
}

fn user(chat_id: i64, active: bool, packs: &[&str]) -> User {
    User {
        chat_id,
        name: format!("user {chat_id}"),
        active,
        packs: packs.iter().map(|p| p.to_string()).collect(),
    }
}

async fn daemon(redis: &RedisServer, fake: &FakeTelegram, jobs: Vec<JobSpec>) -> Herald {
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        ..TreeConfig::default()
    };
    let transport = TelegramTransport::new("1:T", Some(&fake.api_url())).unwrap();
    spawn_tree(config, jobs, Registry::new(), Arc::new(transport))
        .await
        .unwrap()
}

async fn run(herald: &Herald, job: &str) -> ExecutionRecord {
    let run = herald.scheduler.run_now(job.into()).await.unwrap().unwrap();
    finished_within(herald, &run, Duration::from_secs(20)).await
}

/// Chats that received `text`.
fn reached(fake: &FakeTelegram, text: &str) -> BTreeSet<i64> {
    fake.sent()
        .into_iter()
        .filter(|r| r.text.as_deref() == Some(text))
        .filter_map(|r| r.chat_id)
        .collect()
}

#[tokio::test]
async fn targets_reach_exactly_the_right_chats_and_never_inactive_users() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let jobs = vec![
        job(
            "picked",
            Targets {
                include: vec![4, 3],
                exclude: vec![2],
                packs: vec!["ops".into()],
            },
        ),
        job("everyone", Targets::default()),
    ];
    let herald = daemon(&redis, &fake, jobs.clone()).await;
    for u in [
        user(1, true, &["ops"]),
        user(2, true, &["ops", "eng"]),
        user(3, false, &["ops"]),
        user(4, true, &[]),
        user(5, true, &["eng"]),
        user(6, false, &[]),
    ] {
        herald.users.put(u).await.unwrap();
    }

    // ops = {1, 2, 3} + {4, 3} - {2}, and 3 is inactive
    let rec = run(&herald, "picked").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(reached(&fake, "from picked"), BTreeSet::from([1, 4]));
    // no targets: every active user, no inactive one
    run(&herald, "everyone").await;
    assert_eq!(
        reached(&fake, "from everyone"),
        BTreeSet::from([1, 2, 4, 5])
    );

    // Telegram says user 5 blocked the bot: never messaged again
    fake.fail_always(
        5,
        Fault::Forbidden("Forbidden: bot was blocked by the user".into()),
    );
    let rec = run(&herald, "everyone").await;
    assert_eq!(rec.counts.deactivated, 1, "{rec:?}");
    fake.clear_faults();
    herald.shutdown().await;

    // users live in Redis: a restarted daemon targets the same way
    let herald = daemon(&redis, &fake, jobs).await;
    let before = fake.sent_to(5).len();
    let rec = run(&herald, "everyone").await;
    assert_eq!(rec.counts.sent, 3, "{rec:?}");
    assert_eq!(
        fake.sent_to(5).len(),
        before,
        "an inactive user was messaged"
    );
    let packs = herald.users.packs().await;
    assert_eq!(packs["ops"], BTreeSet::from([1, 2, 3]));
    assert_eq!(packs["eng"], BTreeSet::from([2, 5]));
    herald.shutdown().await;
}
