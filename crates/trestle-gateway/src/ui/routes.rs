//! Routes against their interaction class's latency budget, over a window.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::{error_page, layout, ms, opt_ms, pct, read, share_bar, stacked_bar, usd};
use crate::state::SharedState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    window: Option<String>,
}

const WINDOWS: [&str; 5] = ["15m", "1h", "24h", "7d", "30d"];

/// A latency against its budget as inline SVG: the p50–p90 span and the p99 tick on a
/// scale of twice the budget, the budget a line.
fn latency_chart(p50: Option<f64>, p90: Option<f64>, p99: Option<f64>, budget: f64) -> String {
    let scale = |v: f64| (v / (budget * 2.0)).clamp(0.0, 1.0) * 200.0;
    let (Some(a), Some(b)) = (p50, p90) else {
        return String::new();
    };
    let over = b > budget;
    let mut svg = format!(
        r#"<svg class="lat" width="200" height="14" viewBox="0 0 200 14" role="img" aria-label="p50 {a:.0} ms, p90 {b:.0} ms against a {budget:.0} ms budget"><rect class="track" x="0" y="3" width="200" height="8"/><rect class="{}" x="{:.1}" y="3" width="{:.1}" height="8"/>"#,
        if over { "over" } else { "under" },
        scale(a),
        (scale(b) - scale(a)).max(1.0)
    );
    if let Some(c) = p99 {
        svg.push_str(&format!(
            r#"<rect class="p99" x="{:.1}" y="1" width="2" height="12"/>"#,
            scale(c).min(198.0)
        ));
    }
    svg.push_str(r#"<rect class="budget" x="100" y="0" width="1.5" height="14"/></svg>"#);
    svg
}

/// `GET /ui/routes?window=24h`.
pub async fn page(
    State(state): State<SharedState>,
    query: Result<Query<Window>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window = match query {
        Ok(Query(w)) => w.window.unwrap_or_else(|| "24h".into()),
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad window", &e.body_text()),
    };
    let span = match trestle_core::window::window_ms(&window) {
        Ok(w) => w,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad window",
                &format!("window {e}"),
            );
        }
    };
    let now = crate::store::now_ms();
    let stats = match read(&state, move |store| store.route_stats(now - span, now + 1)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let content = html! {
        h1 { "Routes" }
        form.window method="get" action="/ui/routes" {
            label { "window "
                select name="window" onchange="this.form.submit()" {
                    @for w in WINDOWS { option value=(w) selected[w == window] { (w) } }
                }
            }
            noscript { button type="submit" { "Show" } }
        }
        p.help {
            "Budgets by interaction class: sync under 1 s; progressive first token under 500 ms and all under 5 s; async under 20 s. "
            "Percentiles are of warm requests; requests whose attempt was a cold start are counted apart. "
            "In the chart the bar runs from p50 to p90, the tick is p99, the line is the budget (the scale is twice the budget)."
        }
        @if stats.is_empty() { p.empty { "No requests in the last " (window) "." } }
        div.scroll { table.routes {
            thead { tr {
                th { "route" } th { "class / budget" } th.num { "requests" } th.num { "p50" } th.num { "p90" } th.num { "p99" }
                th { "vs budget" } th.num { "over budget" } th.num { "cold starts" } th.num { "TTFT p50 / p90" }
                th.num { "errors" } th { "cache hits" } th { "fallback levels" }
                th.num { "cost / request" } th.num { "/ conversation" } th.num { "/ user" } th.num { "total" }
            } }
            tbody {
                @for s in &stats {
                    tr data-route=(s.route) {
                        td { a href=(format!("/ui?route={}&since={window}", super::enc(&s.route))) { (s.route) } }
                        td { (s.class) " " (ms(s.budget_ms as f64)) @if let Some(t) = s.ttft_budget_ms { " (TTFT " (ms(t as f64)) ")" } }
                        td.num { (s.requests) }
                        td.num { (opt_ms(s.p50_ms)) }
                        td.num { (opt_ms(s.p90_ms)) }
                        td.num { (opt_ms(s.p99_ms)) }
                        td { (super::raw(latency_chart(s.p50_ms, s.p90_ms, s.p99_ms, s.budget_ms as f64))) }
                        td.num class=[(s.over_budget > 0.05).then_some("warn")] { (pct(s.over_budget)) }
                        td.num { (s.cold_starts) @if let Some(c) = s.cold_p50_ms { " (p50 " (ms(c)) ")" } }
                        td.num { (opt_ms(s.ttft_p50_ms)) " / " (opt_ms(s.ttft_p90_ms)) }
                        td.num { (pct(s.error_rate)) }
                        td { (share_bar(s.cache_hit_rate, "hit")) " " (pct(s.cache_hit_rate)) }
                        td { (stacked_bar(&s.fallback_levels.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>())) }
                        td.num { (usd(s.cost_per_request)) }
                        td.num { (s.cost_per_conversation.map(usd).unwrap_or_else(|| "–".into())) }
                        td.num { (s.cost_per_user.map(usd).unwrap_or_else(|| "–".into())) }
                        td.num { (usd(s.cost_usd)) }
                    }
                }
            }
        } }
    };
    layout("Routes", "routes", content)
}
