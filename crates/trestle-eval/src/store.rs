//! Where datasets and runs are kept: in the gateway's store, in tables of their own
//! (`eval_datasets`, `eval_runs`, `eval_results`). [`EvalStore`] is what every backend
//! does; [`SqliteEvalStore`] keeps them in a SQLite file (the traces' file by default,
//! `.trestle/trestle.db`), and the gateway implements the trait on PostgreSQL
//! (`trestle_gateway::evals::runs`), so this crate does not depend on a server. Dataset
//! versions are immutable: a version is the hash of its cases, written once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::run::CaseResult;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS eval_datasets (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    cases INTEGER NOT NULL,
    balance TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS eval_runs (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    suite TEXT NOT NULL,
    label TEXT,
    dataset TEXT NOT NULL,
    dataset_version TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    cases INTEGER NOT NULL DEFAULT 0,
    passed INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE INDEX IF NOT EXISTS eval_runs_label ON eval_runs (label, created_at);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    category TEXT NOT NULL,
    pass INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, case_id)
);
";

/// Datasets and runs, on one backend. Every method blocks; the PostgreSQL one runs its
/// queries off the async runtime itself.
pub trait EvalStore: Send {
    /// Stores a dataset version (a no-op when this name already has it). Returns the version
    /// and whether it is new.
    fn put_dataset(
        &self,
        name: &str,
        dataset: &Dataset,
        source: &str,
    ) -> Result<(String, bool), String>;

    /// A dataset by name, at a version (a unique prefix will do) or the newest.
    fn dataset(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<(DatasetInfo, Dataset)>, String>;

    /// Every stored version, by name, oldest first.
    fn datasets(&self) -> Result<Vec<DatasetInfo>, String>;

    /// Records the start of a run.
    fn start_run(&self, run: &RunInfo) -> Result<(), String>;

    /// Writes results (replacing a case's earlier result), in one transaction.
    fn put_results(&mut self, run_id: &str, results: &[CaseResult]) -> Result<(), String>;

    /// Records how a run ended, with its summary (figures, gates, comparison) as JSON.
    fn finish_run(
        &self,
        run_id: &str,
        cases: usize,
        passed: usize,
        cost: f64,
        status: &str,
        summary: &serde_json::Value,
    ) -> Result<(), String>;

    /// Runs, newest first.
    fn runs(&self, limit: usize) -> Result<Vec<RunInfo>, String>;

    /// A run by id (a unique prefix will do), with its summary.
    fn run(&self, id: &str) -> Result<Option<(RunInfo, Option<serde_json::Value>)>, String>;

    /// The newest finished run with a label (e.g. `production`) on a suite.
    fn last_labelled(&self, label: &str, suite: &str) -> Result<Option<RunInfo>, String>;

    /// Case id → passed, for pairing with a baseline.
    fn passes(&self, run_id: &str) -> Result<HashMap<String, bool>, String>;

    /// A run's results, failing ones first, at most `limit`.
    fn results(
        &self,
        run_id: &str,
        only_failing: bool,
        limit: usize,
    ) -> Result<Vec<CaseResult>, String>;

    /// Answers of a run by case id (for a pairwise judge against it).
    fn answers(&self, run_id: &str) -> Result<HashMap<String, String>, String> {
        Ok(self
            .results(run_id, false, usize::MAX >> 1)?
            .into_iter()
            .map(|r| (r.id, r.answer))
            .collect())
    }
}

/// The eval store in a SQLite file.
pub struct SqliteEvalStore {
    conn: Connection,
}

/// A stored dataset version, without its cases.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub version: String,
    pub created_at: i64,
    pub source: String,
    pub cases: usize,
    pub balance: BTreeMap<String, usize>,
}

/// A run as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub created_at: i64,
    pub suite: String,
    pub label: Option<String>,
    pub dataset: String,
    pub dataset_version: String,
    pub route: String,
    pub target: String,
    pub cases: usize,
    pub passed: usize,
    pub cost_usd: f64,
    pub status: String,
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteEvalStore {
    /// Opens the file (made with its folder when missing) and its tables.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)
        };
        setup().map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
        Ok(SqliteEvalStore { conn })
    }
}

impl EvalStore for SqliteEvalStore {
    fn put_dataset(
        &self,
        name: &str,
        dataset: &Dataset,
        source: &str,
    ) -> Result<(String, bool), String> {
        let version = dataset.version();
        let balance = serde_json::to_string(&dataset.balance()).unwrap_or_default();
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO eval_datasets (name, version, created_at, source, cases, balance, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![name, version, now_s(), source, dataset.cases.len() as i64, balance, dataset.to_jsonl()],
            )
            .map_err(db)?;
        Ok((version, n == 1))
    }

    fn dataset(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<(DatasetInfo, Dataset)>, String> {
        let row = self
            .conn
            .query_row(
                "SELECT name, version, created_at, source, cases, balance, body FROM eval_datasets
                 WHERE name = ?1 AND version LIKE ?2 || '%' ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![name, version.unwrap_or("")],
                |r| Ok((info_of(r)?, r.get::<_, String>(6)?)),
            )
            .optional()
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some((info, body)) => {
                let d = Dataset::parse(&body).map_err(|e| {
                    format!("stored dataset {name}@{} is unreadable: {e}", info.version)
                })?;
                Ok(Some((info, d)))
            }
        }
    }

