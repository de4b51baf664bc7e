//! Digests on a real redis-server: producers `XADD` to a profile's inbox,
//! each run delivers the items of its window once, through teloxide to the
//! fake Bot API server and to a real local webhook receiver.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::{self, aio::MultiplexedConnection};
use herald_actors::digest::{
    DEFAULT_MAX_ITEMS, DEFAULT_RETENTION, DigestInbox, DigestProfile, DigestSchedule,
    DigestTemplates,
};
use herald_actors::handler::Registry;
use herald_actors::job::{DeliverySpec, MisfirePolicy};
use herald_actors::memory::RecordQuery;
use herald_actors::record::{ExecutionRecord, RunStatus};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::schedule::Schedule;
use herald_actors::telegram::TelegramTransport;
use herald_actors::users::User;
use herald_actors::webhook::WebhookEndpoint;
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::telegram::FakeTelegram;
use herald_testkit::webhook::WebhookReceiver;
use support::{finished_within, wait_for};

fn profile(id: &str, cron: &str, webhooks: Vec<String>) -> DigestProfile {
    DigestProfile {
        id: id.into(),
        schedules: vec![DigestSchedule {
            name: "hourly".into(),
            schedule: Schedule::parse(cron, chrono_tz::UTC).unwrap(),
        }],
        templates: DigestTemplates {
            header: "<b>{{ profile }}</b> {{ schedule }}: {{ count }}".into(),
            entry: "{{ index }}. {{ item.text }}".into(),
            footer: String::new(),
        },
        delivery: DeliverySpec {
            webhooks,
            ..DeliverySpec::default()
        },
        send_empty: false,
        retention: DEFAULT_RETENTION,
        max_items: DEFAULT_MAX_ITEMS,
        max_attempts: 3,
        misfire: MisfirePolicy::FireOnce,
    }
}

async fn daemon(
    redis: &RedisServer,
    fake: &FakeTelegram,
    profiles: Vec<DigestProfile>,
    webhooks: Vec<WebhookEndpoint>,
) -> Herald {
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        digests: profiles,
        webhooks,
        ..TreeConfig::default()
    };
    let transport = TelegramTransport::new("1:T", Some(&fake.api_url())).unwrap();
    let herald = spawn_tree(config, Vec::new(), Registry::new(), Arc::new(transport))
        .await
        .unwrap();
    for (chat_id, active) in [(10, true), (11, true), (12, false)] {
        herald
            .users
            .put(User {
                chat_id,
                name: format!("user {chat_id}"),
                active,
                packs: Default::default(),
            })
            .await
            .unwrap();
    }
    herald
}

