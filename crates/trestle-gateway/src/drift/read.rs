//! Reading the two windows of a drift report from the trace store. Numbers come from every
//! request (up to [`MAX_ROWS`] a window, sampled evenly by row id past that), texts from up
//! to `[drift] max_texts` requests with bodies a window, rates are counted in SQL, and the
//! provider's `(model, system_fingerprint)` pairs are grouped in SQL so a rare new one is
//! never sampled away.
//!
//! A [`Source`] reads them: the SQLite store here, PostgreSQL in `read_pg` (the same
//! queries in its dialect). The bodies are parsed here, once, for both.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// The most requests a window reads numbers from.
pub const MAX_ROWS: i64 = 200_000;

/// A span of time, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One request's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers {
    pub route: String,
    /// `prompt:NAME@N`, else `route:NAME`.
    pub scope: String,
    pub ok: bool,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// One request's texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Texts {
    pub route: String,
    pub scope: String,
    /// The last user message.
    pub user: Option<String>,
    /// Whether the answer was a refusal (`None`: no answer kept).
    pub refusal: Option<bool>,
}

/// Counts per scope: (requests, hits).
pub type Counts = std::collections::BTreeMap<String, (usize, usize)>;

/// What a window holds.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub requests: usize,
    pub numbers: Vec<Numbers>,
    pub texts: Vec<Texts>,
    pub fallbacks: Counts,
    pub guardrails: Counts,
    /// (feedback given, non-negative).
    pub feedback: Counts,
    /// (online evals, passed).
    pub evals: Counts,
}

/// A `(model, system_fingerprint)` pair a target answered with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seen {
    pub target: String,
    pub model: Option<String>,
    pub system_fingerprint: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub requests: usize,
    pub in_reference: bool,
    pub in_current: bool,
}

/// A store the windows are read from.
pub trait Source {
    /// Reads one window; `route` limits it to one route.
    fn window(
        &mut self,
        span: Span,
        route: Option<&str>,
        max_texts: usize,
    ) -> anyhow::Result<Window>;
    /// The `(model, system_fingerprint)` pairs each target answered with across both
    /// windows, oldest first.
    fn providers(
        &mut self,
        reference: Span,
        current: Span,
        route: Option<&str>,
    ) -> anyhow::Result<Vec<Seen>>;
}

impl Source for Connection {
    fn window(
        &mut self,
        span: Span,
        route: Option<&str>,
        max_texts: usize,
    ) -> anyhow::Result<Window> {
        Ok(window(self, span, route, max_texts)?)
    }

    fn providers(
        &mut self,
        reference: Span,
        current: Span,
        route: Option<&str>,
    ) -> anyhow::Result<Vec<Seen>> {
        Ok(providers(self, reference, current, route)?)
    }
}

/// Every how many rows one is read, so that at most about `cap` of `rows` are.
pub(super) fn stride(rows: i64, cap: i64) -> i64 {
    (rows + cap - 1).div_euclid(cap.max(1)).max(1)
}

const SCOPE: &str = "CASE WHEN prompt_version IS NOT NULL THEN 'prompt:' || prompt_version ELSE 'route:' || route END";

