//! herald's logs (`--log-format text|json`) and what it keeps out of them.
//!
//! The real `herald run` binary works for real with six distinctive secrets,
//! each of them used: a bot token (the fake Bot API sees it), an admin token
//! (the API answers only to it), a Redis password (`redis-server
//! --requirepass`: herald is online only if it authenticated), a webhook
//! signing secret (the receiver verifies the signature), the food service's
//! token and the recommendation API key (the fakes refuse or record
//! requests without them). It logs at debug for everything and trace for
//! its own crates, fires a job every second that messages users (one
//! answered 429 once, one always "chat not found") and posts to a webhook
//! (a 500 once, then retried), fails another job on every attempt, runs the
//! food reminder, answers API calls (good ones, a wrong token, a token with
//! the real one inside it, bad JSON, a bad schedule, unknown ids), loses
//! Redis and gets it back, loses the Bot API, and drains on SIGTERM. Then
//! none of the secrets may appear on its stderr, its stdout or in any API
//! answer (body or headers), and the logs must say something: in JSON every
//! line is one JSON object, and runs are found by job and run id, as event
//! fields and as the fields of the `run` span their handler's lines carry.
//!
//! Once with `--log-format json` (secrets from the environment, Redis by
//! `REDIS_URL` with the password inside) and once with text (secrets in the
//! config file, Redis by `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`, the
//! admin token from the environment). Loopback only; every child is killed
//! when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::food::{FakeCompletions, FoodService};
use herald_testkit::telegram::{FakeTelegram, Fault};
use herald_testkit::webhook::WebhookReceiver;
use herald_testkit::{RedisServer, free_port};
use serde_json::Value;

const BOT_TOKEN: &str = "5550001234:AAH-logs-test-bot-token-T8vQ2w";
const ADMIN_TOKEN: &str = "logs-test-admin-token-K3pV7xLm";
const REDIS_PASSWORD: &str = "logs-test-redis-password-Hq5Tn2";
const WEBHOOK_SECRET: &str = "logs-test-webhook-secret-Zr8Yc1";
const FOOD_TOKEN: &str = "logs-test-food-token-Wd4Jb6";
const COMPLETIONS_KEY: &str = "logs-test-completions-key-Np2Gs9";

const SECRETS: [(&str, &str); 6] = [
    ("the bot token", BOT_TOKEN),
    ("the admin token", ADMIN_TOKEN),
    ("the Redis password", REDIS_PASSWORD),
    ("the webhook secret", WEBHOOK_SECRET),
    ("the food service token", FOOD_TOKEN),
    ("the recommendation API key", COMPLETIONS_KEY),
];

/// The coded job this test runs by hand.
const FOOD_JOB: &str = "unselected_food_reminder";

/// Everything for herald's own crates, debug for the libraries under it
/// (HTTP clients and servers, Redis, teloxide).
const RUST_LOG: &str = "debug,herald=trace,herald_actors=trace";

/// `herald run`, killed and reaped when dropped.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "herald exited early ({status}); its log:\n{}",
                tail(&self.stderr)
            );
        }
    }

    /// SIGTERM, then the exit code (None: killed by a signal).
    async fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for herald") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit within 10 s of SIGTERM; its log:\n{}",
                tail(&self.stderr)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use herald_testkit::log_tail as tail;

/// One API exchange, kept for the secret check.
struct Answer {
    what: String,
    status: u16,
    headers: String,
    body: String,
}

struct Api {
    client: reqwest::Client,
    base: String,
    answers: Vec<Answer>,
}

