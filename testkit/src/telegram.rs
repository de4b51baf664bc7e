//! A fake Telegram Bot API server on loopback, for tests.
//!
//! [`FakeTelegram::start`] binds `127.0.0.1:0`, serves the Bot API's URL
//! scheme (`/bot{token}/{method}`) with axum on the current tokio runtime and
//! hands out [`FakeTelegram::api_url`], which is what teloxide's
//! `Bot::new(token).set_api_url(url)` takes. Dropping the fake shuts it down:
//! the server task is aborted (new connections are refused, idle kept-alive
//! ones close) and connections with a request still in flight (a
//! [`Fault::Hang`], a latency sleep, a long poll) are cut, so clients see the
//! fake go away instead of an answer from a half-dead server.
//!
//! # Methods
//!
//! Method names are matched case-insensitively (teloxide posts `SendMessage`,
//! `GetMe`, ...). Parameters are read from a JSON body, a
//! `application/x-www-form-urlencoded` body and the query string (so `GET`
//! works too). Any token is accepted.
//!
//! * `getMe`: a bot user, `herald_test_bot` with id 1.
//! * `sendMessage`: answers a `Message` that teloxide deserializes; message
//!   ids increment from 1. A positive `chat_id` is a private chat, a negative
//!   one a group. `chat_id` may be a JSON number or a string.
//! * `getUpdates`: returns the updates queued with
//!   [`FakeTelegram::push_update`]; an `offset` acknowledges (removes) every
//!   update with a smaller `update_id`. With nothing queued it waits for one
//!   up to the requested `timeout` (capped at 2 s), then answers `[]`.
//! * `deleteWebhook`, `setMyCommands`: `true`.
//! * Anything else: `404 {"ok":false,"error_code":404,"description":"Not
//!   Found: method not found"}`.
//!
//! Error answers carry the same HTTP status as their `error_code`, as
//! Telegram's do.
//!
//! # Telegram's own checks on `sendMessage` (always on)
//!
//! * missing `chat_id` -> 400 `Bad Request: chat_id is empty`; a `chat_id`
//!   that is not an integer (or is 0) -> 400 `Bad Request: chat not found`;
//! * missing, empty or (after markup) blank text -> 400 `Bad Request: message
//!   text is empty`;
//! * with `parse_mode` HTML (any case): a tag outside Telegram's list (`b
//!   strong i em u ins s strike del span tg-spoiler a tg-emoji code pre
//!   blockquote`), an unclosed `<`, or unbalanced tags -> 400 `Bad Request:
//!   can't parse entities: ...` (a stack check; attributes are not checked);
//! * visible text over 4096 UTF-16 code units -> 400 `Bad Request: message is
//!   too long`. With HTML the visible text is the text with tags stripped and
//!   `&lt; &gt; &amp; &quot; &#N; &#xN;` decoded (one character each); other
//!   parse modes are counted as sent.
//!
//! # Rate limits (off until [`FakeTelegram::enforce_limits`])
//!
//! Limits are kept per bot token and apply to `sendMessage` only. Only
//! delivered messages count against them (a refused send does not). A send
//! that would exceed one of them is answered 429 with `retry_after` = the
//! whole seconds until the tightest window frees up (at least 1), and is
//! counted by [`FakeTelegram::too_many_requests`]:
//!
//! * overall: at most 30 messages in any window of 1000 ms (no tolerance);
//! * private chat (positive id): at most 1 message per rolling 1000 ms, with
//!   50 ms tolerance for clock jitter (a second message 950 ms after the
//!   previous one passes);
//! * group chat (negative id): at most 20 messages per rolling 60 s, with the
//!   same 50 ms tolerance.
//!
//! Note that a client pacing itself with a token bucket that allows a burst
//! of 30 can still exceed the overall limit (31 messages within a second):
//! this fake counts a sliding window, as the limit is documented.
//!
//! # Faults (on demand, per chat)
//!
//! [`FakeTelegram::fail_next`] queues one-shot faults for the next
//! `sendMessage`s to a chat (checked before everything else, in the order
//! queued); [`FakeTelegram::fail_always`] fails every send to it once the
//! one-shot faults are used up. Injected faults are recorded like any answer
//! but do not count as rate-limit refusals.
//!
//! [`FakeTelegram::set_latency`] delays every answer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Longest `getUpdates` long poll, whatever `timeout` the client asks for.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(2);
/// Telegram's limit on a message's visible length, in UTF-16 code units.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// At most this many messages per bot in any [`OVERALL_WINDOW`].
pub const OVERALL_LIMIT: usize = 30;
/// The overall limit's window.
pub const OVERALL_WINDOW: Duration = Duration::from_millis(1000);
/// At most this many messages per private chat in any [`PRIVATE_WINDOW`].
pub const PRIVATE_LIMIT: usize = 1;
/// The per-private-chat window (1 s less [`CHAT_JITTER`]).
pub const PRIVATE_WINDOW: Duration = Duration::from_millis(1000 - 50);
/// At most this many messages per group chat in any [`GROUP_WINDOW`].
pub const GROUP_LIMIT: usize = 20;
/// The per-group window (60 s less [`CHAT_JITTER`]).
pub const GROUP_WINDOW: Duration = Duration::from_millis(60_000 - 50);
/// Tolerance for clock jitter on the per-chat windows.
pub const CHAT_JITTER: Duration = Duration::from_millis(50);

