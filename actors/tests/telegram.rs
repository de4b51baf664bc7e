//! Telegram delivery through teloxide against the fake Bot API server
//! (in-process on loopback): limits, every error class, long messages,
//! escaping, and the record a fan-out leaves.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands;
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec, OverlapPolicy};
use herald_actors::notifier::TelegramLimits;
use herald_actors::record::{Counts, ExecutionRecord, RunStatus};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::schedule::Schedule;
use herald_actors::telegram::TelegramTransport;
use herald_actors::telegram::html::{check_html, visible_len};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::telegram::{FakeTelegram, Fault};
use support::{finished, finished_within};

const TOKEN: &str = "123456:TEST";

fn message_job(id: &str, template: &str, chats: Vec<i64>) -> JobSpec {
    let mut job = JobSpec::new(
        id,
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: template.into(),
        },
    );
    job.delivery_mut().targets.include = chats;
    job.overlap = OverlapPolicy::Allow;
    job
}

async fn tree(
    fake: &FakeTelegram,
    config: TreeConfig,
    jobs: Vec<JobSpec>,
    registry: Registry,
) -> Herald {
    let transport = TelegramTransport::new(TOKEN, Some(&fake.api_url())).unwrap();
    spawn_tree(config, jobs, registry, Arc::new(transport))
        .await
        .unwrap()
}

async fn run(herald: &Herald, job: &str) -> ExecutionRecord {
    let run = herald.scheduler.run_now(job.into()).await.unwrap().unwrap();
    // teloxide holds a 5xx answer 10 s before returning it
    finished_within(herald, &run, Duration::from_secs(40)).await
}

#[tokio::test]
async fn a_message_arrives_as_html_silently_with_variables_escaped() {
    let fake = FakeTelegram::start().await;
    let mut registry = Registry::new();
    // A coded job rendering user-supplied text through herald's templates.
    registry.register("greet", |ctx: RunContext| async move {
        let html = herald_actors::template::environment()
            .render_str(
                "<b>Hello {{ name }}</b>",
                minijinja::context! { name => "<script>alert(1)</script> & co" },
            )
            .map_err(|e| herald_actors::handler::JobError::new(e.to_string()))?;
        ctx.send_dm(7, html);
        Ok(Counts::default())
    });
    let mut job = JobSpec::new(
        "greet",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Coded {
            handler: "greet".into(),
        },
    );
    job.delivery_mut().silent = true;
    let herald = tree(&fake, TreeConfig::default(), vec![job], registry).await;
    let rec = run(&herald, "greet").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 1);
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.chat_id, Some(7));
    assert_eq!(
        request.text.as_deref(),
        // minijinja also escapes '/', as a numeric entity Telegram accepts
        Some("<b>Hello &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; co</b>")
    );
    assert_eq!(request.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(request.disable_notification, Some(true));
    herald.shutdown().await;
}

#[tokio::test]
async fn each_error_class_is_handled_as_telegram_means_it() {
    let fake = FakeTelegram::start().await;
    let redis = RedisServer::start();
    fake.fail_next(1, Fault::RetryAfter(1));
    fake.fail_next(
        2,
        Fault::Forbidden("Forbidden: bot was blocked by the user".into()),
    );
    fake.fail_next(
        3,
        Fault::Forbidden("Forbidden: bot can't initiate conversation with a user".into()),
    );
    fake.fail_next(
        4,
        Fault::BadRequest(
            "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0"
                .into(),
        ),
    );
    fake.fail_next(5, Fault::ServerError(502));
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        telegram_limits: TelegramLimits {
            backoff_base: Duration::from_millis(50),
            ..TelegramLimits::default()
        },
        ..TreeConfig::default()
    };
    let job = message_job("notice", "<i>notice</i>", vec![1, 2, 3, 4, 5, 6]);
    let herald = tree(&fake, config, vec![job], Registry::new()).await;
    let started = Instant::now();
    let rec = run(&herald, "notice").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    let dm = rec.deliveries.as_ref().unwrap().by_destination["dm"];
    assert_eq!(
        (dm.sent, dm.deactivated, dm.failed, dm.skipped),
        (3, 2, 1, 0),
        "{rec:?}"
    );
    // 429: waited its retry_after, then sent once
    assert_eq!(fake.sent_to(1).len(), 1);
    let to_1: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.chat_id == Some(1))
        .collect();
    assert_eq!(to_1.len(), 2);
    assert!(to_1[1].at.duration_since(to_1[0].at) >= Duration::from_millis(950));
    // 403: not retried, the user is marked inactive
    for chat in [2, 3] {
        let tries = fake
            .requests()
            .iter()
            .filter(|r| r.chat_id == Some(chat))
            .count();
        assert_eq!(tries, 1, "chat {chat} was retried");
    }
    let mut c = deadpool_redis::redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chat in [2, 3] {
        let active: Option<String> = c
            .hget(format!("herald:user:{chat}"), "active")
            .await
            .unwrap();
        assert_eq!(active.as_deref(), Some("0"), "chat {chat}");
    }
    // 400: failed with Telegram's words
    let error = rec.error.clone().unwrap_or_default();
    assert!(
        error.contains("dm 4: Bad Request: can't parse entities"),
        "{error}"
    );
    // 5xx: retried with backoff, then delivered
    assert_eq!(fake.sent_to(5).len(), 1);
    assert_eq!(fake.sent_to(6).len(), 1);
    assert!(started.elapsed() < Duration::from_secs(35));
    herald.shutdown().await;
}

