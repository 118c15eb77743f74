//! Drift and alerts: the report over the configured windows (or the page's), every signal
//! with its method, figure and threshold, the providers' model changes, and the alerts.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{error_page, layout, when};
use crate::state::SharedState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    window: Option<String>,
    reference: Option<String>,
    route: Option<String>,
}

fn signals_table(title: &str, signals: &[Value]) -> Markup {
    html! {
        h2 { (title) }
        @if signals.is_empty() { p.empty { "No signals." } }
        @else {
            table.signals {
                thead { tr { th { "signal" } th { "scope" } th { "method" } th.num { "value" } th.num { "threshold" } th { "verdict" } th.num { "reference n" } th.num { "current n" } th { "detail" } } }
                tbody {
                    @for s in signals {
                        @let status = s["status"].as_str().unwrap_or("");
                        tr class=(format!("sig-{status}")) {
                            td { (s["name"].as_str().unwrap_or("")) }
                            td.mono { (s["scope"].as_str().unwrap_or("")) }
                            td { (s["method"].as_str().unwrap_or("")) }
                            td.num { (s["value"].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())) }
                            td.num { (s["threshold"].as_f64().map(|v| format!("{v}")).unwrap_or_default()) }
                            td { span class=(match status { "drifted" => "status bad", "stable" => "status ok", _ => "status warn" }) { (status.replace('_', " ")) } }
                            td.num { (s["reference_n"]) }
                            td.num { (s["current_n"]) }
                            td.text { (s["detail"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// `GET /ui/drift?window=7d&reference=28d`.
pub async fn page(
    State(state): State<SharedState>,
    query: Result<Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad query", &e.body_text()),
    };
    let runtime = state.runtime();
    let config = &runtime.config;
    let Some(db) = state.db.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No store",
            "Drift is computed from the trace store, which is disabled.",
        );
    };
    let mut query = crate::drift::Query::from_config(&config.drift);
    for (name, text, slot) in [
        ("window", &q.window, &mut query.window),
        ("reference", &q.reference, &mut query.reference),
    ] {
        if let Some(t) = text.as_deref().filter(|t| !t.is_empty()) {
            match trestle_core::window::window_ms(t) {
                Ok(ms) if ms > 0 => *slot = std::time::Duration::from_millis(ms as u64),
                Ok(_) => {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "Bad window",
                        &format!("{name} must be longer than 0"),
                    );
                }
                Err(e) => {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "Bad window",
                        &format!("{name} {e}"),
                    );
                }
            }
        }
    }
    query.route = q.route.clone().filter(|r| !r.is_empty());
    let report = crate::drift::run(
        db.clone(),
        config.drift.clone(),
        query.clone(),
        crate::drift::api::embedder(&runtime),
    )
    .await;
    let report = match report {
        Ok(r) => serde_json::to_value(r).unwrap_or_default(),
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot compute drift",
                &format!("{e:#}"),
            );
        }
    };
    let ui = crate::drift::api::ui_url(config);
    let alerts = tokio::task::spawn_blocking(
        move || -> anyhow::Result<Vec<crate::drift::alerts::Alert>> {
            crate::drift::alerts::Alerts::open(&db)?.list(None, &ui)
        },
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    let days = |d: std::time::Duration| {
        let h = d.as_secs() / 3600;
        if h.is_multiple_of(24) {
            format!("{}d", h / 24)
        } else {
            format!("{h}h")
        }
    };
    let content = html! {
        h1 { "Drift" }
        form.window method="get" action="/ui/drift" {
            label { "current window " input type="text" name="window" value=(days(query.window)); }
            label { "reference window " input type="text" name="reference" value=(days(query.reference)); }
            label { "route " input type="text" name="route" value=(q.route.clone().unwrap_or_default()) placeholder="all"; }
            button type="submit" { "Compute" }
        }
        p.help {
            "Current: " (when(report["current"]["start_ms"].as_i64().unwrap_or(0))) " to " (when(report["current"]["end_ms"].as_i64().unwrap_or(0)))
            " (" (report["current"]["requests"]) " requests); reference: " (when(report["reference"]["start_ms"].as_i64().unwrap_or(0)))
            " to " (when(report["reference"]["end_ms"].as_i64().unwrap_or(0))) " (" (report["reference"]["requests"]) " requests). "
            "Topic features: " (report["topic_features"].as_str().unwrap_or("")) ". "
            strong id="drifted-count" { (report["drifted"]) " drifted" }
        }
        h2 { "Alerts" }
        @if alerts.is_empty() { p.empty id="no-alerts" { "No alerts." } }
        @else {
            table.alerts {
                thead { tr { th { "state" } th { "signal" } th { "scope" } th.num { "value" } th.num { "threshold" } th { "since" } th { "last seen" } th { "resolved" } th { "detail" } } }
                tbody {
                    @for a in &alerts {
                        tr {
                            td { span class=(format!("sev-{}", a.state)) { (a.state) } }
                            td { (a.signal) } td.mono { (a.scope) }
                            td.num { (a.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())) }
                            td.num { (a.threshold) }
                            td { (when(a.first_seen_ms)) } td { (when(a.last_seen_ms)) }
                            td { (a.resolved_at_ms.map(when).unwrap_or_default()) }
                            td.text { (a.detail) }
                        }
                    }
                }
            }
        }
        (signals_table("Inputs", &list(&report["inputs"])))
        (signals_table("Outputs per prompt version (or route)", &list(&report["outputs"])))
        (signals_table("Providers", &list(&report["providers"]["signals"])))
        h3 { "Models and fingerprints seen" }
        table {
            thead { tr { th { "target" } th { "model" } th { "system_fingerprint" } th.num { "requests" } th { "first seen" } th { "last seen" } } }
            tbody {
                @for s in list(&report["providers"]["seen"]) {
                    tr { td { (s["target"].as_str().unwrap_or("")) } td { (s["model"].as_str().unwrap_or("–")) } td.mono { (s["system_fingerprint"].as_str().unwrap_or("–")) }
                         td.num { (s["requests"]) } td { (when(s["first_seen_ms"].as_i64().unwrap_or(0))) } td { (when(s["last_seen_ms"].as_i64().unwrap_or(0))) } }
                }
            }
        }
        @let changes = list(&report["providers"]["changes"]);
        @if !changes.is_empty() {
            h3 { "Changes" }
            ul { @for c in &changes { li { (when(c["at_ms"].as_i64().unwrap_or(0))) " " (c["target"].as_str().unwrap_or("")) ": "
                (c["from"]["model"].as_str().unwrap_or("?")) " " (c["from"]["system_fingerprint"].as_str().unwrap_or("")) " → "
                (c["to"]["model"].as_str().unwrap_or("?")) " " (c["to"]["system_fingerprint"].as_str().unwrap_or("")) } } }
        }
    };
    layout("Drift", "drift", content)
}
