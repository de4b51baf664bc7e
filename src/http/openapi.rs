//! The OpenAPI 3.1 document served at `/api/openapi.json`, written by hand
//! next to the routes (a test checks that it lists every route in
//! [`super::ROUTES`] and nothing else).

use axum::Json;
use serde_json::{Value, json};

/// One operation: summary, path parameters, a JSON body schema (if any) and
/// the statuses it answers with.
fn op(summary: &str, params: &[&str], body: Option<Value>, statuses: &[(&str, &str)]) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params.iter().map(|p| json!({
            "name": p, "in": "path", "required": true, "schema": {"type": "string"}
        })).collect::<Vec<_>>(),
        "responses": statuses.iter().map(|(code, what)| {
            let schema = if code.starts_with('2') { json!({}) } else { json!({"$ref": "#/components/schemas/Error"}) };
            (code.to_string(), json!({"description": what, "content": {"application/json": {"schema": schema}}}))
        }).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(schema) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    o
}

fn page_params() -> Value {
    json!([
        {"name": "status", "in": "query", "schema": {"enum": ["PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"]}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": super::jobs::MAX_PAGE}},
    ])
}

/// The document.
pub fn spec() -> Value {
    let auth = [("401", "no or wrong bearer token")];
    let bad = [
        ("400", "malformed JSON or parameter"),
        ("413", "body too large"),
        ("415", "not JSON"),
        ("422", "invalid fields (named in error.fields)"),
    ];
    let with = |mut list: Vec<(&'static str, &'static str)>,
                extra: &[(&'static str, &'static str)]| {
        list.extend_from_slice(extra);
        list.extend_from_slice(&auth);
        list
    };
    let custom_job = json!({"$ref": "#/components/schemas/CustomJob"});
    let mut list_executions = op(
        "Recent executions, newest first",
        &[],
        None,
        &with(
            vec![("200", "a page of executions")],
            &[("400", "bad parameter")],
        ),
    );
    let mut params = page_params();
    if let Some(a) = params.as_array_mut() {
        a.insert(
            0,
            json!({"name": "job", "in": "query", "schema": {"type": "string"}}),
        );
    }
    list_executions["parameters"] = params;
    let mut job_executions = op(
        "A job's executions, newest first",
        &["id"],
        None,
        &with(
            vec![("200", "a page of executions")],
            &[("400", "bad parameter")],
        ),
    );
    if let (Some(p), Some(extra)) = (
        job_executions["parameters"].as_array_mut(),
        page_params().as_array(),
    ) {
        p.extend(extra.iter().cloned());
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "herald admin API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": {
            "/": {"get": public(op("The admin page (HTML)", &[], None, &[("200", "the page")]))},
            "/assets/app.js": {"get": public(op("The admin page's script", &[], None, &[("200", "JavaScript")]))},
            "/assets/app.css": {"get": public(op("The admin page's style sheet", &[], None, &[("200", "CSS")]))},
            "/healthz": {"get": public(op("Alive", &[], None, &[("200", "alive")]))},
            "/readyz": {"get": public(op("Ready, with mode online/offline", &[], None, &[("200", "ready"), ("503", "stopped")]))},
            "/metrics": {"get": public(op("Prometheus text format", &[], None, &[("200", "metrics")]))},
            "/api/openapi.json": {"get": op("This document", &[], None, &with(vec![("200", "OpenAPI 3.1")], &[]))},
            "/api/jobs": {
                "get": op("Every job, with its next 5 fire times and last execution", &[], None, &with(vec![("200", "jobs")], &[])),
                "post": op("Create a custom message job", &[], Some(custom_job.clone()), &with(vec![("201", "the job")], &[&bad[..], &[("409", "the id is taken")]].concat())),
            },
            "/api/jobs/{id}": {
                "get": op("A job, with its next 5 fire times", &["id"], None, &with(vec![("200", "the job"), ("404", "no such job")], &[])),
                "put": op("Replace a custom job", &["id"], Some(custom_job), &with(vec![("200", "the job"), ("404", "no such job"), ("409", "defined by config or code")], &bad)),
                "patch": op("Change schedule, timezone, enabled, misfire or overlap of any job", &["id"], Some(json!({"$ref": "#/components/schemas/JobPatch"})), &with(vec![("200", "the job"), ("404", "no such job")], &bad)),
                "delete": op("Delete a custom job", &["id"], None, &with(vec![("204", "deleted"), ("404", "no such job"), ("409", "defined by config or code")], &[])),
            },
            "/api/jobs/{id}/run": {"post": op("Run a job now", &["id"], None, &with(vec![("202", "{\"run_id\": ...}"), ("404", "no such job")], &[]))},
            "/api/jobs/{id}/executions": {"get": job_executions},
            "/api/executions": {"get": list_executions},
            "/api/executions/{run_id}": {"get": op("One execution record", &["run_id"], None, &with(vec![("200", "the record"), ("404", "no such execution")], &[]))},
            "/api/executions/{run_id}/cancel": {"post": op("Cancel a run going on this daemon", &["run_id"], None, &with(vec![("200", "cancelled"), ("404", "no such execution"), ("409", "ended, or running elsewhere")], &[]))},
            "/api/schedules": {"get": op("Every job with its next run, soonest first", &[], None, &with(vec![("200", "schedules")], &[]))},
            "/api/skips": {"get": {
                "summary": "Ticks that did not run, and why (misfire, overlap, disabled...), newest first",
                "parameters": [
                    {"name": "job", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": super::jobs::MAX_PAGE}},
                ],
                "responses": {"200": {"description": "skipped ticks"}, "400": {"description": "bad parameter"}, "401": {"description": "no or wrong bearer token"}},
            }},
            "/api/users": {
                "get": op("Every user", &[], None, &with(vec![("200", "users")], &[])),
                "post": op("Add a user", &[], Some(json!({"$ref": "#/components/schemas/User"})), &with(vec![("201", "the user"), ("409", "exists")], &bad)),
            },
            "/api/users/{chat_id}": {
                "get": op("A user", &["chat_id"], None, &with(vec![("200", "the user"), ("404", "no such user"), ("400", "not a chat id")], &[])),
                "patch": op("Change name, active (false: deactivate) or packs", &["chat_id"], Some(json!({"type": "object", "additionalProperties": false, "properties": {"name": {"type": "string"}, "active": {"type": "boolean"}, "packs": {"type": "array", "items": {"type": "string"}}}})), &with(vec![("200", "the user"), ("404", "no such user")], &bad)),
                "delete": op("Forget a user", &["chat_id"], None, &with(vec![("204", "removed"), ("404", "no such user")], &[])),
            },
            "/api/packs": {"get": op("Every pack and its members", &[], None, &with(vec![("200", "packs")], &[]))},
            "/api/packs/{name}": {
                "get": op("A pack's members", &["name"], None, &with(vec![("200", "the pack"), ("404", "no such pack")], &[])),
                "put": op("Set a pack's members (known users)", &["name"], Some(json!({"type": "object", "required": ["members"], "additionalProperties": false, "properties": {"members": {"type": "array", "items": {"type": "integer"}}}})), &with(vec![("200", "the pack")], &bad)),
            },
            "/api/digest/executions": {"get": op("Recent digest executions (all profiles)", &[], None, &with(vec![("200", "executions")], &[]))},
            "/api/digest/executions/{profile_id}": {"get": op("A profile's digest executions", &["profile_id"], None, &with(vec![("200", "executions"), ("404", "no such profile")], &[]))},
            "/api/digest/schedules": {"get": op("Every digest schedule with its next run and last window end", &[], None, &with(vec![("200", "schedules")], &[]))},
            "/api/digest/{profile_id}/items": {"post": op("Add an item to a profile's inbox", &["profile_id"], Some(json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}, "example": {"text": "disk 91% on db-1"}})), &with(vec![("201", "{\"id\": stream id}"), ("404", "no such profile")], &bad))},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}
                }}}},
                "JobPatch": {"type": "object", "additionalProperties": false, "properties": {
                    "schedule": {"type": "string", "example": "0 9 * * mon-fri"},
                    "timezone": {"type": "string", "example": "Asia/Tehran"},
                    "enabled": {"type": "boolean"},
                    "misfire": {"enum": ["skip", "fire_once", "fire_all"]},
                    "overlap": {"enum": ["allow", "skip", "queue_one"]}
                }},
                "CustomJob": {"type": "object", "required": ["id", "schedule", "template"], "additionalProperties": false, "properties": {
                    "id": {"type": "string"}, "schedule": {"type": "string"}, "timezone": {"type": "string"},
                    "enabled": {"type": "boolean"}, "template": {"type": "string"},
                    "include": {"type": "array", "items": {"type": "integer"}}, "exclude": {"type": "array", "items": {"type": "integer"}},
                    "packs": {"type": "array", "items": {"type": "string"}}, "dm": {"type": "boolean"}, "save": {"type": "boolean"},
                    "webhooks": {"type": "array", "items": {"type": "string"}}, "silent": {"type": "boolean"},
                    "misfire": {"enum": ["skip", "fire_once", "fire_all"]}, "overlap": {"enum": ["allow", "skip", "queue_one"]}
                }},
                "User": {"type": "object", "required": ["chat_id"], "additionalProperties": false, "properties": {
                    "chat_id": {"type": "integer"}, "name": {"type": "string"}, "active": {"type": "boolean"},
                    "packs": {"type": "array", "items": {"type": "string"}}
                }}
            }
        }
    })
}

/// An operation outside `/api`: no token needed.
fn public(mut v: Value) -> Value {
    v["security"] = json!([]);
    v
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
