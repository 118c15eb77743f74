//! Alerts from drift reports, kept in the store's `alerts` table (SQLite or PostgreSQL;
//! gateways sharing a PostgreSQL database apply reports one at a time, so each fires once).
//!
//! An alert's key is its signal and scope (`input_length_psi:route:chat`,
//! `provider_fingerprint:target:up/m1`). When a report finds the signal drifted the alert
//! fires (once: while it keeps firing only `last_seen_ms` and the figures move); when a
//! later report finds the signal back under its threshold — or no data at all for its
//! scope — the alert resolves. "Not enough data" changes nothing. A webhook, when set,
//! gets each firing and each resolution once; a delivery that fails is tried again on the
//! next report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::Serialize;
use trestle_eval::drift::{Signal, Status};

use super::Report;
use crate::db::{Db, PgPool};

const SQLITE_SCHEMA: &str = "
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

/// The PostgreSQL steps of component `drift`.
const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,
    signal TEXT NOT NULL,
    scope TEXT NOT NULL,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    value DOUBLE PRECISION,
    threshold DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    resolved_at_ms BIGINT,
    notified TEXT
);
",
)];

/// Held while a gateway applies a report, so gateways sharing a database fire an alert once.
const UPDATE_LOCK: i64 = 0x7472_6573_746c_6502;

/// Brings the PostgreSQL table of alerts up to date (also done by [`Alerts::open`]).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("drift", PG_MIGRATIONS)
}

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

pub fn key(s: &Signal) -> String {
    format!("{}:{}", s.name, s.scope)
}

/// What an update changed: alerts that began firing and that resolved.
#[derive(Debug, Default, PartialEq)]
pub struct Transitions {
    pub fired: Vec<String>,
    pub resolved: Vec<String>,
}

