//! Human review (docs/observability.md, "Human review"): people score traces and eval
//! cases on a rubric, and pick the better of two versions' answers without knowing which is
//! which. Labels are kept in the trace store and read back as JSON Lines in the shape
//! `trestle eval calibrate --labels` takes (`id`, `criterion`, `score`, `rater`,
//! `category`), so a judge can be calibrated against them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The review labels' place in the trace store.
pub struct Review {
    conn: Option<Mutex<Connection>>,
}

impl Review {
    /// Opens the store at `db` (none: labels cannot be kept).
    pub fn new(db: Option<PathBuf>) -> Self {
        let conn = db.and_then(|path| {
            let open = || -> rusqlite::Result<Connection> {
                let c = Connection::open(&path)?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.execute_batch(SCHEMA)?;
                Ok(c)
            };
            open()
                .map_err(|e| tracing::warn!("review labels unavailable: {e}"))
                .ok()
        });
        Review {
            conn: conn.map(Mutex::new),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
        self.conn
            .as_ref()
            .ok_or("human review needs the trace store ([store] enabled)")?
            .lock()
            .map_err(|_| "review store poisoned".to_string())
    }

    /// Keeps labels, all or none.
    pub fn add(&self, labels: &[Label]) -> Result<(), String> {
        for l in labels {
            l.validate()?;
        }
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO review_labels (id, criterion, score, rater, category, source, a, b, comment, created_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(|e| e.to_string())?;
            let now = crate::store::now_ms();
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

    /// Every label, oldest first.
    pub fn labels(&self) -> Result<Vec<Label>, String> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare_cached(
                "SELECT id, criterion, score, rater, category, source, a, b, comment FROM review_labels ORDER BY seq",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| {
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
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    /// The items that have a label from `source` already.
    pub fn labelled(&self, source_prefix: &str) -> Result<HashSet<String>, String> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare_cached("SELECT DISTINCT id FROM review_labels WHERE source LIKE ?1 || '%'")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([source_prefix], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
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
mod tests {
    use super::*;

    fn label(id: &str, criterion: &str, score: f64) -> Label {
        Label {
            id: id.into(),
            criterion: criterion.into(),
            score,
            rater: Some("ana".into()),
            category: Some("billing".into()),
            source: "trace".into(),
            a: None,
            b: None,
            comment: None,
        }
    }

    #[test]
    fn labels_round_trip_in_the_calibrate_format() {
        let dir = std::env::temp_dir().join(format!("trestle-review-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let review = Review::new(Some(dir.join("r.db")));
        review
            .add(&[label("t1", "accuracy", 4.0), label("t1", "tone", 5.0)])
            .unwrap();
        assert!(review.add(&[label("t2", "accuracy", 9.0)]).is_err());
        assert!(review.add(&[label("t2", PREFERENCE, 0.5)]).is_err());
        let text = jsonl(&review.labels().unwrap());
        let read = trestle_eval::calibrate::read_labels(&text).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].id, "t1");
        assert_eq!(read[0].criterion, "accuracy");
        assert_eq!(read[0].score, 4.0);
        assert_eq!(read[0].rater.as_deref(), Some("ana"));
        assert!(review.labelled("trace").unwrap().contains("t1"));
        std::fs::remove_dir_all(dir).ok();
    }
}
