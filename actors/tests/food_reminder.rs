//! The unselected food reminder, end to end: a real redis-server, the fake
//! Telegram Bot API, a fake food ordering service and a fake
//! chat-completions endpoint, all on loopback.
//!
//! Five active users (1-5) and an inactive one (6); the service reports 2
//! and 4 without a selection, plus the inactive 6 and a chat herald does
//! not know (99): exactly 2 and 4 are reminded.
//!
//! The job is registered as [`TestReminder`]: `FoodReminder`'s own
//! definition and run, with a test's retry policy, targets or scheduled
//! instant. Such changes go into the definition rather than being made
//! after start-up through `upsert_job`: a scheduler resync (right after
//! start-up, and whenever a job is written) would put the definition back.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use herald_actors::handler::{BoxFuture, Job, JobError, Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec, MisfirePolicy, OverlapPolicy, RetryPolicy};
use herald_actors::jobs::food_reminder::{FoodReminder, JOB_ID};
use herald_actors::record::{Counts, ExecutionRecord, RunStatus};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::telegram::TelegramTransport;
use herald_actors::users::{Targets, User};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use herald_testkit::food::{FakeCompletions, FoodService, Route};
use herald_testkit::telegram::FakeTelegram;
use serde_json::{Value, json};
use support::{finished_within, quick_retry};

const TOKEN: &str = "food-token";
const API_KEY: &str = "sk-test";
/// The recommendation's bound in these tests.
const RECOMMENDATION_TIMEOUT: Duration = Duration::from_secs(1);
const MENU: &[(&str, &str)] = &[
    ("Ghormeh Sabzi", "herb stew with rice"),
    ("Kebab Koobideh", "with grilled tomato"),
    ("Ash Reshteh", "noodle soup"),
];

/// Everything a test talks to.
struct World {
    _redis: RedisServer,
    telegram: FakeTelegram,
    food: FoodService,
    llm: FakeCompletions,
    herald: Herald,
}

fn settings(food: &FoodService, llm: &FakeCompletions) -> Value {
    json!({
        "base_url": food.url(),
        "token": TOKEN,
        "timeout": "2s",
        "recommendation": {
            "base_url": llm.url(),
            "model": "test-model",
            "api_key": API_KEY,
            "timeout": format!("{}ms", RECOMMENDATION_TIMEOUT.as_millis()),
        },
    })
}

/// `FoodReminder` with a test's changes to its definition and run.
#[derive(Clone)]
struct TestReminder {
    /// Replaces the definition's (3 attempts, retried after 30 s or more:
    /// too slow for a test).
    retry: RetryPolicy,
    /// Replaces the definition's targets (none: every active user).
    targets: Targets,
    /// Runs as if scheduled at this instant (a manual run's is "now").
    scheduled_at: Option<DateTime<Utc>>,
}

impl Default for TestReminder {
    fn default() -> Self {
        TestReminder {
            retry: quick_retry(1),
            targets: Targets::default(),
            scheduled_at: None,
        }
    }
}

impl Job for TestReminder {
    fn definition(&self) -> Result<JobSpec, String> {
        let mut spec = FoodReminder.definition()?;
        spec.retry = self.retry;
        spec.delivery_mut().targets = self.targets.clone();
        Ok(spec)
    }

    fn run(&self, mut ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        if let Some(at) = self.scheduled_at {
            ctx.scheduled_at = at;
        }
        FoodReminder.run(ctx)
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        FoodReminder.check_config(config)
    }
}

/// How a test's world differs from the usual one.
struct Setup {
    job: TestReminder,
    /// The job's settings, from the usual ones (pointing at the fakes).
    settings: Box<dyn FnOnce(Value) -> Value>,
    /// Users 1-6 are in the directory (else it is empty).
    users: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            job: TestReminder::default(),
            settings: Box::new(|settings| settings),
            users: true,
        }
    }
}