/// Tags Telegram accepts with `parse_mode` HTML.
const ALLOWED_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
];

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A fault injected into `sendMessage` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `Too Many Requests: retry after N` with `parameters.retry_after`.
    RetryAfter(u32),
    /// 403 with this description, e.g. `Forbidden: bot was blocked by the
    /// user`.
    Forbidden(String),
    /// 400 with this description, e.g. `Bad Request: chat not found`.
    BadRequest(String),
    /// This 5xx status, described `Internal Server Error`, `Bad Gateway`, ...
    ServerError(u16),
    /// Never answers (until the fake is dropped): the client's timeout must
    /// fire.
    Hang,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method, lowercased (`sendmessage`, `getme`, ...); empty when the
    /// path was not `/bot{token}/{method}`.
    pub method: String,
    pub token: String,
    pub chat_id: Option<i64>,
    /// The text as sent (with its markup).
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    pub disable_notification: Option<bool>,
    /// When it arrived.
    pub at: Instant,
    /// The HTTP status it was answered with; 0 for [`Fault::Hang`].
    pub answered: u16,
}

/// The fake server; shut down when dropped.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    conns: Arc<Conns>,
    server: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

struct Shared {
    state: Mutex<FakeState>,
    update_pushed: Notify,
    shutdown: watch::Receiver<bool>,
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Request>,
    next_message_id: i64,
    updates: VecDeque<Value>,
    next_update_id: i64,
    one_shot: HashMap<i64, VecDeque<Fault>>,
    always: HashMap<i64, Fault>,
    limits_on: bool,
    windows: HashMap<String, Windows>,
    too_many: usize,
    latency: Duration,
}

/// Delivery times of one bot's messages still inside their windows.
#[derive(Default)]
struct Windows {
    overall: VecDeque<Instant>,
    chats: HashMap<i64, VecDeque<Instant>>,
}

/// What a request is answered with.
enum Answer {
    Reply(u16, Value),
    Hang,
}

