//! `GET /v1/drift`, `GET /v1/alerts`, and the monitor that computes the report every
//! `[drift] interval` and updates the alerts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as QueryParams, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use trestle_core::Config;
use trestle_core::drift::parse_duration;

use super::{Query, alerts, now_ms, run};
use crate::db::Db;
use crate::error::GatewayError;
use crate::runtime::Runtime;
use crate::state::{AppState, SharedState};

/// `?window=7d&reference=28d&route=chat&end_ms=…`
#[derive(serde::Deserialize)]
pub struct DriftParams {
    window: Option<String>,
    reference: Option<String>,
    route: Option<String>,
    end_ms: Option<i64>,
}

/// The store drift reads (SQLite or PostgreSQL).
fn store(state: &AppState) -> Result<Db, GatewayError> {
    state.db.clone().ok_or_else(|| GatewayError::NotFound {
        message: "the trace store is disabled (store.enabled = false): drift needs it".into(),
        code: "store_disabled",
    })
}

/// The configured embedder for topic drift, when there is one.
pub fn embedder(runtime: &Runtime) -> Option<(String, crate::cache::embed::Embedder)> {
    let name = runtime.config.drift.embedder.as_ref()?;
    Some((name.clone(), runtime.embedders.get(name)?.clone()))
}

/// The base of alert links: `[alerts] ui_url`, else the gateway's own address.
pub fn ui_url(config: &Config) -> String {
    config
        .alerts
        .ui_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen))
}

/// `GET /v1/drift`: the report on demand, the config's windows unless the query sets them.
pub async fn report(
    State(state): State<SharedState>,
    params: Result<QueryParams<DriftParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return GatewayError::invalid(
            "bad query: window and reference are durations (7d, 1h, 90s), route a route name, end_ms Unix milliseconds",
            None,
        )
        .into_response();
    };
    let runtime = state.runtime();
    let config = &runtime.config;
    let db = match store(&state) {
        Ok(db) => db,
        Err(e) => return e.into_response(),
    };
    let mut query = Query::from_config(&config.drift);
    for (name, text, slot) in [
        ("window", &p.window, &mut query.window),
        ("reference", &p.reference, &mut query.reference),
    ] {
        if let Some(t) = text {
            match parse_duration(t) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => {
                    return GatewayError::invalid(
                        format!("{name} must be longer than 0"),
                        Some(name),
                    )
                    .into_response();
                }
                Err(e) => return GatewayError::invalid(e, Some(name)).into_response(),
            }
        }
    }
    query.route = p.route;
    query.end_ms = p.end_ms;
    match run(db, config.drift.clone(), query, embedder(&runtime)).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => GatewayError::Internal(format!("drift report: {e:#}")).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct AlertParams {
    state: Option<String>,
}

/// `GET /v1/alerts?state=firing`: every alert, firing first.
pub async fn list(
    State(state): State<SharedState>,
    params: Result<QueryParams<AlertParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match params {
        Ok(QueryParams(AlertParams { state: None })) => None,
        Ok(QueryParams(AlertParams { state: Some(s) })) if s == "firing" || s == "resolved" => {
            Some(s)
        }
        _ => {
            return GatewayError::invalid("bad query: state is firing or resolved", Some("state"))
                .into_response();
        }
    };
    let runtime = state.runtime();
    let db = match store(&state) {
        Ok(db) => db,
        Err(e) => return e.into_response(),
    };
    let ui = ui_url(&runtime.config);
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<alerts::Alert>> {
        alerts::Alerts::open(&db)?.list(filter.as_deref(), &ui)
    })
    .await;
    match read {
        Ok(Ok(list)) => axum::Json(json!({"object": "list", "data": list})).into_response(),
        Ok(Err(e)) => GatewayError::Internal(format!("alerts: {e:#}")).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

/// How often the monitor looks again when `[drift] interval` is off (a reload can set it).
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Starts the drift monitor: every `[drift] interval` (read from the config in force, so a
/// reload changes it) it computes the report over the configured windows and updates the
/// alerts. It stops when the gateway shuts down. Nothing happens without a trace store.
pub fn spawn_monitor(state: &SharedState) {
    if state.db.is_none() {
        return;
    }
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "drift monitor: cannot build an HTTP client; alerts are off");
                return;
            }
        };
        loop {
            let interval = match weak.upgrade() {
                Some(s) if !s.draining.load(std::sync::atomic::Ordering::Relaxed) => {
                    s.runtime().config.drift.interval
                }
                _ => return,
            };
            let Some(every) = interval else {
                tokio::time::sleep(IDLE_CHECK).await;
                continue;
            };
            tokio::time::sleep(every).await;
            let Some(state) = weak.upgrade() else {
                return;
            };
            if let Err(e) = tick(&state, &client).await {
                metrics::counter!("trestle_drift_runs_total", "result" => "error").increment(1);
                tracing::warn!(error = %format!("{e:#}"), "drift monitor: the report failed");
            }
        }
    });
}

/// One scheduled report: alerts updated, undelivered ones sent.
async fn tick(state: &AppState, client: &reqwest::Client) -> anyhow::Result<()> {
    let runtime = state.runtime();
    let config = &runtime.config;
    let db = store(state)?;
    let report = run(
        db.clone(),
        config.drift.clone(),
        Query::from_config(&config.drift),
        embedder(&runtime),
    )
    .await?;
    metrics::counter!("trestle_drift_runs_total", "result" => "ok").increment(1);
    let webhook = config.alerts.webhook.clone();
    let ui = ui_url(config);
    let has_webhook = webhook.is_some();
    let now = now_ms();
    let at = db.clone();
    let (changes, pending, firing) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut alerts = alerts::Alerts::open(&at)?;
        let changes = alerts.update(&report, now, has_webhook)?;
        let firing = alerts.list(Some("firing"), &ui)?.len();
        Ok((changes, alerts.undelivered(&ui)?, firing))
    })
    .await??;
    metrics::gauge!("trestle_alerts_firing").set(firing as f64);
    if !changes.fired.is_empty() || !changes.resolved.is_empty() {
        tracing::info!(fired = %changes.fired.join(", "), resolved = %changes.resolved.join(", "), "drift alerts changed");
    }
    let Some(url) = webhook else {
        return Ok(());
    };
    let timeout = Duration::from_millis(config.alerts.timeout_ms);
    for alert in pending {
        if alerts::send(client, &url, &alert, timeout, config.alerts.retries).await {
            let at = db.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                alerts::Alerts::open(&at)?.delivered(&alert.id, &alert.state)
            })
            .await??;
        }
    }
    Ok(())
}