/// Starts everything as `setup` says.
async fn world_with(setup: Setup) -> World {
    let redis = RedisServer::start();
    let telegram = FakeTelegram::start().await;
    let food = FoodService::start(TOKEN).await;
    food.set_missing(&[2, 4, 6, 99]);
    food.set_menu(MENU);
    let llm = FakeCompletions::start().await;
    let config = TreeConfig {
        redis: Some(RedisSettings::new(redis.url(), "herald")),
        ..TreeConfig::default()
    };
    let mut registry = Registry::new();
    registry.add(setup.job).unwrap();
    registry.configure(JOB_ID, (setup.settings)(settings(&food, &llm)));
    let transport = TelegramTransport::new("1:T", Some(&telegram.api_url())).unwrap();
    let herald = spawn_tree(config, Vec::new(), registry, Arc::new(transport))
        .await
        .unwrap();
    for chat_id in (1..=6).filter(|_| setup.users) {
        herald
            .users
            .put(User {
                chat_id,
                name: format!("user {chat_id}"),
                active: chat_id != 6,
                packs: Default::default(),
            })
            .await
            .unwrap();
    }
    World {
        _redis: redis,
        telegram,
        food,
        llm,
        herald,
    }
}

async fn world() -> World {
    world_with(Setup::default()).await
}

impl World {
    /// Runs the job now and waits for its final record.
    async fn run(&self) -> ExecutionRecord {
        let run = self
            .herald
            .scheduler
            .run_now(JOB_ID.into())
            .await
            .unwrap()
            .expect("the job is scheduled");
        finished_within(&self.herald, &run, Duration::from_secs(20)).await
    }

    /// Messages Telegram got after the first `from`, by chat.
    fn delivered_since(&self, from: usize) -> BTreeMap<i64, Vec<String>> {
        let mut by_chat: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for request in self.telegram.sent().into_iter().skip(from) {
            if let (Some(chat), Some(text)) = (request.chat_id, request.text) {
                by_chat.entry(chat).or_default().push(text);
            }
        }
        by_chat
    }
}

/// Tomorrow in Tehran at `at`, as the service is asked for it.
fn tomorrow_in_tehran(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Tehran)
        .date_naive()
        .succ_opt()
        .unwrap()
        .to_string()
}

/// Chats 2 and 4, one message each, all with the recommendation of `dish`
/// (or with none); returns the texts.
fn assert_reminded_2_and_4(
    delivered: &BTreeMap<i64, Vec<String>>,
    dish: Option<&str>,
) -> Vec<String> {
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        vec![2, 4],
        "{delivered:?}"
    );
    let mut texts = Vec::new();
    for (chat, messages) in delivered {
        assert_eq!(messages.len(), 1, "chat {chat}: {messages:?}");
        let text = &messages[0];
        assert!(text.starts_with(&format!("user {chat}, you")), "{text}");
        match dish {
            Some(dish) => assert!(
                text.ends_with(&format!("\nSuggestion: <b>{dish}</b>")),
                "{text}"
            ),
            None => assert!(!text.contains("Suggestion"), "{text}"),
        }
        texts.push(text.clone());
    }
    texts
}

