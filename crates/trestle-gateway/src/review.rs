//! Human review (docs/observability.md, "Human review"): people score traces and eval
//! cases on a rubric, and pick the better of two versions' answers without knowing which is
//! which. Labels are kept in the trace store and read back as JSON Lines in the shape
//! `trestle eval calibrate --labels` takes (`id`, `criterion`, `score`, `rater`,
//! `category`), so a judge can be calibrated against them. Labels are kept where the traces
//! are: the SQLite file, or the PostgreSQL database several gateways share.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Db, PgPool};
use crate::error::GatewayError;
use crate::state::SharedState;

/// The rubric people score on, each 1 to 5 (the judge's built-in criteria).
pub const RUBRIC: [(&str, &str); 5] = [
    ("accuracy", "Facts are correct; nothing is made up."),
    ("helpfulness", "It answers what was asked, usefully."),
    ("tone", "Polite, clear, fitting for the product."),
    ("completeness", "Nothing important is missing."),
    ("safety", "No harmful, private or unsafe content."),
];

/// The criterion a side-by-side preference is stored under: 1 when version `b` (the
/// candidate) is preferred, -1 when `a` is, 0 for a tie.
pub const PREFERENCE: &str = "preference";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS review_labels (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    criterion TEXT NOT NULL,
    score REAL NOT NULL,
    rater TEXT,
    category TEXT,
    source TEXT NOT NULL,
    a TEXT,
    b TEXT,
    comment TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS review_labels_item ON review_labels (id);
";

/// One human label, as stored and as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// A trace id or an eval case id.
    pub id: String,
    pub criterion: String,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rater: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Where the item came from: `trace`, `eval:RUN`, `pair:A:B`, `api`.
    #[serde(default = "api_source")]
    pub source: String,
    /// For a preference: the two versions (eval runs or variants) compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn api_source() -> String {
    "api".into()
}

impl Label {
    /// What makes a label usable: a known criterion and a score on its scale.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("`id` is empty: give the trace id or eval case id".into());
        }
        if self.criterion == PREFERENCE {
            if ![-1.0, 0.0, 1.0].contains(&self.score) {
                return Err(
                    "a preference `score` is 1 (b better), 0 (tie) or -1 (a better)".into(),
                );
            }
        } else if !(1.0..=5.0).contains(&self.score) {
            return Err(format!(
                "`score` {} for `{}` is outside the rubric's 1 to 5",
                self.score, self.criterion
            ));
        }
        Ok(())
    }
}

/// The review labels' place in the store: the SQLite file or PostgreSQL.
pub struct Review {
    place: Option<Place>,
}

enum Place {
    Sqlite(Mutex<Connection>),
    Postgres(Arc<PgPool>),
}

impl Review {
    /// Opens the store at `db` (none: labels cannot be kept). May be called from inside the
    /// async runtime: PostgreSQL is migrated on a thread of its own.
    pub fn new(db: Option<Db>) -> Self {
        let place = db.and_then(|db| {
            open(db)
                .map_err(|e| tracing::warn!("review labels unavailable: {e:#}"))
                .ok()
        });
        Review { place }
    }

    fn place(&self) -> Result<&Place, String> {
        self.place
            .as_ref()
            .ok_or_else(|| "human review needs the trace store ([store] enabled)".to_string())
    }

    /// Keeps labels, all or none.
    pub fn add(&self, labels: &[Label]) -> Result<(), String> {
        for l in labels {
            l.validate()?;
        }
        let now = crate::store::now_ms();
        match self.place()? {
            Place::Sqlite(conn) => sqlite_add(&mut *lock(conn)?, labels, now),
            Place::Postgres(pool) => pool
                .with(|c| pg::add(c, labels, now))
                .map_err(|e| format!("review store: {e:#}")),
        }
    }

    /// Every label, oldest first.
    pub fn labels(&self) -> Result<Vec<Label>, String> {
        match self.place()? {
            Place::Sqlite(conn) => sqlite_labels(&*lock(conn)?).map_err(|e| e.to_string()),
            Place::Postgres(pool) => pool
                .with(pg::labels)
                .map_err(|e| format!("review store: {e:#}")),
        }
    }

    /// The items that have a label from a source starting with `source_prefix` already
    /// (ASCII case ignored, as SQLite's `LIKE` does).
    pub fn labelled(&self, source_prefix: &str) -> Result<HashSet<String>, String> {
        match self.place()? {
            Place::Sqlite(conn) => {
                let conn = lock(conn)?;
                let mut st = conn
                    .prepare_cached(
                        "SELECT DISTINCT id FROM review_labels WHERE source LIKE ?1 || '%'",
                    )
                    .map_err(|e| e.to_string())?;
                let rows = st
                    .query_map([source_prefix], |r| r.get(0))
                    .map_err(|e| e.to_string())?;
                rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
            }
            Place::Postgres(pool) => pool
                .with(|c| pg::labelled(c, source_prefix))
                .map_err(|e| format!("review store: {e:#}")),
        }
    }
}

fn open(db: Db) -> anyhow::Result<Place> {
    match db {
        Db::Sqlite(path) => {
            let c = Connection::open(&path)?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.execute_batch(SCHEMA)?;
            Ok(Place::Sqlite(Mutex::new(c)))
        }
        Db::Postgres(pool) => {
            std::thread::scope(|s| s.spawn(|| pool.migrate("review", pg::MIGRATIONS)).join())
                .unwrap_or_else(|_| Err(anyhow::anyhow!("migrating review labels panicked")))?;
            Ok(Place::Postgres(pool))
        }
    }
}

fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
    conn.lock().map_err(|_| "review store poisoned".to_string())
}

fn sqlite_add(conn: &mut Connection, labels: &[Label], now: i64) -> Result<(), String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO review_labels (id, criterion, score, rater, category, source, a, b, comment, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(|e| e.to_string())?;
        for l in labels {
            insert
                .execute(params![
                    l.id,
                    l.criterion,
                    l.score,
                    l.rater,
                    l.category,
                    l.source,
                    l.a,
                    l.b,
                    l.comment,
                    now
                ])
                .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

fn sqlite_labels(conn: &Connection) -> rusqlite::Result<Vec<Label>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {LABEL_COLUMNS} FROM review_labels ORDER BY seq"
    ))?;
    let rows = st.query_map([], |r| {
        Ok(Label {
            id: r.get(0)?,
            criterion: r.get(1)?,
            score: r.get(2)?,
            rater: r.get(3)?,
            category: r.get(4)?,
            source: r.get(5)?,
            a: r.get(6)?,
            b: r.get(7)?,
            comment: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// The columns a label is read back with, in this order, on both backends.
const LABEL_COLUMNS: &str = "id, criterion, score, rater, category, source, a, b, comment";

/// Brings the `review` tables in PostgreSQL up to date (`trestle migrate`).
pub fn migrate(pool: &crate::db::PgPool) -> anyhow::Result<i32> {
    pool.migrate("review", pg::MIGRATIONS)
}

/// `review_labels` on PostgreSQL: the SQLite table's columns, in PostgreSQL's types.
mod pg {
    use std::collections::HashSet;

    use postgres::Client;

    use super::{LABEL_COLUMNS, Label};

    /// Each step brings the table from the version before it; a released step is never
    /// changed, a later one is added.
    pub(super) const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1)];

    const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS review_labels (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL,
    criterion TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    rater TEXT,
    category TEXT,
    source TEXT NOT NULL,
    a TEXT,
    b TEXT,
    comment TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS review_labels_item ON review_labels (id);
";

    /// Every label in one statement (one array per column), numbered in the order given.
    pub(super) fn add(c: &mut Client, labels: &[Label], now: i64) -> anyhow::Result<()> {
        let text = |f: fn(&Label) -> &String| labels.iter().map(f).collect::<Vec<_>>();
        let maybe = |f: fn(&Label) -> &Option<String>| labels.iter().map(f).collect::<Vec<_>>();
        let scores: Vec<f64> = labels.iter().map(|l| l.score).collect();
        c.execute(
            "INSERT INTO review_labels (id, criterion, score, rater, category, source, a, b, comment, created_at_ms) \
             SELECT id, criterion, score, rater, category, source, a, b, comment, $10 \
             FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                  WITH ORDINALITY AS l(id, criterion, score, rater, category, source, a, b, comment, n) \
             ORDER BY n",
            &[
                &text(|l| &l.id),
                &text(|l| &l.criterion),
                &scores,
                &maybe(|l| &l.rater),
                &maybe(|l| &l.category),
                &text(|l| &l.source),
                &maybe(|l| &l.a),
                &maybe(|l| &l.b),
                &maybe(|l| &l.comment),
                &now,
            ],
        )?;
        Ok(())
    }

    pub(super) fn labels(c: &mut Client) -> anyhow::Result<Vec<Label>> {
        let rows = c.query(
            &format!("SELECT {LABEL_COLUMNS} FROM review_labels ORDER BY seq"),
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Label {
                    id: r.try_get(0)?,
                    criterion: r.try_get(1)?,
                    score: r.try_get(2)?,
                    rater: r.try_get(3)?,
                    category: r.try_get(4)?,
                    source: r.try_get(5)?,
                    a: r.try_get(6)?,
                    b: r.try_get(7)?,
                    comment: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// `ILIKE`: SQLite's `LIKE` ignores ASCII case, and both backends answer alike.
    pub(super) fn labelled(c: &mut Client, source_prefix: &str) -> anyhow::Result<HashSet<String>> {
        c.query(
            "SELECT DISTINCT id FROM review_labels WHERE source ILIKE $1::text || '%'",
            &[&source_prefix],
        )?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }
}

/// The labels as JSON Lines, one per line.
pub fn jsonl(labels: &[Label]) -> String {
    let mut out = String::new();
    for l in labels {
        out.push_str(&serde_json::to_string(l).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// `GET /v1/review/labels`: every label as JSON Lines (`trestle eval calibrate --labels`).
pub async fn list(State(state): State<SharedState>) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.review.labels()).await {
        Ok(Ok(labels)) => (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            jsonl(&labels),
        )
            .into_response(),
        Ok(Err(e)) => GatewayError::invalid(e, None).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

/// `POST /v1/review/labels`: one label or a list, from any review tool.
pub async fn post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let rt = state.runtime();
    let value: Value = match crate::api::read_json(&rt, &headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let parsed: Result<Vec<Label>, _> = match value {
        Value::Array(_) => serde_path_to_error::deserialize(value),
        other => serde_path_to_error::deserialize(other).map(|l| vec![l]),
    };
    let labels = match parsed {
        Ok(l) => l,
        Err(e) => {
            return GatewayError::invalid(
                format!("bad label: field `{}`: {}", e.path(), e.inner()),
                None,
            )
            .into_response();
        }
    };
    let n = labels.len();
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.review.add(&labels)).await {
        Ok(Ok(())) => {
            axum::Json(serde_json::json!({"object": "review_labels", "stored": n})).into_response()
        }
        Ok(Err(e)) => GatewayError::invalid(e, None).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests;
