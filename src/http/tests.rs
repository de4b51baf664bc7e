//! The admin API against a real tree on a real redis-server, over real
//! HTTP on loopback.

use std::sync::Arc;
use std::time::Duration;

use herald_actors::digest::{
    DEFAULT_MAX_ITEMS, DEFAULT_RETENTION, DigestProfile, DigestSchedule, DigestTemplates,
};
use herald_actors::handler::{Registry, RunContext};
use herald_actors::job::{DeliverySpec, JobKind, JobSpec, MisfirePolicy};
use herald_actors::notifier::DryRun;
use herald_actors::record::Counts;
use herald_actors::redis_backend::RedisSettings;
use herald_actors::schedule::Schedule;
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{ApiState, serve};

const TOKEN: &str = "test-admin-token-0123456789";

/// Every route: (method, path as in the OpenAPI document). The OpenAPI test
/// checks each is documented and served.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/assets/app.js"),
    ("get", "/assets/app.css"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/jobs"),
    ("post", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("put", "/api/jobs/{id}"),
    ("patch", "/api/jobs/{id}"),
    ("delete", "/api/jobs/{id}"),
    ("post", "/api/jobs/{id}/run"),
    ("get", "/api/jobs/{id}/executions"),
    ("get", "/api/executions"),
    ("get", "/api/executions/{run_id}"),
    ("post", "/api/executions/{run_id}/cancel"),
    ("get", "/api/schedules"),
    ("get", "/api/skips"),
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("get", "/api/users/{chat_id}"),
    ("patch", "/api/users/{chat_id}"),
    ("delete", "/api/users/{chat_id}"),
    ("get", "/api/packs"),
    ("get", "/api/packs/{name}"),
    ("put", "/api/packs/{name}"),
    ("get", "/api/digest/executions"),
    ("get", "/api/digest/executions/{profile_id}"),
    ("get", "/api/digest/schedules"),
    ("post", "/api/digest/{profile_id}/items"),
];

struct Api {
    base: String,
    client: reqwest::Client,
    herald: Herald,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    async fn start(redis: &RedisServer, jobs: Vec<JobSpec>, digests: Vec<DigestProfile>) -> Api {
        let config = TreeConfig {
            redis: Some(RedisSettings::new(redis.url(), "herald")),
            digests,
            shutdown_grace: Duration::from_secs(2),
            ..TreeConfig::default()
        };
        let mut registry = Registry::new();
        registry.register("slow", |_ctx: RunContext| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Counts::default())
        });
        let herald = spawn_tree(config, jobs, registry, Arc::new(DryRun))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = ApiState::new(herald.admin(), Some(TOKEN), None);
        tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Api {
            base,
            client: reqwest::Client::new(),
            herald,
            _stop: stop,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
}

fn message_job(id: &str, expr: &str) -> JobSpec {
    JobSpec::new(
        id,
        Schedule::parse(expr, chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: format!("from {id}"),
        },
    )
}

fn slow_job() -> JobSpec {
    JobSpec::new(
        "slow",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Coded {
            handler: "slow".into(),
        },
    )
}

fn digest_profile() -> DigestProfile {
    DigestProfile {
        id: "alerts".into(),
        schedules: vec![DigestSchedule {
            name: "daily".into(),
            schedule: Schedule::parse("0 8 * * *", chrono_tz::Asia::Tehran).unwrap(),
        }],
        templates: DigestTemplates::default(),
        delivery: DeliverySpec {
            dm: false,
            ..DeliverySpec::default()
        },
        send_empty: false,
        retention: DEFAULT_RETENTION,
        max_items: DEFAULT_MAX_ITEMS,
        max_attempts: 1,
        misfire: MisfirePolicy::Skip,
    }
}

async fn wait_json<F>(what: &str, within: Duration, mut check: F) -> Value
where
    F: AsyncFnMut() -> Option<Value>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Every route answers 401 without the token or with a wrong one, is served
/// with it, and is in the OpenAPI document (which lists nothing else).
#[tokio::test]
async fn every_route_needs_the_token_is_served_and_is_documented() {
    let redis = RedisServer::start();
    let api = Api::start(
        &redis,
        vec![message_job("m", "0 9 * * *")],
        vec![digest_profile()],
    )
    .await;
    api.call(Method::POST, "/api/users", Some(json!({"chat_id": 5})))
        .await;
    api.call(Method::PUT, "/api/packs/ops", Some(json!({"members": [5]})))
        .await;
    let fill = |path: &str| {
        path.replace("{id}", "m")
            .replace("{run_id}", "m@1")
            .replace("{chat_id}", "5")
            .replace("{name}", "ops")
            .replace("{profile_id}", "alerts")
    };
    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let url = format!("{}{}", api.base, fill(path));
        let no_token = api
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let wrong = api
            .client
            .request(method.clone(), &url)
            .bearer_auth("test-admin-token-0123456788")
            .send()
            .await
            .unwrap();
        if path.starts_with("/api/") {
            assert_eq!(
                no_token.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            let body: Value = wrong.json().await.unwrap();
            assert_eq!(error_code(&body), "unauthorized");
            assert!(!body.to_string().contains(TOKEN));
        } else {
            assert!(no_token.status().is_success(), "{method} {path} is open");
        }
        let served = api
            .client
            .request(method.clone(), &url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = served.status();
        let body: Value = served.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(
            error_code(&body),
            "no_route",
            "{method} {path} is not served"
        );
        assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
    }
    let (status, doc) = api.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    api.herald.shutdown().await;
}

#[tokio::test]
async fn jobs_are_created_edited_run_and_deleted_and_bad_input_is_refused() {
    let redis = RedisServer::start();
    let api = Api::start(
        &redis,
        vec![message_job("defined", "0 9 * * *")],
        Vec::new(),
    )
    .await;
    let job = json!({"id": "lunch", "schedule": "0 12 * * mon-fri", "timezone": "Asia/Tehran", "template": "<b>Lunch</b>"});
    let (status, created) = api.call(Method::POST, "/api/jobs", Some(job.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["origin"], "custom");
    assert_eq!(created["timezone"], "Asia/Tehran");
    let next: Vec<&str> = created["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 5);
    assert!(
        next.iter().all(|t| t.ends_with("T12:00:00+03:30")),
        "{next:?}"
    );
    let (status, body) = api.call(Method::POST, "/api/jobs", Some(job)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );

    // Bad input: each with its status, none a 500.
    let (status, body) = api
        .call(
            Method::PATCH,
            "/api/jobs/lunch",
            Some(json!({"schedule": "61 * * * *", "timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["schedule", "timezone"]);
    let (status, body) = api
        .call(
            Method::PATCH,
            "/api/jobs/lunch",
            Some(json!({"colour": "red"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );
    let raw = |body: &'static str, content_type: &'static str| {
        api.client
            .patch(format!("{}/api/jobs/lunch", api.base))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
    };
    let resp = raw("{\"enabled\": ", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = raw("{\"enabled\": false}", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(
        "{{\"template\": \"{}\"}}",
        "x".repeat(super::MAX_BODY_BYTES + 1)
    );
    let resp = api
        .client
        .patch(format!("{}/api/jobs/lunch", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "too_large");
    let (status, _) = api
        .call(
            Method::PATCH,
            "/api/jobs/nope",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(
            Method::POST,
            "/api/jobs",
            Some(json!({"id": "x", "schedule": "0 9 * * *", "template": "{% if %}"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = api
        .call(
            Method::POST,
            "/api/jobs",
            Some(json!({"id": "digest.a.b", "schedule": "0 9 * * *", "template": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest ids are reserved"
    );
    assert_eq!(body["error"]["fields"][0]["field"], "id");

    // PATCH any job: a defined one's schedule and zone, then disable it.
    let (status, patched) = api
        .call(
            Method::PATCH,
            "/api/jobs/defined",
            Some(
                json!({"schedule": "30 7 * * *", "timezone": "Europe/Berlin", "overlap": "allow"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (patched["schedule"].as_str(), patched["overlap"].as_str()),
        (Some("30 7 * * *"), Some("allow"))
    );
    assert!(
        patched["next_run"]
            .as_str()
            .unwrap()
            .contains("T07:30:00+01:00"),
        "{patched}"
    );
    let (_, disabled) = api
        .call(
            Method::PATCH,
            "/api/jobs/defined",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        (disabled["enabled"].as_bool(), disabled["next_run"].as_str()),
        (Some(false), None)
    );
    let (status, body) = api.call(Method::DELETE, "/api/jobs/defined", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );

    // Run now; the execution shows up, per job and filtered by status.
    let (status, run) = api.call(Method::POST, "/api/jobs/lunch/run", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let record = wait_json("the run's record", Duration::from_secs(10), async || {
        let (_, r) = api.get(&format!("/api/executions/{run_id}")).await;
        (r["status"] == "SUCCESS").then_some(r)
    })
    .await;
    assert_eq!(record["trigger"], "manual");
    let (_, page) = api
        .get("/api/jobs/lunch/executions?status=success&limit=10")
        .await;
    assert_eq!(page["executions"][0]["run_id"], run_id.as_str());
    let (_, page) = api.get("/api/executions?job=lunch&status=FAILED").await;
    assert_eq!(page["executions"].as_array().unwrap().len(), 0);
    let (_, jobs) = api.get("/api/jobs").await;
    let lunch = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "lunch")
        .unwrap();
    assert_eq!(lunch["last_execution"]["status"], "SUCCESS");
    for bad in [
        "/api/executions?status=DONE",
        "/api/executions?limit=0",
        "/api/executions?limit=x",
        "/api/executions?colour=red",
    ] {
        let (status, body) = api.get(bad).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}"
        );
    }
    let (status, _) = api.get("/api/executions/nope@1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(Method::POST, "/api/jobs/nope/run", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Replace, then delete.
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/jobs/lunch",
            Some(json!({"id": "lunch", "schedule": "0 13 * * *", "template": "later"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/jobs/lunch",
            Some(json!({"id": "other", "schedule": "0 13 * * *", "template": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.call(Method::DELETE, "/api/jobs/lunch", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/api/jobs/lunch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, schedules) = api.get("/api/schedules").await;
    assert_eq!(schedules["schedules"].as_array().unwrap().len(), 1);
    api.herald.shutdown().await;
}

/// A schedule edited through the API re-arms the scheduler at once (a run
/// comes at the new time) and survives a restart.
#[tokio::test]
async fn an_edit_rearms_the_scheduler_and_survives_a_restart() {
    let redis = RedisServer::start();
    let api = Api::start(&redis, vec![message_job("edited", "0 0 1 1 *")], Vec::new()).await;
    let (status, _) = api
        .call(
            Method::PATCH,
            "/api/jobs/edited",
            Some(json!({"schedule": "* * * * * *"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_json(
        "a run at the new schedule",
        Duration::from_secs(5),
        async || {
            let (_, page) = api.get("/api/jobs/edited/executions").await;
            page["executions"]
                .as_array()?
                .iter()
                .find(|r| r["trigger"] == "schedule" && r["status"] == "SUCCESS")
                .cloned()
        },
    )
    .await;
    let (_, _) = api
        .call(
            Method::PATCH,
            "/api/jobs/edited",
            Some(json!({"schedule": "15 10 * * *", "timezone": "Asia/Tehran"})),
        )
        .await;
    api.herald.shutdown().await;
    let again = Api::start(&redis, vec![message_job("edited", "0 0 1 1 *")], Vec::new()).await;
    let (_, job) = again.get("/api/jobs/edited").await;
    assert_eq!(
        (job["schedule"].as_str(), job["timezone"].as_str()),
        (Some("15 10 * * *"), Some("Asia/Tehran"))
    );
    again.herald.shutdown().await;
}

#[tokio::test]
async fn users_and_packs_are_managed() {
    let redis = RedisServer::start();
    let api = Api::start(&redis, Vec::new(), Vec::new()).await;
    for id in [1, 2, 3] {
        let (status, _) = api
            .call(
                Method::POST,
                "/api/users",
                Some(json!({"chat_id": id, "name": format!("u{id}")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = api
        .call(Method::POST, "/api/users", Some(json!({"chat_id": 1})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .call(
            Method::POST,
            "/api/users",
            Some(json!({"chat_id": 4, "packs": ["bad name"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, user) = api
        .call(
            Method::PATCH,
            "/api/users/2",
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(
        (status, user["active"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/packs/ops",
            Some(json!({"members": [1, 3]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, pack) = api.get("/api/packs/ops").await;
    assert_eq!(pack["members"], json!([1, 3]));
    let (status, _) = api
        .call(Method::PUT, "/api/packs/ops", Some(json!({"members": [3]})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, one) = api.get("/api/users/1").await;
    assert_eq!(one["packs"], json!([]), "left the pack");
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/packs/ops",
            Some(json!({"members": [3, 99]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"].as_str().unwrap().contains("99"));
    let (_, packs) = api.get("/api/packs").await;
    assert_eq!(packs["packs"], json!([{"name": "ops", "members": [3]}]));
    let (status, _) = api.get("/api/users/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/api/packs/none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(Method::DELETE, "/api/users/3", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/api/users/3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, users) = api.get("/api/users").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    api.herald.shutdown().await;
}

#[tokio::test]
async fn digest_items_go_in_and_digest_runs_come_out() {
    let redis = RedisServer::start();
    let api = Api::start(&redis, Vec::new(), vec![digest_profile()]).await;
    for text in ["one", "two"] {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/digest/alerts/items",
                Some(json!({"text": text, "level": 3})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _) = api
        .call(
            Method::POST,
            "/api/digest/nope/items",
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .call(
            Method::POST,
            "/api/digest/alerts/items",
            Some(json!({"text": {"nested": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["fields"][0]["field"], "text");
    let (status, _) = api
        .call(Method::POST, "/api/digest/alerts/items", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A window ends a millisecond before the Redis clock at its claim: make
    // sure the items are older than that.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let (_, run) = api
        .call(Method::POST, "/api/jobs/digest.alerts.daily/run", None)
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let record = wait_json("the digest run", Duration::from_secs(10), async || {
        let (_, r) = api.get("/api/digest/executions/alerts").await;
        r["executions"]
            .as_array()?
            .iter()
            .find(|e| e["run_id"] == run_id.as_str() && e["status"] == "SUCCESS")
            .cloned()
    })
    .await;
    assert_eq!(record["message_count"], 2);
    assert_eq!(record["profile_id"], "alerts");
    assert_eq!(record["schedule_type"], "daily");
    let (_, all) = api.get("/api/digest/executions").await;
    assert_eq!(all["executions"].as_array().unwrap().len(), 1);
    let (status, _) = api.get("/api/digest/executions/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, schedules) = api.get("/api/digest/schedules").await;
    let s = &schedules["schedules"][0];
    assert_eq!(
        (s["profile_id"].as_str(), s["schedule_type"].as_str()),
        (Some("alerts"), Some("daily"))
    );
    assert!(
        s["next_run"].as_str().unwrap().ends_with("T08:00:00+03:30"),
        "{s}"
    );
    assert!(s["last_run"].is_string(), "the window's end is kept: {s}");
    api.herald.shutdown().await;
}

#[tokio::test]
async fn a_run_is_cancelled_and_readyz_reports_the_mode() {
    let mut redis = RedisServer::start();
    let api = Api::start(&redis, vec![slow_job()], Vec::new()).await;
    let (_, ready) = api.get("/readyz").await;
    assert_eq!(
        (ready["ready"].as_bool(), ready["mode"].as_str()),
        (Some(true), Some("online"))
    );
    let (_, run) = api.call(Method::POST, "/api/jobs/slow/run", None).await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    wait_json("the run to start", Duration::from_secs(5), async || {
        let (_, r) = api.get(&format!("/api/executions/{run_id}")).await;
        (r["status"] == "RUNNING").then_some(r)
    })
    .await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/executions/{run_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["cancelled"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    wait_json("the run cancelled", Duration::from_secs(5), async || {
        let (_, r) = api.get(&format!("/api/executions/{run_id}")).await;
        (r["status"] == "CANCELLED").then_some(r)
    })
    .await;
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/api/executions/{run_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "already ended");

    redis.stop();
    wait_json("readyz offline", Duration::from_secs(5), async || {
        let (status, r) = api.get("/readyz").await;
        (status == StatusCode::OK && r["mode"] == "offline").then_some(r)
    })
    .await;
    api.herald.shutdown().await;
}

/// chromedriver on a free loopback port, killed on drop.
struct ChromeDriver {
    child: std::process::Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = herald_testkit::free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `bash scripts/test` installs it)");
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn client(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start headless chromium through chromedriver: {e}"),
            }
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the element `css` exists and `check` accepts its text.
async fn wait_text(
    browser: &fantoccini::Client,
    css: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(e) = browser.find(fantoccini::Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            if check(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({css}); last text {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css`, finding it again if the page redrew it
/// between finding and clicking (the tables are redrawn every 2 s).
async fn click(browser: &fantoccini::Client, css: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match element(browser, css).await.click().await {
            Ok(()) => return,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "cannot click {css}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The element `css`, once it exists (the page renders asynchronously).
async fn element(browser: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match browser.find(fantoccini::Locator::Css(css)).await {
            Ok(e) => return e,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no element {css} within 10s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The admin page end to end in headless Chromium: sign in (a wrong token
/// is refused), toggle a job, edit a schedule (a bad one shows the error
/// inline, a good one saves), run a job and see its execution appear, and
/// the offline banner when Redis goes away.
#[tokio::test]
async fn the_admin_page_works_in_headless_chromium() {
    let mut redis = RedisServer::start();
    let api = Api::start(
        &redis,
        vec![
            message_job("greet", "0 9 * * *"),
            message_job("other", "0 10 * * *"),
        ],
        vec![digest_profile()],
    )
    .await;
    api.call(
        Method::POST,
        "/api/users",
        Some(json!({"chat_id": 42, "name": "<b>Ana</b>"})),
    )
    .await;
    let driver = ChromeDriver::start();
    let browser = driver.client().await;
    async {
        browser.goto(&format!("{}/", api.base)).await.unwrap();
        // A wrong token is refused.
        element(&browser, "#token")
            .await
            .send_keys("not-the-token")
            .await
            .unwrap();
        click(&browser, "#sign-in-button").await;
        wait_text(&browser, "#sign-in-error", "the refusal", |t| {
            t.contains("refused")
        })
        .await;
        let token_input = element(&browser, "#token").await;
        token_input.clear().await.unwrap();
        token_input.send_keys(TOKEN).await.unwrap();
        click(&browser, "#sign-in-button").await;
        wait_text(
            &browser,
            "tr[data-job=greet] .job-id",
            "the jobs table",
            |t| t == "greet",
        )
        .await;
        // Names are shown as text, not HTML.
        wait_text(
            &browser,
            "tr[data-chat='42'] td:nth-child(2)",
            "the user",
            |t| t == "<b>Ana</b>",
        )
        .await;

        // Toggle: the job is disabled in herald.
        click(&browser, "tr[data-job=greet] .toggle-enabled").await;
        wait_json("greet disabled", Duration::from_secs(10), async || {
            let (_, j) = api.get("/api/jobs/greet").await;
            (j["enabled"] == false).then_some(j)
        })
        .await;
        wait_text(
            &browser,
            "tr[data-job=greet] .next-run",
            "no next run",
            |t| t == "—",
        )
        .await;

        // Edit: a bad schedule shows the error inline; a good one saves.
        click(&browser, "tr[data-job=other] .edit-schedule").await;
        let input = element(&browser, "tr[data-job=other] .schedule-input").await;
        input.clear().await.unwrap();
        input.send_keys("61 * * * *").await.unwrap();
        click(&browser, "tr[data-job=other] .save-schedule").await;
        let error = wait_text(
            &browser,
            "tr[data-job=other] .schedule-error",
            "the inline error",
            |t| !t.is_empty(),
        )
        .await;
        assert!(error.contains("61 is out of range"), "{error}");
        let (_, other) = api.get("/api/jobs/other").await;
        assert_eq!(
            other["schedule"], "0 10 * * *",
            "a bad schedule is not saved"
        );
        let input = element(&browser, "tr[data-job=other] .schedule-input").await;
        input.clear().await.unwrap();
        input.send_keys("30 11 * * *").await.unwrap();
        click(&browser, "tr[data-job=other] .save-schedule").await;
        wait_text(
            &browser,
            "tr[data-job=other] td.schedule code",
            "the saved schedule",
            |t| t == "30 11 * * *",
        )
        .await;
        let (_, other) = api.get("/api/jobs/other").await;
        assert_eq!(other["schedule"], "30 11 * * *");

        // Run now: the execution appears in the history with its status.
        click(&browser, "tr[data-job=other] .run-now").await;
        wait_text(
            &browser,
            "#executions tbody tr .status",
            "the run's status",
            |t| t == "SUCCESS",
        )
        .await;
        let duration = wait_text(
            &browser,
            "#executions tbody tr .duration",
            "its duration",
            |t| t.ends_with(" ms") || t.ends_with(" s"),
        )
        .await;
        assert!(!duration.is_empty());
        wait_text(
            &browser,
            "tr[data-job=other] .status",
            "the last status in the table",
            |t| t == "SUCCESS",
        )
        .await;

        // Redis goes away: the banner says herald is offline.
        redis.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let banner = element(&browser, "#offline-banner").await;
            if banner.is_displayed().await.unwrap_or(false) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no offline banner");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    let _ = browser.close().await;
    api.herald.shutdown().await;
}

/// A tick held back by the overlap policy shows up in `/api/skips`.
#[tokio::test]
async fn skipped_ticks_are_listed_with_their_reason() {
    let redis = RedisServer::start();
    let mut every_second = slow_job();
    every_second.id = "busy".into();
    every_second.schedule = Schedule::parse("* * * * * *", chrono_tz::UTC).unwrap();
    let api = Api::start(&redis, vec![every_second], Vec::new()).await;
    let skip = wait_json("an overlap skip", Duration::from_secs(10), async || {
        let (_, page) = api.get("/api/skips?job=busy&limit=10").await;
        page["skips"]
            .as_array()?
            .iter()
            .find(|s| s["reason"] == "overlap")
            .cloned()
    })
    .await;
    assert_eq!(skip["job_id"], "busy");
    let (status, _) = api.get("/api/skips?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api.herald.shutdown().await;
}

/// A method a route does not take is a 405 in the JSON error shape.
#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let redis = RedisServer::start();
    let api = Api::start(&redis, Vec::new(), Vec::new()).await;
    for (method, path) in [
        (Method::DELETE, "/api/packs/x"),
        (Method::POST, "/api/schedules"),
        (Method::GET, "/api/jobs/x/run"),
        (Method::POST, "/healthz"),
    ] {
        let (status, body) = api.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(
            error_code(&body),
            "method_not_allowed",
            "{method} {path}: {body}"
        );
    }
    api.herald.shutdown().await;
}

/// Without a token the API is open to local clients only: a foreign Host
/// (DNS rebinding) or a cross-site Origin (CSRF) is refused.
#[tokio::test]
async fn an_open_api_refuses_other_sites() {
    let redis = RedisServer::start();
    let herald = spawn_tree(
        TreeConfig {
            redis: Some(RedisSettings::new(redis.url(), "herald")),
            ..TreeConfig::default()
        },
        vec![message_job("m", "0 9 * * *")],
        Registry::new(),
        Arc::new(DryRun),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        ApiState::new(herald.admin(), None, None),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/jobs/m/run");
    let local = client
        .get(format!("http://{addr}/api/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        local.status(),
        StatusCode::OK,
        "local clients need no token"
    );
    let rebound = client
        .post(&url)
        .header("host", format!("evil.example:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    let body: Value = rebound.json().await.unwrap();
    assert_eq!(error_code(&body), "forbidden");
    let csrf = client
        .post(&url)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), StatusCode::FORBIDDEN);
    let fetch_site = client
        .post(&url)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), StatusCode::FORBIDDEN);
    let same_origin = client
        .post(&url)
        .header("origin", format!("http://{addr}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        same_origin.status(),
        StatusCode::ACCEPTED,
        "the page itself may"
    );
    herald.shutdown().await;
}