impl FakeTelegram {
    /// Binds a free port on 127.0.0.1 and serves on the current runtime.
    pub async fn start() -> FakeTelegram {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Telegram");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Telegram");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                next_message_id: 1,
                next_update_id: 1,
                ..FakeState::default()
            }),
            update_pushed: Notify::new(),
            shutdown: shutdown_rx,
        });
        let conns = Arc::new(Conns::default());
        let listener = TrackedListener {
            inner: listener,
            conns: conns.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram {
            addr,
            shared,
            conns,
            server,
            shutdown,
        }
    }

    /// `http://127.0.0.1:PORT`, for `Bot::set_api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in the order answered.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The `sendMessage` requests answered 200.
    pub fn sent(&self) -> Vec<Request> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "sendmessage" && r.answered == 200)
            .cloned()
            .collect()
    }

    /// The texts (as sent, markup included) delivered to `chat_id`.
    pub fn sent_to(&self, chat_id: i64) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|r| r.chat_id == Some(chat_id))
            .filter_map(|r| r.text)
            .collect()
    }

    /// Queues an update for `getUpdates`; an object without `update_id`
    /// gets the next one. Returns its `update_id`.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut state = self.shared.lock();
            let id = match update.get("update_id").and_then(Value::as_i64) {
                Some(id) => id,
                None => {
                    let id = state.next_update_id;
                    if let Some(object) = update.as_object_mut() {
                        object.insert("update_id".into(), json!(id));
                    }
                    id
                }
            };
            state.next_update_id = state.next_update_id.max(id + 1);
            state.updates.push_back(update);
            id
        };
        self.shared.update_pushed.notify_waiters();
        id
    }

    /// The next `sendMessage` to `chat_id` fails with `fault` (one-shot;
    /// several calls queue up in order).
    pub fn fail_next(&self, chat_id: i64, fault: Fault) {
        self.shared
            .lock()
            .one_shot
            .entry(chat_id)
            .or_default()
            .push_back(fault);
    }

    /// Every `sendMessage` to `chat_id` fails with `fault` (after any
    /// one-shot faults queued for it).
    pub fn fail_always(&self, chat_id: i64, fault: Fault) {
        self.shared.lock().always.insert(chat_id, fault);
    }

    /// Forgets every injected fault.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.one_shot.clear();
        state.always.clear();
    }

    /// Turns Telegram's rate limits on or off (off at start). Turning them
    /// on starts with empty windows.
    pub fn enforce_limits(&self, on: bool) {
        let mut state = self.shared.lock();
        if on && !state.limits_on {
            state.windows.clear();
        }
        state.limits_on = on;
    }

    /// How many sends were answered 429 because of the rate limits
    /// (injected [`Fault::RetryAfter`]s not included).
    pub fn too_many_requests(&self) -> usize {
        self.shared.lock().too_many
    }

    /// Delays every answer by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().latency = d;
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
        self.conns.shut_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, request: Request) {
        self.lock().requests.push(request);
    }

    /// Waits until the fake is dropped.
    async fn stopped(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    fn send_message(
        &self,
        mut request: Request,
        params: &Map<String, Value>,
    ) -> (Answer, Duration) {
        let mut state = self.lock();
        let latency = state.latency;
        let answer = state.send_message(&mut request, params);
        request.answered = match &answer {
            Answer::Reply(status, _) => *status,
            Answer::Hang => 0,
        };
        state.requests.push(request);
        (answer, latency)
    }

    async fn get_updates(&self, params: &Map<String, Value>) -> Result<Value, String> {
        let offset = int_param(params, "offset")?;
        let limit = int_param(params, "limit")?.unwrap_or(100).clamp(1, 100) as usize;
        let timeout = int_param(params, "timeout")?.unwrap_or(0).max(0) as u64;
        let timeout = Duration::from_secs(timeout).min(MAX_LONG_POLL);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pushed = self.update_pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(offset) = offset.filter(|offset| *offset > 0) {
                    state.updates.retain(|update| {
                        update
                            .get("update_id")
                            .and_then(Value::as_i64)
                            .is_none_or(|id| id >= offset)
                    });
                }
                if !state.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                    let updates: Vec<Value> = state.updates.iter().take(limit).cloned().collect();
                    return Ok(Value::Array(updates));
                }
            }
            tokio::select! {
                _ = &mut pushed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.stopped() => return Ok(json!([])),
            }
        }
    }
}