#[tokio::test]
async fn a_12000_character_message_arrives_as_valid_parts_in_order() {
    let fake = FakeTelegram::start().await;
    let paragraph = format!("<b>Item</b> {}", "lorem ipsum dolor sit amet ".repeat(20));
    let long: String = (0..22)
        .map(|i| format!("{i}: {paragraph}"))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert!(visible_len(&long) > 12_000, "{}", visible_len(&long));
    let job = message_job("long", &long, vec![9]);
    let herald = tree(&fake, TreeConfig::default(), vec![job], Registry::new()).await;
    let rec = run(&herald, "long").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 1, "one message, in parts");
    let parts = fake.sent_to(9);
    assert!((3..=4).contains(&parts.len()), "{} parts", parts.len());
    for part in &parts {
        assert!(visible_len(part) <= 4096);
        check_html(part).unwrap();
    }
    assert!(parts[0].starts_with("0: <b>Item</b>"));
    assert!(parts.last().unwrap().starts_with("21: ") || parts.last().unwrap().contains("21: "));
    // in order: each part starts with a later item than the last began
    let first_item = |p: &String| p.split(':').next().unwrap().parse::<u32>().unwrap_or(0);
    let firsts: Vec<u32> = parts.iter().map(first_item).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    herald.shutdown().await;
}

#[tokio::test]
async fn a_fan_out_keeps_telegrams_limits_and_frees_its_worker() {
    let fake = FakeTelegram::start().await;
    fake.enforce_limits(true);
    // 45 private chats, one of them messaged by two jobs at once
    let chats: Vec<i64> = (100..145).collect();
    let jobs = vec![
        message_job("many", "hello", chats.clone()),
        message_job("again", "again", vec![100]),
    ];
    let config = TreeConfig {
        workers: 1,
        ..TreeConfig::default()
    };
    let herald = tree(&fake, config, jobs, Registry::new()).await;
    let started = Instant::now();
    let many = herald
        .scheduler
        .run_now("many".into())
        .await
        .unwrap()
        .unwrap();
    // The one worker is free while the messages go out: another job runs.
    let again = run(&herald, "again").await;
    assert_eq!(again.status, RunStatus::Success);
    let rec = finished(&herald, &many).await;
    let took = started.elapsed();
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 45);
    assert_eq!(fake.too_many_requests(), 0, "a limit was crossed");
    assert_eq!(fake.sent().len(), 46);
    assert_eq!(fake.sent_to(100).len(), 2);
    // 46 messages at under 30/s take more than a second and a half
    assert!(took >= Duration::from_millis(1_400), "{took:?}");
    herald.shutdown().await;
}

#[tokio::test]
async fn save_goes_to_the_owner_chat_and_is_counted_apart() {
    let fake = FakeTelegram::start().await;
    let mut job = message_job("saved", "<b>saved</b>", vec![11]);
    job.delivery_mut().save = true;
    let config = TreeConfig {
        save_chat: Some(-100_500),
        ..TreeConfig::default()
    };
    let herald = tree(&fake, config, vec![job], Registry::new()).await;
    let rec = run(&herald, "saved").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    let report = rec.deliveries.unwrap();
    assert_eq!(report.by_destination["dm"].sent, 1);
    assert_eq!(report.by_destination["save"].sent, 1);
    assert_eq!(fake.sent_to(-100_500), vec!["<b>saved</b>".to_string()]);
    assert_eq!(fake.sent_to(11), vec!["<b>saved</b>".to_string()]);
    herald.shutdown().await;
}

#[tokio::test]
async fn a_request_that_gets_no_answer_is_retried_as_a_network_error() {
    let fake = FakeTelegram::start().await;
    fake.fail_next(3, Fault::Hang);
    let config = TreeConfig {
        telegram_limits: TelegramLimits {
            backoff_base: Duration::from_millis(50),
            ..TelegramLimits::default()
        },
        ..TreeConfig::default()
    };
    let transport =
        TelegramTransport::with_timeout(TOKEN, Some(&fake.api_url()), Duration::from_millis(500))
            .unwrap();
    let herald = spawn_tree(
        config,
        vec![message_job("nudge", "nudge", vec![3])],
        Registry::new(),
        Arc::new(transport),
    )
    .await
    .unwrap();
    let rec = run(&herald, "nudge").await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 1);
    let tries = fake
        .requests()
        .iter()
        .filter(|r| r.chat_id == Some(3))
        .count();
    assert_eq!(tries, 2, "timed out once, then sent");
    assert_eq!(fake.sent_to(3).len(), 1);
    herald.shutdown().await;
}

#[tokio::test]
async fn two_messages_of_one_run_to_one_chat_both_arrive() {
    let fake = FakeTelegram::start().await;
    let mut registry = Registry::new();
    registry.register("twice", |ctx: RunContext| async move {
        ctx.send_dm(5, "first".into());
        ctx.send_dm(5, "second".into());
        Ok(Counts::default())
    });
    let job = JobSpec::new(
        "twice",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Coded {
            handler: "twice".into(),
        },
    );
    let herald = tree(&fake, TreeConfig::default(), vec![job], registry).await;
    let rec = run(&herald, "twice").await;
    assert_eq!(rec.counts.sent, 2, "{rec:?}");
    assert_eq!(
        fake.sent_to(5),
        vec!["first".to_string(), "second".to_string()]
    );
    herald.shutdown().await;
}
