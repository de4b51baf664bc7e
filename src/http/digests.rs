//! Digest profiles: their executions, schedules, and adding items to an
//! inbox.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use herald_actors::digest::{DigestProfile, job_id};
use herald_actors::memory::RecordQuery;
use herald_actors::record::ExecutionRecord;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Fields one item may carry.
const MAX_FIELDS: usize = 64;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/digest/executions", get(all_executions))
        .route("/digest/executions/{profile_id}", get(profile_executions))
        .route("/digest/schedules", get(schedules))
        .route("/digest/{profile_id}/items", post(add_item))
}

fn profile(state: &ApiState, id: &str) -> Result<Arc<DigestProfile>, ApiError> {
    state
        .herald
        .digests
        .profiles
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format_args!("digest profile {id:?}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

/// The latest runs of the given profiles' schedules, newest first.
async fn executions_of(
    state: &ApiState,
    profiles: &[Arc<DigestProfile>],
    limit: Option<usize>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = limit.unwrap_or(50);
    if limit == 0 || limit > super::jobs::MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is not between 1 and {}",
            super::jobs::MAX_PAGE
        )));
    }
    let mut records: Vec<ExecutionRecord> = Vec::new();
    for p in profiles {
        for s in &p.schedules {
            records.extend(
                state
                    .herald
                    .store
                    .query(RecordQuery {
                        job_id: Some(job_id(&p.id, &s.name)),
                        limit,
                        ..RecordQuery::default()
                    })
                    .await?,
            );
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    records.truncate(limit);
    let out: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            // The seed's flat fields, next to the full record.
            if let Some(d) = &r.digest {
                v["profile_id"] = json!(d.profile);
                v["schedule_type"] = json!(d.schedule);
                v["message_count"] = json!(d.message_count);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "executions": out })))
}

async fn all_executions(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let profiles: Vec<Arc<DigestProfile>> = state.herald.digests.profiles.to_vec();
    executions_of(&state, &profiles, q.limit).await
}

async fn profile_executions(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = profile(&state, &id)?;
    executions_of(&state, &[p], q.limit).await
}

/// Each profile's schedules with their next run (as the scheduler has it,
/// operator edits included) and the end of their last window.
async fn schedules(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let jobs = state.herald.scheduler.jobs().await?;
    let mut out = Vec::new();
    for p in state.herald.digests.profiles.iter() {
        for s in &p.schedules {
            let id = job_id(&p.id, &s.name);
            let view = jobs.iter().find(|j| *j.spec.id == *id);
            let (schedule, tz, enabled, next) = match view {
                Some(v) => (
                    v.spec.schedule.expr().to_string(),
                    v.spec.schedule.tz(),
                    v.spec.enabled,
                    v.next_fire,
                ),
                None => (s.schedule.expr().to_string(), s.schedule.tz(), false, None),
            };
            let last_run = state
                .herald
                .digests
                .inbox
                .last_run(&p.id, &s.name)
                .await
                .ok()
                .flatten();
            let stamp = |t: chrono::DateTime<Utc>| {
                t.with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            };
            out.push(json!({
                "profile_id": p.id,
                "schedule_type": s.name,
                "job_id": id,
                "schedule": schedule,
                "timezone": tz.name(),
                "enabled": enabled,
                "next_run": next.map(stamp),
                "last_run": last_run.map(stamp),
            }));
        }
    }
    Ok(Json(json!({ "schedules": out })))
}

/// Adds an item to a profile's inbox: a JSON object of fields, each a
/// string, number or boolean (numbers and booleans are kept as text).
async fn add_item(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    profile(&state, &id)?;
    if body.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "an item needs at least one field, e.g. {\"text\": \"...\"}",
        ));
    }
    if body.len() > MAX_FIELDS {
        return Err(ApiError::invalid_field(
            "body",
            format!("{} fields: at most {MAX_FIELDS}", body.len()),
        ));
    }
    let mut fields = Vec::with_capacity(body.len());
    for (name, value) in body {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::invalid_field(
                    &name,
                    format!("must be a string, number or boolean, not {other}"),
                ));
            }
        };
        fields.push((name, text));
    }
    let item_id = state
        .herald
        .digests
        .inbox
        .add(&id, fields)
        .await
        .map_err(|e| ApiError::unavailable(format!("digest inbox: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": item_id, "profile_id": id })),
    )
        .into_response())
}