/// Reads one window; `route` limits it to one route.
pub fn window(
    conn: &Connection,
    span: Span,
    route: Option<&str>,
    max_texts: usize,
) -> rusqlite::Result<Window> {
    let filter = "started_at_ms >= ?1 AND started_at_ms < ?2 AND (?3 IS NULL OR route = ?3)";
    let requests: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM requests WHERE {filter}"),
        params![span.start_ms, span.end_ms, route],
        |r| r.get(0),
    )?;
    let mut w = Window {
        requests: requests as usize,
        ..Window::default()
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT route, {SCOPE}, status, tokens_in, tokens_out FROM requests \
         WHERE {filter} AND id % ?4 = 0"
    ))?;
    w.numbers = stmt
        .query_map(
            params![
                span.start_ms,
                span.end_ms,
                route,
                stride(requests, MAX_ROWS)
            ],
            |r| {
                Ok(Numbers {
                    route: r.get(0)?,
                    scope: r.get(1)?,
                    ok: r.get::<_, i64>(2)? == 200,
                    tokens_in: r.get::<_, i64>(3)?.max(0) as u64,
                    tokens_out: r.get::<_, i64>(4)?.max(0) as u64,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    let with_bodies: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM requests WHERE {filter} AND request IS NOT NULL"),
        params![span.start_ms, span.end_ms, route],
        |r| r.get(0),
    )?;
    let text_stride = stride(with_bodies, max_texts as i64);
    let mut stmt = conn.prepare(&format!(
        "SELECT route, {SCOPE}, request, CASE WHEN status = 200 THEN response END FROM requests \
         WHERE {filter} AND request IS NOT NULL AND id % ?4 = 0"
    ))?;
    w.texts = stmt
        .query_map(
            params![span.start_ms, span.end_ms, route, text_stride],
            |r| {
                let request: Option<String> = r.get(2)?;
                let response: Option<String> = r.get(3)?;
                Ok(Texts {
                    route: r.get(0)?,
                    scope: r.get(1)?,
                    user: request.as_deref().and_then(last_user_message),
                    refusal: response.as_deref().and_then(refusal),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    w.texts.truncate(max_texts);
    let counts = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<Counts> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize),
            ))
        })?;
        rows.collect()
    };
    let args: [&dyn rusqlite::ToSql; 3] = [&span.start_ms, &span.end_ms, &route];
    w.fallbacks = counts(
        &format!(
            "SELECT {SCOPE}, COUNT(*), COALESCE(SUM(fallback_level != 'primary'), 0) FROM requests \
             WHERE {filter} GROUP BY 1"
        ),
        &args,
    )?;
    w.guardrails = counts(
        &format!(
            "SELECT {SCOPE}, COUNT(*), COALESCE(SUM(EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(guardrails) THEN guardrails ELSE '[]' END) \
             WHERE json_extract(value, '$.outcome') != 'pass')), 0) FROM requests WHERE {filter} GROUP BY 1"
        ),
        &args,
    )?;
    let feedback_filter =
        "created_at_ms >= ?1 AND created_at_ms < ?2 AND (?3 IS NULL OR route = ?3)";
    if table_exists(conn, "feedback")? {
        w.feedback = counts(
            &format!(
                "SELECT CASE WHEN prompt_version IS NOT NULL THEN 'prompt:' || prompt_version ELSE 'route:' || COALESCE(route, '') END, \
                 COUNT(*), COALESCE(SUM(negative = 0), 0) FROM feedback WHERE {feedback_filter} GROUP BY 1"
            ),
            &args,
        )?;
    }
    if table_exists(conn, "eval_online_scores")? {
        w.evals = counts(
            &format!(
                "SELECT {SCOPE}, COUNT(*), COALESCE(SUM(pass != 0), 0) FROM eval_online_scores \
                 WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR route = ?3) GROUP BY 1"
            ),
            &args,
        )?;
    }
    Ok(w)
}

/// The `(model, system_fingerprint)` pairs each target answered with across both windows,
/// oldest first.
pub fn providers(
    conn: &Connection,
    reference: Span,
    current: Span,
    route: Option<&str>,
) -> rusqlite::Result<Vec<Seen>> {
    let mut stmt = conn.prepare(
        "SELECT served_by, response_model, system_fingerprint, MIN(started_at_ms), MAX(started_at_ms), COUNT(*), \
                SUM(started_at_ms < ?2), SUM(started_at_ms >= ?2) \
         FROM requests \
         WHERE started_at_ms >= ?1 AND started_at_ms < ?3 AND (?4 IS NULL OR route = ?4) \
           AND served_by IS NOT NULL AND cache = 'miss' \
           AND (response_model IS NOT NULL OR system_fingerprint IS NOT NULL) \
         GROUP BY 1, 2, 3 ORDER BY 4",
    )?;
    stmt.query_map(
        params![reference.start_ms, current.start_ms, current.end_ms, route],
        |r| {
            Ok(Seen {
                target: r.get(0)?,
                model: r.get(1)?,
                system_fingerprint: r.get(2)?,
                first_seen_ms: r.get(3)?,
                last_seen_ms: r.get(4)?,
                requests: r.get::<_, i64>(5)? as usize,
                in_reference: r.get::<_, i64>(6)? > 0,
                in_current: r.get::<_, i64>(7)? > 0,
            })
        },
    )?
    .collect()
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

/// The text of a request body's last user message (string content, or its text parts).
pub fn last_user_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let message = v["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")?;
    match &message["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// Whether an answer body was a refusal: the message's `refusal` field, or refusal
/// phrasing in its content. `None` when the body has no message.
pub fn refusal(body: &str) -> Option<bool> {
    let v: Value = serde_json::from_str(body).ok()?;
    let message = &v["choices"][0]["message"];
    if message.is_null() {
        return None;
    }
    if message["refusal"].as_str().is_some_and(|r| !r.is_empty()) {
        return Some(true);
    }
    Some(
        message["content"]
            .as_str()
            .is_some_and(trestle_eval::drift::is_refusal),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_give_texts_and_refusals() {
        let req = r#"{"model":"chat","messages":[{"role":"system","content":"Be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"where is"},{"type":"text","text":"my parcel"}]}]}"#;
        assert_eq!(
            last_user_message(req).as_deref(),
            Some("where is my parcel")
        );
        assert_eq!(last_user_message("not json"), None);
        let answer = |content: &str| {
            format!(r#"{{"choices":[{{"message":{{"role":"assistant","content":"{content}"}}}}]}}"#)
        };
        assert_eq!(refusal(&answer("It ships tomorrow.")), Some(false));
        assert_eq!(
            refusal(&answer("I'm sorry, but I can't help with that.")),
            Some(true)
        );
        assert_eq!(
            refusal(
                r#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"No."}}]}"#
            ),
            Some(true)
        );
        assert_eq!(refusal(r#"{"error":{}}"#), None);
    }
}
