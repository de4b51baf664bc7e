//! A fake food ordering service and a fake chat-completions endpoint, for
//! the unselected food reminder's tests.
//!
//! [`FoodService`] speaks the contract herald expects (the README's "The
//! unselected food reminder"), on 127.0.0.1 and a free port:
//!
//! * `GET {base}/v1/selections/missing?date=YYYY-MM-DD` ->
//!   `200 {"date": "<date>", "chat_ids": [..]}`: the chats set with
//!   [`FoodService::set_missing`] (for every date) or
//!   [`FoodService::set_missing_on`] (for one date, which wins);
//! * `GET {base}/v1/menu?date=YYYY-MM-DD` ->
//!   `200 {"date": "<date>", "dishes": [{"name": .., "description": ..}]}`,
//!   likewise from [`FoodService::set_menu`] / [`FoodService::set_menu_on`];
//! * both need `Authorization: Bearer <token>` (else `401
//!   {"error": "unauthorized"}`) and a `date` of the form `YYYY-MM-DD`
//!   (else `400 {"error": ..}`); anything else is `404`.
//!
//! Paths are matched by their ending, so a base URL with a path prefix
//! (`http://127.0.0.1:port/api`) works too. Every request is recorded
//! before it is answered. Faults are queued per route and used up in order:
//! a status with a body ([`FoodService::answer_next`], which also serves
//! garbage with 200), the usual answer late ([`FoodService::delay_next`]),
//! or no answer at all ([`FoodService::hang_next`]).
//!
//! [`FakeCompletions`] is an OpenAI-compatible `POST .../chat/completions`:
//! it answers every request the same way, as set by
//! [`FakeCompletions::answer`], [`FakeCompletions::fail`] or
//! [`FakeCompletions::hang`], late if told so
//! ([`FakeCompletions::set_delay`]), and records the request bodies.
//!
//! Both stop when dropped; requests left hanging are then cut.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The food service's two routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /v1/selections/missing`
    Missing,
    /// `GET /v1/menu`
    Menu,
}

/// One request as the food service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoodRequest {
    /// `None` for a path that is neither route.
    pub route: Option<Route>,
    pub method: String,
    /// The request path (no query).
    pub path: String,
    /// The `date` query parameter, verbatim.
    pub date: Option<String>,
    /// The `Authorization` header, verbatim.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone)]
enum Fault {
    Answer(StatusCode, String),
    /// Answer as usual, this much later.
    Delay(Duration),
    Hang,
}

#[derive(Default)]
struct FoodState {
    missing: Vec<i64>,
    missing_on: HashMap<String, Vec<i64>>,
    menu: Vec<(String, String)>,
    menu_on: HashMap<String, Vec<(String, String)>>,
    faults: HashMap<Route, VecDeque<Fault>>,
    requests: Vec<FoodRequest>,
}

struct FoodShared {
    token: String,
    state: Mutex<FoodState>,
    closed: watch::Receiver<bool>,
}

impl FoodShared {
    fn lock(&self) -> MutexGuard<'_, FoodState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits until the fake is dropped (or an hour): a request that never gets
/// an answer.
async fn hang(mut closed: watch::Receiver<bool>) -> Response {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        _ = closed.wait_for(|closed| *closed) => {}
    }
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// `YYYY-MM-DD` by shape (the fake does not need a calendar).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

async fn food(
    State(shared): State<Arc<FoodShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let route = if path.ends_with("/v1/selections/missing") {
        Some(Route::Missing)
    } else if path.ends_with("/v1/menu") {
        Some(Route::Menu)
    } else {
        None
    };
    let date = query_param(&uri, "date");
    let authorization = header(&headers, "authorization");
    let fault = {
        let mut state = shared.lock();
        state.requests.push(FoodRequest {
            route,
            method: method.to_string(),
            path,
            date: date.clone(),
            authorization: authorization.clone(),
        });
        route.and_then(|r| state.faults.get_mut(&r).and_then(VecDeque::pop_front))
    };
    match fault {
        Some(Fault::Answer(status, body)) => return (status, body).into_response(),
        Some(Fault::Hang) => return hang(shared.closed.clone()).await,
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let Some(route) = route.filter(|_| method == Method::GET) else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    };
    if authorization.as_deref() != Some(format!("Bearer {}", shared.token).as_str()) {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
    }
    let Some(date) = date.filter(|d| is_date(d)) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "date must be YYYY-MM-DD"}),
        );
    };
    let state = shared.lock();
    let body = match route {
        Route::Missing => {
            let ids = state.missing_on.get(&date).unwrap_or(&state.missing);
            json!({"date": date, "chat_ids": ids})
        }
        Route::Menu => {
            let dishes: Vec<Value> = state
                .menu_on
                .get(&date)
                .unwrap_or(&state.menu)
                .iter()
                .map(|(name, description)| json!({"name": name, "description": description}))
                .collect();
            json!({"date": date, "dishes": dishes})
        }
    };
    json_response(StatusCode::OK, &body)
}

