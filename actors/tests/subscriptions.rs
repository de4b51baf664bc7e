//! /start and /stop through long polling against the fake Bot API server,
//! changing who a job with no targets reaches.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::job::{JobKind, JobSpec, OverlapPolicy};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::schedule::Schedule;
use herald_actors::subscriptions::{STARTED_REPLY, STOPPED_REPLY};
use herald_actors::telegram::TelegramTransport;
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::telegram::FakeTelegram;
use support::{Calls, coded, counting, finished_within, wait_for};

fn update(chat_id: i64, name: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": chat_id, "type": "private", "first_name": name},
            "from": {"id": chat_id, "is_bot": false, "first_name": name},
            "text": text,
        }
    })
}

async fn broadcast(herald: &Herald) {
    let run = herald
        .scheduler
        .run_now("news".into())
        .await
        .unwrap()
        .unwrap();
    finished_within(herald, &run, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn start_then_stop_changes_who_is_messaged() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let mut news = JobSpec::new(
        "news",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: "news".into(),
        },
    );
    news.overlap = OverlapPolicy::Allow;
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        ..TreeConfig::default()
    };
    let transport = TelegramTransport::new("1:T", Some(&fake.api_url())).unwrap();
    let bot = transport.bot();
    let herald = spawn_tree(
        config,
        vec![news],
        herald_actors::handler::Registry::new(),
        Arc::new(transport),
    )
    .await
    .unwrap();
    herald.start_subscriptions(bot, Duration::from_secs(1));

    fake.push_update(update(77, "Ada", "/start"));
    fake.push_update(update(78, "Bob", "/start@herald_test_bot"));
    wait_for("both subscribed", Duration::from_secs(10), || async {
        let users = herald.users.all().await;
        (users.len() == 2 && users.values().all(|u| u.active)).then_some(())
    })
    .await;
    assert_eq!(herald.users.get(77).await.unwrap().name, "Ada");
    wait_for("the confirmations", Duration::from_secs(5), || async {
        (fake.sent_to(77) == vec![STARTED_REPLY.to_string()]).then_some(())
    })
    .await;
    broadcast(&herald).await;
    assert!(fake.sent_to(77).contains(&"news".to_string()));
    assert!(fake.sent_to(78).contains(&"news".to_string()));

    fake.push_update(update(77, "Ada", "/stop"));
    wait_for("Ada unsubscribed", Duration::from_secs(10), || async {
        herald
            .users
            .get(77)
            .await
            .is_some_and(|u| !u.active)
            .then_some(())
    })
    .await;
    wait_for("the goodbye", Duration::from_secs(5), || async {
        fake.sent_to(77)
            .contains(&STOPPED_REPLY.to_string())
            .then_some(())
    })
    .await;
    let before = fake.sent_to(77).len();
    broadcast(&herald).await;
    assert_eq!(fake.sent_to(77).len(), before, "messaged after /stop");
    assert_eq!(fake.sent_to(78).iter().filter(|t| *t == "news").count(), 2);
    // /start again: back in
    fake.push_update(update(77, "Ada", "/start"));
    wait_for("Ada back", Duration::from_secs(10), || async {
        herald
            .users
            .get(77)
            .await
            .is_some_and(|u| u.active)
            .then_some(())
    })
    .await;
    herald.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_telegram_is_retried_and_never_takes_the_daemon_down() {
    let calls = Calls::default();
    let herald = spawn_tree(
        TreeConfig::default(),
        vec![coded("tick", "* * * * * *", "count")],
        counting(&calls),
        Arc::new(herald_actors::notifier::DryRun),
    )
    .await
    .unwrap();
    // A "Telegram" that accepts each connection and hangs up: every poll
    // fails. Counting the connections shows the poller keeps retrying.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = polls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let bot = TelegramTransport::new("1:T", Some(&url)).unwrap().bot();
    herald.start_subscriptions(bot, Duration::from_secs(1));
    let before = calls.total();
    wait_for(
        "polls retried after failures",
        Duration::from_secs(10),
        || async { (polls.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    // and the daemon kept running its jobs meanwhile
    wait_for("jobs keep running", Duration::from_secs(10), || async {
        (calls.total() >= before + 3).then_some(())
    })
    .await;
    herald.shutdown().await;
}

/// A Bot API server that answers `getUpdates` at once (here: the fake with
/// a zero long-poll timeout) is not polled in a tight loop, and the
/// polling lease is renewed on its own period, not once per poll.
#[tokio::test]
async fn an_answer_at_once_is_not_polled_in_a_tight_loop() {
    use herald_actors::health::{Health, Mode};
    use herald_actors::memory::StoreLimits;
    use herald_actors::redis_backend::{RedisStore, connect};
    use herald_actors::subscriptions::{MIN_POLL_GAP, Subscriptions};
    use herald_actors::users::UserDirectory;

    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let store = RedisStore::new(
        connect(&RedisSettings::new(redis.url(), "herald")).unwrap(),
        "herald",
        StoreLimits::default(),
    );
    let (_status, health) = tokio::sync::watch::channel(Health {
        mode: Mode::Online,
        peers: Default::default(),
        stale: Default::default(),
        jobs_version: 0,
        epoch: None,
    });
    let poller = Subscriptions {
        bot: TelegramTransport::new("1:T", Some(&fake.api_url()))
            .unwrap()
            .bot(),
        users: UserDirectory::new(Some((store.clone(), health.clone()))),
        lease: Some((store.clone(), health, "daemon-a".into())),
        long_poll: Duration::ZERO,
    };
    let task = tokio::spawn(poller.run());
    let watched = Duration::from_secs(3);
    tokio::time::sleep(watched).await;
    task.abort();
    let polls = fake
        .requests()
        .iter()
        .filter(|r| r.method == "getupdates")
        .count();
    let most = (watched.as_millis() / MIN_POLL_GAP.as_millis()) as usize + 1;
    assert!(
        (3..=most).contains(&polls),
        "{polls} polls in {watched:?} (at most {most} with a {MIN_POLL_GAP:?} gap)"
    );
    // The lease taken once, not renewed per poll (every 10 s).
    assert_eq!(store.round_trips(), 1, "redis requests for the lease");
}
