//! Where offline eval datasets and runs are kept (`trestle eval run`, `trestle dataset`,
//! `/ui/evals`), on either backend: SQLite through `trestle_eval::store::SqliteEvalStore`,
//! or PostgreSQL here, behind the same [`EvalStore`] trait, so runs stored by a CI job are
//! listed by every gateway on the database.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::Client;
use trestle_eval::Dataset;
use trestle_eval::run::CaseResult;
use trestle_eval::store::{DatasetInfo, EvalStore, RunInfo, SqliteEvalStore, now_s};

use crate::db::{Db, PgPool, off_runtime};

/// The PostgreSQL steps of component `eval_runs` (datasets, runs and their results). The
/// SQLite tables' columns in PostgreSQL's types; `seq` orders rows written in the same
/// second, as SQLite's `rowid` does.
const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE IF NOT EXISTS eval_datasets (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    cases BIGINT NOT NULL,
    balance JSONB NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS eval_runs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    suite TEXT NOT NULL,
    label TEXT,
    dataset TEXT NOT NULL,
    dataset_version TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    cases BIGINT NOT NULL DEFAULT 0,
    passed BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'running',
    summary JSONB
);
CREATE INDEX IF NOT EXISTS eval_runs_label ON eval_runs (label, suite, created_at);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    category TEXT NOT NULL,
    pass BOOLEAN NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (run_id, case_id)
);
",
)];

/// Brings the PostgreSQL tables of eval datasets and runs up to date (also done on open).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("eval_runs", PG_MIGRATIONS)
}

/// The eval store in `db`, its tables made or brought up to date. Blocks; may be called
/// from inside the async runtime (PostgreSQL runs on a thread of its own).
pub fn open(db: &Db) -> Result<Box<dyn EvalStore>, String> {
    match db {
        Db::Sqlite(path) => Ok(Box::new(SqliteEvalStore::open(path)?)),
        Db::Postgres(pool) => {
            off_runtime(|| migrate(pool)).map_err(pg_error)?;
            Ok(Box::new(PgEvalStore { pool: pool.clone() }))
        }
    }
}

/// Datasets and runs in PostgreSQL.
struct PgEvalStore {
    pool: Arc<PgPool>,
}

impl PgEvalStore {
    /// Runs `f` on a pooled connection, off the async runtime.
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<T> + Send,
    ) -> Result<T, String> {
        off_runtime(|| self.pool.with(f)).map_err(pg_error)
    }
}

fn pg_error(e: anyhow::Error) -> String {
    format!("eval store (PostgreSQL): {e:#}")
}

const RUN_COLUMNS: &str = "id, created_at, suite, label, dataset, dataset_version, route, \
     target, cases, passed, cost_usd, status";

fn run_of(r: &postgres::Row) -> anyhow::Result<RunInfo> {
    Ok(RunInfo {
        id: r.try_get(0)?,
        created_at: r.try_get(1)?,
        suite: r.try_get(2)?,
        label: r.try_get(3)?,
        dataset: r.try_get(4)?,
        dataset_version: r.try_get(5)?,
        route: r.try_get(6)?,
        target: r.try_get(7)?,
        cases: r.try_get::<_, i64>(8)?.max(0) as usize,
        passed: r.try_get::<_, i64>(9)?.max(0) as usize,
        cost_usd: r.try_get(10)?,
        status: r.try_get(11)?,
    })
}

fn info_of(r: &postgres::Row) -> anyhow::Result<DatasetInfo> {
    Ok(DatasetInfo {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        created_at: r.try_get(2)?,
        source: r.try_get(3)?,
        cases: r.try_get::<_, i64>(4)?.max(0) as usize,
        balance: serde_json::from_str(&r.try_get::<_, String>(5)?).unwrap_or_default(),
    })
}

