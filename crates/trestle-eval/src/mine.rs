//! Failure mining: candidate golden cases from the trace store. A trace is a candidate when
//! something went wrong that a person would want a test for: negative feedback (a correction
//! becomes `expected`), a guardrail that acted on the answer, a fallback answer (cache,
//! template, omitted), a server-side error, low confidence, or a low online-eval score.
//!
//! [`mine`] reads a SQLite trace store; the gateway reads PostgreSQL with the same query in
//! its dialect (`trestle_gateway::evals::mining`), and both turn a [`TraceRow`] into a
//! [`Candidate`] here.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Map, Value, json};

use crate::dataset::{Case, content_text};

#[derive(Debug, Clone)]
pub struct MineOptions {
    /// Only traces that started at or after this (ms since the epoch).
    pub since_ms: i64,
    /// Answers with a mean token probability under this are candidates.
    pub min_confidence: f64,
    /// Only this route.
    pub route: Option<String>,
    /// At most this many candidates, newest first.
    pub limit: usize,
}

/// A trace worth a test, and why.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub trace_id: String,
    pub route: String,
    pub started_at_ms: i64,
    pub reasons: Vec<String>,
    pub messages: Vec<Value>,
    pub answer: String,
    /// What the answer should have been, from a correction in feedback.
    pub correction: Option<String>,
    pub category: Option<String>,
}

impl Candidate {
    /// The case to review: the request's messages, the correction as `expected`, the trace
    /// id kept, the reasons and the answer that was given in `metadata`.
    pub fn to_case(&self) -> Case {
        let mut metadata = Map::new();
        metadata.insert("reasons".into(), json!(self.reasons));
        metadata.insert("route".into(), json!(self.route));
        metadata.insert("answer".into(), json!(self.answer));
        metadata.insert("started_at_ms".into(), json!(self.started_at_ms));
        Case {
            id: format!("mined-{}", &self.trace_id[..self.trace_id.len().min(16)]),
            category: self.category.clone().unwrap_or_else(|| "mined".into()),
            messages: self.messages.clone(),
            expected: self.correction.clone(),
            asserts: Vec::new(),
            metadata,
            trace_id: Some(self.trace_id.clone()),
        }
    }
}

fn table_exists(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .is_ok()
}

/// Reads candidates from a trace store (read-only).
pub fn mine(db: &Path, opts: &MineOptions) -> Result<Vec<Candidate>, String> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open the trace store {}: {e}", db.display()))?;
    if !table_exists(&conn, "requests") {
        return Err(format!(
            "{} has no traces (is it the gateway's [store] path?)",
            db.display()
        ));
    }
    let feedback = table_exists(&conn, "feedback");
    let online = table_exists(&conn, "eval_online_scores");
    // Tables that later parts of Trestle add (feedback, online evals) join in when present.
    let fb = if feedback {
        "SELECT trace_id, GROUP_CONCAT(CASE WHEN negative THEN name END) AS negative, MAX(correction) AS correction FROM feedback GROUP BY trace_id"
    } else {
        "SELECT NULL AS trace_id, NULL AS negative, NULL AS correction"
    };
    let oe = if online {
        "SELECT trace_id, MIN(pass) AS pass FROM eval_online_scores GROUP BY trace_id"
    } else {
        "SELECT NULL AS trace_id, NULL AS pass"
    };
    let sql = format!(
        "SELECT r.trace_id, r.route, r.started_at_ms, r.status, r.error, r.fallback_level, r.guardrails,
                r.confidence, r.request, r.response, fb.negative, fb.correction, oe.pass
         FROM requests r
         LEFT JOIN ({fb}) fb ON fb.trace_id = r.trace_id
         LEFT JOIN ({oe}) oe ON oe.trace_id = r.trace_id
         WHERE r.started_at_ms >= ?1 AND r.request IS NOT NULL AND (?2 IS NULL OR r.route = ?2)
           AND (r.status >= 500 OR r.fallback_level IN ('cache', 'template', 'omitted')
                OR EXISTS (SELECT 1 FROM json_each(r.guardrails) g WHERE json_extract(g.value, '$.outcome') != 'pass')
                OR r.confidence < ?3 OR fb.negative IS NOT NULL OR fb.correction IS NOT NULL OR oe.pass = 0)
         ORDER BY r.started_at_ms DESC LIMIT ?4"
    );
    let mut st = conn
        .prepare(&sql)
        .map_err(|e| format!("mining query: {e}"))?;
    let rows = st
        .query_map(
            params![
                opts.since_ms,
                opts.route,
                opts.min_confidence,
                opts.limit as i64
            ],
            |r| {
                Ok(TraceRow {
                    trace_id: r.get(0)?,
                    route: r.get(1)?,
                    started_at_ms: r.get(2)?,
                    status: r.get(3)?,
                    error: r.get(4)?,
                    fallback_level: r.get(5)?,
                    guardrails: r.get(6)?,
                    confidence: r.get(7)?,
                    request: r.get(8)?,
                    response: r.get(9)?,
                    negative_feedback: r.get(10)?,
                    correction: r.get(11)?,
                    online_pass: r.get(12)?,
                })
            },
        )
        .map_err(|e| format!("mining query: {e}"))?;
    let mut out = Vec::new();
    for row in rows {
        let row = row.map_err(|e| format!("mining query: {e}"))?;
        if let Some(c) = row.candidate(opts.min_confidence) {
            out.push(c);
        }
    }
    Ok(out)
}