/// What a report does to one alert.
enum Change<'r> {
    /// Still firing: only `last_seen_ms` and the figures move.
    Seen(&'r Signal),
    /// Begins firing (new, or after it resolved).
    Fire(&'r Signal),
    /// Back under its threshold, or its scope has no data any more (`None`).
    Resolve(Option<&'r Signal>),
}

/// The changes a report makes to alerts in `states` (key → state): drifted signals fire
/// (once: a firing alert is only seen again); a firing alert whose signal is back to ok, or
/// missing, resolves. "Not enough data" changes nothing.
fn changes<'r>(report: &'r Report, states: &HashMap<String, String>) -> Vec<(String, Change<'r>)> {
    let signals: HashMap<String, &Signal> = report.signals().map(|s| (key(s), s)).collect();
    let mut drifted: Vec<(&String, &&Signal)> = signals
        .iter()
        .filter(|(_, s)| s.status == Status::Drifted)
        .collect();
    drifted.sort_by_key(|(k, _)| *k);
    let mut out = Vec::new();
    for (k, s) in drifted {
        if states.get(k).map(String::as_str) == Some("firing") {
            out.push((k.clone(), Change::Seen(s)));
        } else {
            out.push((k.clone(), Change::Fire(s)));
        }
    }
    let mut firing: Vec<&String> = states
        .iter()
        .filter(|(_, state)| *state == "firing")
        .map(|(k, _)| k)
        .collect();
    firing.sort();
    for k in firing {
        match signals.get(k) {
            Some(s) if s.status == Status::Ok => out.push((k.clone(), Change::Resolve(Some(s)))),
            Some(_) => {}
            None => out.push((k.clone(), Change::Resolve(None))),
        }
    }
    out
}

/// The alerts of one store, open.
pub enum Alerts {
    Sqlite(Connection),
    Postgres(Arc<PgPool>),
}

impl Alerts {
    /// Opens (creating the table if needed) the alerts of the store `db`. Blocks: call it
    /// off the async runtime.
    pub fn open(db: &Db) -> anyhow::Result<Alerts> {
        match db {
            Db::Sqlite(path) => {
                let conn = Connection::open(path).map_err(|e| {
                    anyhow::anyhow!("cannot open the trace store {}: {e}", path.display())
                })?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute_batch(SQLITE_SCHEMA)?;
                Ok(Alerts::Sqlite(conn))
            }
            Db::Postgres(pool) => {
                migrate(pool)?;
                Ok(Alerts::Postgres(pool.clone()))
            }
        }
    }

    /// Applies a report to the alerts, at `now_ms`. `webhook` says whether transitions
    /// wait for delivery (without one they count as delivered).
    pub fn update(
        &mut self,
        report: &Report,
        now_ms: i64,
        webhook: bool,
    ) -> anyhow::Result<Transitions> {
        let out = match self {
            Alerts::Sqlite(conn) => sqlite_update(conn, report, now_ms, webhook)?,
            Alerts::Postgres(pool) => pool.with(|c| pg_update(c, report, now_ms, webhook))?,
        };
        for _ in &out.fired {
            metrics::counter!("trestle_alerts_total", "state" => "firing").increment(1);
        }
        for _ in &out.resolved {
            metrics::counter!("trestle_alerts_total", "state" => "resolved").increment(1);
        }
        Ok(out)
    }

    /// Alerts, firing first, then the most recently seen; `state` filters.
    pub fn list(&mut self, state: Option<&str>, ui_url: &str) -> anyhow::Result<Vec<Alert>> {
        let link = format!("{}/ui/drift", ui_url.trim_end_matches('/'));
        match self {
            Alerts::Sqlite(conn) => Ok(sqlite_list(conn, state, &link)?),
            Alerts::Postgres(pool) => pool.with(|c| pg_list(c, state, &link)),
        }
    }

    /// Alerts whose current state the webhook has not received.
    pub fn undelivered(&mut self, ui_url: &str) -> anyhow::Result<Vec<Alert>> {
        Ok(self
            .list(None, ui_url)?
            .into_iter()
            .filter(|a| a.notified.as_deref() != Some(a.state.as_str()))
            .collect())
    }

    /// Records that the webhook received `state` of the alert.
    pub fn delivered(&mut self, key: &str, state: &str) -> anyhow::Result<()> {
        match self {
            Alerts::Sqlite(conn) => {
                conn.execute(
                    "UPDATE alerts SET notified = ?2 WHERE key = ?1 AND state = ?2",
                    params![key, state],
                )?;
            }
            Alerts::Postgres(pool) => {
                pool.with(|c| {
                    c.execute(
                        "UPDATE alerts SET notified = $2 WHERE key = $1 AND state = $2",
                        &[&key, &state],
                    )?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

fn sqlite_update(
    conn: &mut Connection,
    report: &Report,
    now_ms: i64,
    webhook: bool,
) -> rusqlite::Result<Transitions> {
    let tx = conn.transaction()?;
    let states: HashMap<String, String> = {
        let mut stmt = tx.prepare("SELECT key, state FROM alerts")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut out = Transitions::default();
    for (k, change) in changes(report, &states) {
        match change {
            Change::Seen(s) => {
                tx.execute(
                    "UPDATE alerts SET last_seen_ms = ?2, value = ?3, threshold = ?4, detail = ?5 WHERE key = ?1",
                    params![k, now_ms, s.value, s.threshold, s.detail],
                )?;
            }
            Change::Fire(s) => {
                tx.execute(
                    "INSERT INTO alerts (key, signal, scope, method, state, value, threshold, detail, first_seen_ms, last_seen_ms, resolved_at_ms, notified)
                     VALUES (?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7, ?8, ?8, NULL, ?9)
                     ON CONFLICT(key) DO UPDATE SET state = 'firing', method = ?4, value = ?5, threshold = ?6, detail = ?7,
                         first_seen_ms = ?8, last_seen_ms = ?8, resolved_at_ms = NULL, notified = ?9",
                    params![k, s.name, s.scope, s.method, s.value, s.threshold, s.detail, now_ms, (!webhook).then_some("firing")],
                )?;
                out.fired.push(k);
            }
            Change::Resolve(s) => {
                tx.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?2, value = COALESCE(?3, value),
                         detail = COALESCE(?4, detail), notified = CASE WHEN ?5 THEN notified ELSE 'resolved' END
                     WHERE key = ?1",
                    params![k, now_ms, s.and_then(|s| s.value), s.map(|s| s.detail.clone()), webhook],
                )?;
                out.resolved.push(k);
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

fn pg_update(
    client: &mut postgres::Client,
    report: &Report,
    now_ms: i64,
    webhook: bool,
) -> anyhow::Result<Transitions> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&UPDATE_LOCK])?;
    let mut states = HashMap::new();
    for r in tx.query("SELECT key, state FROM alerts", &[])? {
        states.insert(r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?);
    }
    let mut out = Transitions::default();
    for (k, change) in changes(report, &states) {
        match change {
            Change::Seen(s) => {
                tx.execute(
                    "UPDATE alerts SET last_seen_ms = $2, value = $3, threshold = $4, detail = $5 WHERE key = $1",
                    &[&k, &now_ms, &s.value, &s.threshold, &s.detail],
                )?;
            }
            Change::Fire(s) => {
                tx.execute(
                    "INSERT INTO alerts (key, signal, scope, method, state, value, threshold, detail, first_seen_ms, last_seen_ms, resolved_at_ms, notified)
                     VALUES ($1, $2, $3, $4, 'firing', $5, $6, $7, $8, $8, NULL, $9)
                     ON CONFLICT (key) DO UPDATE SET state = 'firing', method = $4, value = $5, threshold = $6, detail = $7,
                         first_seen_ms = $8, last_seen_ms = $8, resolved_at_ms = NULL, notified = $9",
                    &[&k, &s.name, &s.scope, &s.method, &s.value, &s.threshold, &s.detail, &now_ms, &(!webhook).then_some("firing")],
                )?;
                out.fired.push(k);
            }
            Change::Resolve(s) => {
                tx.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_at_ms = $2, value = COALESCE($3::float8, value),
                         detail = COALESCE($4::text, detail), notified = CASE WHEN $5::bool THEN notified ELSE 'resolved' END
                     WHERE key = $1",
                    &[&k, &now_ms, &s.and_then(|s| s.value), &s.map(|s| s.detail.clone()), &webhook],
                )?;
                out.resolved.push(k);
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

const LIST_COLUMNS: &str = "key, signal, scope, method, state, value, threshold, detail, first_seen_ms, last_seen_ms, resolved_at_ms, notified";

fn sqlite_list(conn: &Connection, state: Option<&str>, link: &str) -> rusqlite::Result<Vec<Alert>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {LIST_COLUMNS} FROM alerts WHERE (?1 IS NULL OR state = ?1)
         ORDER BY state = 'firing' DESC, last_seen_ms DESC, key LIMIT 1000"
    ))?;
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
            link: link.to_string(),
            notified: r.get(11)?,
        })
    })?
    .collect()
}

fn pg_list(
    client: &mut postgres::Client,
    state: Option<&str>,
    link: &str,
) -> anyhow::Result<Vec<Alert>> {
    let rows = client.query(
        &format!(
            "SELECT {LIST_COLUMNS} FROM alerts WHERE ($1::text IS NULL OR state = $1)
             ORDER BY state = 'firing' DESC, last_seen_ms DESC, key LIMIT 1000"
        ),
        &[&state],
    )?;
    rows.iter()
        .map(|r| {
            Ok(Alert {
                id: r.try_get(0)?,
                object: "alert",
                signal: r.try_get(1)?,
                scope: r.try_get(2)?,
                method: r.try_get(3)?,
                state: r.try_get(4)?,
                value: r.try_get(5)?,
                threshold: r.try_get(6)?,
                detail: r.try_get(7)?,
                first_seen_ms: r.try_get(8)?,
                last_seen_ms: r.try_get(9)?,
                resolved_at_ms: r.try_get(10)?,
                link: link.to_string(),
                notified: r.try_get(11)?,
            })
        })
        .collect()
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
