//! A local webhook receiver that verifies signatures.
//!
//! [`WebhookReceiver::start`] serves any path on 127.0.0.1 and a free port,
//! records every request (before answering it) and checks its signature
//! with its own HMAC-SHA256, independent of herald's code:
//! `X-Herald-Signature` must equal
//! `"sha256=" + hex(HMAC-SHA256(secret, X-Herald-Timestamp + "." + raw body))`.
//!
//! It answers `200 {"ok":true}` unless told to fail
//! ([`WebhookReceiver::fail_next`]) or to hang
//! ([`WebhookReceiver::hang_next`]); faults apply in the order they were
//! queued.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The request path (no query).
    pub path: String,
    /// The body parsed as JSON; `Null` if it is not JSON.
    pub body: serde_json::Value,
    /// The body's bytes as sent.
    pub raw: Vec<u8>,
    /// `X-Herald-Timestamp`, if present and an integer.
    pub timestamp: Option<i64>,
    /// `X-Herald-Signature`, verbatim.
    pub signature: Option<String>,
    /// The signature matches the receiver's secret, timestamp and raw body.
    pub signature_valid: bool,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Fail(StatusCode),
    Hang,
}

#[derive(Default)]
struct Recorded {
    received: Vec<Received>,
    faults: VecDeque<Fault>,
}

struct Shared {
    secret: Vec<u8>,
    state: Mutex<Recorded>,
    /// Flips to true when the receiver is dropped: hanging requests end.
    closed: watch::Receiver<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A webhook endpoint on loopback; the server stops when this is dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    close: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

fn expected_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_timestamp = header(&headers, "x-herald-timestamp");
    let signature = header(&headers, "x-herald-signature");
    let signature_valid = match (&raw_timestamp, &signature) {
        (Some(ts), Some(sig)) => *sig == expected_signature(&shared.secret, ts, &body),
        _ => false,
    };
    let received = Received {
        path: uri.path().to_string(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw: body.to_vec(),
        timestamp: raw_timestamp.and_then(|ts| ts.trim().parse().ok()),
        signature,
        signature_valid,
        user_agent: header(&headers, "user-agent"),
        content_type: header(&headers, "content-type"),
    };
    let fault = {
        let mut state = shared.lock();
        state.received.push(received);
        state.faults.pop_front()
    };
    match fault {
        None => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"ok":true}"#,
        )
            .into_response(),
        Some(Fault::Fail(status)) => (status, "boom").into_response(),
        Some(Fault::Hang) => {
            let mut closed = shared.closed.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = closed.wait_for(|closed| *closed) => {}
            }
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

impl WebhookReceiver {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if no loopback port can be bound.
    pub async fn start(secret: &str) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the webhook receiver");
        let addr = listener.local_addr().expect("the receiver's local address");
        let (close, closed) = watch::channel(false);
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            state: Mutex::new(Recorded::default()),
            closed,
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            addr,
            shared,
            close,
            server,
        }
    }

    /// `http://127.0.0.1:<port>` + `path` (a `/` is added if missing).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("http://{}{path}", self.addr)
        } else {
            format!("http://{}/{path}", self.addr)
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request so far, oldest first (hanging ones included).
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Answers the next `n` requests with `status` and body `boom`.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status code");
        let mut state = self.shared.lock();
        state
            .faults
            .extend(std::iter::repeat_n(Fault::Fail(status), n));
    }

    /// Never answers the next `n` requests (they wait an hour, or until the
    /// receiver is dropped).
    pub fn hang_next(&self, n: usize) {
        let mut state = self.shared.lock();
        state.faults.extend(std::iter::repeat_n(Fault::Hang, n));
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.close.send(true);
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac topsecret
    #[test]
    fn expected_signature_matches_openssl() {
        assert_eq!(
            expected_signature(b"topsecret", "1700000000", br#"{"a":1}"#),
            "sha256=6a939b0c71853d606167625a15168ee9188c6a511c773ef4f42d307f3849e50f"
        );
    }

    #[tokio::test]
    async fn records_requests_and_applies_faults_in_order() {
        let receiver = WebhookReceiver::start("topsecret").await;
        assert!(receiver.url("x").ends_with("/x"));
        receiver.fail_next(1, 503);
        let (status, body) = raw_post(receiver.port(), "/a", "hello").await;
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        assert!(body.ends_with("boom"), "{body}");
        let (status, body) = raw_post(receiver.port(), "/b", r#"{"a":1}"#).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(body.ends_with(r#"{"ok":true}"#), "{body}");

        let got = receiver.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, "/a");
        assert_eq!(got[0].body, serde_json::Value::Null);
        assert_eq!(got[0].raw, b"hello");
        assert_eq!(got[1].path, "/b");
        assert_eq!(got[1].body, serde_json::json!({"a": 1}));
        assert_eq!(got[1].timestamp, Some(1_700_000_000));
        assert!(got[1].signature_valid);
        assert_eq!(got[1].user_agent.as_deref(), Some("raw-test"));
    }

    /// A minimal blocking HTTP/1.1 client (testkit has no HTTP client
    /// dependency), run off the runtime: returns the status line and the
    /// whole response.
    async fn raw_post(port: u16, path: &str, body: &str) -> (String, String) {
        use std::io::{Read, Write};
        let signature = expected_signature(b"topsecret", "1700000000", body.as_bytes());
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: raw-test\r\n\
             X-Herald-Timestamp: 1700000000\r\nX-Herald-Signature: {signature}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let status = response.lines().next().unwrap_or_default().to_string();
            (status, response)
        })
        .await
        .unwrap()
    }
}