impl FakeState {
    fn send_message(&mut self, request: &mut Request, params: &Map<String, Value>) -> Answer {
        let chat_id = match chat_id_param(params) {
            Ok(chat_id) => chat_id,
            Err(description) => return Answer::Reply(400, error_json(400, &description)),
        };
        request.chat_id = Some(chat_id);

        // Injected faults come first.
        let fault = match self
            .one_shot
            .get_mut(&chat_id)
            .and_then(VecDeque::pop_front)
        {
            Some(fault) => Some(fault),
            None => self.always.get(&chat_id).cloned(),
        };
        if let Some(fault) = fault {
            return fault_answer(&fault);
        }

        // Telegram's checks on the text.
        let Some(text) = request.text.as_deref().filter(|text| !text.is_empty()) else {
            return bad_request("Bad Request: message text is empty");
        };
        let html = request
            .parse_mode
            .as_deref()
            .is_some_and(|mode| mode.eq_ignore_ascii_case("html"));
        let visible = if html {
            match parse_html(text) {
                Ok(visible) => visible,
                Err(detail) => {
                    return bad_request(&format!("Bad Request: can't parse entities: {detail}"));
                }
            }
        } else {
            text.to_owned()
        };
        if visible.trim().is_empty() {
            return bad_request("Bad Request: message text is empty");
        }
        if visible.encode_utf16().count() > MAX_MESSAGE_LEN {
            return bad_request("Bad Request: message is too long");
        }

        // Telegram's rate limits.
        let now = Instant::now();
        if self.limits_on {
            let windows = self.windows.entry(request.token.clone()).or_default();
            if let Some(retry_after) = windows.refuse(chat_id, now) {
                self.too_many += 1;
                return retry_after_answer(retry_after);
            }
            windows.admit(chat_id, now);
        }

        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let chat = if chat_id > 0 {
            json!({"id": chat_id, "type": "private", "first_name": "user"})
        } else {
            json!({"id": chat_id, "type": "group", "title": "group"})
        };
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Answer::Reply(
            200,
            json!({
                "ok": true,
                "result": {
                    "message_id": message_id,
                    "date": date,
                    "chat": chat,
                    "from": bot_user(),
                    "text": visible,
                }
            }),
        )
    }
}

impl Windows {
    /// `Some(retry_after)` when a message to `chat_id` now would break a
    /// limit.
    fn refuse(&mut self, chat_id: i64, now: Instant) -> Option<u32> {
        let mut wait = Duration::ZERO;
        if let Some(w) = wait_for_room(&mut self.overall, now, OVERALL_WINDOW, OVERALL_LIMIT) {
            wait = wait.max(w);
        }
        let (window, limit) = chat_limit(chat_id);
        let chat = self.chats.entry(chat_id).or_default();
        if let Some(w) = wait_for_room(chat, now, window, limit) {
            wait = wait.max(w);
        }
        if wait.is_zero() {
            None
        } else {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
        }
    }

    fn admit(&mut self, chat_id: i64, now: Instant) {
        self.overall.push_back(now);
        self.chats.entry(chat_id).or_default().push_back(now);
    }
}

fn chat_limit(chat_id: i64) -> (Duration, usize) {
    if chat_id > 0 {
        (PRIVATE_WINDOW, PRIVATE_LIMIT)
    } else {
        (GROUP_WINDOW, GROUP_LIMIT)
    }
}

/// Drops the times that left `window`; when `limit` are still inside it,
/// how long until the oldest leaves (never zero).
fn wait_for_room(
    times: &mut VecDeque<Instant>,
    now: Instant,
    window: Duration,
    limit: usize,
) -> Option<Duration> {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
    if times.len() < limit {
        return None;
    }
    let oldest = *times.front()?;
    let wait = window.saturating_sub(now.saturating_duration_since(oldest));
    Some(wait.max(Duration::from_nanos(1)))
}

