//! Experiments with their readouts, eval runs with their cases, and online evals.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde_json::Value;
use trestle_eval::store::{RunInfo, utc};

use super::{enc, error_page, layout, pct, share_bar, usd};
use crate::state::SharedState;

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// `GET /ui/experiments`: each experiment's variants, metrics and decision, and prompts'
/// labels.
pub async fn experiments(State(state): State<SharedState>) -> Response {
    let rt = state.runtime();
    let names: Vec<String> = rt.config.experiments.keys().cloned().collect();
    let mut readouts = Vec::new();
    for n in names {
        match crate::api::read_out(&state, n.clone()).await {
            Ok(v) => readouts.push(v),
            Err(e) => readouts.push(serde_json::json!({"name": n, "error": e.to_string()})),
        }
    }
    // The file's labels, then where the API moved them.
    let prompts: Vec<(String, std::collections::BTreeMap<String, String>)> = rt
        .prompts
        .by_name
        .values()
        .map(|p| {
            let mut labels: std::collections::BTreeMap<String, String> = p
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            labels.extend(
                state
                    .prompt_labels
                    .of(&p.name)
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string())),
            );
            (p.name.clone(), labels)
        })
        .collect();
    let content = html! {
        h1 { "Experiments" }
        @if readouts.is_empty() { p.empty { "No experiments are configured ([experiments.NAME], docs/experiments.md)." } }
        @for x in &readouts {
            section.experiment {
                h2 { (x["name"].as_str().unwrap_or("")) " " span.badge { (x["status"].as_str().unwrap_or("")) } }
                @if let Some(e) = x["error"].as_str() { p.error { (e) } }
                p { "route " (x["route"].as_str().unwrap_or("")) " · control " (x["control"].as_str().unwrap_or(""))
                    " · primary metric " (x["primary_metric"].as_str().unwrap_or("")) " · running " (num(&x["elapsed_h"], 1)) " h of at least " (num(&x["min_duration_h"], 0)) " h" }
                p.decision { "Decision: " (x["decision"].as_str().unwrap_or("")) }
                table {
                    thead { tr { th { "variant" } th.num { "n" } th.num { "mean" } th.num { "95% interval" } th { "P(best)" } th.num { "expected loss" } th.num { "requests" } th.num { "errors" } th.num { "p90" } th.num { "cost / request" } } }
                    tbody {
                        @for v in x["variants"].as_array().into_iter().flatten() {
                            tr {
                                td { (v["name"].as_str().unwrap_or("")) @if !v["stopped"].is_null() { " " span.flag { "stopped" } } }
                                td.num { (v["n"]) }
                                td.num { (num(&v["mean"], 4)) }
                                td.num { (num(&v["ci_low"], 4)) " – " (num(&v["ci_high"], 4)) }
                                td { (share_bar(v["prob_best"].as_f64().unwrap_or(0.0), "hit")) " " (pct(v["prob_best"].as_f64().unwrap_or(0.0))) }
                                td.num { (num(&v["expected_loss"], 5)) }
                                td.num { (v["traffic"]["requests"]) }
                                td.num { (pct(v["traffic"]["error_rate"].as_f64().unwrap_or(0.0))) }
                                td.num { (num(&v["traffic"]["latency_p90_ms"], 0)) " ms" }
                                td.num { (usd(v["traffic"]["cost_per_request_usd"].as_f64().unwrap_or(0.0))) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Prompts" }
        @if prompts.is_empty() { p.empty { "No prompts ([prompts] dir, docs/prompts.md)." } }
        table {
            thead { tr { th { "prompt" } th { "labels" } } }
            tbody {
                @for (name, labels) in &prompts {
                    tr { td { (name) } td { @for (l, v) in labels { span.badge { (l) " → " (v) } " " } } }
                }
            }
        }
    };
    layout("Experiments", "experiments", content)
}

/// `GET /ui/evals`: eval runs, newest first, and online evals by day, both read from the
/// store (SQLite or PostgreSQL).
pub async fn runs(State(state): State<SharedState>) -> Response {
    let Some(db) = state.db.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No store",
            "Eval runs are kept in the trace store, which is disabled.",
        );
    };
    let since = utc(trestle_eval::store::now_s() - 13 * 86_400)[..10].to_string();
    let read = tokio::task::spawn_blocking(move || {
        let runs = crate::evals::runs::open(&db)?.runs(100)?;
        let online = crate::evals::daily(&db, &since, None)?;
        Ok::<_, String>((runs, online))
    })
    .await;
    let (runs, online) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot read eval runs",
                &e,
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot read eval runs",
                &e.to_string(),
            );
        }
    };
    let content = html! {
        h1 { "Eval runs" }
        @if runs.is_empty() { p.empty { "No eval runs yet: " code { "trestle eval run SUITE.toml" } " (docs/evals.md)." } }
        table.runs {
            thead { tr { th { "run" } th { "started (UTC)" } th { "suite" } th { "label" } th { "dataset" } th { "route / target" } th.num { "cases" } th { "pass rate" } th.num { "cost" } th { "status" } th { "review" } } }
            tbody {
                @for r in &runs { (run_row(r)) }
            }
        }
        h2 { "Online evals (last 14 days)" }
        @if online.is_empty() { p.empty { "No online eval scores ([evals.online], docs/evals.md)." } }
        table {
            thead { tr { th { "day" } th { "route" } th { "prompt version" } th { "category" } th.num { "scored" } th { "pass rate" } th { "judge means" } } }
            tbody {
                @for d in &online {
                    tr {
                        td { (d.day) } td { (d.route) } td { (d.prompt_version.as_deref().unwrap_or("–")) } td { (d.category) }
                        td.num { (d.scored) }
                        td { (share_bar(d.pass_rate, "hit")) " " (pct(d.pass_rate)) }
                        td { @for (c, m) in &d.judge_means { span.badge { (c) " " (format!("{m:.2}")) } " " } }
                    }
                }
            }
        }
    };
    layout("Evals", "evals", content)
}

fn run_row(r: &RunInfo) -> maud::Markup {
    let rate = if r.cases == 0 {
        0.0
    } else {
        r.passed as f64 / r.cases as f64
    };
    html! {
        tr {
            td.mono { a href=(format!("/ui/evals/{}", enc(&r.id))) { (r.id) } }
            td { (utc(r.created_at).replace('T', " ").trim_end_matches('Z')) }
            td { (r.suite) }
            td { (r.label.as_deref().unwrap_or("")) }
            td { (r.dataset) "@" (r.dataset_version.get(..8).unwrap_or(&r.dataset_version)) }
            td { (r.route) " / " (r.target) }
            td.num { (r.cases) }
            td { (share_bar(rate, "hit")) " " (pct(rate)) }
            td.num { (usd(r.cost_usd)) }
            td { (r.status) }
            td { a href=(format!("/ui/review?source=eval:{}", enc(&r.id))) { "score cases" } }
        }
    }
}

/// `GET /ui/evals/{run}`: a run's cases, failing first.
pub async fn run(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    let Some(db) = state.db.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No store",
            "Eval runs are kept in the trace store, which is disabled.",
        );
    };
    let key = id.clone();
    let read = tokio::task::spawn_blocking(move || {
        let store = crate::evals::runs::open(&db)?;
        let Some((info, summary)) = store.run(&key)? else {
            return Ok(None);
        };
        let results = store.results(&info.id, false, 2_000)?;
        Ok::<_, String>(Some((info, summary, results)))
    })
    .await;
    let (info, summary, results) = match read {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such run",
                &format!("No eval run `{id}`."),
            );
        }
        Ok(Err(e)) => {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Cannot read the run", &e);
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot read the run",
                &e.to_string(),
            );
        }
    };
    let content = html! {
        h1 { "Eval run " span.mono { (info.id) } }
        table.runs { tbody { (run_row(&info)) } }
        @if let Some(s) = &summary {
            @if let Some(gates) = s["gates"].as_array() {
                h2 { "Gates" }
                ul { @for g in gates { li class=(if g["held"] == true { "ok" } else { "bad" }) {
                    (g["category"].as_str().unwrap_or("")) ": " (if g["held"] == true { "held" } else { "failed" })
                    @if let Some(r) = g["pass_rate"].as_f64() { " · pass rate " (pct(r)) }
                    @if let Some(b) = g["baseline_pass_rate"].as_f64() { " · baseline " (pct(b)) }
                    @if let Some(why) = g["reason"].as_str().filter(|r| !r.is_empty()) { " · " (why) }
                } } }
            }
        }
        h2 { "Cases" }
        table.cases {
            thead { tr { th { "case" } th { "category" } th { "result" } th { "input" } th { "answer" } th { "expected" } th { "assertions" } th { "trace" } } }
            tbody {
                @for c in &results {
                    tr class=(if c.pass { "ok" } else { "bad" }) {
                        td.mono { (c.id) }
                        td { (c.category) }
                        td { (if c.pass { "pass" } else { "fail" }) }
                        td.text { (c.input) }
                        td.text { (c.answer) @if let Some(e) = &c.error { p.error { (e) } } }
                        td.text { (c.expected.as_deref().unwrap_or("")) }
                        td { @for o in &c.outcomes { div class=(if o.pass { "ok" } else { "bad" }) { (o.kind) @if let Some(s) = o.score { " " (format!("{s:.2}")) } @if !o.reason.is_empty() { ": " (o.reason) } } } }
                        td.mono { @if let Some(t) = &c.trace_id { a href=(format!("/ui/traces/{}", enc(t))) { (t.get(..12).unwrap_or(t)) } } }
                    }
                }
            }
        }
    };
    layout("Eval run", "evals", content)
}
