//! Alerts from drift reports, kept in the trace store's `alerts` table.
//!
//! An alert's key is its signal and scope (`input_length_psi:route:chat`,
//! `provider_fingerprint:target:up/m1`). When a report finds the signal drifted the alert
//! fires (once: while it keeps firing only `last_seen_ms` and the figures move); when a
//! later report finds the signal back under its threshold — or no data at all for its
//! scope — the alert resolves. "Not enough data" changes nothing. A webhook, when set,
//! gets each firing and each resolution once; a delivery that fails is tried again on the
//! next report.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use trestle_eval::drift::{Signal, Status};

use super::Report;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,
    signal TEXT NOT NULL,
    scope TEXT NOT NULL,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    value REAL,
    threshold REAL NOT NULL,
    detail TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    resolved_at_ms INTEGER,
    notified TEXT
);
";

/// One alert, as `GET /v1/alerts` lists it and the webhook receives it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub id: String,
    pub object: &'static str,
    pub signal: String,
    pub scope: String,
    pub method: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub detail: String,
    /// When this firing began.
    pub first_seen_ms: i64,
    /// The last report that found it firing.
    pub last_seen_ms: i64,
    pub resolved_at_ms: Option<i64>,
    /// The drift page of the UI.
    pub link: String,
    /// The state last delivered to the webhook.
    #[serde(skip)]
    pub notified: Option<String>,
}

/// Opens (creating the table if needed) the alerts of the store at this connection.
pub fn open(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

pub fn key(s: &Signal) -> String {
    format!("{}:{}", s.name, s.scope)
}

/// What an update changed: alerts that began firing and that resolved.
#[derive(Debug, Default, PartialEq)]
pub struct Transitions {
    pub fired: Vec<String>,
    pub resolved: Vec<String>,
}

/// Applies a report to the alerts, at `now_ms`. `webhook` says whether transitions wait
/// for delivery (without one they count as delivered).
pub fn update(
    conn: &mut Connection,
    report: &Report,
    now_ms: i64,
    webhook: bool,
) -> rusqlite::Result<Transitions> {
    let tx = conn.transaction()?;
    let mut out = Transitions::default();
    let signals: std::collections::HashMap<String, &Signal> =
        report.signals().map(|s| (key(s), s)).collect();
    for (k, s) in &signals {
        if s.status != Status::Drifted {
            continue;
        }
        let state: Option<String> = tx
            .query_row("SELECT state FROM alerts WHERE key = ?1", [k], |r| r.get(0))
            .optional()?;
        if state.as_deref() == Some("firing") {
            tx.execute(
                "UPDATE alerts SET last_seen_ms = ?2, value = ?3, threshold = ?4, detail = ?5 WHERE key = ?1",
                params![k, now_ms, s.value, s.threshold, s.detail],
            )?;
        } else {
            tx.execute(
                "INSERT INTO alerts (key, signal, scope, method, state, value, threshold, detail, first_seen_ms, last_seen_ms, resolved_at_ms, notified)
                 VALUES (?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7, ?8, ?8, NULL, ?9)
                 ON CONFLICT(key) DO UPDATE SET state = 'firing', method = ?4, value = ?5, threshold = ?6, detail = ?7,
                     first_seen_ms = ?8, last_seen_ms = ?8, resolved_at_ms = NULL, notified = ?9",
                params![k, s.name, s.scope, s.method, s.value, s.threshold, s.detail, now_ms, (!webhook).then_some("firing")],
            )?;
            out.fired.push(k.clone());
        }
    }
    let firing: Vec<String> = {
        let mut stmt = tx.prepare("SELECT key FROM alerts WHERE state = 'firing'")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for k in firing {
        let back = match signals.get(&k) {
            Some(s) => s.status == Status::Ok,
            // The scope has no data in either window any more.
            None => true,
        };
        if back {
            let detail = signals.get(&k).map(|s| s.detail.clone());
            tx.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?2, value = COALESCE(?3, value),
                     detail = COALESCE(?4, detail), notified = CASE WHEN ?5 THEN notified ELSE 'resolved' END
                 WHERE key = ?1",
                params![k, now_ms, signals.get(&k).and_then(|s| s.value), detail, webhook],
            )?;
            out.resolved.push(k);
        }
    }
    tx.commit()?;
    for _ in &out.fired {
        metrics::counter!("trestle_alerts_total", "state" => "firing").increment(1);
    }
    for _ in &out.resolved {
        metrics::counter!("trestle_alerts_total", "state" => "resolved").increment(1);
    }
    Ok(out)
}

/// Alerts, firing first, then the most recently seen; `state` filters.
pub fn list(conn: &Connection, state: Option<&str>, ui_url: &str) -> rusqlite::Result<Vec<Alert>> {
    let mut stmt = conn.prepare(
        "SELECT key, signal, scope, method, state, value, threshold, detail, first_seen_ms, last_seen_ms, resolved_at_ms, notified
         FROM alerts WHERE (?1 IS NULL OR state = ?1)
         ORDER BY state = 'firing' DESC, last_seen_ms DESC, key LIMIT 1000",
    )?;
    let link = format!("{}/ui/drift", ui_url.trim_end_matches('/'));
    stmt.query_map([state], |r| {
        Ok(Alert {
            id: r.get(0)?,
            object: "alert",
            signal: r.get(1)?,
            scope: r.get(2)?,
            method: r.get(3)?,
            state: r.get(4)?,
            value: r.get(5)?,
            threshold: r.get(6)?,
            detail: r.get(7)?,
            first_seen_ms: r.get(8)?,
            last_seen_ms: r.get(9)?,
            resolved_at_ms: r.get(10)?,
            link: link.clone(),
            notified: r.get(11)?,
        })
    })?
    .collect()
}

/// Alerts whose current state the webhook has not received.
pub fn undelivered(conn: &Connection, ui_url: &str) -> rusqlite::Result<Vec<Alert>> {
    Ok(list(conn, None, ui_url)?
        .into_iter()
        .filter(|a| a.notified.as_deref() != Some(a.state.as_str()))
        .collect())
}

/// Records that the webhook received `state` of the alert.
pub fn delivered(conn: &Connection, key: &str, state: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE alerts SET notified = ?2 WHERE key = ?1 AND state = ?2",
        params![key, state],
    )?;
    Ok(())
}

/// The webhook's body: the alert, and the event (`alert.firing`, `alert.resolved`).
pub fn payload(alert: &Alert) -> serde_json::Value {
    let mut body = serde_json::to_value(alert).unwrap_or_default();
    body["event"] = serde_json::json!(format!("alert.{}", alert.state));
    body
}

/// POSTs an alert to the webhook: `1 + retries` tries, each within `timeout`, backoff
/// 250 ms doubling. A delivery that fails every try is counted in
/// `trestle_alert_webhook_failures_total`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    alert: &Alert,
    timeout: Duration,
    retries: u32,
) -> bool {
    let body = payload(alert).to_string();
    let mut backoff = Duration::from_millis(250);
    for attempt in 0..=retries {
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                tracing::warn!(url, status = r.status().as_u16(), attempt, alert = %alert.id, "alert webhook refused the alert")
            }
            Err(e) => {
                tracing::warn!(url, error = %e, attempt, alert = %alert.id, "alert webhook unreachable")
            }
        }
        if attempt < retries {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    metrics::counter!("trestle_alert_webhook_failures_total").increment(1);
    false
}
