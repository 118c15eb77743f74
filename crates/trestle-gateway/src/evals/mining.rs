//! Failure mining (`trestle dataset mine`) on either backend: SQLite through
//! `trestle_eval::mine`, or PostgreSQL here, with the same query in PostgreSQL's dialect.
//! Both make candidates with `trestle_eval::mine::TraceRow::candidate`.

use trestle_eval::mine::{self, Candidate, MineOptions, TraceRow};

use crate::db::{Db, off_runtime};

/// Candidate cases from the traces in `db` (read only). Blocks; may be called from inside
/// the async runtime.
pub fn mine(db: &Db, opts: &MineOptions) -> Result<Vec<Candidate>, String> {
    match db {
        Db::Sqlite(path) => mine::mine(path, opts),
        Db::Postgres(pool) => {
            let rows = off_runtime(|| pool.with(|c| pg_rows(c, opts)))
                .map_err(|e| format!("mining (PostgreSQL at {}): {e:#}", pool.address()))?;
            let Some(rows) = rows else {
                return Err(format!(
                    "the PostgreSQL database at {} has no traces (is it the gateway's [store] url?)",
                    pool.address()
                ));
            };
            Ok(rows
                .into_iter()
                .filter_map(|r| r.candidate(opts.min_confidence))
                .collect())
        }
    }
}

/// The traces worth a look; `None` when the database has no `requests` table.
fn pg_rows(c: &mut postgres::Client, opts: &MineOptions) -> anyhow::Result<Option<Vec<TraceRow>>> {
    let tables = c.query_one(
        "SELECT to_regclass('requests') IS NOT NULL, to_regclass('feedback') IS NOT NULL,
                to_regclass('eval_online_scores') IS NOT NULL",
        &[],
    )?;
    let (requests, feedback, online): (bool, bool, bool) =
        (tables.try_get(0)?, tables.try_get(1)?, tables.try_get(2)?);
    if !requests {
        return Ok(None);
    }
    // Tables other parts of Trestle add (feedback, online evals) join in when present.
    let fb = if feedback {
        "SELECT trace_id, string_agg(CASE WHEN negative THEN name END, ',') AS negative,
                MAX(correction) AS correction FROM feedback GROUP BY trace_id"
    } else {
        "SELECT NULL::text AS trace_id, NULL::text AS negative, NULL::text AS correction"
    };
    let oe = if online {
        "SELECT trace_id, MIN(pass::int)::bigint AS pass FROM eval_online_scores GROUP BY trace_id"
    } else {
        "SELECT NULL::text AS trace_id, NULL::bigint AS pass"
    };
    let sql = format!(
        "SELECT r.trace_id, r.route, r.started_at_ms, r.status::bigint, r.error, r.fallback_level,
                r.guardrails::text, r.confidence, r.request, r.response, fb.negative, fb.correction, oe.pass
         FROM requests r
         LEFT JOIN ({fb}) fb ON fb.trace_id = r.trace_id
         LEFT JOIN ({oe}) oe ON oe.trace_id = r.trace_id
         WHERE r.started_at_ms >= $1 AND r.request IS NOT NULL AND ($2::text IS NULL OR r.route = $2)
           AND (r.status >= 500 OR r.fallback_level IN ('cache', 'template', 'omitted')
                OR EXISTS (SELECT 1 FROM jsonb_array_elements(
                       CASE WHEN jsonb_typeof(r.guardrails) = 'array' THEN r.guardrails ELSE '[]'::jsonb END) g
                       WHERE g->>'outcome' != 'pass')
                OR r.confidence < $3 OR fb.negative IS NOT NULL OR fb.correction IS NOT NULL OR oe.pass = 0)
         ORDER BY r.started_at_ms DESC LIMIT $4"
    );
    let limit = i64::try_from(opts.limit).unwrap_or(i64::MAX);
    let rows = c.query(
        &sql,
        &[&opts.since_ms, &opts.route, &opts.min_confidence, &limit],
    )?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(TraceRow {
                trace_id: r.try_get(0)?,
                route: r.try_get(1)?,
                started_at_ms: r.try_get(2)?,
                status: r.try_get(3)?,
                error: r.try_get(4)?,
                fallback_level: r.try_get(5)?,
                guardrails: r.try_get(6)?,
                confidence: r.try_get(7)?,
                request: r.try_get(8)?,
                response: r.try_get(9)?,
                negative_feedback: r.try_get(10)?,
                correction: r.try_get(11)?,
                online_pass: r.try_get(12)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(rows))
}
