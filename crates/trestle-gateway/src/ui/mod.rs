//! The debugging UI at `/ui` (docs/observability.md, "The web UI"): server-rendered pages
//! (maud) over the same store reads the API serves, with a stylesheet and a few lines of
//! script embedded in the binary. Nothing here runs on the request path of the gateway.
//!
//! Pages: search (`/ui`), a conversation, a trace's waterfall (gateway spans and the app's
//! OTLP spans), routes against their latency budgets, experiments, eval runs and online
//! evals, drift and alerts, and the human review queue.

// A page's error is a whole error page, built once per view: boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod drift;
mod evals;
mod review;
mod routes;
mod search;
mod trace;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use crate::state::SharedState;
use crate::store::TraceReader;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// The UI's routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/ui", get(search::page))
        .route("/ui/", get(search::page))
        .route("/ui/traces/{id}", get(trace::page))
        .route("/ui/conversations/{id}", get(search::conversation))
        .route("/ui/routes", get(routes::page))
        .route("/ui/experiments", get(evals::experiments))
        .route("/ui/evals", get(evals::runs))
        .route("/ui/evals/{run}", get(evals::run))
        .route("/ui/drift", get(drift::page))
        .route("/ui/review", get(review::queue).post(review::submit))
        .route(
            "/ui/review/compare",
            get(review::compare).post(review::submit_preference),
        )
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/app.js", get(script))
}

#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where a login may send the browser back to: a UI page, nothing else.
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/ui") && !n.starts_with("/ui//"))
        .unwrap_or("/ui")
        .to_string()
}

fn login_form(next: &str, error: Option<&str>) -> Response {
    let mut r = layout(
        "Sign in",
        "",
        html! {
            h1 { "Sign in" }
            p.help { "Keys are required on this gateway. Paste a key made with " code { "trestle keys create" } "; the UI keeps it in a cookie for this browser only. A tenant's key sees its tenant's traces; an admin key sees every page." }
            @if let Some(e) = error { p.error { (e) } }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label { "API key " input type="password" name="key" autocomplete="off" required; }
                button type="submit" { "Sign in" }
            }
        },
    );
    if error.is_some() {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    login_form(&safe_next(q.next.as_deref()), None)
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    axum::extract::State(state): axum::extract::State<SharedState>,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let key = f.key.trim();
    if let Err(e) = state.keys.authenticate(key) {
        return login_form(&next, Some(&e.to_string()));
    }
    let mut r = axum::response::Redirect::to(&next).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "trestle_key={key}; Path=/ui; HttpOnly; SameSite=Strict"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout() -> Response {
    let mut r = axum::response::Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "trestle_key=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict",
        ),
    );
    r
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

const NAV: [(&str, &str); 7] = [
    ("search", "/ui"),
    ("routes", "/ui/routes"),
    ("experiments", "/ui/experiments"),
    ("evals", "/ui/evals"),
    ("drift", "/ui/drift"),
    ("review", "/ui/review"),
    ("api", "/v1/traces"),
];

/// A whole page: header, navigation, content.
fn layout(title: &str, active: &str, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Trestle" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "Trestle" }
                    nav {
                        @for (name, href) in NAV {
                            @if name != "api" {
                                a href=(href) class=[(name == active).then_some("active")] { (name) }
                            }
                        }
                    }
                }
                main { (content) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page that says what went wrong, with the status.
fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut r = layout(
        title,
        "",
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href="/ui" { "Back to search" } }
        },
    );
    *r.status_mut() = status;
    r
}

/// Runs a read against the trace store off the async runtime; `None` when the store is
/// disabled.
async fn read<T: Send + 'static>(
    state: &SharedState,
    f: impl FnOnce(&dyn TraceReader) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let Some(reader) = state.reader.clone() else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "No trace store",
            "The trace store is disabled ([store] enabled = false): there is nothing to show.",
        ));
    };
    let out = tokio::task::spawn_blocking(move || f(&*reader)).await;
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_page(
            StatusCode::BAD_REQUEST,
            "Cannot read",
            &e.to_string(),
        )),
        Err(e) => Err(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot read",
            &e.to_string(),
        )),
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    enc(s)
}

fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2026-11-26 23:05:12` (UTC) from Unix milliseconds.
fn when(ms: i64) -> String {
    let t = trestle_eval::store::utc(ms.div_euclid(1000));
    t.replace('T', " ").trim_end_matches('Z').to_string()
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(ms).unwrap_or_else(|| "–".into())
}

fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v < 0.01 {
        format!("${v:.6}")
    } else {
        format!("${v:.4}")
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A JSON value, pretty, in a `<pre>`.
fn json_block(v: &Value) -> Markup {
    let text = match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    html! { pre.json { (text) } }
}

/// Anomaly flags as badges.
fn flags(list: &[String]) -> Markup {
    html! {
        @for f in list {
            span.flag title=(flag_help(f)) { (f) }
        }
    }
}

fn flag_help(flag: &str) -> &'static str {
    match flag {
        crate::anomaly::TOOL_FAILURE_UNMENTIONED => {
            "a tool failed and the answer does not mention it"
        }
        crate::anomaly::TOOL_LOOP => "one tool called with the same arguments 3+ times",
        crate::anomaly::GROUNDING => "a grounding guardrail found unsupported claims",
        crate::anomaly::OVER_BUDGET => "slower than the interaction class's budget",
        _ => "",
    }
}

fn outcome_class(status: u16, outcome: &str) -> &'static str {
    if status >= 500 || outcome == "error" {
        "bad"
    } else if status >= 400 || outcome != "ok" {
        "warn"
    } else {
        "ok"
    }
}

/// A horizontal bar of a share (0..1) as inline SVG.
fn share_bar(share: f64, class: &str) -> Markup {
    let w = (share.clamp(0.0, 1.0) * 100.0).round();
    html! {
        svg.bar width="100" height="10" viewBox="0 0 100 10" role="img" aria-label=(pct(share)) {
            rect x="0" y="0" width="100" height="10" class="track" {}
            rect x="0" y="0" width=(w) height="10" class=(class) {}
        }
    }
}

/// A stacked bar of shares by name, with a legend in its title.
fn stacked_bar(parts: &[(String, f64)]) -> Markup {
    let title = parts
        .iter()
        .map(|(n, s)| format!("{n} {}", pct(*s)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut x = 0.0;
    let rects: Vec<(f64, f64, String)> = parts
        .iter()
        .enumerate()
        .map(|(i, (name, share))| {
            let w = share * 160.0;
            let r = (x, w, format!("c{} lvl-{name}", i % 6));
            x += w;
            r
        })
        .collect();
    html! {
        svg.bar width="160" height="12" viewBox="0 0 160 12" role="img" aria-label=(title) {
            title { (title) }
            @for (x, w, class) in &rects {
                rect x=(format!("{x:.1}")) y="0" width=(format!("{w:.1}")) height="12" class=(class) {}
            }
        }
    }
}

/// A raw piece of markup (an SVG built by hand).
fn raw(s: String) -> Markup {
    PreEscaped(s)
}
