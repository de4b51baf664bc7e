//! Jobs, executions and schedules.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use herald_actors::custom_jobs::{CustomJob, FieldError};
use herald_actors::job::{JobKind, JobSpec, MisfirePolicy, OverlapPolicy};
use herald_actors::memory::RecordQuery;
use herald_actors::record::{ExecutionRecord, RunId, RunStatus};
use herald_actors::schedule::{CronExpr, Schedule, parse_zone};
use herald_actors::scheduler::JobView;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Fire times shown per job.
const NEXT_RUNS: usize = 5;
/// Most executions one page returns.
pub const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;
/// Deepest page offset: a request must not walk the whole history.
pub const MAX_OFFSET: usize = 10_000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/jobs", get(list_jobs).post(create_job))
        .route(
            "/jobs/{id}",
            get(get_job)
                .put(replace_job)
                .patch(patch_job)
                .delete(delete_job),
        )
        .route("/jobs/{id}/run", post(run_job))
        .route("/jobs/{id}/executions", get(job_executions))
        .route("/executions", get(executions))
        .route("/executions/{run_id}", get(execution))
        .route("/executions/{run_id}/cancel", post(cancel_execution))
        .route("/schedules", get(schedules))
        .route("/skips", get(skips))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipQuery {
    job: Option<String>,
    limit: Option<usize>,
}

/// Ticks that did not run and why (misfire, overlap, disabled, ...),
/// newest first.
async fn skips(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<SkipQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is not between 1 and {MAX_PAGE}"
        )));
    }
    let skips = state.herald.store.skipped(q.job, limit).await?;
    Ok(Json(json!({ "skips": skips })))
}

fn stamp(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What kind of job, as the API and the page show it.
fn kind(spec: &JobSpec) -> &'static str {
    match &spec.kind {
        _ if spec.id.starts_with(herald_actors::digest::JOB_PREFIX) => "digest",
        JobKind::Message { .. } => "message",
        JobKind::Coded { .. } => "coded",
    }
}

/// A job as the API shows it.
#[derive(Serialize)]
pub struct JobOut {
    id: String,
    kind: &'static str,
    /// `defined` (config or code) or `custom` (created through the API).
    origin: &'static str,
    schedule: String,
    timezone: String,
    enabled: bool,
    misfire: MisfirePolicy,
    misfire_limit: u32,
    overlap: OverlapPolicy,
    timeout_ms: u64,
    max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    delivery: serde_json::Value,
    /// When the scheduler fires it next (null while disabled), in the
    /// job's zone.
    next_run: Option<String>,
    /// The next fire times of its schedule, in its zone.
    next_runs: Vec<String>,
    in_flight: u32,
    last_execution: Option<ExecutionSummary>,
}

/// A run in a line: what the jobs table shows.
#[derive(Serialize)]
pub(super) struct ExecutionSummary {
    run_id: String,
    status: RunStatus,
    scheduled_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
    error: Option<String>,
}

impl From<&ExecutionRecord> for ExecutionSummary {
    fn from(r: &ExecutionRecord) -> Self {
        ExecutionSummary {
            run_id: r.run_id.0.clone(),
            status: r.status,
            scheduled_at: r.scheduled_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            error: r.error.clone(),
        }
    }
}

async fn job_out(state: &ApiState, view: &JobView, now: DateTime<Utc>) -> JobOut {
    let spec = &view.spec;
    let tz = spec.schedule.tz();
    let last = state
        .herald
        .store
        .latest(spec.id.to_string())
        .await
        .ok()
        .flatten();
    JobOut {
        id: spec.id.to_string(),
        kind: kind(spec),
        origin: if state.herald.custom_jobs.is_defined(&spec.id) {
            "defined"
        } else {
            "custom"
        },
        schedule: spec.schedule.expr().to_string(),
        timezone: tz.name().to_string(),
        enabled: spec.enabled,
        misfire: spec.misfire,
        misfire_limit: spec.misfire_limit,
        overlap: spec.overlap,
        timeout_ms: spec.timeout.as_millis() as u64,
        max_attempts: spec.retry.max_attempts,
        template: match &spec.kind {
            JobKind::Message { template } => Some(template.clone()),
            JobKind::Coded { .. } => None,
        },
        delivery: serde_json::to_value(&spec.delivery).unwrap_or_default(),
        next_run: view.next_fire.map(|t| stamp(t, tz)),
        next_runs: spec
            .schedule
            .upcoming(now)
            .take(NEXT_RUNS)
            .map(|t| stamp(t, tz))
            .collect(),
        in_flight: view.in_flight,
        last_execution: last.as_ref().map(ExecutionSummary::from),
    }
}