async fn conn(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// What a producer does: `XADD herald:digest:inbox:<profile> * text ...`.
async fn produce(c: &mut MultiplexedConnection, profile: &str, text: &str) -> String {
    let id: String = redis::cmd("XADD")
        .arg(format!("herald:digest:inbox:{profile}"))
        .arg("*")
        .arg("text")
        .arg(text)
        .arg("source")
        .arg("test")
        .query_async(c)
        .await
        .unwrap();
    // A window ends a millisecond before the Redis clock when it is claimed
    // (items of the current millisecond may still arrive, so they belong to
    // the next window): let the item age past that before anything claims.
    tokio::time::sleep(Duration::from_millis(3)).await;
    id
}

async fn run(herald: &Herald, job: &str) -> ExecutionRecord {
    let run = herald.scheduler.run_now(job.into()).await.unwrap().unwrap();
    finished_within(herald, &run, Duration::from_secs(20)).await
}

/// Texts each chat received, in order.
fn texts_by_chat(fake: &FakeTelegram) -> BTreeMap<i64, Vec<String>> {
    let mut by_chat: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in fake.sent() {
        if let (Some(chat), Some(text)) = (r.chat_id, r.text) {
            by_chat.entry(chat).or_default().push(text);
        }
    }
    by_chat
}

#[tokio::test]
async fn three_items_make_one_digest_and_the_next_run_repeats_none() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let receiver = WebhookReceiver::start("digest-secret").await;
    let hook = WebhookEndpoint {
        name: "ops".into(),
        url: receiver.url("/digest"),
        secret: "digest-secret".into(),
        timeout: Duration::from_secs(5),
        max_attempts: 2,
    };
    let herald = daemon(
        &redis,
        &fake,
        vec![profile("alerts", "0 0 1 1 *", vec!["ops".into()])],
        vec![hook],
    )
    .await;
    let mut c = conn(&redis).await;
    for text in ["disk <full>", "cpu hot", "backup done"] {
        produce(&mut c, "alerts", text).await;
    }

    let first = run(&herald, "digest.alerts.hourly").await;
    assert_eq!(first.status, RunStatus::Success, "{first:?}");
    let summary = first
        .digest
        .as_ref()
        .expect("a digest run records its window");
    assert_eq!(summary.message_count, 3);
    assert_eq!(
        (summary.profile.as_str(), summary.schedule.as_str()),
        ("alerts", "hourly")
    );
    assert_eq!(
        summary.window_start, None,
        "the first run starts at the inbox's beginning"
    );
    let digest = "<b>alerts</b> hourly: 3\n1. disk &lt;full&gt;\n2. cpu hot\n3. backup done";
    let by_chat = texts_by_chat(&fake);
    assert_eq!(by_chat.get(&10), Some(&vec![digest.to_string()]));
    assert_eq!(by_chat.get(&11), Some(&vec![digest.to_string()]));
    assert_eq!(by_chat.get(&12), None, "inactive users get no digest");
    let deliveries = first.deliveries.as_ref().unwrap();
    assert_eq!(
        deliveries.totals().sent,
        3,
        "two chats and the webhook: {deliveries:?}"
    );
    let posted = receiver.received();
    assert_eq!(posted.len(), 1);
    assert!(posted[0].signature_valid);
    assert_eq!(posted[0].body["message_count"], 3);
    assert_eq!(posted[0].body["items"][0]["text"], "disk <full>");
    assert_eq!(posted[0].body["items"][2]["source"], "test");

    // The next run holds only what arrived since.
    produce(&mut c, "alerts", "restore tested").await;
    let second = run(&herald, "digest.alerts.hourly").await;
    let summary2 = second.digest.as_ref().unwrap();
    assert_eq!(summary2.message_count, 1, "{second:?}");
    assert_eq!(
        summary2.window_start,
        Some(summary.window_end),
        "windows chain"
    );
    assert_eq!(
        texts_by_chat(&fake).get(&10).unwrap(),
        &vec![
            digest.to_string(),
            "<b>alerts</b> hourly: 1\n1. restore tested".to_string()
        ]
    );

    // Nothing new: SUCCESS with 0, and nothing sent.
    let sent_before = fake.sent().len();
    let third = run(&herald, "digest.alerts.hourly").await;
    assert_eq!(third.status, RunStatus::Success);
    assert_eq!(third.digest.as_ref().unwrap().message_count, 0);
    assert_eq!(
        fake.sent().len(),
        sent_before,
        "an empty window sends nothing"
    );
    assert_eq!(receiver.received().len(), 2);

    // The mark survives a restart: a new daemon on the same Redis goes on
    // from it.
    herald.shutdown().await;
    let herald = daemon(
        &redis,
        &fake,
        vec![profile("alerts", "0 0 1 1 *", Vec::new())],
        Vec::new(),
    )
    .await;
    produce(&mut c, "alerts", "after restart").await;
    let fourth = run(&herald, "digest.alerts.hourly").await;
    assert_eq!(
        fourth.digest.as_ref().unwrap().message_count,
        1,
        "{fourth:?}"
    );
    let last = herald
        .digests
        .inbox
        .last_run("alerts", "hourly")
        .await
        .unwrap();
    assert_eq!(last, Some(fourth.digest.unwrap().window_end));
    herald.shutdown().await;
}

#[tokio::test]
async fn an_empty_window_is_sent_when_the_profile_asks() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let mut quiet = profile("quiet", "0 0 1 1 *", Vec::new());
    quiet.send_empty = true;
    quiet.templates.header =
        "{% if count == 0 %}nothing new{% else %}{{ count }} new{% endif %}".into();
    let herald = daemon(&redis, &fake, vec![quiet], Vec::new()).await;
    let record = run(&herald, "digest.quiet.hourly").await;
    assert_eq!(record.status, RunStatus::Success);
    assert_eq!(record.digest.unwrap().message_count, 0);
    assert_eq!(
        texts_by_chat(&fake).get(&10),
        Some(&vec!["nothing new".to_string()])
    );
    herald.shutdown().await;
}

/// Ticks every two seconds while a producer adds an item every 300 ms:
/// every item reaches the chat exactly once, whichever window it fell in.
#[tokio::test]
async fn scheduled_windows_lose_nothing_and_repeat_nothing() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let mut steady = profile("steady", "*/2 * * * * *", Vec::new());
    steady.templates.header = String::new();
    steady.templates.entry = "{{ item.text }}".into();
    steady.delivery.targets.include = vec![10];
    let herald = daemon(&redis, &fake, vec![steady], Vec::new()).await;
    let mut c = conn(&redis).await;
    let texts: Vec<String> = (0..20).map(|n| format!("item-{n}")).collect();
    for text in &texts {
        produce(&mut c, "steady", text).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let received = wait_for("every item delivered", Duration::from_secs(20), || async {
        let lines: Vec<String> = texts_by_chat(&fake)
            .remove(&10)
            .unwrap_or_default()
            .iter()
            .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        (lines.len() >= texts.len()).then_some(lines)
    })
    .await;
    // A little longer: a repeat would show up now.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let lines: Vec<String> = texts_by_chat(&fake)
        .remove(&10)
        .unwrap_or_default()
        .iter()
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        lines, texts,
        "each item once, in order (first seen: {received:?})"
    );
    let runs = herald
        .store
        .query(RecordQuery {
            job_id: Some("digest.steady.hourly".into()),
            limit: 100,
            ..RecordQuery::default()
        })
        .await
        .unwrap();
    let counted: u64 = runs
        .iter()
        .filter_map(|r| r.digest.as_ref())
        .map(|d| d.message_count)
        .sum();
    assert_eq!(counted, 20, "message_count adds up over the runs");
    assert!(runs.len() >= 3, "several windows: {}", runs.len());
    herald.shutdown().await;
}