#[tokio::test]
async fn reaches_exactly_the_two_users_without_a_selection_with_a_recommendation_only_when_one_comes()
 {
    let w = world().await;
    w.llm.answer("I would go for the ash reshteh!");

    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 2, "{rec:?}");
    let texts = assert_reminded_2_and_4(&w.delivered_since(0), Some("Ash Reshteh"));
    let date = tomorrow_in_tehran(rec.scheduled_at);
    assert!(
        texts[0].contains(&format!("tomorrow ({date})")),
        "{}",
        texts[0]
    );

    // the service was asked about tomorrow in Tehran, with the token
    let asked = w.food.requests_to(Route::Missing);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].date.as_deref(), Some(date.as_str()));
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(
        w.food.requests_to(Route::Menu)[0].date.as_deref(),
        Some(date.as_str())
    );
    // the model was asked once, with the menu, its model and key
    let prompts = w.llm.requests();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].path, "/v1/chat/completions");
    assert_eq!(prompts[0].body["model"], "test-model");
    assert_eq!(
        prompts[0].authorization.as_deref(),
        Some(&*format!("Bearer {API_KEY}"))
    );
    let prompt = prompts[0].body["messages"].to_string();
    for (dish, _) in MENU {
        assert!(prompt.contains(dish), "{dish} in {prompt}");
    }

    // the completions endpoint is down: the plain reminder, same two users
    w.llm.fail(500);
    let sent = w.telegram.sent().len();
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 2, "{rec:?}");
    assert_reminded_2_and_4(&w.delivered_since(sent), None);
    assert_eq!(w.llm.requests().len(), 2);
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_hanging_recommendation_does_not_hold_the_reminder_past_its_timeout() {
    let w = world().await;
    w.llm.hang();
    let started = Instant::now();
    let rec = w.run().await;
    let took = started.elapsed();
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_reminded_2_and_4(&w.delivered_since(0), None);
    assert_eq!(w.llm.requests().len(), 1, "the model was asked");
    assert!(
        took >= RECOMMENDATION_TIMEOUT,
        "it waited for the model: {took:?}"
    );
    assert!(
        took < RECOMMENDATION_TIMEOUT + Duration::from_secs(3),
        "the run took {took:?}"
    );

    // a hanging menu is bounded the same way
    w.llm.answer("Kebab Koobideh");
    w.food.hang_next(Route::Menu, 1);
    let sent = w.telegram.sent().len();
    let started = Instant::now();
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert!(started.elapsed() < RECOMMENDATION_TIMEOUT + Duration::from_secs(4));
    assert_reminded_2_and_4(&w.delivered_since(sent), None);
    assert_eq!(w.llm.requests().len(), 1, "no menu, no question");
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_slow_menu_and_a_slow_model_together_are_bounded_by_one_timeout() {
    // each answers within the timeout, the two together take 3.6 s
    let timeout = Duration::from_secs(2);
    let slow = Duration::from_millis(1800);
    let w = world_with(Setup {
        settings: Box::new(move |mut settings| {
            settings["recommendation"]["timeout"] = json!(format!("{}ms", timeout.as_millis()));
            settings
        }),
        ..Setup::default()
    })
    .await;
    w.food.delay_next(Route::Menu, 1, slow);
    w.llm.answer("Kebab Koobideh");
    w.llm.set_delay(slow);
    let started = Instant::now();
    let rec = w.run().await;
    let took = started.elapsed();
    assert!(took >= timeout, "it waited for the model: {took:?}");
    // generous slack for a loaded machine, yet short of the two delays
    // added up (and of a bound per request: 1.8 s each)
    assert!(
        took < 2 * slow - Duration::from_millis(300),
        "the run took {took:?}: more than one timeout ({timeout:?})"
    );
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_reminded_2_and_4(&w.delivered_since(0), None);
    assert_eq!(w.llm.requests().len(), 1, "the model was asked");
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_nonsense_answer_or_a_failing_menu_sends_the_plain_reminder() {
    let w = world().await;
    for (i, (answer, menu_fails)) in [
        // a dish not on the menu
        (Some("Pizza Margherita"), false),
        // two dishes: not one recommendation
        (Some("Ghormeh Sabzi or Ash Reshteh"), false),
        // not a chat completion at all
        (None, false),
        // a good answer, but the menu could not be read
        (Some("Ghormeh Sabzi"), true),
    ]
    .into_iter()
    .enumerate()
    {
        match answer {
            Some(content) => w.llm.answer(content),
            None => w.llm.answer_raw(200, "<html>bad gateway</html>"),
        }
        if menu_fails {
            w.food.fail_next(Route::Menu, 1, 500);
        }
        let sent = w.telegram.sent().len();
        let rec = w.run().await;
        assert_eq!(rec.status, RunStatus::Success, "case {i}: {rec:?}");
        assert_reminded_2_and_4(&w.delivered_since(sent), None);
    }
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_broken_food_service_fails_the_attempt_with_a_clear_error_and_sends_nothing() {
    // one attempt (the default world's)
    let w = world().await;
    w.llm.answer("Ghormeh Sabzi");
    let url = format!("{}/v1/selections/missing?date=", w.food.url());
    let cases: [(&str, &dyn Fn()); 7] = [
        ("answered HTTP 500 Internal Server Error: \"boom\"", &|| {
            w.food.fail_next(Route::Missing, 1, 500)
        }),
        ("answered something that is not JSON", &|| {
            w.food
                .answer_next(Route::Missing, 1, 200, "<html>maintenance</html>")
        }),
        ("answered JSON of the wrong shape", &|| {
            w.food
                .answer_next(Route::Missing, 1, 200, r#"{"users": [2, 4]}"#)
        }),
        (
            "answered for date 1999-01-01, but herald asked about",
            &|| {
                w.food.answer_next(
                    Route::Missing,
                    1,
                    200,
                    r#"{"date": "1999-01-01", "chat_ids": [2, 4]}"#,
                )
            },
        ),
        ("answered HTTP 401 Unauthorized", &|| {
            w.food
                .answer_next(Route::Missing, 1, 401, r#"{"error": "unauthorized"}"#)
        }),
        // answers that echo the token: quoted with the token blanked out
        (
            r#"answered HTTP 403 Forbidden: "{\"error\": \"token *** is not allowed here\"}""#,
            &|| {
                w.food.answer_next(
                    Route::Missing,
                    1,
                    403,
                    &format!(r#"{{"error": "token {TOKEN} is not allowed here"}}"#),
                )
            },
        ),
        (
            r#"answered JSON of the wrong shape (invalid type: string "***""#,
            &|| {
                w.food.answer_next(
                    Route::Missing,
                    1,
                    200,
                    &format!(r#"{{"date": "2024-03-21", "chat_ids": ["{TOKEN}"]}}"#),
                )
            },
        ),
    ];
    for (expected, fault) in cases {
        fault();
        let rec = w.run().await;
        assert_eq!(rec.status, RunStatus::Failed, "{rec:?}");
        let error = rec.error.unwrap_or_default();
        assert!(
            error.starts_with(&format!("food service: GET {url}")),
            "{error}"
        );
        assert!(error.contains(expected), "{expected:?} in {error}");
        assert!(!error.contains(TOKEN), "{error}");
    }
    assert!(w.telegram.sent().is_empty(), "a failed run sent messages");
    assert!(w.llm.requests().is_empty(), "a failed run asked the model");
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_failing_food_service_is_retried_per_the_policy() {
    let w = world_with(Setup {
        job: TestReminder {
            retry: quick_retry(3),
            ..TestReminder::default()
        },
        ..Setup::default()
    })
    .await;
    w.food.fail_next(Route::Missing, 1, 503);
    w.food.answer_next(Route::Missing, 1, 200, "not json");
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.attempt, 3, "{rec:?}");
    assert_eq!(w.food.requests_to(Route::Missing).len(), 3);
    // only the successful attempt sent, once to each
    assert_reminded_2_and_4(&w.delivered_since(0), None);
    w.herald.shutdown().await;
}

#[tokio::test]
async fn asks_about_tomorrow_in_tehran_for_the_scheduled_instant() {
    // 2024-03-19 21:00 UTC is 00:30 on the 20th in Tehran: tomorrow there
    // is the 21st (in UTC it would be the 20th)
    let at = Utc.with_ymd_and_hms(2024, 3, 19, 21, 0, 0).unwrap();
    let w = world_with(Setup {
        job: TestReminder {
            scheduled_at: Some(at),
            ..TestReminder::default()
        },
        ..Setup::default()
    })
    .await;
    w.food.set_missing(&[1, 2, 3, 4, 5]);
    w.food.set_missing_on("2024-03-21", &[2, 4]);
    w.llm.answer("Ghormeh Sabzi");
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    let asked = w.food.requests_to(Route::Missing);
    assert_eq!(asked[0].date.as_deref(), Some("2024-03-21"));
    for text in assert_reminded_2_and_4(&w.delivered_since(0), Some("Ghormeh Sabzi")) {
        assert!(text.contains("tomorrow (2024-03-21)"), "{text}");
    }
    w.herald.shutdown().await;
}

#[tokio::test]
async fn without_a_food_service_url_a_run_fails_saying_what_to_set() {
    let w = world_with(Setup {
        settings: Box::new(|_| json!({"token": TOKEN})),
        ..Setup::default()
    })
    .await;
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Failed, "{rec:?}");
    assert_eq!(
        rec.error.as_deref(),
        Some(
            "the food service's URL is not set: set base_url in \
             [coded.unselected_food_reminder] or the FOOD_SERVICE_URL environment variable"
        )
    );
    assert!(w.food.requests().is_empty());
    w.herald.shutdown().await;
}

#[tokio::test]
async fn a_chat_herald_does_not_know_is_not_reminded_even_when_targeted_by_id() {
    // a message job's targets would reach 99 (a group, say); the reminder's
    // do not: it only reminds users herald knows as active
    let w = world_with(Setup {
        job: TestReminder {
            targets: Targets {
                include: vec![2, 99],
                ..Targets::default()
            },
            ..TestReminder::default()
        },
        ..Setup::default()
    })
    .await;
    w.food.set_missing(&[2, 4, 99]);
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert_eq!(rec.counts.sent, 1, "{rec:?}");
    let delivered = w.delivered_since(0);
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        vec![2],
        "{delivered:?}"
    );
    w.herald.shutdown().await;
}

#[tokio::test]
async fn with_no_user_known_a_report_of_users_fails_the_attempt() {
    // an empty user directory: as with Redis offline since start-up
    let w = world_with(Setup {
        users: false,
        ..Setup::default()
    })
    .await;
    w.llm.answer("Ghormeh Sabzi");
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.starts_with(
            "the service reports 4 users without a selection but herald knows no users: "
        ),
        "{error}"
    );
    assert!(w.telegram.sent().is_empty(), "a failed run sent messages");
    assert!(w.llm.requests().is_empty(), "a failed run asked the model");

    // nobody without a selection: nothing to do, and nothing wrong
    w.food.set_missing(&[]);
    let rec = w.run().await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    assert!(w.telegram.sent().is_empty());
    w.herald.shutdown().await;
}

#[test]
fn the_job_is_registered_for_22_in_tehran_and_checks_its_settings() {
    let registry = herald_actors::jobs::registry().unwrap();
    let spec = registry
        .definitions()
        .iter()
        .find(|j| &*j.id == JOB_ID)
        .expect("registered");
    // the default definition, as the README gives it
    assert_eq!(spec.schedule.expr().source(), "0 22 * * *");
    assert_eq!(spec.schedule.tz(), chrono_tz::Asia::Tehran);
    assert!(spec.enabled);
    assert_eq!(
        spec.kind,
        JobKind::Coded {
            handler: JOB_ID.into()
        }
    );
    assert_eq!(spec.timeout, Duration::from_secs(120));
    // 3 attempts; with the backoff's jitter (half to all of the delay),
    // retried after 30-60 s, then 60-120 s
    assert_eq!(spec.retry.max_attempts, 3);
    assert_eq!(spec.retry.backoff, Duration::from_secs(60));
    assert!(
        spec.retry.backoff_max >= Duration::from_secs(120),
        "{spec:?}"
    );
    assert_eq!(spec.misfire, MisfirePolicy::Skip);
    assert_eq!(spec.overlap, OverlapPolicy::Skip);
    assert!(spec.delivery.targets.is_empty(), "every active user");
    let e = registry
        .check_config(
            JOB_ID,
            &json!({"base_url": "http://food", "recommendation": {"base_url": "http://llm/v1", "model": "m", "timout_secs": 3}}),
        )
        .unwrap_err();
    assert!(
        e.starts_with("recommendation.timout_secs: unknown field"),
        "{e}"
    );
    let e = registry
        .check_config(JOB_ID, &json!({"base_url": "food.example"}))
        .unwrap_err();
    assert!(
        e.starts_with("base_url: \"food.example\" is not a URL"),
        "{e}"
    );
    // credentials in a URL are refused, and not repeated
    let e = registry
        .check_config(
            JOB_ID,
            &json!({"base_url": "https://bot:hunter2@food.example/api"}),
        )
        .unwrap_err();
    assert!(
        e.contains("put credentials in token / FOOD_SERVICE_TOKEN, not in the URL"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = registry
        .check_config(JOB_ID, &json!({"template": "{{ name "}))
        .unwrap_err();
    assert!(e.starts_with("template: template does not parse"), "{e}");
    assert!(
        registry
            .check_config(JOB_ID, &json!({"base_url": "http://food"}))
            .is_ok()
    );
}