/// A row limit as PostgreSQL takes it.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl EvalStore for PgEvalStore {
    fn put_dataset(
        &self,
        name: &str,
        dataset: &Dataset,
        source: &str,
    ) -> Result<(String, bool), String> {
        let version = dataset.version();
        let balance = serde_json::to_string(&dataset.balance()).unwrap_or_default();
        let body = dataset.to_jsonl();
        let cases = limit(dataset.cases.len());
        let n = self.with(|c| {
            Ok(c.execute(
                "INSERT INTO eval_datasets (name, version, created_at, source, cases, balance, body)
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7) ON CONFLICT DO NOTHING",
                &[&name, &version, &now_s(), &source, &cases, &balance, &body],
            )?)
        })?;
        Ok((version, n == 1))
    }

    fn dataset(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<(DatasetInfo, Dataset)>, String> {
        let prefix = version.unwrap_or("");
        let row = self.with(|c| {
            c.query_opt(
                "SELECT name, version, created_at, source, cases, balance::text, body FROM eval_datasets
                 WHERE name = $1 AND version LIKE $2 || '%' ORDER BY created_at DESC, seq DESC LIMIT 1",
                &[&name, &prefix],
            )?
            .map(|r| Ok((info_of(&r)?, r.try_get::<_, String>(6)?)))
            .transpose()
        })?;
        let Some((info, body)) = row else {
            return Ok(None);
        };
        let d = Dataset::parse(&body)
            .map_err(|e| format!("stored dataset {name}@{} is unreadable: {e}", info.version))?;
        Ok(Some((info, d)))
    }

    fn datasets(&self) -> Result<Vec<DatasetInfo>, String> {
        self.with(|c| {
            c.query(
                "SELECT name, version, created_at, source, cases, balance::text FROM eval_datasets
                 ORDER BY name, created_at, seq",
                &[],
            )?
            .iter()
            .map(info_of)
            .collect()
        })
    }

    fn start_run(&self, run: &RunInfo) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "INSERT INTO eval_runs (id, created_at, suite, label, dataset, dataset_version, route, target)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&run.id, &run.created_at, &run.suite, &run.label, &run.dataset, &run.dataset_version, &run.route, &run.target],
            )?;
            Ok(())
        })
    }

    fn put_results(&mut self, run_id: &str, results: &[CaseResult]) -> Result<(), String> {
        if results.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "INSERT INTO eval_results (run_id, case_id, category, pass, body)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb)
                 ON CONFLICT (run_id, case_id) DO UPDATE
                 SET category = EXCLUDED.category, pass = EXCLUDED.pass, body = EXCLUDED.body",
            )?;
            for r in results {
                let body = serde_json::to_string(r)?;
                tx.execute(&st, &[&run_id, &r.id, &r.category, &r.pass, &body])?;
            }
            tx.commit()?;
            Ok(())
        })
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
        let summary = summary.to_string();
        self.with(|c| {
            c.execute(
                "UPDATE eval_runs SET cases = $2, passed = $3, cost_usd = $4, status = $5,
                 summary = $6::text::jsonb WHERE id = $1",
                &[
                    &run_id,
                    &limit(cases),
                    &limit(passed),
                    &cost,
                    &status,
                    &summary,
                ],
            )?;
            Ok(())
        })
    }

    fn runs(&self, n: usize) -> Result<Vec<RunInfo>, String> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM eval_runs ORDER BY created_at DESC, seq DESC LIMIT $1"
                ),
                &[&limit(n)],
            )?
            .iter()
            .map(run_of)
            .collect()
        })
    }

    fn run(&self, id: &str) -> Result<Option<(RunInfo, Option<serde_json::Value>)>, String> {
        let rows = self.with(|c| {
            c.query(
                &format!(
                    "SELECT {RUN_COLUMNS}, summary::text FROM eval_runs WHERE id LIKE $1 || '%'
                     ORDER BY created_at DESC LIMIT 2"
                ),
                &[&id],
            )?
            .iter()
            .map(|r| Ok((run_of(r)?, r.try_get::<_, Option<String>>(12)?)))
            .collect::<anyhow::Result<Vec<_>>>()
        })?;
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
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM eval_runs WHERE label = $1 AND suite = $2
                     AND status != 'running' ORDER BY created_at DESC, seq DESC LIMIT 1"
                ),
                &[&label, &suite],
            )?
            .map(|r| run_of(&r))
            .transpose()
        })
    }

    fn passes(&self, run_id: &str) -> Result<HashMap<String, bool>, String> {
        self.with(|c| {
            c.query(
                "SELECT case_id, pass FROM eval_results WHERE run_id = $1",
                &[&run_id],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn results(
        &self,
        run_id: &str,
        only_failing: bool,
        n: usize,
    ) -> Result<Vec<CaseResult>, String> {
        let bodies = self.with(|c| {
            c.query(
                "SELECT body::text FROM eval_results WHERE run_id = $1 AND (NOT $2 OR NOT pass)
                 ORDER BY pass, category, case_id LIMIT $3",
                &[&run_id, &only_failing, &limit(n)],
            )?
            .iter()
            .map(|r| Ok(r.try_get::<_, String>(0)?))
            .collect::<anyhow::Result<Vec<_>>>()
        })?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b).map_err(|e| format!("a stored result is unreadable: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trestle_eval::assertion::Outcome;

    use super::*;
    use crate::db::testing::on_both_backends;

    fn result(id: &str, category: &str, pass: bool) -> CaseResult {
        CaseResult {
            id: id.into(),
            category: category.into(),
            pass,
            input: format!("question {id}"),
            expected: None,
            answer: format!("answer {id}"),
            error: None,
            status: 200,
            latency_ms: 5,
            cost_usd: Some(0.001),
            trace_id: Some(format!("trace-{id}")),
            fallback_level: None,
            outcomes: vec![Outcome::new("contains", pass, None, "")],
        }
    }

    fn run(id: &str, label: Option<&str>, created_at: i64) -> RunInfo {
        RunInfo {
            id: id.into(),
            created_at,
            suite: "support".into(),
            label: label.map(String::from),
            dataset: "golden".into(),
            dataset_version: "abc123".into(),
            route: "chat".into(),
            target: "in process".into(),
            cases: 0,
            passed: 0,
            cost_usd: 0.0,
            status: "running".into(),
        }
    }

    fn datasets_are_immutable_versions(db: Db) {
        let store = open(&db).unwrap();
        let a = Dataset::parse(r#"{"id": "a", "input": "hi", "category": "x"}"#).unwrap();
        let b = Dataset::parse(
            "{\"id\": \"a\", \"input\": \"hi\", \"category\": \"x\"}\n{\"id\": \"b\", \"input\": \"yo\"}",
        )
        .unwrap();
        let (va, new) = store.put_dataset("support", &a, "a.jsonl").unwrap();
        assert!(new);
        assert!(!store.put_dataset("support", &a, "again.jsonl").unwrap().1);
        // Written in the same second: the newest is the one written last.
        let (vb, _) = store.put_dataset("support", &b, "b.jsonl").unwrap();
        let (info, newest) = store.dataset("support", None).unwrap().unwrap();
        assert_eq!(
            (info.version.as_str(), newest.cases.len()),
            (vb.as_str(), 2)
        );
        assert_eq!(info.balance.get("x"), Some(&1));
        let (old_info, old) = store.dataset("support", Some(&va[..6])).unwrap().unwrap();
        assert_eq!(old.cases, a.cases);
        assert_eq!((old_info.source.as_str(), old_info.cases), ("a.jsonl", 1));
        let all = store.datasets().unwrap();
        assert_eq!(
            all.iter().map(|d| d.version.as_str()).collect::<Vec<_>>(),
            [va.as_str(), vb.as_str()]
        );
        assert!(store.dataset("nope", None).unwrap().is_none());
        // Reopened (another process, another gateway): the same rows.
        assert_eq!(open(&db).unwrap().datasets().unwrap().len(), 2);
    }

    fn runs_keep_results_summaries_and_baselines(db: Db) {
        let mut store = open(&db).unwrap();
        let now = now_s();
        store
            .start_run(&run("run-1-aaa", Some("production"), now - 10))
            .unwrap();
        store
            .put_results(
                "run-1-aaa",
                &[result("c1", "returns", true), result("c2", "billing", true)],
            )
            .unwrap();
        // A running labelled run is not a baseline yet.
        assert!(
            store
                .last_labelled("production", "support")
                .unwrap()
                .is_none()
        );
        let summary = json!({"categories": {"returns": {"n": 1}}, "passed": true});
        store
            .finish_run("run-1-aaa", 2, 2, 0.002, "passed", &summary)
            .unwrap();
        store.start_run(&run("run-2-bbb", None, now)).unwrap();
        store
            .put_results(
                "run-2-bbb",
                &[result("c1", "returns", true), result("c2", "billing", true)],
            )
            .unwrap();
        // Written again (a batch retried): replaced, not doubled.
        store
            .put_results("run-2-bbb", &[result("c1", "returns", false)])
            .unwrap();
        store.put_results("run-2-bbb", &[]).unwrap();
        store
            .finish_run(
                "run-2-bbb",
                2,
                1,
                0.002,
                "failed",
                &json!({"passed": false}),
            )
            .unwrap();

        let runs = store.runs(10).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["run-2-bbb", "run-1-aaa"]
        );
        assert_eq!(
            (runs[0].cases, runs[0].passed, runs[0].status.as_str()),
            (2, 1, "failed")
        );
        assert_eq!(runs[0].cost_usd, 0.002);
        assert_eq!(runs[1].label.as_deref(), Some("production"));
        assert_eq!(store.runs(1).unwrap().len(), 1);

        let (info, got) = store.run("run-1").unwrap().unwrap();
        assert_eq!((info.id.as_str(), got), ("run-1-aaa", Some(summary)));
        assert!(store.run("run-9").unwrap().is_none());
        let e = store.run("run-").unwrap_err();
        assert!(e.contains("more than one run"), "{e}");

        let base = store.last_labelled("production", "support").unwrap();
        assert_eq!(base.map(|r| r.id).as_deref(), Some("run-1-aaa"));
        assert!(
            store
                .last_labelled("production", "other")
                .unwrap()
                .is_none()
        );

        let passes = store.passes("run-2-bbb").unwrap();
        assert_eq!((passes.len(), passes["c1"], passes["c2"]), (2, false, true));
        let all = store.results("run-2-bbb", false, 100).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| (r.id.as_str(), r.pass))
                .collect::<Vec<_>>(),
            [("c1", false), ("c2", true)],
            "failing first"
        );
        assert_eq!(
            serde_json::to_value(&all[1]).unwrap(),
            serde_json::to_value(result("c2", "billing", true)).unwrap(),
            "read back as written"
        );
        let failing = store.results("run-2-bbb", true, 100).unwrap();
        assert_eq!(failing.len(), 1);
        assert_eq!(store.results("run-2-bbb", false, 1).unwrap().len(), 1);
        let answers = store.answers("run-1-aaa").unwrap();
        assert_eq!(answers["c2"], "answer c2");
    }

    on_both_backends!(
        datasets_are_immutable_versions,
        runs_keep_results_summaries_and_baselines,
    );
}