/// What the mining query reads of a trace, with its feedback and online evals joined in.
#[derive(Debug, Clone, Default)]
pub struct TraceRow {
    pub trace_id: String,
    pub route: String,
    pub started_at_ms: i64,
    pub status: i64,
    pub error: Option<String>,
    pub fallback_level: String,
    /// The guardrail records, as JSON.
    pub guardrails: Option<String>,
    pub confidence: Option<f64>,
    pub request: Option<String>,
    pub response: Option<String>,
    /// Names of negative feedback, comma-separated.
    pub negative_feedback: Option<String>,
    pub correction: Option<String>,
    /// 0 when an online eval failed the trace.
    pub online_pass: Option<i64>,
}

impl TraceRow {
    /// The candidate this trace makes, with its reasons; `None` when nothing went wrong or
    /// the request has no messages.
    pub fn candidate(self, min_confidence: f64) -> Option<Candidate> {
        let request: Value = serde_json::from_str(self.request.as_deref()?).ok()?;
        let messages = request["messages"].as_array()?.clone();
        let mut reasons = Vec::new();
        if let Some(names) = &self.negative_feedback {
            reasons.push(format!("negative feedback ({names})"));
        }
        if self.correction.is_some() {
            reasons.push("correction".into());
        }
        if self.status >= 500 {
            reasons.push(format!(
                "error {}: {}",
                self.status,
                self.error.as_deref().unwrap_or("")
            ));
        }
        if matches!(
            self.fallback_level.as_str(),
            "cache" | "template" | "omitted"
        ) {
            reasons.push(format!("fallback {}", self.fallback_level));
        }
        if let Some(g) = self
            .guardrails
            .as_deref()
            .and_then(|g| serde_json::from_str::<Vec<Value>>(g).ok())
        {
            for rec in g.iter().filter(|r| r["outcome"] != "pass") {
                reasons.push(format!(
                    "guardrail {} {} ({})",
                    rec["guardrail"].as_str().unwrap_or("?"),
                    rec["outcome"].as_str().unwrap_or("?"),
                    rec["stage"].as_str().unwrap_or("?")
                ));
            }
        }
        if let Some(c) = self.confidence.filter(|c| *c < min_confidence) {
            reasons.push(format!("low confidence {c:.2}"));
        }
        if self.online_pass == Some(0) {
            reasons.push("failed online eval".into());
        }
        if reasons.is_empty() {
            return None;
        }
        let answer = self
            .response
            .as_deref()
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
            .map(|v| content_text(&v["choices"][0]["message"]))
            .unwrap_or_default();
        let category = request["metadata"]["category"].as_str().map(String::from);
        Some(Candidate {
            trace_id: self.trace_id,
            route: self.route,
            started_at_ms: self.started_at_ms,
            reasons,
            messages,
            answer,
            correction: self.correction,
            category,
        })
    }
}
