//! Signed webhook delivery.
//!
//! herald POSTs a JSON body to an endpoint with these headers:
//!
//! ```text
//! Content-Type: application/json
//! User-Agent: herald/<version>
//! X-Herald-Timestamp: <unix seconds>
//! X-Herald-Signature: sha256=<lowercase hex of HMAC-SHA256(secret, "<timestamp>." + body)>
//! ```
//!
//! The signature header is left out when the endpoint's secret is empty.
//! Each attempt is signed again with a fresh timestamp.
//!
//! # What receivers should do
//!
//! A receiver should call [`verify`] (or do the same in its own language):
//!
//! 1. read the raw request body *before* parsing it (re-serialized JSON
//!    does not have the same bytes);
//! 2. recompute `HMAC-SHA256(secret, timestamp + "." + body)` and compare it
//!    with the `X-Herald-Signature` header in constant time;
//! 3. reject the request when the timestamp is further than a few minutes
//!    from its own clock (e.g. 300 s). The timestamp is covered by the
//!    signature, so this bounds how long a captured request can be replayed;
//!    receivers that need exactly-once handling should also remember the
//!    signatures they accepted within that window and drop duplicates
//!    (herald retries, so the same body can legitimately arrive twice, with
//!    different timestamps).
//!
//! # Delivery
//!
//! [`WebhookSender::post`] answers with a [`WebhookOutcome`]:
//! * 2xx: delivered;
//! * 5xx, 429, timeouts and connection errors: retried with exponential
//!   backoff and full jitter (base 500 ms, factor 2, cap 30 s; a 429's
//!   `Retry-After: <seconds>` is honoured, capped at 30 s) up to the
//!   endpoint's `max_attempts`;
//! * other statuses (4xx, and 3xx: redirects are not followed, so a signed
//!   body is never sent to a host it was not configured for): failed at once.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the unix timestamp (seconds) that was signed.
pub const TIMESTAMP_HEADER: &str = "X-Herald-Timestamp";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";
/// `herald/<version>`.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Default first retry delay (before jitter).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, `Retry-After` included.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Connection establishment timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error response's body goes into the error text.
const ERROR_BODY_CHARS: usize = 200;

fn mac_for(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `"sha256=" + lowercase hex(HMAC-SHA256(secret, "{timestamp}." + body))`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac_for(secret, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// What a receiver does with a request: true iff `header` is
/// `sha256=<hex>` of the HMAC of `"{timestamp}." + body` under `secret`
/// (compared in constant time) and `timestamp` is within
/// `tolerance_secs` of `now` (either direction). A negative tolerance
/// rejects everything. See the module docs.
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let Ok(tolerance) = u64::try_from(tolerance_secs) else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance {
        return false;
    }
    let Some(hex_tag) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    mac_for(secret, timestamp, body).verify_slice(&tag).is_ok()
}

/// Where and how to deliver.
#[derive(Clone)]
pub struct WebhookEndpoint {
    /// Used in logs and error texts.
    pub name: String,
    pub url: String,
    /// HMAC key; empty: requests are not signed (no signature header).
    pub secret: String,
    /// Per attempt: connecting, sending and reading the response.
    pub timeout: Duration,
    /// Attempts in all (the first included); 0 counts as 1.
    pub max_attempts: u32,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.secret.is_empty() {
            "<none>"
        } else {
            "<redacted>"
        };
        f.debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &format_args!("{secret}"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A 2xx answer on attempt `attempts`.
    Delivered { status: u16, attempts: u32 },
    /// Gave up after `attempts` attempts; `error` names the endpoint, the
    /// last failure and, for HTTP errors, the start of the response body.
    Failed { error: String, attempts: u32 },
}

/// Sends signed webhooks; cheap to clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    backoff_base: Duration,
    backoff_cap: Duration,
}

impl Default for WebhookSender {
    fn default() -> Self {
        Self::new()
    }
}

/// Delay before retry number `retry` (1 for the wait after the first
/// attempt): full jitter, a uniform draw from `[0, min(cap, base * 2^(retry-1))]`
/// (`unit_random` in `[0, 1]`).
fn backoff_delay(base: Duration, cap: Duration, retry: u32, unit_random: f64) -> Duration {
    let exponent = retry.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// `Retry-After: <seconds>` (the HTTP-date form is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn describe_status(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// A reqwest error as (what failed, its causes), without the URL (it may
/// hold a token).
fn describe_error(err: reqwest::Error, timeout: Duration) -> (String, String) {
    if err.is_timeout() {
        return (
            format!("request timed out (timeout {timeout:?})"),
            String::new(),
        );
    }
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    (kind.to_string(), detail)
}

/// Up to [`ERROR_BODY_CHARS`] characters of the body, on one line; reads
/// only a bounded prefix of the body.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let limit = ERROR_BODY_CHARS * 4;
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_BODY_CHARS)
        .collect();
    one_line.trim().to_string()
}