/// A fake food ordering service on loopback; stops when dropped.
pub struct FoodService {
    addr: SocketAddr,
    shared: Arc<FoodShared>,
    close: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// Binds 127.0.0.1:0 and serves `app` on the current runtime.
async fn serve(app: Router, what: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind a loopback port for the {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the {what}'s local address: {e}"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

impl FoodService {
    /// Starts the service; requests must carry `Bearer <token>`. Nobody is
    /// missing a selection and the menu is empty until set.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if no loopback port can be bound.
    pub async fn start(token: &str) -> FoodService {
        let (close, closed) = watch::channel(false);
        let shared = Arc::new(FoodShared {
            token: token.to_string(),
            state: Mutex::new(FoodState::default()),
            closed,
        });
        let app = Router::new().fallback(food).with_state(Arc::clone(&shared));
        let (addr, server) = serve(app, "food service").await;
        FoodService {
            addr,
            shared,
            close,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the base URL herald is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Chats without a selection, for every date not set with
    /// [`FoodService::set_missing_on`].
    pub fn set_missing(&self, chat_ids: &[i64]) {
        self.shared.lock().missing = chat_ids.to_vec();
    }

    /// Chats without a selection on `date` (`YYYY-MM-DD`).
    pub fn set_missing_on(&self, date: &str, chat_ids: &[i64]) {
        self.shared
            .lock()
            .missing_on
            .insert(date.to_string(), chat_ids.to_vec());
    }

    /// The menu, as (name, description), for every date not set with
    /// [`FoodService::set_menu_on`].
    pub fn set_menu(&self, dishes: &[(&str, &str)]) {
        self.shared.lock().menu = owned(dishes);
    }

    /// The menu on `date` (`YYYY-MM-DD`).
    pub fn set_menu_on(&self, date: &str, dishes: &[(&str, &str)]) {
        self.shared
            .lock()
            .menu_on
            .insert(date.to_string(), owned(dishes));
    }

    /// Answers the next `n` requests to `route` with `status` and `body`
    /// as is (garbage included), before any other check.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn answer_next(&self, route: Route, n: usize, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status code");
        let fault = Fault::Answer(status, body.to_string());
        self.queue(route, std::iter::repeat_n(fault, n));
    }

    /// Answers the next `n` requests to `route` with `status` and body
    /// `boom`.
    pub fn fail_next(&self, route: Route, n: usize, status: u16) {
        self.answer_next(route, n, status, "boom");
    }

    /// Answers the next `n` requests to `route` as usual, `delay` later.
    pub fn delay_next(&self, route: Route, n: usize, delay: Duration) {
        self.queue(route, std::iter::repeat_n(Fault::Delay(delay), n));
    }

    /// Never answers the next `n` requests to `route` (until dropped).
    pub fn hang_next(&self, route: Route, n: usize) {
        self.queue(route, std::iter::repeat_n(Fault::Hang, n));
    }

    fn queue(&self, route: Route, faults: impl Iterator<Item = Fault>) {
        self.shared
            .lock()
            .faults
            .entry(route)
            .or_default()
            .extend(faults);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<FoodRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests to `route`, oldest first.
    pub fn requests_to(&self, route: Route) -> Vec<FoodRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == Some(route))
            .collect()
    }
}

fn owned(dishes: &[(&str, &str)]) -> Vec<(String, String)> {
    dishes
        .iter()
        .map(|(name, description)| (name.to_string(), description.to_string()))
        .collect()
}

impl Drop for FoodService {
    fn drop(&mut self) {
        let _ = self.close.send(true);
        self.server.abort();
    }
}

/// How [`FakeCompletions`] answers.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with a chat completion whose message is this.
    Content(String),
    /// This status and body, as is.
    Raw(StatusCode, String),
    Hang,
}

/// One chat-completions request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub path: String,
    /// The body parsed as JSON; `Null` if it is not JSON.
    pub body: Value,
    pub authorization: Option<String>,
}

struct CompletionsState {
    reply: Reply,
    /// Before every answer.
    delay: Duration,
    requests: Vec<CompletionRequest>,
}

struct CompletionsShared {
    state: Mutex<CompletionsState>,
    closed: watch::Receiver<bool>,
}

impl CompletionsShared {
    fn lock(&self) -> MutexGuard<'_, CompletionsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn completions(
    State(shared): State<Arc<CompletionsShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if method != Method::POST || !path.ends_with("/chat/completions") {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (reply, delay) = {
        let mut state = shared.lock();
        state.requests.push(CompletionRequest {
            path,
            body: request.clone(),
            authorization: header(&headers, "authorization"),
        });
        (state.reply.clone(), state.delay)
    };
    tokio::time::sleep(delay).await;
    match reply {
        Reply::Content(content) => json_response(
            StatusCode::OK,
            &json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }),
        ),
        Reply::Raw(status, body) => (status, body).into_response(),
        Reply::Hang => hang(shared.closed.clone()).await,
    }
}