/// The bot, as `getMe` describes it (teloxide 0.17's `Me` also needs
/// `has_main_web_app`).
fn me_json() -> Value {
    json!({
        "id": 1,
        "is_bot": true,
        "first_name": "herald-test",
        "username": "herald_test_bot",
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

/// The bot as a message's `from`.
fn bot_user() -> Value {
    json!({
        "id": 1,
        "is_bot": true,
        "first_name": "herald-test",
        "username": "herald_test_bot",
    })
}

fn error_json(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

fn bad_request(description: &str) -> Answer {
    Answer::Reply(400, error_json(400, description))
}

fn retry_after_answer(secs: u32) -> Answer {
    Answer::Reply(
        429,
        json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {secs}"),
            "parameters": {"retry_after": secs},
        }),
    )
}

fn fault_answer(fault: &Fault) -> Answer {
    match fault {
        Fault::RetryAfter(secs) => retry_after_answer(*secs),
        Fault::Forbidden(description) => Answer::Reply(403, error_json(403, description)),
        Fault::BadRequest(description) => bad_request(description),
        Fault::ServerError(status) => {
            let description = match status {
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Internal Server Error",
            };
            Answer::Reply(*status, error_json(*status, description))
        }
        Fault::Hang => Answer::Hang,
    }
}

fn not_found() -> Value {
    error_json(404, "Not Found: method not found")
}

fn reply(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let mut record = Request {
        method: String::new(),
        token: String::new(),
        chat_id: None,
        text: None,
        parse_mode: None,
        disable_notification: None,
        at,
        answered: 0,
    };
    let Some((token, method)) = split_path(parts.uri.path()) else {
        record.answered = 404;
        shared.record(record);
        return reply(404, &not_found());
    };
    record.token = token;
    record.method = method.to_ascii_lowercase();

    let params = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => parse_params(&parts, &bytes),
        Err(_) => Err("Bad Request: request body could not be read".to_owned()),
    };
    let params = match params {
        Ok(params) => params,
        Err(description) => {
            record.answered = 400;
            let latency = shared.lock().latency;
            shared.record(record);
            tokio::time::sleep(latency).await;
            return reply(400, &error_json(400, &description));
        }
    };
    record.text = string_param(&params, "text");
    record.parse_mode = string_param(&params, "parse_mode");
    record.disable_notification = bool_param(&params, "disable_notification");
    record.chat_id = chat_id_param(&params).ok();

    let (answer, latency) = match record.method.as_str() {
        "sendmessage" => shared.send_message(record, &params),
        other => {
            let answer = match other {
                "getme" => Answer::Reply(200, json!({"ok": true, "result": me_json()})),
                "getupdates" => match shared.get_updates(&params).await {
                    Ok(updates) => Answer::Reply(200, json!({"ok": true, "result": updates})),
                    Err(description) => bad_request(&description),
                },
                "deletewebhook" | "setmycommands" => {
                    Answer::Reply(200, json!({"ok": true, "result": true}))
                }
                _ => Answer::Reply(404, not_found()),
            };
            if let Answer::Reply(status, _) = &answer {
                record.answered = *status;
            }
            let latency = shared.lock().latency;
            shared.record(record);
            (answer, latency)
        }
    };
    match answer {
        Answer::Reply(status, body) => {
            tokio::time::sleep(latency).await;
            reply(status, &body)
        }
        Answer::Hang => {
            shared.stopped().await;
            reply(503, &error_json(503, "Service Unavailable"))
        }
    }
}

/// `/bot{token}/{method}` -> (token, method).
fn split_path(path: &str) -> Option<(String, String)> {
    let mut segments = path.trim_start_matches('/').split('/');
    let token = segments.next()?.strip_prefix("bot")?;
    let method = segments.next()?;
    if token.is_empty() || method.is_empty() || segments.next().is_some() {
        return None;
    }
    Some((percent_decode(token), percent_decode(method)))
}

/// The request's parameters: the query string, then the body (JSON or
/// form-urlencoded) over it.
fn parse_params(
    parts: &axum::http::request::Parts,
    body: &Bytes,
) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    if let Some(query) = parts.uri.query() {
        params.extend(parse_form(query.as_bytes()));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(parse_form(body));
        return Ok(params);
    }
    if content_type.starts_with("multipart/") {
        return Err("Bad Request: multipart bodies are not supported by the fake".to_owned());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            params.extend(object);
            Ok(params)
        }
        Ok(_) => Err("Bad Request: parameters must be a JSON object".to_owned()),
        Err(_) if !content_type.starts_with("application/json") => {
            params.extend(parse_form(body));
            Ok(params)
        }
        Err(e) => Err(format!("Bad Request: can't parse JSON body: {e}")),
    }
}

