//! `trestle trace show`: a trace as a waterfall in the terminal.

use std::fmt::Write;
use std::process::ExitCode;

use serde_json::Value;

pub async fn show(url: &str, id: &str) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/traces/{id}", url.trim_end_matches('/'));
    let response = reqwest::get(&endpoint).await.map_err(|e| {
        anyhow::anyhow!("cannot reach {url} ({e}); is `trestle serve` running? (--url)")
    })?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("unknown error");
        eprintln!("{msg}");
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", render(&body));
    Ok(ExitCode::SUCCESS)
}

const WIDTH: usize = 40;

/// Renders a `GET /v1/traces/{id}` answer.
pub fn render(trace: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trace {}", trace["trace_id"].as_str().unwrap_or("?"));
    for req in trace["requests"].as_array().into_iter().flatten() {
        let total = req["duration_ms"].as_f64().unwrap_or(0.0).max(0.001);
        let _ = writeln!(
            out,
            "└ request {}  route {}  {}  {} {}  {:.1} ms{}",
            req["span_id"].as_str().unwrap_or("?"),
            req["route"].as_str().unwrap_or("?"),
            if req["stream"].as_bool() == Some(true) {
                "stream"
            } else {
                "json"
            },
            req["status"],
            req["outcome"].as_str().unwrap_or(""),
            total,
            req["ttft_ms"]
                .as_f64()
                .map(|t| format!("  ttft {t:.1} ms"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "  conversation {}  user {}  fallback {}  served by {}",
            req["conversation_id"].as_str().unwrap_or("-"),
            req["user_id"].as_str().unwrap_or("-"),
            req["fallback_level"].as_str().unwrap_or("-"),
            req["served_by"].as_str().unwrap_or("-"),
        );
        let _ = writeln!(
            out,
            "  tokens {} in ({} cached) / {} out  cost ${:.6}",
            req["tokens_in"],
            req["tokens_cached"],
            req["tokens_out"],
            req["cost_usd"].as_f64().unwrap_or(0.0)
        );
        if let Some(e) = req["error"].as_str() {
            let _ = writeln!(out, "  error: {e}");
        }
        let attempts = req["attempts"].as_array().cloned().unwrap_or_default();
        for (i, a) in attempts.iter().enumerate() {
            let offset = a["offset_ms"].as_f64().unwrap_or(0.0);
            let latency = a["latency_ms"].as_f64().unwrap_or(0.0);
            let start = ((offset / total) * WIDTH as f64).round() as usize;
            let len = (((latency / total) * WIDTH as f64).round() as usize).max(1);
            let start = start.min(WIDTH - 1);
            let len = len.min(WIDTH - start);
            let bar = format!(
                "{}{}{}",
                " ".repeat(start),
                "█".repeat(len),
                " ".repeat(WIDTH - start - len)
            );
            let branch = if i + 1 == attempts.len() {
                "└"
            } else {
                "├"
            };
            let status = match a["status"].as_str() {
                Some("ok") => "ok".to_string(),
                _ => format!(
                    "error {}",
                    a["http_status"]
                        .as_u64()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(
                out,
                "  {branch} {:<24} |{bar}| {:>8.1} ms  {status}{}",
                a["target"].as_str().unwrap_or("?"),
                latency,
                if a["cold_start"].as_bool() == Some(true) {
                    "  (cold)"
                } else {
                    ""
                },
            );
            if let Some(e) = a["error"].as_str() {
                let _ = writeln!(
                    out,
                    "  {}   {e}",
                    if i + 1 == attempts.len() { " " } else { "│" }
                );
            }
        }
    }
    app_spans(trace, &mut out);
    out
}

/// The app's own spans (OTLP), on one time axis from the first to the last.
fn app_spans(trace: &Value, out: &mut String) {
    let spans = trace["app_spans"].as_array().cloned().unwrap_or_default();
    if spans.is_empty() {
        return;
    }
    let start = spans
        .iter()
        .filter_map(|s| s["start_ms"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let end = spans
        .iter()
        .filter_map(|s| s["end_ms"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let total = (end - start).max(0.001);
    let _ = writeln!(out, "app spans (OTLP), {total:.1} ms");
    for s in &spans {
        let (a, b) = (
            s["start_ms"].as_f64().unwrap_or(start),
            s["end_ms"].as_f64().unwrap_or(start),
        );
        let from = (((a - start) / total) * WIDTH as f64).round() as usize;
        let from = from.min(WIDTH - 1);
        let len = ((((b - a) / total) * WIDTH as f64).round() as usize).clamp(1, WIDTH - from);
        let bar = format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(len),
            " ".repeat(WIDTH - from - len)
        );
        let status = if s["status_code"].as_i64() == Some(2) {
            format!("  error {}", s["status_message"].as_str().unwrap_or(""))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<26} |{bar}| {:>8.1} ms  {}{status}",
            s["name"].as_str().unwrap_or("?"),
            b - a,
            s["service"].as_str().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waterfall_shows_every_attempt() {
        let trace = serde_json::json!({"trace_id": "abc", "requests": [{
        "span_id": "s1", "route": "chat", "stream": true, "status": 200, "outcome": "ok",
        "duration_ms": 100.0, "ttft_ms": 60.0, "conversation_id": "c1", "user_id": null,
        "fallback_level": "model", "served_by": "backup/m1", "tokens_in": 10, "tokens_cached": 0,
        "tokens_out": 5, "cost_usd": 0.0, "error": null,
        "attempts": [
            {"target": "up/m1", "offset_ms": 0.0, "latency_ms": 40.0, "status": "error", "http_status": 500, "error": "upstream answered 500", "cold_start": true},
            {"target": "backup/m1", "offset_ms": 45.0, "latency_ms": 55.0, "status": "ok", "cold_start": false}
        ]}]});
        let text = render(&trace);
        assert!(text.contains("├ up/m1"), "{text}");
        assert!(text.contains("└ backup/m1"), "{text}");
        assert!(text.contains("error 500"), "{text}");
        assert!(text.contains("(cold)"), "{text}");
        assert!(text.contains("fallback model"), "{text}");
    }
}
