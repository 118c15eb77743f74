//! Search over traces, and a conversation's turns.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{enc, error_page, flags, layout, ms, opt_ms, outcome_class, read, usd, when};
use crate::state::SharedState;
use crate::store::TraceFilter;

const WINDOWS: [(&str, &str); 6] = [
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
    ("", "any time"),
];

const OUTCOMES: [&str; 6] = [
    "ok",
    "error",
    "client_disconnected",
    "stream_error",
    "shutdown",
    "blocked",
];

const LEVELS: [&str; 6] = [
    "primary", "model", "provider", "degraded", "cached", "static",
];

/// `GET /ui`: the search form and matching traces, newest first.
pub async fn page(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    query: Result<Query<TraceFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mut filter = match query {
        Ok(Query(f)) => f,
        Err(e) => {
            return error_page(StatusCode::BAD_REQUEST, "Bad search", &e.body_text());
        }
    };
    if let Err(e) = filter.validate() {
        return error_page(StatusCode::BAD_REQUEST, "Bad search", &e);
    }
    filter.tenant = crate::auth::tenant(&caller);
    let guardrails: Vec<String> = state.runtime().config.guardrails.keys().cloned().collect();
    let f = filter.clone();
    let found = read(&state, move |store| {
        Ok((store.list(&f)?, store.distinct("route")?))
    })
    .await;
    let (rows, routes) = match found {
        Ok(v) => v,
        Err(r) => return r,
    };
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let selected = |o: &Option<String>, x: &str| o.as_deref().unwrap_or("") == x;
    let content = html! {
        h1 { "Search traces" }
        form.search method="get" action="/ui" {
            label { "conversation id" input type="text" name="conversation_id" value=(v(&filter.conversation_id)); }
            label { "user id" input type="text" name="user_id" value=(v(&filter.user_id)); }
            label { "trace id" input type="text" name="trace_id" value=(v(&filter.trace_id)); }
            label { "route"
                select name="route" {
                    option value="" { "any" }
                    @for r in &routes { option value=(r) selected[selected(&filter.route, r)] { (r) } }
                }
            }
            label { "time"
                select name="since" {
                    @for (w, name) in WINDOWS { option value=(w) selected[selected(&filter.since, w)] { (name) } }
                }
            }
            label { "outcome"
                select name="outcome" {
                    option value="" { "any" }
                    @for o in OUTCOMES { option value=(o) selected[selected(&filter.outcome, o)] { (o) } }
                }
            }
            label { "fallback level"
                select name="fallback_level" {
                    option value="" { "any" }
                    @for l in LEVELS { option value=(l) selected[selected(&filter.fallback_level, l)] { (l) } }
                }
            }
            label { "guardrail finding"
                select name="guardrail" {
                    option value="" { "any or none" }
                    option value="any" selected[selected(&filter.guardrail, "any")] { "any guardrail" }
                    @for g in &guardrails { option value=(g) selected[selected(&filter.guardrail, g)] { (g) } }
                }
            }
            label { "feedback"
                select name="feedback" {
                    option value="" { "any or none" }
                    @for fb in ["negative", "positive", "any"] { option value=(fb) selected[selected(&filter.feedback, fb)] { (fb) } }
                }
            }
            label { "anomaly"
                select name="flag" {
                    option value="" { "any or none" }
                    option value="any" selected[selected(&filter.flag, "any")] { "any anomaly" }
                    @for fl in crate::anomaly::ALL { option value=(fl) selected[selected(&filter.flag, fl)] { (fl) } }
                }
            }
            button type="submit" { "Search" }
            a.reset href="/ui" { "reset" }
        }
        p.count { (rows.len()) " traces" @if rows.len() as u32 >= filter.limit.unwrap_or(100) { " (the newest; narrow the search for more)" } }
        table.traces {
            thead { tr {
                th { "started (UTC)" } th { "trace" } th { "conversation" } th { "user" } th { "route" }
                th { "status" } th { "fallback" } th { "cache" } th.num { "latency" } th.num { "TTFT" }
                th.num { "tokens" } th.num { "cost" } th { "anomalies" }
            } }
            tbody {
                @for t in &rows {
                    tr data-href=(format!("/ui/traces/{}", enc(&t.trace_id))) {
                        td { (when(t.started_at_ms)) }
                        td.mono { a href=(format!("/ui/traces/{}", enc(&t.trace_id))) { (t.trace_id.get(..12).unwrap_or(&t.trace_id)) } }
                        td.mono { @if let Some(c) = &t.conversation_id { a href=(format!("/ui/conversations/{}", enc(c))) { (c) } } @else { "–" } }
                        td { (t.user_id.as_deref().unwrap_or("–")) }
                        td { (t.route) }
                        td { span class=(format!("status {}", outcome_class(t.status, &t.outcome))) { (t.status) " " (t.outcome) } }
                        td { (t.fallback_level) }
                        td { (t.cache) }
                        td.num { (ms(t.duration_ms)) }
                        td.num { (opt_ms(t.ttft_ms)) }
                        td.num { (t.tokens_in) " / " (t.tokens_out) }
                        td.num { (usd(t.cost_usd)) }
                        td { (flags(&t.flags)) }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p.empty { "No trace matches. Traces are written within a moment of the response; widen the time or clear a filter." }
        }
    };
    layout("Search", "search", content)
}

/// `GET /ui/conversations/{id}`: the turns in order, each with its figures and feedback.
pub async fn conversation(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path(id): Path<String>,
) -> Response {
    let key = id.clone();
    let tenant = crate::auth::tenant(&caller);
    let found = read(&state, move |store| {
        let turns = store.conversation(&key, tenant.as_deref())?;
        let spans = store.conversation_spans(&key, tenant.as_deref())?;
        Ok((turns, spans))
    })
    .await;
    let (turns, spans) = match found {
        Ok(v) => v,
        Err(r) => return r,
    };
    if turns.is_empty() && spans.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such conversation",
            &format!("No request carries conversation id `{id}` (x-trestle-conversation-id)."),
        );
    }
    let total_cost: f64 = turns.iter().map(|t| t.cost_usd).sum();
    let total_in: u64 = turns.iter().map(|t| t.tokens_in).sum();
    let total_out: u64 = turns.iter().map(|t| t.tokens_out).sum();
    let answers: Vec<(f64, String)> = turns
        .iter()
        .map(|t| {
            (
                t.started_at_ms as f64 + t.duration_ms,
                t.answer.clone().unwrap_or_default(),
            )
        })
        .collect();
    let span_flags = crate::anomaly::span_flags(&spans, &answers);
    let content = html! {
        h1 { "Conversation " span.mono { (id) } }
        dl.totals {
            dt { "turns" } dd { (turns.len()) }
            dt { "total cost" } dd id="total-cost" { (usd(total_cost)) }
            dt { "tokens" } dd { (total_in) " in / " (total_out) " out" }
            @if !spans.is_empty() { dt { "app spans" } dd { (spans.len()) } }
        }
        @if !span_flags.is_empty() {
            ul.anomalies {
                @for (flag, why) in &span_flags { li { span.flag { (flag) } " " (why) } }
            }
        }
        ol.turns {
            @for t in &turns {
                li.turn {
                    div.meta {
                        span { (when(t.started_at_ms)) }
                        a.mono href=(format!("/ui/traces/{}", enc(&t.trace_id))) { "trace " (t.trace_id.get(..12).unwrap_or(&t.trace_id)) }
                        span { (t.route) }
                        span class=(format!("status {}", outcome_class(t.status, &t.outcome))) { (t.status) " " (t.outcome) }
                        span { "latency " (ms(t.duration_ms)) }
                        span { "TTFT " (opt_ms(t.ttft_ms)) }
                        span { "tokens " (t.tokens_in) " / " (t.tokens_out) }
                        span.cost { "cost " (usd(t.cost_usd)) }
                        span { "fallback " (t.fallback_level) }
                        @if t.cache != "miss" { span { "cache " (t.cache) } }
                        (flags(&t.flags))
                        @for fb in &t.feedback {
                            span class=(if fb["negative"] == true { "feedback neg" } else { "feedback pos" }) title=(fb["comment"].as_str().unwrap_or("")) {
                                (fb["name"].as_str().unwrap_or("")) ": " (fb["value"].to_string().trim_matches('"'))
                            }
                        }
                    }
                    div.q { span.role { "user" } (t.question.as_deref().unwrap_or("(body not kept)")) }
                    div.a { span.role { "assistant" } (t.answer.as_deref().unwrap_or("(no answer)")) }
                }
            }
        }
    };
    layout("Conversation", "search", content)
}
