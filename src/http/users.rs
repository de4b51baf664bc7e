//! Users and packs. A pack is the set of users naming it, so setting a
//! pack's members edits those users.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_actors::custom_jobs::FieldError;
use herald_actors::users::{User, check_pack_name};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::error::{ApiError, ApiJson, ApiPath};

/// Longest display name kept.
const MAX_NAME: usize = 256;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{chat_id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/packs", get(list_packs))
        .route("/packs/{name}", get(get_pack).put(set_pack))
}

fn backend(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("users: {e}"))
}

fn check_user(name: &str, packs: &BTreeSet<String>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if name.chars().count() > MAX_NAME {
        errors.push(FieldError {
            field: "name".into(),
            message: format!("longer than {MAX_NAME} characters"),
        });
    }
    for p in packs {
        if let Err(e) = check_pack_name(p) {
            errors.push(FieldError {
                field: "packs".into(),
                message: e,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

async fn list_users(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let users: Vec<User> = state.herald.users.all().await.into_values().collect();
    Json(json!({ "users": users }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    chat_id: i64,
    #[serde(default)]
    name: String,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    packs: BTreeSet<String>,
}

fn yes() -> bool {
    true
}

async fn create_user(
    State(state): State<ApiState>,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    check_user(&new.name, &new.packs)?;
    let _serial = state.edits.lock().await;
    if state.herald.users.get(new.chat_id).await.is_some() {
        return Err(ApiError::conflict(format!(
            "user {} exists already (PATCH it)",
            new.chat_id
        )));
    }
    let user = User {
        chat_id: new.chat_id,
        name: new.name,
        active: new.active,
        packs: new.packs,
    };
    state
        .herald
        .users
        .put(user.clone())
        .await
        .map_err(backend)?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn user(state: &ApiState, chat_id: i64) -> Result<User, ApiError> {
    state
        .herald
        .users
        .get(chat_id)
        .await
        .ok_or_else(|| ApiError::not_found(format_args!("user {chat_id}")))
}

async fn get_user(
    State(state): State<ApiState>,
    ApiPath(chat_id): ApiPath<i64>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(user(&state, chat_id).await?))
}

/// Any of name, active (false deactivates: never messaged) and packs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    name: Option<String>,
    active: Option<bool>,
    packs: Option<BTreeSet<String>>,
}

async fn patch_user(
    State(state): State<ApiState>,
    ApiPath(chat_id): ApiPath<i64>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    check_user(
        patch.name.as_deref().unwrap_or(""),
        patch.packs.as_ref().unwrap_or(&BTreeSet::new()),
    )?;
    let _serial = state.edits.lock().await;
    state
        .herald
        .users
        .update(chat_id, patch.name, patch.active, patch.packs)
        .await
        .map_err(backend)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format_args!("user {chat_id}")))
}

async fn delete_user(
    State(state): State<ApiState>,
    ApiPath(chat_id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    if state.herald.users.remove(chat_id).await.map_err(backend)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("user {chat_id}")))
    }
}

async fn list_packs(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let packs: Vec<serde_json::Value> = state
        .herald
        .users
        .packs()
        .await
        .into_iter()
        .map(|(name, members)| json!({ "name": name, "members": members }))
        .collect();
    Json(json!({ "packs": packs }))
}

async fn get_pack(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let packs: BTreeMap<String, BTreeSet<i64>> = state.herald.users.packs().await;
    let members = packs
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format_args!("pack {name:?}")))?;
    Ok(Json(json!({ "name": name, "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackMembers {
    members: BTreeSet<i64>,
}

/// Sets who is in a pack: listed users join it, others leave it. Every
/// member must be a known user (create users first).
async fn set_pack(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PackMembers>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_pack_name(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    let _serial = state.edits.lock().await;
    let users = state.herald.users.all().await;
    let unknown: Vec<String> = body
        .members
        .iter()
        .filter(|id| !users.contains_key(id))
        .map(|id| id.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid_field(
            "members",
            format!("not users: {}", unknown.join(", ")),
        ));
    }
    for mut u in users.into_values() {
        let wanted = body.members.contains(&u.chat_id);
        if wanted == u.packs.contains(&name) {
            continue;
        }
        if wanted {
            u.packs.insert(name.clone());
        } else {
            u.packs.remove(&name);
        }
        // Packs only: the active flag stays as Redis has it.
        state
            .herald
            .users
            .update(u.chat_id, None, None, Some(u.packs))
            .await
            .map_err(backend)?;
    }
    Ok(Json(json!({ "name": name, "members": body.members })))
}