enum Attempt {
    Delivered(u16),
    /// Not worth retrying.
    Fatal {
        reason: String,
        detail: String,
    },
    Retry {
        reason: String,
        detail: String,
        after: Option<Duration>,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "attempt" } else { "attempts" }
}

fn with_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl WebhookSender {
    /// A sender with its own connection pool: no proxy from the
    /// environment, redirects not followed, 5 s connect timeout.
    ///
    /// # Panics
    ///
    /// If the TLS backend cannot be initialised (as `reqwest::Client::new`).
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .expect("the HTTP client's TLS backend initialises");
        WebhookSender {
            client,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
        }
    }

    /// Sets the first retry delay (before jitter; 500 ms by default).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    /// Delivers `body` to `endpoint`, retrying as the module docs say.
    pub async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        body: &serde_json::Value,
    ) -> WebhookOutcome {
        let name = &endpoint.name;
        let payload = match serde_json::to_vec(body) {
            Ok(payload) => payload,
            Err(err) => {
                return WebhookOutcome::Failed {
                    error: format!("webhook '{name}': the body does not serialize: {err}"),
                    attempts: 0,
                };
            }
        };
        let max_attempts = endpoint.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (reason, detail, after) = match self.attempt(endpoint, &payload).await {
                Attempt::Delivered(status) => {
                    tracing::debug!(webhook = %name, status, attempts, "webhook delivered");
                    return WebhookOutcome::Delivered { status, attempts };
                }
                Attempt::Fatal { reason, detail } => {
                    let error = format!(
                        "webhook '{name}': {reason} after {attempts} {} (not retried){}",
                        plural(attempts),
                        with_detail(&detail)
                    );
                    tracing::warn!(webhook = %name, %error, "webhook failed");
                    return WebhookOutcome::Failed { error, attempts };
                }
                Attempt::Retry {
                    reason,
                    detail,
                    after,
                } => (reason, detail, after),
            };
            if attempts >= max_attempts {
                let error = format!(
                    "webhook '{name}': {reason} after {attempts} {}{}",
                    plural(attempts),
                    with_detail(&detail)
                );
                tracing::warn!(webhook = %name, %error, "webhook failed");
                return WebhookOutcome::Failed { error, attempts };
            }
            let delay = match after {
                Some(after) => after.min(self.backoff_cap),
                None => backoff_delay(
                    self.backoff_base,
                    self.backoff_cap,
                    attempts,
                    rand::random::<f64>(),
                ),
            };
            tracing::warn!(
                webhook = %name,
                attempt = attempts,
                max_attempts,
                delay_ms = delay.as_millis() as u64,
                "webhook attempt failed, retrying: {reason}{}",
                with_detail(&detail)
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, endpoint: &WebhookEndpoint, payload: &[u8]) -> Attempt {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(&endpoint.url)
            .timeout(endpoint.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string());
        if !endpoint.secret.is_empty() {
            request = request.header(
                SIGNATURE_HEADER,
                signature(endpoint.secret.as_bytes(), timestamp, payload),
            );
        }
        let response = match request.body(payload.to_vec()).send().await {
            Ok(response) => response,
            Err(err) => {
                // Timeouts, refused connections, resets, bad URLs: only the
                // last is hopeless, and reqwest reports it as a builder error.
                let fatal = err.is_builder();
                let (reason, detail) = describe_error(err, endpoint.timeout);
                return if fatal {
                    Attempt::Fatal { reason, detail }
                } else {
                    Attempt::Retry {
                        reason,
                        detail,
                        after: None,
                    }
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered(status.as_u16());
        }
        let reason = describe_status(status);
        let after = if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            retry_after(response.headers())
        } else {
            None
        };
        let detail = body_excerpt(response).await;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retry {
                reason,
                detail,
                after,
            }
        } else {
            Attempt::Fatal { reason, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac topsecret
    const KNOWN: &str = "sha256=6a939b0c71853d606167625a15168ee9188c6a511c773ef4f42d307f3849e50f";

    #[test]
    fn signature_matches_openssl() {
        assert_eq!(signature(b"topsecret", 1_700_000_000, br#"{"a":1}"#), KNOWN);
    }

    #[test]
    fn verify_accepts_the_signature_within_tolerance() {
        let body = br#"{"a":1}"#;
        let ts = 1_700_000_000;
        assert!(verify(b"topsecret", ts, body, KNOWN, ts, 300));
        assert!(verify(b"topsecret", ts, body, KNOWN, ts + 300, 300));
        assert!(verify(b"topsecret", ts, body, KNOWN, ts - 300, 300));
        let upper = format!("sha256={}", KNOWN["sha256=".len()..].to_uppercase());
        assert!(verify(b"topsecret", ts, body, &upper, ts, 300));
    }

    #[test]
    fn verify_rejects_tampering_and_stale_timestamps() {
        let body = br#"{"a":1}"#;
        let ts = 1_700_000_000;
        // Tampered body, timestamp, secret.
        assert!(!verify(b"topsecret", ts, br#"{"a":2}"#, KNOWN, ts, 300));
        assert!(!verify(b"topsecret", ts + 1, body, KNOWN, ts, 300));
        assert!(!verify(b"topsecreT", ts, body, KNOWN, ts, 300));
        // Stale or from the future.
        assert!(!verify(b"topsecret", ts, body, KNOWN, ts + 301, 300));
        assert!(!verify(b"topsecret", ts, body, KNOWN, ts - 301, 300));
        assert!(!verify(b"topsecret", ts, body, KNOWN, ts, -1));
        // Malformed headers.
        let bare = &KNOWN["sha256=".len()..];
        assert!(!verify(b"topsecret", ts, body, bare, ts, 300));
        assert!(!verify(b"topsecret", ts, body, "sha256=zz", ts, 300));
        assert!(!verify(b"topsecret", ts, body, "sha256=", ts, 300));
        assert!(!verify(
            b"topsecret",
            ts,
            body,
            &KNOWN[..KNOWN.len() - 2],
            ts,
            300
        ));
        // Extreme values do not overflow.
        assert!(!verify(
            b"topsecret",
            i64::MIN,
            body,
            KNOWN,
            i64::MAX,
            i64::MAX
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let endpoint = WebhookEndpoint {
            name: "ops".into(),
            url: "http://127.0.0.1:1/hook".into(),
            secret: "hunter2-very-secret".into(),
            timeout: Duration::from_secs(1),
            max_attempts: 3,
        };
        let shown = format!("{endpoint:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(
            shown.contains("ops") && shown.contains("max_attempts: 3"),
            "{shown}"
        );
        let unsigned = WebhookEndpoint {
            secret: String::new(),
            ..endpoint
        };
        assert!(format!("{unsigned:?}").contains("<none>"));
    }

    #[test]
    fn backoff_is_full_jitter_doubling_to_the_cap() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff_delay(base, cap, 1, 1.0), base);
        assert_eq!(backoff_delay(base, cap, 1, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(base, cap, 2, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(base, cap, 3, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(base, cap, 7, 1.0), cap);
        assert_eq!(backoff_delay(base, cap, u32::MAX, 1.0), cap);
        assert_eq!(backoff_delay(base, cap, 2, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn status_descriptions() {
        assert_eq!(
            describe_status(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
            "HTTP 500 Internal Server Error"
        );
        let odd = reqwest::StatusCode::from_u16(599).unwrap();
        assert_eq!(describe_status(odd), "HTTP 599");
    }
}
