//! Signed webhook delivery against a real local receiver
//! (herald_testkit::webhook::WebhookReceiver, which checks signatures with
//! its own HMAC code).

use std::time::{Duration, Instant};

use herald_actors::webhook::{WebhookEndpoint, WebhookOutcome, WebhookSender};
use herald_testkit::webhook::WebhookReceiver;
use serde_json::json;

const SECRET: &str = "s3cret-key";

fn endpoint(url: String, max_attempts: u32) -> WebhookEndpoint {
    WebhookEndpoint {
        name: "ops".into(),
        url,
        secret: SECRET.into(),
        timeout: Duration::from_secs(5),
        max_attempts,
    }
}

fn fast_sender() -> WebhookSender {
    WebhookSender::new().with_backoff_base(Duration::from_millis(10))
}

fn failed(outcome: WebhookOutcome) -> (String, u32) {
    match outcome {
        WebhookOutcome::Failed { error, attempts } => (error, attempts),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_once_signed_with_the_body_intact() {
    let receiver = WebhookReceiver::start(SECRET).await;
    let body = json!({"job": "digest", "ok": true, "n": 3, "text": "héllo \"quoted\" <b>"});
    let before = chrono::Utc::now().timestamp();

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/hooks/herald"), 3), &body)
        .await;

    assert_eq!(
        outcome,
        WebhookOutcome::Delivered {
            status: 200,
            attempts: 1
        }
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let request = &got[0];
    assert_eq!(request.path, "/hooks/herald");
    assert_eq!(request.body, body);
    assert_eq!(request.raw, serde_json::to_vec(&body).unwrap());
    assert!(request.signature_valid, "{request:?}");
    assert!(request.signature.as_deref().unwrap().starts_with("sha256="));
    let ts = request.timestamp.expect("a timestamp header");
    assert!((before..=before + 5).contains(&ts), "{ts} vs {before}");
    let agent = format!("herald/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(request.user_agent.as_deref(), Some(agent.as_str()));
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn retries_server_errors_then_delivers() {
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.fail_next(2, 500);

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/h"), 5), &json!({"n": 1}))
        .await;

    assert_eq!(
        outcome,
        WebhookOutcome::Delivered {
            status: 200,
            attempts: 3
        }
    );
    let got = receiver.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|r| r.signature_valid), "{got:?}");
    assert!(got.iter().all(|r| r.body == json!({"n": 1})), "{got:?}");
}

#[tokio::test]
async fn retries_429() {
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.fail_next(1, 429);

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/h"), 3), &json!({}))
        .await;

    assert_eq!(
        outcome,
        WebhookOutcome::Delivered {
            status: 200,
            attempts: 2
        }
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_the_status_and_body() {
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.fail_next(10, 500);

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/h"), 3), &json!({}))
        .await;

    let (error, attempts) = failed(outcome);
    assert_eq!(attempts, 3);
    assert_eq!(
        error,
        "webhook 'ops': HTTP 500 Internal Server Error after 3 attempts: boom"
    );
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.fail_next(5, 400);

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/h"), 5), &json!({}))
        .await;

    let (error, attempts) = failed(outcome);
    assert_eq!(attempts, 1);
    assert!(error.contains("webhook 'ops'"), "{error}");
    assert!(error.contains("HTTP 400 Bad Request"), "{error}");
    assert!(error.contains("boom"), "{error}");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_hanging_receiver_times_out() {
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.hang_next(10);
    let mut target = endpoint(receiver.url("/h"), 2);
    target.timeout = Duration::from_millis(300);

    let started = Instant::now();
    let outcome = fast_sender().post(&target, &json!({})).await;
    let elapsed = started.elapsed();

    let (error, attempts) = failed(outcome);
    assert_eq!(attempts, 2);
    assert!(error.contains("timed out"), "{error}");
    assert!(error.contains("after 2 attempts"), "{error}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn the_receiver_rejects_a_wrong_secret() {
    let receiver = WebhookReceiver::start("not-the-secret").await;

    let outcome = fast_sender()
        .post(&endpoint(receiver.url("/h"), 1), &json!({"a": 1}))
        .await;

    // The receiver only records; it answers 200 either way.
    assert!(matches!(outcome, WebhookOutcome::Delivered { .. }));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].signature.is_some());
    assert!(!got[0].signature_valid, "{got:?}");
}

#[tokio::test]
async fn an_empty_secret_sends_no_signature() {
    let receiver = WebhookReceiver::start(SECRET).await;
    let mut target = endpoint(receiver.url("/h"), 1);
    target.secret = String::new();

    let outcome = fast_sender().post(&target, &json!({})).await;

    assert!(matches!(outcome, WebhookOutcome::Delivered { .. }));
    let got = receiver.received();
    assert_eq!(got[0].signature, None);
    assert!(got[0].timestamp.is_some());
    assert!(!got[0].signature_valid);
}

#[tokio::test]
async fn connection_refused_fails_after_max_attempts() {
    let port = herald_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/h");

    let outcome = fast_sender().post(&endpoint(url, 3), &json!({})).await;

    let (error, attempts) = failed(outcome);
    assert_eq!(attempts, 3);
    assert!(
        error.starts_with("webhook 'ops': connection failed after 3 attempts: "),
        "{error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(
        !error.contains(&port.to_string()),
        "no URL in errors: {error}"
    );
}

#[tokio::test]
async fn an_invalid_url_fails_at_once() {
    let outcome = fast_sender()
        .post(&endpoint("not a url".into(), 3), &json!({}))
        .await;

    let (error, attempts) = failed(outcome);
    assert_eq!(attempts, 1);
    assert!(
        error.starts_with("webhook 'ops': invalid request"),
        "{error}"
    );
}

/// A message job posting to a webhook through the whole tree: the run's
/// record counts the delivery per destination.
#[tokio::test]
async fn a_message_job_posts_to_its_webhook_and_the_record_counts_it() {
    use herald_actors::handler::Registry;
    use herald_actors::job::{JobKind, JobSpec};
    use herald_actors::notifier::DryRun;
    use herald_actors::record::RunStatus;
    use herald_actors::schedule::Schedule;
    use herald_actors::{TreeConfig, spawn_tree};

    let receiver = WebhookReceiver::start(SECRET).await;
    let mut ok = JobSpec::new(
        "hooked",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: "<b>{{ job_id }}</b> fired".into(),
        },
    );
    ok.delivery_mut().webhooks = vec!["ops".into()];
    let mut refused = ok.clone();
    refused.id = "refused".into();
    refused.delivery_mut().webhooks = vec!["gone".into()];
    let config = TreeConfig {
        webhooks: vec![
            endpoint(receiver.url("/hook"), 3),
            WebhookEndpoint {
                name: "gone".into(),
                ..endpoint(receiver.url("/gone"), 1)
            },
        ],
        ..TreeConfig::default()
    };
    let herald = spawn_tree(
        config,
        vec![ok, refused],
        Registry::new(),
        std::sync::Arc::new(DryRun),
    )
    .await
    .unwrap();

    let run = herald
        .scheduler
        .run_now("hooked".into())
        .await
        .unwrap()
        .unwrap();
    let rec = wait_final(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    let report = rec.deliveries.unwrap();
    assert_eq!(report.by_destination["webhook:ops"].sent, 1);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_valid);
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].body["job_id"], "hooked");
    assert_eq!(got[0].body["run_id"], run.0.as_str());
    assert_eq!(got[0].body["text"], "<b>hooked</b> fired");

    // the only destination refuses (400): nothing got through, FAILED
    receiver.fail_next(1, 400);
    let run = herald
        .scheduler
        .run_now("refused".into())
        .await
        .unwrap()
        .unwrap();
    let rec = wait_final(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains("webhook:gone") && error.contains("400"),
        "{error}"
    );
    herald.shutdown().await;
}

async fn wait_final(
    herald: &herald_actors::Herald,
    run: &herald_actors::record::RunId,
) -> herald_actors::record::ExecutionRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(r)) = herald.store.record(run.clone()).await
            && r.status.is_terminal()
        {
            return r;
        }
        assert!(Instant::now() < deadline, "the run did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