impl Api {
    /// Sends `method path` with `token` (if any) and `body` (if any, as
    /// JSON), records the answer and returns its status and body.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.expect("a response body");
        self.answers.push(Answer {
            what: format!("{method} {path}"),
            status,
            headers,
            body: body.clone(),
        });
        (status, body)
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        self.call("GET", path, Some(ADMIN_TOKEN), None).await
    }

    async fn get_json(&mut self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `/readyz`'s mode, polled until it is `mode` (up to 10 s).
    async fn wait_for_mode(&mut self, mode: &str, daemon: &mut Daemon) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            daemon.assert_running();
            let (_, body) = self.call("GET", "/readyz", None, None).await;
            if serde_json::from_str::<Value>(&body).is_ok_and(|v| v["mode"] == mode) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not say {mode} within 10 s: {body}; herald's log:\n{}",
                tail(&daemon.stderr)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// PING without AUTH: true if the server answers `-NOAUTH`.
fn redis_refuses_without_auth(port: u16) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    stream.write_all(b"PING\r\n").expect("PING sent");
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("an answer");
    answer[..n].starts_with(b"-NOAUTH")
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Text,
}

/// What one run of herald left behind.
struct Outcome {
    stderr: String,
    stdout: String,
    answers: Vec<Answer>,
    /// The run id `POST /api/jobs/leaky/run` answered.
    manual_run: String,
    /// A scheduled run of `leaky` that `GET /api/jobs/leaky/executions` listed.
    scheduled_run: String,
    /// The food reminder's run, started through the API.
    food_run: String,
}

