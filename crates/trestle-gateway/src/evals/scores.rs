//! Where online eval scores are kept (`eval_online_scores`), on either backend: SQLite
//! through `trestle_eval::online::OnlineStore`, as before, or PostgreSQL, where several
//! gateways write one table and `GET /v1/evals/online` reads every gateway's scores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use trestle_eval::online::{DailyAggregate, OnlineScore, OnlineStore};

use crate::db::{Db, PgPool};

/// The PostgreSQL steps of component `online_evals`. `scores` holds the judge's score per
/// criterion, `outcomes` every assertion's outcome.
const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE IF NOT EXISTS eval_online_scores (
    trace_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    day TEXT NOT NULL,
    route TEXT NOT NULL,
    prompt_version TEXT,
    category TEXT NOT NULL,
    pass BOOLEAN NOT NULL,
    scores JSONB,
    outcomes JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_online_day ON eval_online_scores (day, route);
CREATE INDEX IF NOT EXISTS eval_online_trace ON eval_online_scores (trace_id);
CREATE INDEX IF NOT EXISTS eval_online_at ON eval_online_scores (at_ms);
",
)];

/// Brings the PostgreSQL table of online evals up to date (also done on open).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("online_evals", PG_MIGRATIONS)
}

/// The scores of one store, open.
pub enum OnlineScores {
    Sqlite(Mutex<OnlineStore>),
    Postgres(Arc<PgPool>),
}

impl OnlineScores {
    /// Opens (creating the table if needed) the scores in `db`. Blocks: call it off the
    /// async runtime.
    pub fn open(db: &Db) -> Result<OnlineScores, String> {
        match db {
            Db::Sqlite(path) => Ok(OnlineScores::Sqlite(Mutex::new(OnlineStore::open(path)?))),
            Db::Postgres(pool) => {
                migrate(pool).map_err(pg_error)?;
                Ok(OnlineScores::Postgres(pool.clone()))
            }
        }
    }

    /// Writes scores, in one transaction. Blocks: call it off the async runtime.
    pub fn insert(&self, scores: &[OnlineScore]) -> Result<(), String> {
        match self {
            OnlineScores::Sqlite(store) => store
                .lock()
                .map_err(|_| "online evals store: lock poisoned".to_string())?
                .insert(scores),
            OnlineScores::Postgres(pool) => pool.with(|c| pg_insert(c, scores)).map_err(pg_error),
        }
    }

    /// Daily figures from `since_day` (`YYYY-MM-DD`) on, optionally for one route. Blocks:
    /// call it off the async runtime.
    pub fn daily(
        &self,
        since_day: &str,
        route: Option<&str>,
    ) -> Result<Vec<DailyAggregate>, String> {
        match self {
            OnlineScores::Sqlite(store) => store
                .lock()
                .map_err(|_| "online evals store: lock poisoned".to_string())?
                .daily(since_day, route),
            OnlineScores::Postgres(pool) => pool
                .with(|c| pg_daily(c, since_day, route))
                .map_err(pg_error),
        }
    }
}

/// The daily figures of the scores in `db` (see [`OnlineScores::daily`]).
pub fn daily(db: &Db, since_day: &str, route: Option<&str>) -> Result<Vec<DailyAggregate>, String> {
    OnlineScores::open(db)?.daily(since_day, route)
}

fn pg_error(e: anyhow::Error) -> String {
    format!("online evals store (PostgreSQL): {e:#}")
}

/// `YYYY-MM-DD` (UTC) of a time in ms.
fn day_of(at_ms: i64) -> String {
    let stamp = trestle_eval::store::utc(at_ms.div_euclid(1000));
    stamp.get(..10).unwrap_or(&stamp).to_string()
}

