//! A trace as a waterfall: the app's OTLP spans and the gateway's own (the request, its
//! cache lookup, guardrails and upstream attempts) on one time axis, each opening to its
//! full input and output.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::{enc, error_page, flags, json_block, layout, ms, outcome_class, read, usd, when};
use crate::state::SharedState;

/// One row of the waterfall.
struct Span {
    id: String,
    parent: Option<String>,
    name: String,
    /// `request`, `attempt`, `cache`, `guardrail`, `tool`, `agent`, `retrieval`, `llm`, `app`.
    kind: &'static str,
    start: f64,
    end: f64,
    error: bool,
    note: String,
    detail: Markup,
}

/// What an app span is, from the GenAI conventions or its name.
fn app_kind(span: &Value) -> &'static str {
    let attrs = &span["attributes"];
    let op = attrs["gen_ai.operation.name"].as_str().unwrap_or_default();
    let name = span["name"].as_str().unwrap_or_default().to_lowercase();
    if op == "execute_tool" || !attrs["gen_ai.tool.name"].is_null() || name.starts_with("tool") {
        "tool"
    } else if op == "invoke_agent" || op == "create_agent" || name.contains("agent") {
        "agent"
    } else if name.contains("retriev") || name.contains("search") || name.contains("vector") {
        "retrieval"
    } else if op == "chat" || op == "text_completion" || op == "embeddings" {
        "llm"
    } else {
        "app"
    }
}

fn app_span(s: &Value) -> Span {
    let attrs = s["attributes"].as_object().cloned().unwrap_or_default();
    let detail = html! {
        table.attrs {
            tr { th { "span id" } td.mono { (s["span_id"].as_str().unwrap_or("")) } }
            @if let Some(svc) = s["service"].as_str() { tr { th { "service" } td { (svc) } } }
            tr { th { "status" } td { (match s["status_code"].as_i64() { Some(2) => "error", Some(1) => "ok", _ => "unset" }) " " (s["status_message"].as_str().unwrap_or("")) } }
            @for (k, v) in &attrs {
                tr { th.mono { (k) } td { (json_block(v)) } }
            }
        }
        @if s["events"].as_array().is_some_and(|e| !e.is_empty()) {
            h4 { "events" }
            (json_block(&s["events"]))
        }
    };
    Span {
        id: s["span_id"].as_str().unwrap_or_default().to_string(),
        parent: s["parent_span_id"].as_str().map(str::to_string),
        name: s["name"].as_str().unwrap_or("span").to_string(),
        kind: app_kind(s),
        start: s["start_ms"].as_f64().unwrap_or(0.0),
        end: s["end_ms"].as_f64().unwrap_or(0.0),
        error: s["status_code"] == 2,
        note: s["service"].as_str().unwrap_or("app").to_string(),
        detail,
    }
}