fn parse_form(input: &[u8]) -> Map<String, Value> {
    let input = String::from_utf8_lossy(input);
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            (decode(key), Value::String(decode(value)))
        })
        .collect()
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn string_param(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn bool_param(params: &Map<String, Value>, key: &str) -> Option<bool> {
    match params.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn int_param(params: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("Bad Request: {key} must be an integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("Bad Request: {key} must be an integer")),
        Some(_) => Err(format!("Bad Request: {key} must be an integer")),
    }
}

fn chat_id_param(params: &Map<String, Value>) -> Result<i64, String> {
    match params.get("chat_id") {
        None | Some(Value::Null) => Err("Bad Request: chat_id is empty".to_owned()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err("Bad Request: chat_id is empty".to_owned())
        }
        Some(_) => match int_param(params, "chat_id") {
            Ok(Some(id)) if id != 0 => Ok(id),
            _ => Err("Bad Request: chat not found".to_owned()),
        },
    }
}

/// Checks `text` as Telegram's HTML; returns its visible text, or what is
/// wrong with it (the part after `can't parse entities: `).
fn parse_html(text: &str) -> Result<String, String> {
    let mut visible = String::with_capacity(text.len());
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        match c {
            '<' => {
                let rest = &text[i..];
                let Some(end) = rest.find('>') else {
                    return Err(format!("Unclosed start tag at byte offset {i}"));
                };
                let inner = &rest[1..end];
                if let Some(closing) = inner.strip_prefix('/') {
                    let name = closing.trim().to_ascii_lowercase();
                    match open.pop() {
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                        Some(expected) if expected != name => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {i}, expected \"</{expected}>\", found \"</{name}>\""
                            ));
                        }
                        Some(_) => {}
                    }
                } else {
                    let name = inner
                        .split(|c: char| c.is_whitespace() || c == '/')
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    if !ALLOWED_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    open.push(name);
                }
                i += end + 1;
            }
            '&' => match decode_entity(&text[i..]) {
                Some((decoded, len)) => {
                    visible.push(decoded);
                    i += len;
                }
                None => {
                    visible.push('&');
                    i += 1;
                }
            },
            c => {
                visible.push(c);
                i += c.len_utf8();
            }
        }
    }
    match open.pop() {
        Some(name) => Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        )),
        None => Ok(visible),
    }
}

/// `&lt;`, `&gt;`, `&amp;`, `&quot;`, `&#N;`, `&#xN;` at the start of `s`:
/// the character and the entity's length in bytes.
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let semi = s.get(1..)?.find(';')? + 1;
    let name = &s[1..semi];
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((c, semi + 1))
}

/// Every accepted connection, so that dropping the fake can shut down the
/// ones still open (the server task does not own them).
#[derive(Default)]
struct Conns {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Conns {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, std::net::TcpStream>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shut_all(&self) {
        for (_, stream) in self.open().drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A second handle on the socket, to shut it down from outside.
fn duplicate(stream: &TcpStream) -> Option<std::net::TcpStream> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from)
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsSocket;
        stream
            .as_socket()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = stream;
        None
    }
}

struct TrackedListener {
    inner: TcpListener,
    conns: Arc<Conns>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let id = self.conns.next_id.fetch_add(1, Ordering::Relaxed);
                    if let Some(handle) = duplicate(&stream) {
                        self.conns.open().insert(id, handle);
                    }
                    let stream = TrackedStream {
                        inner: stream,
                        id,
                        conns: self.conns.clone(),
                    };
                    return (stream, addr);
                }
                // Out of file descriptors and the like: wait and retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct TrackedStream {
    inner: TcpStream,
    id: u64,
    conns: Arc<Conns>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.conns.open().remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