async fn views(state: &ApiState) -> Result<Vec<JobView>, ApiError> {
    let mut jobs = state.herald.scheduler.jobs().await?;
    jobs.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    Ok(jobs)
}

async fn view(state: &ApiState, id: &str) -> Result<JobView, ApiError> {
    views(state)
        .await?
        .into_iter()
        .find(|j| &*j.spec.id == id)
        .ok_or_else(|| ApiError::not_found(format_args!("job {id:?}")))
}

async fn list_jobs(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let now = Utc::now();
    let mut jobs = Vec::new();
    for v in views(&state).await? {
        jobs.push(job_out(&state, &v, now).await);
    }
    Ok(Json(json!({ "jobs": jobs })))
}

async fn get_job(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobOut>, ApiError> {
    let v = view(&state, &id).await?;
    Ok(Json(job_out(&state, &v, Utc::now()).await))
}

async fn created(state: &ApiState, id: &str, status: StatusCode) -> Result<Response, ApiError> {
    let v = view(state, id).await?;
    Ok((status, Json(job_out(state, &v, Utc::now()).await)).into_response())
}

async fn create_job(
    State(state): State<ApiState>,
    ApiJson(job): ApiJson<CustomJob>,
) -> Result<Response, ApiError> {
    let _serial = state.edits.lock().await;
    let spec = state.herald.custom_jobs.create(job).await?;
    created(&state, &spec.id, StatusCode::CREATED).await
}

/// Replaces a custom job (`id` in the body, if any, must match the path).
async fn replace_job(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(job): ApiJson<CustomJob>,
) -> Result<Response, ApiError> {
    if job.id != id {
        return Err(ApiError::invalid_field(
            "id",
            format!("{:?} does not match the path's {id:?}", job.id),
        ));
    }
    let _serial = state.edits.lock().await;
    state.herald.custom_jobs.update(&id, job).await?;
    created(&state, &id, StatusCode::OK).await
}

/// The fields any job's operator may change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPatch {
    schedule: Option<String>,
    timezone: Option<String>,
    enabled: Option<bool>,
    misfire: Option<MisfirePolicy>,
    overlap: Option<OverlapPolicy>,
}

/// `spec` with `patch` applied, or every bad field.
fn patched(spec: &JobSpec, patch: &JobPatch) -> Result<JobSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    let expr = match &patch.schedule {
        Some(s) => CronExpr::parse(s)
            .map_err(|e| bad("schedule", e.to_string()))
            .ok(),
        None => Some(spec.schedule.expr().clone()),
    };
    let tz = match &patch.timezone {
        Some(z) => parse_zone(z)
            .map_err(|e| bad("timezone", e.to_string()))
            .ok(),
        None => Some(spec.schedule.tz()),
    };
    let (Some(expr), Some(tz)) = (expr, tz) else {
        return Err(errors);
    };
    let mut out = spec.clone();
    out.schedule = Schedule::new(expr, tz);
    if let Some(enabled) = patch.enabled {
        out.enabled = enabled;
    }
    if let Some(misfire) = patch.misfire {
        out.misfire = misfire;
    }
    if let Some(overlap) = patch.overlap {
        out.overlap = overlap;
    }
    Ok(out)
}