/// Runs herald through the workload described at the top of this file.
async fn exercise(format: Format) -> Outcome {
    let mut redis = RedisServer::start_with_password(REDIS_PASSWORD);
    assert!(
        redis_refuses_without_auth(redis.port()),
        "redis-server took a command without the password"
    );
    let telegram = FakeTelegram::start().await;
    let webhook = WebhookReceiver::start(WEBHOOK_SECRET).await;
    telegram.fail_next(102, Fault::RetryAfter(1));
    telegram.fail_always(103, Fault::BadRequest("Bad Request: chat not found".into()));
    webhook.fail_next(1, 500);
    let food = FoodService::start(FOOD_TOKEN).await;
    food.set_missing(&[101]);
    food.set_menu(&[
        ("Kebab Koobideh", "grilled"),
        ("Ghormeh Sabzi", "herb stew"),
    ]);
    let completions = FakeCompletions::start().await;
    completions.answer("Kebab Koobideh");

    let dir = tempfile::tempdir().expect("a temp dir");
    let http = format!("127.0.0.1:{}", free_port());
    // JSON: secrets from the environment; text: from the config file.
    let (token_line, food_lines, key_line) = match format {
        Format::Json => (String::new(), String::new(), String::new()),
        Format::Text => (
            format!("token = \"{BOT_TOKEN}\""),
            format!("base_url = \"{}\"\ntoken = \"{FOOD_TOKEN}\"", food.url()),
            format!("api_key = \"{COMPLETIONS_KEY}\""),
        ),
    };
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            r#"[scheduler]
timezone = "UTC"
shutdown_grace = "2s"

[http]
listen = "{http}"

[telegram]
{token_line}
api_url = "{api}"
subscriptions = true

[[webhooks]]
name = "hook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
timeout = "2s"
max_attempts = 2

[[jobs]]
id = "leaky"
schedule = "* * * * * *"
template = "hello from {{{{ job_id }}}} at {{{{ scheduled_at }}}}"
include = [101, 102, 103]
webhooks = ["hook"]

[[jobs]]
id = "broken"
schedule = "*/2 * * * * *"
template = "{{{{ nosuch.attr }}}}"
include = [104]
max_attempts = 2
retry_backoff = "1s"

[coded.{FOOD_JOB}]
{food_lines}

[coded.{FOOD_JOB}.recommendation]
base_url = "{completions}"
model = "test-model"
{key_line}
"#,
            api = telegram.api_url(),
            hook = webhook.url("/herald"),
            completions = completions.url(),
        ),
    )
    .expect("write the config");

    let stderr_path = dir.path().join("stderr.log");
    let stdout_path = dir.path().join("stdout.log");
    let mut cmd = herald_testkit::herald_command(env!("CARGO_BIN_EXE_herald"));
    cmd.current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--log-format")
        .arg(match format {
            Format::Json => "json",
            Format::Text => "text",
        })
        .env("RUST_LOG", RUST_LOG)
        .env("HERALD_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    match format {
        Format::Json => {
            assert!(redis.url().contains(REDIS_PASSWORD));
            cmd.env("REDIS_URL", redis.url())
                .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
                .env("FOOD_SERVICE_URL", food.url())
                .env("FOOD_SERVICE_TOKEN", FOOD_TOKEN)
                .env("HERALD_RECOMMENDATION_API_KEY", COMPLETIONS_KEY);
        }
        Format::Text => {
            cmd.env("REDIS_HOST", "127.0.0.1")
                .env("REDIS_PORT", redis.port().to_string())
                .env("REDIS_PASSWORD", REDIS_PASSWORD);
        }
    }
    let mut daemon = Daemon {
        child: cmd.spawn().expect("herald run starts"),
        stderr: stderr_path.clone(),
    };

    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(&http).is_err() {
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "herald's API on {http} did not come up in 15 s; its log:\n{}",
            tail(&stderr_path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client"),
        base: format!("http://{http}"),
        answers: Vec::new(),
    };
    // Online proves herald authenticated to Redis with the password.
    api.wait_for_mode("online", &mut daemon).await;

    // Real work: messages (one retried after a 429, one refused), webhook
    // posts (one retried after a 500), a job failing on every attempt.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        daemon.assert_running();
        let sent = telegram.sent_to(101).len();
        let retried = telegram.sent_to(102).len();
        let signed = webhook
            .received()
            .iter()
            .filter(|r| r.signature_valid)
            .count();
        let failed = api.get_json("/api/executions?status=FAILED").await["executions"]
            .as_array()
            .map_or(0, Vec::len);
        if sent >= 2 && retried >= 1 && signed >= 2 && failed >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in 12 s: {sent} messages to 101, {retried} to 102, {signed} signed webhook posts, \
             {failed} failed runs (wanted 2, 1, 2, 1); herald's log:\n{}",
            tail(&stderr_path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The secrets were used, not merely configured.
    assert!(
        telegram.requests().iter().all(|r| r.token == BOT_TOKEN),
        "a Bot API request without the bot token"
    );

    // The API: open routes, refused requests, failing ones, good ones.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = api.call("GET", path, None, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    let (status, _) = api.call("GET", "/api/jobs", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = api
        .call("GET", "/api/jobs", Some("not-the-admin-token-at-all"), None)
        .await;
    assert_eq!(status, 401);
    // A wrong token with the real one inside it: echoing or logging the
    // presented token would show the secret.
    let near_miss = format!("{ADMIN_TOKEN}-but-longer");
    let (status, _) = api.call("GET", "/api/jobs", Some(&near_miss), None).await;
    assert_eq!(status, 401);
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs",
            Some(ADMIN_TOKEN),
            Some("{\"id\": \"x\", "),
        )
        .await;
    assert_eq!(status, 400, "bad JSON: {body}");
    let (status, body) = api
        .call(
            "PATCH",
            "/api/jobs/leaky",
            Some(ADMIN_TOKEN),
            Some(r#"{"schedule": "61 * * * *"}"#),
        )
        .await;
    assert_eq!(status, 422, "a bad schedule: {body}");
    let (status, _) = api.get("/api/jobs/no-such-job").await;
    assert_eq!(status, 404);
    let (status, _) = api.get("/api/executions/no-such-run").await;
    assert_eq!(status, 404);
    let jobs = api.get_json("/api/jobs").await;
    assert!(jobs.to_string().contains("leaky"), "{jobs}");
    api.get_json("/api/jobs/leaky").await;
    api.get_json("/api/schedules").await;
    api.get_json("/api/executions").await;
    api.get_json("/api/skips").await;
    api.get_json("/api/users").await;
    api.get_json("/api/openapi.json").await;
    let (status, page) = api.call("GET", "/", None, None).await;
    assert_eq!(status, 200, "{page}");
    let executions = api.get_json("/api/jobs/leaky/executions").await;
    let scheduled_run = executions["executions"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["trigger"] != "manual"))
        .and_then(|r| r["run_id"].as_str())
        .unwrap_or_else(|| panic!("no run of leaky listed: {executions}"))
        .to_string();
    api.get_json(&format!("/api/executions/{scheduled_run}"))
        .await;
    let (status, body) = api
        .call("POST", "/api/jobs/leaky/run", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 202, "run now: {body}");
    let manual_run = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"]
        .as_str()
        .expect("a run_id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let record = api.get_json(&format!("/api/executions/{manual_run}")).await;
        if matches!(record["status"].as_str(), Some("SUCCESS" | "FAILED")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the manual run did not end in 5 s: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The food reminder, by hand: it asks the food service (token), the
    // completions API (key), and reminds user 101.
    let (status, body) = api
        .call(
            "POST",
            "/api/users",
            Some(ADMIN_TOKEN),
            Some(r#"{"chat_id": 101, "name": "Ada"}"#),
        )
        .await;
    assert_eq!(status, 201, "a new user: {body}");
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/jobs/{FOOD_JOB}/run"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 202, "run the food reminder: {body}");
    let food_run = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"]
        .as_str()
        .expect("a run_id")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let record = api.get_json(&format!("/api/executions/{food_run}")).await;
        if record["status"] == "SUCCESS" {
            break;
        }
        assert!(
            Instant::now() < deadline && record["status"] != "FAILED",
            "the food reminder did not succeed in 8 s: {record}; herald's log:\n{}",
            tail(&stderr_path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reminded = telegram.sent_to(101);
    assert!(
        reminded.iter().any(|t| t.contains("Kebab Koobideh")),
        "no reminder with the recommendation: {reminded:?}"
    );
    assert!(
        completions
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {COMPLETIONS_KEY}"))),
        "a completions request without the key"
    );

    // Redis goes away and comes back: connection errors get logged.
    tokio::task::block_in_place(|| redis.stop());
    api.wait_for_mode("offline", &mut daemon).await;
    tokio::task::block_in_place(|| redis.restart());
    api.wait_for_mode("online", &mut daemon).await;

    // The Bot API goes away: sends and polls fail with network errors,
    // whose messages would name the URL with the token in its path.
    let requests = telegram.requests().len();
    drop(telegram);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(requests > 0);

    // The final /metrics, after all of it.
    let (status, _) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);

    assert_eq!(daemon.terminate().await, Some(0), "{}", tail(&stderr_path));
    let stderr = std::fs::read_to_string(&stderr_path).expect("read stderr");
    let stdout = std::fs::read_to_string(&stdout_path).expect("read stdout");
    Outcome {
        stderr,
        stdout,
        answers: api.answers,
        manual_run,
        scheduled_run,
        food_run,
    }
}

/// No secret in the logs or any answer: neither whole nor its last eight
/// characters (a secret cut, escaped or encoded in part).
fn assert_no_secrets(outcome: &Outcome) {
    let tails = SECRETS.map(|(name, secret)| (name, &secret[secret.len() - 8..]));
    for (name, secret) in SECRETS.into_iter().chain(tails) {
        for (stream, text) in [("stderr", &outcome.stderr), ("stdout", &outcome.stdout)] {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                lines.is_empty(),
                "{name} ({secret:?}) is on herald's {stream}, {} lines, first:\n{}",
                lines.len(),
                lines.iter().take(5).copied().collect::<Vec<_>>().join("\n")
            );
        }
        for answer in &outcome.answers {
            assert!(
                !answer.body.contains(secret) && !answer.headers.contains(secret),
                "{name} ({secret:?}) is in the answer to {} ({}): {} {}",
                answer.what,
                answer.status,
                answer.headers,
                answer.body
            );
        }
    }
    assert!(
        outcome.answers.len() >= 20,
        "{} API answers",
        outcome.answers.len()
    );
}

/// The log says what happened: at least these messages.
fn assert_substantial(stderr: &str) {
    for wanted in [
        "config loaded",
        "herald running",
        "run finished",
        "shutting down",
        "stopped",
    ] {
        assert!(
            stderr.contains(wanted),
            "no {wanted:?} in the log:\n{stderr}"
        );
    }
    assert!(stderr.lines().count() >= 50, "a thin log:\n{stderr}");
}

/// A JSON line's value for `key`: the event's own field, or the field of
/// one of its spans.
fn field<'a>(line: &'a Value, key: &str) -> Vec<&'a str> {
    let mut found: Vec<&str> = line.get(key).and_then(Value::as_str).into_iter().collect();
    if let Some(spans) = line.get("spans").and_then(Value::as_array) {
        found.extend(spans.iter().filter_map(|s| s.get(key)?.as_str()));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_carry_run_ids_and_no_secrets() {
    let started = Instant::now();
    let outcome = exercise(Format::Json).await;
    assert_no_secrets(&outcome);
    assert_substantial(&outcome.stderr);
    let mut lines = Vec::new();
    for (n, text) in outcome.stderr.lines().enumerate() {
        let line: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {text}", n + 1));
        assert!(line.is_object(), "line {}: {text}", n + 1);
        for key in ["timestamp", "level", "target", "message"] {
            assert!(
                line.get(key).is_some(),
                "line {} has no {key}: {text}",
                n + 1
            );
        }
        lines.push(line);
    }
    // Runs are traceable by job and run id: the scheduled run and the one
    // started through the API each have lines with both.
    for run in [&outcome.scheduled_run, &outcome.manual_run] {
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| field(l, "run").contains(&run.as_str()))
            .collect();
        assert!(
            about
                .iter()
                .any(|l| field(l, "job").contains(&"leaky") && l["message"] == "run finished"),
            "no `run finished` line with job leaky and run {run}: {about:#?}"
        );
    }
    // What a job's handler logs (here the food reminder's own line, and the
    // HTTP client's lines under it) carries its job and run ids in the
    // `run` span.
    let in_run_span: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["name"] == "run"
                        && s["job"] == FOOD_JOB
                        && s["run"] == outcome.food_run.as_str()
                })
            })
        })
        .collect();
    assert!(
        in_run_span.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("users without a food selection"))),
        "no line of the food reminder inside its `run` span: {in_run_span:#?}"
    );
    eprintln!(
        "json: {} log lines, {} API answers, {:?}",
        lines.len(),
        outcome.answers.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_run_ids_and_no_secrets() {
    let started = Instant::now();
    let outcome = exercise(Format::Text).await;
    assert_no_secrets(&outcome);
    assert_substantial(&outcome.stderr);
    for run in [&outcome.scheduled_run, &outcome.manual_run] {
        let wanted = format!("run={run}");
        assert!(
            outcome.stderr.lines().any(|l| l.contains("run finished")
                && l.contains("job=leaky")
                && l.contains(&wanted)),
            "no `run finished` line with job=leaky {wanted}"
        );
    }
    let span = format!("run{{job={FOOD_JOB} run={}", outcome.food_run);
    assert!(
        outcome
            .stderr
            .lines()
            .any(|l| l.contains(&span) && l.contains("users without a food selection")),
        "no line of the food reminder inside its `run` span ({span})"
    );
    assert!(
        !outcome.stderr.lines().any(|l| l.starts_with('{')),
        "text logs look like JSON"
    );
    eprintln!(
        "text: {} log lines, {} API answers, {:?}",
        outcome.stderr.lines().count(),
        outcome.answers.len(),
        started.elapsed()
    );
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["run", "--log-format", "bogus"])
        .env("HERALD_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .output()
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for wanted in ["--log-format", "bogus", "text", "json"] {
        assert!(stderr.contains(wanted), "no {wanted:?} in: {stderr}");
    }
    assert!(out.stdout.is_empty());
}