/// The window rules themselves, on Redis: a run keeps its window however
/// often it asks, the next one starts where it ended, an item added after
/// a claim is never inside it, and the inbox is trimmed by age.
#[tokio::test]
async fn a_run_owns_its_window_and_items_added_later_fall_in_the_next() {
    let redis = RedisServer::start();
    let settings = RedisSettings::new(redis.url(), "herald");
    let store = RedisStore::new(connect(&settings).unwrap(), "herald", Default::default());
    let inbox = DigestInbox::new(Some(store));
    let mut c = conn(&redis).await;
    let old: String = redis::cmd("XADD")
        .arg("herald:digest:inbox:p")
        .arg("1000-0")
        .arg("text")
        .arg("from 1970")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(old, "1000-0");
    produce(&mut c, "p", "one").await;

    // Asked to collect up to a minute from now: capped at Redis's clock.
    let far = Utc::now() + chrono::TimeDelta::minutes(1);
    let w1 = inbox.claim_window("p", "s", "run-1", far).await.unwrap();
    assert_eq!(w1.start_ms, None);
    assert!(w1.end_ms < far.timestamp_millis());
    produce(&mut c, "p", "two").await;
    assert_eq!(
        inbox.claim_window("p", "s", "run-1", far).await.unwrap(),
        w1
    );
    let (items, count) = inbox.items("p", w1, 10).await.unwrap();
    assert_eq!(count, 2, "{items:?}");
    assert_eq!(items[1].fields[0], ("text".to_string(), "one".to_string()));

    let w2 = inbox.claim_window("p", "s", "run-2", far).await.unwrap();
    assert_eq!(w2.start_ms, Some(w1.end_ms));
    let (items, count) = inbox.items("p", w2, 10).await.unwrap();
    assert_eq!((count, items[0].fields[0].1.as_str()), (1, "two"));
    // Keeping fewer than the window holds still counts them all.
    let (kept, all) = inbox.items("p", w1, 1).await.unwrap();
    assert_eq!((kept.len(), all), (1, 2));

    // Trimming by age drops the 1970 item only.
    assert_eq!(
        inbox
            .trim("p", Utc::now() - chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        1
    );
    let left: u64 = redis::cmd("XLEN")
        .arg("herald:digest:inbox:p")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 2);
    // The window key expires with the records (7 days).
    let ttl: i64 = redis::cmd("TTL")
        .arg("herald:digest:window:run-1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 7 * 86_400 - 60 && ttl <= 7 * 86_400, "{ttl}");
}

/// A digest run that fails still shows its window on the record, and the
/// items stay for the schedule's next window only if the run never
/// claimed them (here it did: the record says which).
#[tokio::test]
async fn a_failed_digest_run_records_its_window() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let mut broken = profile("broken", "0 0 1 1 *", Vec::new());
    broken.delivery.save = true; // and no telegram.save_chat: fails
    broken.max_attempts = 1;
    let herald = daemon(&redis, &fake, vec![broken], Vec::new()).await;
    let mut c = conn(&redis).await;
    produce(&mut c, "broken", "lost?").await;
    let record = run(&herald, "digest.broken.hourly").await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert!(record.error.as_deref().unwrap_or("").contains("save_chat"));
    let summary = record
        .digest
        .expect("the failed run's window is on its record");
    assert_eq!(summary.message_count, 1);
    herald.shutdown().await;
}

/// Trimming by age never drops an item a schedule of the profile has not
/// collected yet: the hourly schedule's run (retention 1 s) keeps what the
/// daily schedule still has to digest.
#[tokio::test]
async fn trimming_keeps_what_another_schedule_has_not_collected() {
    let redis = RedisServer::start();
    let fake = FakeTelegram::start().await;
    let mut two = profile("two", "0 0 1 1 *", Vec::new());
    two.schedules.push(DigestSchedule {
        name: "daily".into(),
        schedule: Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
    });
    two.retention = Duration::from_secs(1);
    let herald = daemon(&redis, &fake, vec![two], Vec::new()).await;
    // Both schedules have run once (their marks exist).
    run(&herald, "digest.two.hourly").await;
    run(&herald, "digest.two.daily").await;
    let mut c = conn(&redis).await;
    produce(&mut c, "two", "for both").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let hourly = run(&herald, "digest.two.hourly").await;
    assert_eq!(hourly.digest.unwrap().message_count, 1);
    let daily = run(&herald, "digest.two.daily").await;
    assert_eq!(
        daily.digest.unwrap().message_count,
        1,
        "the hourly run trimmed an item the daily schedule had not collected"
    );
    // Now both have it: the next run trims it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    run(&herald, "digest.two.hourly").await;
    let left: u64 = redis::cmd("XLEN")
        .arg("herald:digest:inbox:two")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    herald.shutdown().await;
}
