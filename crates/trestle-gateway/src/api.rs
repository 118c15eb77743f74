//! The HTTP API of prompts and experiments: list and read prompts, move labels, read an
//! experiment's readout, ship a winner (docs/prompts.md, docs/experiments.md).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trestle_core::experiment::PromptRef;

use crate::error::GatewayError;
use crate::state::SharedState;

/// A JSON request body within the server's limits, parsed (errors name the field).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    rt: &crate::runtime::Runtime,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<T, GatewayError> {
    let raw = crate::pipeline::ingress::read_body(headers, body, &rt.config.server).await?;
    crate::pipeline::ingress::parse_json(&raw)
}

fn not_found(what: &str, code: &'static str) -> Response {
    GatewayError::NotFound {
        message: what.to_string(),
        code,
    }
    .into_response()
}

fn prompt_json(state: &SharedState, p: &crate::prompts::Prompt, with_versions: bool) -> Value {
    let mut labels = p.labels.clone();
    labels.extend(state.prompt_labels.of(&p.name));
    let mut v = json!({
        "name": p.name,
        "description": p.description,
        "variables": p.variables,
        "labels": labels,
        "versions": p.versions.keys().collect::<Vec<_>>(),
    });
    if with_versions {
        v["versions"] = json!(p.versions.values().collect::<Vec<_>>());
        v["history"] = json!(state.prompt_labels.history(&p.name).unwrap_or_default());
    }
    v
}

/// `GET /v1/prompts`.
pub async fn prompts(State(state): State<SharedState>) -> Response {
    let rt = state.runtime();
    let list: Vec<Value> = rt
        .prompts
        .by_name
        .values()
        .map(|p| prompt_json(&state, p, false))
        .collect();
    axum::Json(json!({"object": "list", "data": list})).into_response()
}

/// `GET /v1/prompts/{name}`: every version, the labels and their history.
pub async fn prompt(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    if !state.runtime().prompts.by_name.contains_key(&name) {
        return not_found(&format!("no prompt `{name}`"), "prompt_not_found");
    }
    let s = state.clone();
    let body = tokio::task::spawn_blocking(move || {
        let rt = s.runtime();
        rt.prompts
            .by_name
            .get(&name)
            .map(|p| prompt_json(&s, p, true))
    })
    .await;
    match body {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => not_found("the prompt went away in a reload", "prompt_not_found"),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Promote {
    label: String,
    version: u32,
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/prompts/{name}/labels` `{"label", "version", "by"?}`: moves a label, recorded.
pub async fn promote(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let rt = state.runtime();
    let req: Promote = match read_json(&rt, &headers, body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !rt.prompts.by_name.contains_key(&name) {
        return not_found(&format!("no prompt `{name}`"), "prompt_not_found");
    }
    let by = req
        .by
        .clone()
        .or_else(|| {
            headers
                .get("x-trestle-user-id")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_else(|| "api".into());
    move_label(&state, name, req.label, req.version, by, "version").await
}

/// Moves a label off the async runtime (the move is written to the store) and answers the
/// recorded move; a refusal is a 400 naming `param`.
async fn move_label(
    state: &SharedState,
    prompt: String,
    label: String,
    version: u32,
    by: String,
    param: &str,
) -> Response {
    let s = state.clone();
    let moved = tokio::task::spawn_blocking(move || {
        s.prompt_labels
            .promote(&s.runtime().prompts, &prompt, &label, version, &by)
    })
    .await;
    match moved {
        Ok(Ok(m)) => axum::Json(json!({"object": "label_move", "move": m})).into_response(),
        Ok(Err(e)) => GatewayError::invalid(e, Some(param)).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

/// An experiment's readout from the store (SQLite or PostgreSQL), read off the async
/// runtime, with the live request counts of this gateway.
pub(crate) async fn read_out(state: &SharedState, name: String) -> Result<Value, GatewayError> {
    let rt = state.runtime();
    if !rt.config.experiments.contains_key(&name) {
        return Err(GatewayError::NotFound {
            message: format!("no experiment `{name}`"),
            code: "experiment_not_found",
        });
    }
    let Some(db) = state.db.clone() else {
        return Err(GatewayError::invalid(
            "experiment readouts need the trace store ([store] enabled)",
            None,
        ));
    };
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut v = crate::experiments::readout(&db, &s.runtime().config, &name, &s.experiments)?;
        v["live_requests"] = json!(s.experiments.live(&name));
        Ok::<_, String>(v)
    })
    .await
    .map_err(|e| GatewayError::Internal(e.to_string()))?
    .map_err(GatewayError::Internal)
}

/// `GET /v1/experiments`.
pub async fn experiments(State(state): State<SharedState>) -> Response {
    let names: Vec<String> = state.runtime().config.experiments.keys().cloned().collect();
    let mut out = Vec::new();
    for n in names {
        match read_out(&state, n).await {
            Ok(v) => out.push(v),
            Err(e) => return e.into_response(),
        }
    }
    axum::Json(json!({"object": "list", "data": out})).into_response()
}

/// `GET /v1/experiments/{name}`.
pub async fn experiment(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    match read_out(&state, name).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ship {
    variant: String,
    #[serde(default = "production")]
    label: String,
    #[serde(default)]
    by: Option<String>,
}

fn production() -> String {
    "production".into()
}

/// `POST /v1/experiments/{name}/ship` `{"variant", "label"?}`: moves the label to the
/// variant's prompt version (shipping a winner). Variants that change targets or
/// parameters are shipped by editing the route.
pub async fn ship(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let rt = state.runtime();
    let req: Ship = match read_json(&rt, &headers, body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(e) = rt.config.experiments.get(&name) else {
        return not_found(&format!("no experiment `{name}`"), "experiment_not_found");
    };
    let Some(v) = e.variants.get(&req.variant) else {
        return GatewayError::invalid(
            format!("experiment {name} has no variant `{}`", req.variant),
            Some("variant"),
        )
        .into_response();
    };
    let Some(Ok(PromptRef::Version(prompt, version))) =
        v.table().prompt.as_deref().map(PromptRef::parse)
    else {
        return GatewayError::invalid(
            format!(
                "variant `{}` is not a prompt version (`name@N`); ship it by editing the route",
                req.variant
            ),
            Some("variant"),
        )
        .into_response();
    };
    let by = req.by.unwrap_or_else(|| format!("experiment {name}"));
    move_label(&state, prompt, req.label, version, by, "variant").await
}

#[cfg(test)]
mod pg_tests;