/// A fake OpenAI-compatible chat-completions endpoint on loopback; stops
/// when dropped.
pub struct FakeCompletions {
    addr: SocketAddr,
    shared: Arc<CompletionsShared>,
    close: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeCompletions {
    /// Starts the endpoint; until told otherwise it answers `503` (nothing
    /// to say).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if no loopback port can be bound.
    pub async fn start() -> FakeCompletions {
        let (close, closed) = watch::channel(false);
        let shared = Arc::new(CompletionsShared {
            state: Mutex::new(CompletionsState {
                reply: Reply::Raw(StatusCode::SERVICE_UNAVAILABLE, "no answer set".into()),
                delay: Duration::ZERO,
                requests: Vec::new(),
            }),
            closed,
        });
        let app = Router::new()
            .fallback(completions)
            .with_state(Arc::clone(&shared));
        let (addr, server) = serve(app, "completions endpoint").await;
        FakeCompletions {
            addr,
            shared,
            close,
            server,
        }
    }

    /// `http://127.0.0.1:<port>/v1`: the base URL herald is given (it
    /// posts to `{base}/chat/completions`, as OpenAI's clients do).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers every request with a completion whose message is `content`.
    pub fn answer(&self, content: &str) {
        self.shared.lock().reply = Reply::Content(content.to_string());
    }

    /// Answers every request with `status` and `body` as is.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn answer_raw(&self, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status code");
        self.shared.lock().reply = Reply::Raw(status, body.to_string());
    }

    /// Answers every request with `status` and body `boom`.
    pub fn fail(&self, status: u16) {
        self.answer_raw(status, "boom");
    }