/// The gateway's spans of one request: the request itself, then its children.
fn gateway_spans(r: &Value, out: &mut Vec<Span>) {
    let id = r["span_id"].as_str().unwrap_or_default().to_string();
    let start = r["started_at_ms"].as_f64().unwrap_or(0.0);
    let duration = r["duration_ms"].as_f64().unwrap_or(0.0);
    let status = r["status"].as_u64().unwrap_or(0) as u16;
    let outcome = r["outcome"].as_str().unwrap_or_default();
    let flag_list: Vec<String> = r["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    let model = r["request"]["model"].as_str().unwrap_or_default();
    let detail = html! {
        table.attrs {
            tr { th { "route" } td { (r["route"].as_str().unwrap_or("")) " (" (r["class"].as_str().unwrap_or("")) ")" } }
            tr { th { "status" } td { span class=(format!("status {}", outcome_class(status, outcome))) { (status) " " (outcome) } } }
            @if let Some(e) = r["error"].as_str() { tr { th { "error" } td.error { (e) } } }
            tr { th { "conversation" } td.mono { @if let Some(c) = r["conversation_id"].as_str() { a href=(format!("/ui/conversations/{}", enc(c))) { (c) } } @else { "–" } } }
            tr { th { "user" } td { (r["user_id"].as_str().unwrap_or("–")) } }
            tr { th { "served by" } td { (r["served_by"].as_str().unwrap_or("–")) " · fallback " (r["fallback_level"].as_str().unwrap_or("")) " · capability level " (r["capability_level"]) } }
            @if let Some(m) = r["response_model"].as_str() { tr { th { "upstream model" } td { (m) " " (r["system_fingerprint"].as_str().unwrap_or("")) } } }
            tr { th { "tokens" } td { (r["tokens_in"]) " in (" (r["tokens_cached"]) " cached) / " (r["tokens_out"]) " out" } }
            tr { th { "cost" } td { (usd(r["cost_usd"].as_f64().unwrap_or(0.0))) @if r["cost_saved_usd"].as_f64().unwrap_or(0.0) > 0.0 { " (saved " (usd(r["cost_saved_usd"].as_f64().unwrap_or(0.0))) ")" } } }
            @if let Some(p) = r["prompt_version"].as_str() { tr { th { "prompt" } td { (p) } } }
            @if let Some(e) = r["experiment"].as_str() { tr { th { "experiment" } td { (e) " / " (r["variant"].as_str().unwrap_or("")) } } }
            @if let Some(c) = r["confidence"].as_f64() { tr { th { "confidence" } td { (format!("{c:.3}")) } } }
            @if let Some(before) = r["input_tokens_before"].as_i64() {
                tr { th { "input budget" } td { (before) " → " (r["input_tokens_after"]) " tokens (" (r["trimmed_messages"]) " messages trimmed, " (r["tokenizer"].as_str().unwrap_or("")) ")" } }
            }
            @if let Some(t) = r["tenant"].as_str() { tr { th { "tenant / key" } td { (t) " / " (r["key_id"].as_str().unwrap_or("")) } } }
            @if r["dropped_params"].as_array().is_some_and(|d| !d.is_empty()) { tr { th { "dropped params" } td { (r["dropped_params"].to_string()) } } }
            @if !flag_list.is_empty() { tr { th { "anomalies" } td { (flags(&flag_list)) } } }
        }
        h4 { "request (as stored)" }
        (json_block(&r["request"]))
        h4 { "response (as stored)" }
        (json_block(&r["response"]))
    };
    out.push(Span {
        id: id.clone(),
        parent: r["parent_span_id"].as_str().map(str::to_string),
        name: match r["route"].as_str().unwrap_or("") {
            route if route == model || model.is_empty() => format!("gateway · route {route}"),
            route => format!("gateway · route {route} · model {model}"),
        },
        kind: "request",
        start,
        end: start + duration,
        error: status >= 500,
        note: format!("{status} {outcome}"),
        detail,
    });
    let cache = r["cache"].as_str().unwrap_or("miss");
    out.push(Span {
        id: format!("{id}/cache"),
        parent: Some(id.clone()),
        name: format!("cache lookup: {}", if cache == "miss" { "miss".to_string() } else { format!("{cache} hit") }),
        kind: "cache",
        start,
        end: start,
        error: false,
        note: r["cache_similarity"].as_f64().map(|s| format!("similarity {s:.3}")).unwrap_or_default(),
        detail: html! { p { "The exact and semantic caches are asked before any upstream; a hit serves the answer and no attempt is made." } },
    });
    for (i, g) in r["guardrails"].as_array().into_iter().flatten().enumerate() {
        let latency = g["latency_ms"].as_f64().unwrap_or(0.0);
        let input = g["stage"] == "input";
        let (s, e) = if input {
            (start, start + latency)
        } else {
            (start + duration - latency, start + duration)
        };
        out.push(Span {
            id: format!("{id}/guardrail/{i}"),
            parent: Some(id.clone()),
            name: format!(
                "guardrail {} ({} {})",
                g["guardrail"].as_str().unwrap_or(""),
                g["kind"].as_str().unwrap_or(""),
                g["stage"].as_str().unwrap_or("")
            ),
            kind: "guardrail",
            start: s,
            end: e,
            error: g["outcome"] != "pass",
            note: g["outcome"].as_str().unwrap_or("").to_string(),
            detail: json_block(g),
        });
    }
    for a in r["attempts"].as_array().into_iter().flatten() {
        let offset = a["offset_ms"].as_f64().unwrap_or(0.0);
        let latency = a["latency_ms"].as_f64().unwrap_or(0.0);
        let mut note = a["status"].as_str().unwrap_or("").to_string();
        if let Some(h) = a["http_status"].as_u64() {
            note.push_str(&format!(" {h}"));
        }
        if a["cold_start"] == true {
            note.push_str(" · cold start");
        }
        out.push(Span {
            id: a["span_id"].as_str().unwrap_or_default().to_string(),
            parent: Some(id.clone()),
            name: format!("attempt {}", a["target"].as_str().unwrap_or("")),
            kind: "attempt",
            start: start + offset,
            end: start + offset + latency,
            error: a["status"] != "ok",
            note,
            detail: json_block(a),
        });
    }
}

/// Orders spans as a tree: each root by start time, its children after it.
fn tree(spans: Vec<Span>) -> Vec<(usize, Span)> {
    use std::collections::{HashMap, HashSet};
    let ids: HashSet<String> = spans.iter().map(|s| s.id.clone()).collect();
    let mut children: HashMap<Option<String>, Vec<Span>> = HashMap::new();
    for s in spans {
        let parent = s.parent.clone().filter(|p| ids.contains(p) && *p != s.id);
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.start.total_cmp(&b.start));
    }
    let mut out = Vec::new();
    let mut stack: Vec<(usize, Span)> = children
        .remove(&None)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|s| (0, s))
        .collect();
    while let Some((depth, s)) = stack.pop() {
        if let Some(kids) = children.remove(&Some(s.id.clone())) {
            stack.extend(kids.into_iter().rev().map(|k| (depth + 1, k)));
        }
        out.push((depth, s));
    }
    // Spans in a parent cycle: shown flat at the end rather than lost.
    for (_, rest) in children {
        out.extend(rest.into_iter().map(|s| (0, s)));
    }
    out
}