    fn datasets(&self) -> Result<Vec<DatasetInfo>, String> {
        let mut st = self
            .conn
            .prepare("SELECT name, version, created_at, source, cases, balance FROM eval_datasets ORDER BY name, created_at, rowid")
            .map_err(db)?;
        let rows = st.query_map([], info_of).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn start_run(&self, run: &RunInfo) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO eval_runs (id, created_at, suite, label, dataset, dataset_version, route, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run.id, run.created_at, run.suite, run.label, run.dataset, run.dataset_version, run.route, run.target],
            )
            .map_err(db)?;
        Ok(())
    }

    fn put_results(&mut self, run_id: &str, results: &[CaseResult]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO eval_results (run_id, case_id, category, pass, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(db)?;
            for r in results {
                let body = serde_json::to_string(r).unwrap_or_default();
                st.execute(params![run_id, r.id, r.category, r.pass, body])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn finish_run(
        &self,
        run_id: &str,
        cases: usize,
        passed: usize,
        cost: f64,
        status: &str,
        summary: &serde_json::Value,
    ) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE eval_runs SET cases = ?2, passed = ?3, cost_usd = ?4, status = ?5, summary = ?6 WHERE id = ?1",
                params![run_id, cases as i64, passed as i64, cost, status, summary.to_string()],
            )
            .map_err(db)?;
        Ok(())
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunInfo>, String> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM eval_runs ORDER BY created_at DESC, rowid DESC LIMIT ?1"
            ))
            .map_err(db)?;
        let rows = st.query_map([limit as i64], run_of).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn run(&self, id: &str) -> Result<Option<(RunInfo, Option<serde_json::Value>)>, String> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {RUN_COLUMNS}, summary FROM eval_runs WHERE id LIKE ?1 || '%' ORDER BY created_at DESC LIMIT 2"))
            .map_err(db)?;
        let rows: Vec<(RunInfo, Option<String>)> = st
            .query_map([id], |r| Ok((run_of(r)?, r.get(12)?)))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        if rows.len() > 1 {
            return Err(format!(
                "`{id}` names more than one run; give more of the id"
            ));
        }
        Ok(rows
            .into_iter()
            .next()
            .map(|(info, summary)| (info, summary.and_then(|s| serde_json::from_str(&s).ok()))))
    }

    fn last_labelled(&self, label: &str, suite: &str) -> Result<Option<RunInfo>, String> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM eval_runs WHERE label = ?1 AND suite = ?2 AND status != 'running' ORDER BY created_at DESC, rowid DESC LIMIT 1"),
                params![label, suite],
                run_of,
            )
            .optional()
            .map_err(db)
    }

    fn passes(&self, run_id: &str) -> Result<HashMap<String, bool>, String> {
        let mut st = self
            .conn
            .prepare("SELECT case_id, pass FROM eval_results WHERE run_id = ?1")
            .map_err(db)?;
        let rows = st
            .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn results(
        &self,
        run_id: &str,
        only_failing: bool,
        limit: usize,
    ) -> Result<Vec<CaseResult>, String> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM eval_results WHERE run_id = ?1 AND (?2 = 0 OR pass = 0) ORDER BY pass, category, case_id LIMIT ?3")
            .map_err(db)?;
        let rows = st
            .query_map(params![run_id, only_failing, limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(db)?;
            out.push(
                serde_json::from_str(&body)
                    .map_err(|e| format!("a stored result is unreadable: {e}"))?,
            );
        }
        Ok(out)
    }
}

const RUN_COLUMNS: &str = "id, created_at, suite, label, dataset, dataset_version, route, target, cases, passed, cost_usd, status";

fn run_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        id: r.get(0)?,
        created_at: r.get(1)?,
        suite: r.get(2)?,
        label: r.get(3)?,
        dataset: r.get(4)?,
        dataset_version: r.get(5)?,
        route: r.get(6)?,
        target: r.get(7)?,
        cases: r.get::<_, i64>(8)? as usize,
        passed: r.get::<_, i64>(9)? as usize,
        cost_usd: r.get(10)?,
        status: r.get(11)?,
    })
}

fn info_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<DatasetInfo> {
    Ok(DatasetInfo {
        name: r.get(0)?,
        version: r.get(1)?,
        created_at: r.get(2)?,
        source: r.get(3)?,
        cases: r.get::<_, i64>(4)? as usize,
        balance: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
    })
}

fn db(e: rusqlite::Error) -> String {
    format!("eval store: {e}")
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_are_immutable_versions() {
        let dir = std::env::temp_dir().join(format!("trestle-eval-store-{}", std::process::id()));
        let store = SqliteEvalStore::open(&dir.join("t.db")).unwrap();
        let a = Dataset::parse(r#"{"id": "a", "input": "hi", "category": "x"}"#).unwrap();
        let b = Dataset::parse("{\"id\": \"a\", \"input\": \"hi\", \"category\": \"x\"}\n{\"id\": \"b\", \"input\": \"yo\"}").unwrap();
        let (va, new) = store.put_dataset("support", &a, "a.jsonl").unwrap();
        assert!(new);
        assert!(!store.put_dataset("support", &a, "again.jsonl").unwrap().1);
        let (vb, _) = store.put_dataset("support", &b, "b.jsonl").unwrap();
        let (info, newest) = store.dataset("support", None).unwrap().unwrap();
        assert_eq!(
            (info.version.as_str(), newest.cases.len()),
            (vb.as_str(), 2)
        );
        let (_, old) = store.dataset("support", Some(&va[..6])).unwrap().unwrap();
        assert_eq!(old.cases, a.cases);
        assert_eq!(store.datasets().unwrap().len(), 2);
        assert!(store.dataset("nope", None).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_651_200), "2026-11-26 00:00");
    }
}