    /// Answers every request `delay` later (as set otherwise).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Never answers (until dropped).
    pub fn hang(&self) {
        self.shared.lock().reply = Reply::Hang;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for FakeCompletions {
    fn drop(&mut self) {
        let _ = self.close.send(true);
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_by_shape() {
        assert!(is_date("2024-03-21"));
        assert!(!is_date("2024-3-21"));
        assert!(!is_date("2024/03/21"));
        assert!(!is_date("tomorrow!!"));
    }

    #[tokio::test]
    async fn food_service_answers_by_date_checks_the_token_and_applies_faults() {
        let service = FoodService::start("sesame").await;
        service.set_missing(&[1, 2]);
        service.set_missing_on("2024-03-21", &[7]);
        service.set_menu(&[("Kebab", "with rice")]);
        let port = service.addr.port();
        let auth = "Authorization: Bearer sesame\r\n";

        let (status, body) = raw(
            port,
            "GET",
            "/v1/selections/missing?date=2024-03-21",
            auth,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"date": "2024-03-21", "chat_ids": [7]}));
        let (_, body) = raw(
            port,
            "GET",
            "/api/v1/selections/missing?date=2024-03-22",
            auth,
            "",
        )
        .await;
        assert_eq!(body, json!({"date": "2024-03-22", "chat_ids": [1, 2]}));
        let (status, body) = raw(port, "GET", "/v1/menu?date=2024-03-22", auth, "").await;
        assert_eq!(status, 200);
        assert_eq!(body["dishes"][0]["name"], "Kebab");

        let (status, _) = raw(port, "GET", "/v1/menu?date=2024-03-22", "", "").await;
        assert_eq!(status, 401);
        let (status, _) = raw(port, "GET", "/v1/menu?date=soon", auth, "").await;
        assert_eq!(status, 400);
        let (status, _) = raw(port, "GET", "/v2/other", auth, "").await;
        assert_eq!(status, 404);

        service.fail_next(Route::Missing, 1, 500);
        service.answer_next(Route::Missing, 1, 200, "<html>");
        let (status, _) = raw(
            port,
            "GET",
            "/v1/selections/missing?date=2024-03-22",
            auth,
            "",
        )
        .await;
        assert_eq!(status, 500);
        let (status, body) = raw(
            port,
            "GET",
            "/v1/selections/missing?date=2024-03-22",
            auth,
            "",
        )
        .await;
        assert_eq!((status, body), (200, Value::Null));
        // the menu's faults are its own
        service.delay_next(Route::Menu, 1, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let (status, _) = raw(port, "GET", "/v1/menu?date=2024-03-22", auth, "").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));

        let missing = service.requests_to(Route::Missing);
        assert_eq!(missing.len(), 4);
        assert_eq!(missing[0].date.as_deref(), Some("2024-03-21"));
        assert_eq!(missing[0].authorization.as_deref(), Some("Bearer sesame"));
        assert_eq!(missing[1].path, "/api/v1/selections/missing");
        assert_eq!(service.requests().len(), 9);
    }

    #[tokio::test]
    async fn completions_answer_fail_and_record() {
        let fake = FakeCompletions::start().await;
        let port = fake.addr.port();
        assert!(fake.url().ends_with("/v1"));
        let request = r#"{"model":"m1","messages":[]}"#;
        let (status, _) = raw(port, "POST", "/v1/chat/completions", "", request).await;
        assert_eq!(status, 503);
        fake.answer("Kebab");
        let (status, body) = raw(port, "POST", "/v1/chat/completions", "", request).await;
        assert_eq!(status, 200);
        assert_eq!(body["choices"][0]["message"]["content"], "Kebab");
        assert_eq!(body["model"], "m1");
        fake.fail(500);
        let (status, _) = raw(port, "POST", "/v1/chat/completions", "", request).await;
        assert_eq!(status, 500);
        let (status, _) = raw(port, "GET", "/v1/chat/completions", "", "").await;
        assert_eq!(status, 404);
        fake.answer("Ash");
        fake.set_delay(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let (status, _) = raw(port, "POST", "/v1/chat/completions", "", request).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let got = fake.requests();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].body["model"], "m1");
    }

    /// A minimal blocking HTTP/1.1 client (testkit has no HTTP client
    /// dependency), run off the runtime: the status and the body as JSON
    /// (`Null` if it is not JSON).
    async fn raw(port: u16, method: &str, target: &str, headers: &str, body: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
            let status = response
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .unwrap_or_default();
            (status, serde_json::from_str(body).unwrap_or(Value::Null))
        })
        .await
        .unwrap()
    }
}
