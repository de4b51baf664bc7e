//! The admin HTTP API (axum): jobs, executions, schedules, users and packs,
//! digests, health and metrics. JSON in and out; errors are
//! `{"error":{"code":..,"message":..}}` with the status that fits.
//!
//! `/api/*` needs `Authorization: Bearer <admin token>` (compared in
//! constant time) when a token is configured; the config refuses a
//! non-loopback address without one. Bodies are capped at
//! [`MAX_BODY_BYTES`], requests at [`REQUEST_TIMEOUT`]; no CORS headers are
//! sent, so browsers keep other origins out.

mod digests;
mod error;
mod jobs;
pub mod openapi;
mod page;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_actors::health::Mode;
use herald_actors::tree::AdminHandles;
use serde_json::json;
use subtle::ConstantTimeEq;

pub use error::ApiError;

/// Largest request body accepted (413 past it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// A request taking longer is answered 503 and dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub herald: AdminHandles,
    /// None: the API is open (loopback only; the config enforces it).
    token: Option<Arc<[u8]>>,
    /// Renders `/metrics`.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Held by read-modify-write edits (job and user patches, pack
    /// membership) so concurrent requests do not lose each other's changes.
    pub edits: Arc<tokio::sync::Mutex<()>>,
}

impl ApiState {
    pub fn new(
        herald: AdminHandles,
        token: Option<&str>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        ApiState {
            herald,
            token: token.map(|t| Arc::from(t.as_bytes())),
            metrics,
            edits: Arc::default(),
        }
    }
}

/// The whole app: `/api/*` behind the token, health and metrics open.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi::document))
        .merge(jobs::routes())
        .merge(users::routes())
        .merge(digests::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api", api)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(time_limit))
        .with_state(state)
}

/// Serves the API on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, auth = state.token.is_some(), "admin API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.token else {
        // Open API (loopback, no token): a browser on another site must
        // not reach it, by a cross-site request (CSRF: "run now" needs no
        // body) or by DNS rebinding (a foreign host name resolving to
        // 127.0.0.1).
        return match cross_site(&headers) {
            Some(why) => {
                ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", why).into_response()
            }
            None => next.run(request).await,
        };
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    match given {
        Some(given) if bool::from(given.ct_eq(expected)) => next.run(request).await,
        Some(_) => {
            ApiError::unauthorized("the bearer token is not the admin token").into_response()
        }
        None => ApiError::unauthorized("send Authorization: Bearer <admin token>").into_response(),
    }
}

/// Why a request to the open API looks like it comes from another site,
/// if it does: a Host that is not a loopback name or address, an Origin
/// that is not that host, or a browser saying it is cross-site.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    let hostname = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    let loopback = matches!(hostname, "localhost" | "[::1]")
        || hostname
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Some(format!(
            "without an admin token the API answers only loopback host names, not {host:?}"
        ));
    }
    if let Some(origin) = text(header::ORIGIN)
        && origin != format!("http://{host}")
    {
        return Some(format!("cross-origin request from {origin:?} refused"));
    }
    if text(HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Some("cross-site request refused".into());
    }
    None
}

async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::unavailable(format!("the request took longer than {REQUEST_TIMEOUT:?}"))
                .into_response()
        }
    }
}

async fn no_route() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        "no such route (see /api/openapi.json)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see /api/openapi.json)",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

/// Ready while the tree runs, online or offline (herald keeps firing from
/// memory without Redis); 503 once it has stopped.
async fn readyz(State(state): State<ApiState>) -> Response {
    let mode = match state.herald.mode() {
        Mode::Online => "online",
        Mode::Offline => "offline",
    };
    let ready = state.herald.running();
    let body = Json(json!({
        "ready": ready,
        "mode": mode,
        "daemon": state.herald.daemon_id,
        "peers": state.herald.peers(),
    }));
    if ready {
        body.into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