/// `GET /ui/traces/{id}`.
pub async fn page(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path(id): Path<String>,
) -> Response {
    let key = id.clone();
    let tenant = crate::auth::tenant(&caller);
    let found = read(&state, move |store| {
        Ok(crate::store::scoped_trace(
            store.get(&key)?,
            store.app_spans(&key)?,
            tenant.as_deref(),
        ))
    })
    .await;
    let (trace, app) = match found {
        Ok(Some(v)) => v,
        Ok(None) => (json!({"requests": []}), Vec::new()),
        Err(r) => return r,
    };
    let requests = trace["requests"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() && app.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such trace",
            &format!("No trace `{id}`: traces are written within a moment of the response."),
        );
    }
    let mut spans: Vec<Span> = app.iter().map(app_span).collect();
    for r in &requests {
        gateway_spans(r, &mut spans);
    }
    let t0 = spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    let t1 = spans
        .iter()
        .map(|s| s.end)
        .fold(f64::NEG_INFINITY, f64::max);
    let total = (t1 - t0).max(0.001);
    let answers: Vec<(f64, String)> = requests
        .iter()
        .map(|r| {
            (
                r["started_at_ms"].as_f64().unwrap_or(0.0)
                    + r["duration_ms"].as_f64().unwrap_or(0.0),
                crate::store::answer_text(&r["response"]).unwrap_or_default(),
            )
        })
        .collect();
    let mut span_flags = crate::anomaly::span_flags(&app, &answers);
    for r in &requests {
        for f in r["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            span_flags.push((f.to_string(), super::flag_help(f).to_string()));
        }
    }
    let conversation = requests
        .iter()
        .find_map(|r| r["conversation_id"].as_str())
        .or_else(|| app.iter().find_map(|s| s["conversation_id"].as_str()))
        .map(str::to_string);
    let cost: f64 = requests.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    let rows = tree(spans);
    let content = html! {
        h1 { "Trace " span.mono { (id) } }
        dl.totals {
            dt { "started (UTC)" } dd { (when(t0 as i64)) }
            dt { "duration" } dd { (ms(total)) }
            dt { "gateway requests" } dd { (requests.len()) }
            dt { "app spans" } dd id="app-span-count" { (app.len()) }
            dt { "cost" } dd { (usd(cost)) }
            @if let Some(c) = &conversation { dt { "conversation" } dd { a.mono href=(format!("/ui/conversations/{}", enc(c))) { (c) } } }
        }
        @if !span_flags.is_empty() {
            ul.anomalies { @for (flag, why) in &span_flags { li { span.flag { (flag) } " " (why) } } }
        }
        div.legend {
            @for k in ["request", "attempt", "cache", "guardrail", "agent", "tool", "retrieval", "llm", "app"] {
                span class=(format!("key k-{k}")) { (k) }
            }
        }
        div.waterfall role="tree" {
            div.axis { span { "0" } span { (ms(total / 2.0)) } span { (ms(total)) } }
            @for (depth, s) in &rows {
                @let left = (s.start - t0) / total * 100.0;
                @let width = ((s.end - s.start) / total * 100.0).max(0.3);
                details.span data-kind=(s.kind) data-span-id=(s.id) {
                    summary {
                        span.name style=(format!("padding-left:{}px", depth * 16)) {
                            span class=(format!("key k-{}", s.kind)) { (s.kind) } " " (s.name)
                        }
                        span.track {
                            span class=(format!("bar k-{}{}", s.kind, if s.error { " err" } else { "" }))
                                style=(format!("left:{left:.2}%;width:{width:.2}%")) {}
                        }
                        span.dur { (ms(s.end - s.start)) }
                        span.note { (s.note) }
                    }
                    div.body { (s.detail) }
                }
            }
        }
    };
    layout("Trace", "search", content)
}