fn pg_insert(client: &mut postgres::Client, scores: &[OnlineScore]) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    let st = tx.prepare(
        "INSERT INTO eval_online_scores (trace_id, at_ms, day, route, prompt_version, category, pass, scores, outcomes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb)",
    )?;
    for s in scores {
        let judge: BTreeMap<&String, &f64> =
            s.outcomes.iter().flat_map(|o| o.scores.iter()).collect();
        let judge = (!judge.is_empty()).then(|| serde_json::to_string(&judge).unwrap_or_default());
        let outcomes = serde_json::to_string(&s.outcomes)?;
        tx.execute(
            &st,
            &[
                &s.trace_id,
                &s.at_ms,
                &day_of(s.at_ms),
                &s.route,
                &s.prompt_version,
                &s.category,
                &s.pass(),
                &judge,
                &outcomes,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A day, route, prompt version and category.
type GroupKey = (String, String, Option<String>, String);

/// The filter every daily query shares: `$1` the first day, `$2` the route (or NULL).
const PG_FILTER: &str = "day >= $1 AND ($2::text IS NULL OR route = $2)";

fn pg_daily(
    client: &mut postgres::Client,
    since_day: &str,
    route: Option<&str>,
) -> anyhow::Result<Vec<DailyAggregate>> {
    let rows = client.query(
        &format!(
            "SELECT day, route, prompt_version, category, COUNT(*), COUNT(*) FILTER (WHERE pass)
             FROM eval_online_scores WHERE {PG_FILTER}
             GROUP BY day, route, prompt_version, category ORDER BY day, route, category"
        ),
        &[&since_day, &route],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let scored: i64 = r.try_get(4)?;
        let passed: i64 = r.try_get(5)?;
        out.push(DailyAggregate {
            day: r.try_get(0)?,
            route: r.try_get(1)?,
            prompt_version: r.try_get(2)?,
            category: r.try_get(3)?,
            scored: scored.max(0) as u64,
            passed: passed.max(0) as u64,
            pass_rate: passed as f64 / scored.max(1) as f64,
            judge_means: BTreeMap::new(),
            by_assertion: BTreeMap::new(),
        });
    }
    // Judge means per criterion, and pass rates per assertion type, from the JSON columns
    // (a value that is not a number, or an outcome without a type, is left out).
    let mut judge = pg_breakdown(
        client,
        "jsonb_each(CASE WHEN jsonb_typeof(scores) = 'object' THEN scores ELSE '{}'::jsonb END) AS j(key, value)",
        "j.key",
        "CASE WHEN jsonb_typeof(j.value) = 'number' THEN (j.value)::float8 END",
        since_day,
        route,
    )?;
    let mut kinds = pg_breakdown(
        client,
        "jsonb_array_elements(CASE WHEN jsonb_typeof(outcomes) = 'array' THEN outcomes ELSE '[]'::jsonb END) AS j(value)",
        "j.value->>'type'",
        "CASE j.value->'pass' WHEN 'true'::jsonb THEN 1.0 WHEN 'false'::jsonb THEN 0.0 END",
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

/// Means of `value` by `key` over the elements `each` makes of a JSON column, per group.
fn pg_breakdown(
    client: &mut postgres::Client,
    each: &str,
    key: &str,
    value: &str,
    since_day: &str,
    route: Option<&str>,
) -> anyhow::Result<BTreeMap<GroupKey, BTreeMap<String, f64>>> {
    let sql = format!(
        "SELECT day, route, prompt_version, category, {key}, AVG({value})::float8
         FROM eval_online_scores, {each}
         WHERE {PG_FILTER} AND {key} IS NOT NULL
         GROUP BY day, route, prompt_version, category, {key}
         HAVING COUNT({value}) > 0"
    );
    let mut out: BTreeMap<GroupKey, BTreeMap<String, f64>> = BTreeMap::new();
    for r in client.query(&sql, &[&since_day, &route])? {
        let group = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        out.entry(group)
            .or_default()
            .insert(r.try_get(4)?, r.try_get(5)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use trestle_eval::assertion::Outcome;

    use super::*;

    pub(crate) fn sqlite() -> Option<Db> {
        let dir = std::env::temp_dir().join(format!(
            "trestle-online-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Some(Db::Sqlite(dir.join("t.db")))
    }

    pub(crate) fn postgres() -> Option<Db> {
        let url = crate::store::pg_server::database()?;
        Some(Db::Postgres(Arc::new(PgPool::open(&url, 2).unwrap())))
    }

    fn daily_aggregates_per_route_and_category(db: Option<Db>) {
        let Some(db) = db else { return };
        let store = OnlineScores::open(&db).unwrap();
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
        store.insert(&[]).unwrap();
        let daily = daily(&db, "2026-11-26", None).unwrap();
        assert_eq!(daily.len(), 2);
        let returns = daily.iter().find(|d| d.category == "returns").unwrap();
        assert_eq!(
            (returns.scored, returns.passed, returns.day.as_str()),
            (2, 1, "2026-11-26")
        );
        assert_eq!(returns.pass_rate, 0.5);
        assert_eq!(returns.judge_means["accuracy"], 3.5);
        assert_eq!(returns.by_assertion["judge"], 0.5);
        assert_eq!(returns.by_assertion["contains"], 1.0);
        let billing = daily.iter().find(|d| d.category == "billing").unwrap();
        assert!(billing.judge_means.is_empty());
        assert_eq!(billing.by_assertion["contains"], 0.0);
        assert!(store.daily("2026-11-27", None).unwrap().is_empty());
        assert!(store.daily("2026-11-01", Some("other")).unwrap().is_empty());
        assert_eq!(store.daily("2026-11-01", Some("support")).unwrap().len(), 2);
    }

    #[test]
    fn daily_aggregates_on_sqlite() {
        daily_aggregates_per_route_and_category(sqlite());
    }

    #[test]
    fn daily_aggregates_on_postgres() {
        daily_aggregates_per_route_and_category(postgres());
    }
}
