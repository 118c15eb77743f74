//! Evals in production: each scored sample of live traffic, and the daily aggregates per
//! route, prompt version and category read back from them (`GET /v1/evals/online`), in the
//! trace store's SQLite file.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::assertion::Outcome;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS eval_online_scores (
    trace_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    day TEXT NOT NULL,
    route TEXT NOT NULL,
    prompt_version TEXT,
    category TEXT NOT NULL,
    pass INTEGER NOT NULL,
    scores TEXT,
    outcomes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_online_day ON eval_online_scores (day, route);
CREATE INDEX IF NOT EXISTS eval_online_trace ON eval_online_scores (trace_id);
";

/// One scored answer.
#[derive(Debug, Clone)]
pub struct OnlineScore {
    pub trace_id: String,
    pub at_ms: i64,
    pub route: String,
    pub prompt_version: Option<String>,
    pub category: String,
    pub outcomes: Vec<Outcome>,
}

impl OnlineScore {
    pub fn pass(&self) -> bool {
        self.outcomes.iter().all(|o| o.pass)
    }
}

/// A day's figures for one route, prompt version and category.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DailyAggregate {
    pub day: String,
    pub route: String,
    pub prompt_version: Option<String>,
    pub category: String,
    pub scored: u64,
    pub passed: u64,
    pub pass_rate: f64,
    /// Mean judge score per criterion.
    pub judge_means: BTreeMap<String, f64>,
    /// Pass rate per assertion type.
    pub by_assertion: BTreeMap<String, f64>,
}

pub struct OnlineStore {
    conn: Connection,
}

impl OnlineStore {
    pub fn open(path: &Path) -> Result<OnlineStore, String> {
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)
        };
        setup().map_err(|e| format!("online evals store: {e}"))?;
        Ok(OnlineStore { conn })
    }

    pub fn insert(&mut self, scores: &[OnlineScore]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO eval_online_scores (trace_id, at_ms, day, route, prompt_version, category, pass, scores, outcomes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db)?;
            for s in scores {
                let judge: BTreeMap<&String, &f64> =
                    s.outcomes.iter().flat_map(|o| o.scores.iter()).collect();
                let judge =
                    (!judge.is_empty()).then(|| serde_json::to_string(&judge).unwrap_or_default());
                st.execute(params![
                    s.trace_id,
                    s.at_ms,
                    crate::store::utc(s.at_ms / 1000)[..10].to_string(),
                    s.route,
                    s.prompt_version,
                    s.category,
                    s.pass(),
                    judge,
                    serde_json::to_string(&s.outcomes).unwrap_or_default()
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Daily figures from `since_day` (`YYYY-MM-DD`) on, optionally for one route.
    pub fn daily(
        &self,
        since_day: &str,
        route: Option<&str>,
    ) -> Result<Vec<DailyAggregate>, String> {
        let mut st = self
            .conn
            .prepare(
                "SELECT day, route, prompt_version, category, COUNT(*), SUM(pass)
                 FROM eval_online_scores WHERE day >= ?1 AND (?2 IS NULL OR route = ?2)
                 GROUP BY day, route, prompt_version, category ORDER BY day, route, category",
            )
            .map_err(db)?;
        let mut out: Vec<DailyAggregate> = st
            .query_map(params![since_day, route], |r| {
                let scored: i64 = r.get(4)?;
                let passed: i64 = r.get(5)?;
                Ok(DailyAggregate {
                    day: r.get(0)?,
                    route: r.get(1)?,
                    prompt_version: r.get(2)?,
                    category: r.get(3)?,
                    scored: scored as u64,
                    passed: passed as u64,
                    pass_rate: passed as f64 / scored.max(1) as f64,
                    judge_means: BTreeMap::new(),
                    by_assertion: BTreeMap::new(),
                })
            })
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        // Judge means and per-assertion pass rates, from the JSON columns.
        let mut judge = self.breakdown("scores", "j.key", "j.value", since_day, route)?;
        let mut kinds = self.breakdown(
            "outcomes",
            "json_extract(j.value, '$.type')",
            "json_extract(j.value, '$.pass')",
            since_day,
            route,
        )?;
        for a in &mut out {
            let key = (
                a.day.clone(),
                a.route.clone(),
                a.prompt_version.clone(),
                a.category.clone(),
            );
            a.judge_means = judge.remove(&key).unwrap_or_default();
            a.by_assertion = kinds.remove(&key).unwrap_or_default();
        }
        Ok(out)
    }
}

/// A day, route, prompt version and category.
type GroupKey = (String, String, Option<String>, String);

impl OnlineStore {
    /// Means of `value` by `key` over the elements of a JSON column, per group.
    fn breakdown(
        &self,
        column: &str,
        key: &str,
        value: &str,
        since_day: &str,
        route: Option<&str>,
    ) -> Result<BTreeMap<GroupKey, BTreeMap<String, f64>>, String> {
        let sql = format!(
            "SELECT day, route, prompt_version, category, {key}, AVG({value})
             FROM eval_online_scores, json_each(eval_online_scores.{column}) j
             WHERE day >= ?1 AND (?2 IS NULL OR route = ?2) AND {column} IS NOT NULL
             GROUP BY day, route, prompt_version, category, {key}"
        );
        let mut st = self.conn.prepare(&sql).map_err(db)?;
        let rows = st
            .query_map(params![since_day, route], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                    r.get::<_, String>(4)?,
                    r.get::<_, f64>(5)?,
                ))
            })
            .map_err(db)?;
        let mut out: BTreeMap<GroupKey, BTreeMap<String, f64>> = BTreeMap::new();
        for row in rows {
            let (group, name, mean) = row.map_err(db)?;
            out.entry(group).or_default().insert(name, mean);
        }
        Ok(out)
    }
}

fn db(e: rusqlite::Error) -> String {
    format!("online evals store: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_aggregates_per_route_and_category() {
        let dir = std::env::temp_dir().join(format!("trestle-online-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = OnlineStore::open(&dir.join("t.db")).unwrap();
        let day_ms = 1_795_651_200_000; // 2026-11-26
        let judged = |pass: bool, accuracy: f64| {
            let mut o = Outcome::new("judge", pass, Some(accuracy), "");
            o.scores.insert("accuracy".into(), accuracy);
            o
        };
        let score = |id: &str, cat: &str, outcomes: Vec<Outcome>| OnlineScore {
            trace_id: id.into(),
            at_ms: day_ms + 3_600_000,
            route: "support".into(),
            prompt_version: None,
            category: cat.into(),
            outcomes,
        };
        store
            .insert(&[
                score(
                    "a",
                    "returns",
                    vec![judged(true, 5.0), Outcome::new("contains", true, None, "")],
                ),
                score(
                    "b",
                    "returns",
                    vec![judged(false, 2.0), Outcome::new("contains", true, None, "")],
                ),
                score(
                    "c",
                    "billing",
                    vec![Outcome::new("contains", false, None, "")],
                ),
            ])
            .unwrap();
        let daily = store.daily("2026-11-26", None).unwrap();
        assert_eq!(daily.len(), 2);
        let returns = daily.iter().find(|d| d.category == "returns").unwrap();
        assert_eq!(
            (returns.scored, returns.passed, returns.day.as_str()),
            (2, 1, "2026-11-26")
        );
        assert_eq!(returns.judge_means["accuracy"], 3.5);
        assert_eq!(returns.by_assertion["judge"], 0.5);
        assert_eq!(returns.by_assertion["contains"], 1.0);
        assert!(store.daily("2026-11-27", None).unwrap().is_empty());
        assert!(store.daily("2026-11-01", Some("other")).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