/// Schedule, zone, enabled flag and policies of any job (config, code,
/// digest or custom). Takes effect in the scheduler at once, persists as an
/// operator override, and reaches other daemons within a second.
async fn patch_job(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<JobPatch>,
) -> Result<Response, ApiError> {
    // One read-modify-write at a time here, so two PATCHes of one job
    // (say, a schedule and a disable) never undo each other.
    let _serial = state.edits.lock().await;
    let current = view(&state, &id).await?;
    let spec = patched(&current.spec, &patch).map_err(ApiError::invalid)?;
    let only_enabled = patch.schedule.is_none()
        && patch.timezone.is_none()
        && patch.misfire.is_none()
        && patch.overlap.is_none();
    if only_enabled {
        // Keeps the timer (and reports a dropped queued tick).
        if let Some(enabled) = patch.enabled {
            state.herald.custom_jobs.set_enabled(&id, enabled).await?;
        }
    } else if spec != *current.spec {
        state.herald.scheduler.upsert_job(spec).await?;
    }
    created(&state, &id, StatusCode::OK).await
}

async fn delete_job(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let _serial = state.edits.lock().await;
    state.herald.custom_jobs.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn run_job(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    match state.herald.scheduler.run_now(id.clone()).await? {
        Some(run_id) => {
            Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id.0 }))).into_response())
        }
        None => Err(ApiError::not_found(format_args!("job {id:?}"))),
    }
}

/// `?status=&offset=&limit=` (and `job=` on `/api/executions`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    job: Option<String>,
    status: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn page_of(
    state: &ApiState,
    job: Option<String>,
    page: Page,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = match &page.status {
        Some(s) => Some(
            s.parse::<RunStatus>()
                .map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
        ),
        None => None,
    };
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is not between 1 and {MAX_PAGE}"
        )));
    }
    if page.offset > MAX_OFFSET {
        return Err(ApiError::bad_request(format!(
            "offset: {} is past {MAX_OFFSET}",
            page.offset
        )));
    }
    let records = state
        .herald
        .store
        .query(RecordQuery {
            job_id: job.clone(),
            status,
            offset: page.offset,
            limit,
        })
        .await?;
    Ok(Json(json!({
        "executions": records,
        "offset": page.offset,
        "limit": limit,
    })))
}

async fn executions(
    State(state): State<ApiState>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = page.job.clone();
    page_of(&state, job, page).await
}

async fn job_executions(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if page.job.is_some() {
        return Err(ApiError::bad_request("job: the path names the job"));
    }
    // An orphaned or deleted job still has its history: no 404 here.
    page_of(&state, Some(id), page).await
}

async fn execution(
    State(state): State<ApiState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<ExecutionRecord>, ApiError> {
    state
        .herald
        .store
        .record(RunId(run_id.clone()))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format_args!("execution {run_id:?}")))
}

/// Cancels a run this daemon is running or holds queued.
async fn cancel_execution(
    State(state): State<ApiState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = state
        .herald
        .store
        .record(RunId(run_id.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("execution {run_id:?}")))?;
    if record.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "execution {run_id:?} has already ended ({})",
            record.status.as_str()
        )));
    }
    let cancelled = state.herald.pool.cancel(RunId(run_id.clone())).await?;
    if !cancelled {
        return Err(ApiError::conflict(format!(
            "execution {run_id:?} is not running on this daemon ({}); cancel it where it runs",
            record.daemon.as_deref().unwrap_or("unknown daemon")
        )));
    }
    Ok(Json(json!({ "run_id": run_id, "cancelled": true })))
}

/// Every job with its next run, soonest first (disabled ones last).
async fn schedules(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut jobs = views(&state).await?;
    jobs.sort_by_key(|j| (j.next_fire.is_none(), j.next_fire));
    let out: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            let tz = j.spec.schedule.tz();
            json!({
                "id": j.spec.id,
                "kind": kind(&j.spec),
                "schedule": j.spec.schedule.expr().to_string(),
                "timezone": tz.name(),
                "enabled": j.spec.enabled,
                "next_run": j.next_fire.map(|t| stamp(t, tz)),
            })
        })
        .collect();
    Ok(Json(json!({ "schedules": out })))
}
