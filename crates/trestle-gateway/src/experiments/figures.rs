//! The figures an experiment's readout needs, read from the store on either backend: per
//! variant its traffic (from `requests`), its feedback sums (from `feedback`) and the
//! built-in rates (with `eval_online_scores`). Only the SQL differs between backends; what
//! the readout makes of the figures is in `readout`.

use rusqlite::{Connection, OptionalExtension, params};

/// A variant's traffic: counts, cost sums and every latency, in ascending order.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Traffic {
    pub n: i64,
    pub errors: i64,
    pub fallbacks: i64,
    pub guardrails: i64,
    pub cost: f64,
    pub cost_sq: f64,
    pub latencies: Vec<f64>,
}

/// Sums over a variant's feedback of one name.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sums {
    pub n: i64,
    pub sum: f64,
    pub sumsq: f64,
    /// Feedback that was not negative.
    pub positive: i64,
}

/// The built-in rates (see `readout::built_in_rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BuiltIn {
    /// Regenerations per answer.
    Regenerated,
    /// The online-eval pass rate.
    OnlineEval,
    /// Answers with positive explicit feedback whose online eval passed, of those scored.
    QualityEngagement,
}

/// Where the figures come from.
pub(super) trait Figures {
    /// Whether `table` exists with `column` (a store without feedback has no table).
    fn has(&mut self, table: &str, column: &str) -> bool;
    /// When the experiment's first request started.
    fn started_ms(&mut self, experiment: &str) -> Result<Option<i64>, String>;
    fn traffic(&mut self, experiment: &str, variant: &str) -> Result<Traffic, String>;
    fn feedback(&mut self, experiment: &str, variant: &str, name: &str) -> Result<Sums, String>;
    /// (n, successes) of a built-in rate; the tables it reads exist.
    fn built_in(
        &mut self,
        experiment: &str,
        variant: &str,
        rate: BuiltIn,
    ) -> Result<(i64, i64), String>;
}

fn sqlite_error(e: rusqlite::Error) -> String {
    format!("experiments: {e}")
}

impl Figures for Connection {
    fn has(&mut self, table: &str, column: &str) -> bool {
        self.prepare(&format!("SELECT {column} FROM {table} LIMIT 0"))
            .is_ok()
    }

    fn started_ms(&mut self, experiment: &str) -> Result<Option<i64>, String> {
        self.query_row(
            "SELECT MIN(started_at_ms) FROM requests WHERE experiment = ?1",
            [experiment],
            |r| r.get(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(sqlite_error)
    }

    fn traffic(&mut self, experiment: &str, variant: &str) -> Result<Traffic, String> {
        let mut t: Traffic = self
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(status >= 500), 0), COALESCE(SUM(fallback_level NOT IN ('primary', 'model')), 0),
                        COALESCE(SUM(guardrails IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(guardrails) g WHERE json_extract(g.value, '$.outcome') != 'pass')), 0),
                        COALESCE(SUM(cost_usd), 0), COALESCE(SUM(cost_usd * cost_usd), 0)
                 FROM requests WHERE experiment = ?1 AND variant = ?2",
                params![experiment, variant],
                |r| {
                    Ok(Traffic {
                        n: r.get(0)?,
                        errors: r.get(1)?,
                        fallbacks: r.get(2)?,
                        guardrails: r.get(3)?,
                        cost: r.get(4)?,
                        cost_sq: r.get(5)?,
                        latencies: Vec::new(),
                    })
                },
            )
            .map_err(sqlite_error)?;
        let mut st = self
            .prepare("SELECT duration_ms FROM requests WHERE experiment = ?1 AND variant = ?2 ORDER BY duration_ms")
            .map_err(sqlite_error)?;
        t.latencies = st
            .query_map(params![experiment, variant], |r| r.get(0))
            .map_err(sqlite_error)?
            .filter_map(Result::ok)
            .collect();
        Ok(t)
    }

    fn feedback(&mut self, experiment: &str, variant: &str, name: &str) -> Result<Sums, String> {
        self.query_row(
            "SELECT COUNT(*), COALESCE(SUM(value_num), 0), COALESCE(SUM(value_num * value_num), 0), COALESCE(SUM(negative = 0), 0)
             FROM feedback WHERE experiment = ?1 AND variant = ?2 AND name = ?3",
            params![experiment, variant, name],
            |r| {
                Ok(Sums {
                    n: r.get(0)?,
                    sum: r.get(1)?,
                    sumsq: r.get(2)?,
                    positive: r.get(3)?,
                })
            },
        )
        .map_err(sqlite_error)
    }

    fn built_in(
        &mut self,
        experiment: &str,
        variant: &str,
        rate: BuiltIn,
    ) -> Result<(i64, i64), String> {
        let sql = match rate {
            BuiltIn::Regenerated => {
                "SELECT (SELECT COUNT(*) FROM requests WHERE experiment = ?1 AND variant = ?2),
                        (SELECT COUNT(DISTINCT trace_id) FROM feedback WHERE experiment = ?1 AND variant = ?2 AND name = 'regenerated')"
            }
            BuiltIn::OnlineEval => {
                "SELECT COUNT(*), COALESCE(SUM(o.pass), 0) FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id
                 WHERE r.experiment = ?1 AND r.variant = ?2"
            }
            BuiltIn::QualityEngagement => {
                "SELECT COUNT(*), COALESCE(SUM(o.pass = 1 AND EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = o.trace_id AND f.source = 'api' AND f.negative = 0)), 0)
                 FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id WHERE r.experiment = ?1 AND r.variant = ?2"
            }
        };
        self.query_row(sql, params![experiment, variant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite_error)
    }
}

fn pg_error(e: postgres::Error) -> String {
    format!("experiments (PostgreSQL): {e}")
}

/// A guardrail record that did not pass, in a `guardrails` JSONB array.
const PG_GUARDRAIL_FLAGGED: &str = "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(guardrails) = 'array' THEN guardrails ELSE '[]'::jsonb END) g
     WHERE g->>'outcome' != 'pass')";

/// On PostgreSQL, `feedback.negative` is compared as a number, whether it is kept as an
/// integer or a boolean.
impl Figures for postgres::Client {
    fn has(&mut self, table: &str, column: &str) -> bool {
        self.query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = ANY (current_schemas(false)) AND table_name = $1 AND column_name = $2)",
            &[&table, &column],
        )
        .and_then(|r| r.try_get(0))
        .unwrap_or(false)
    }

    fn started_ms(&mut self, experiment: &str) -> Result<Option<i64>, String> {
        self.query_one(
            "SELECT MIN(started_at_ms) FROM requests WHERE experiment = $1",
            &[&experiment],
        )
        .and_then(|r| r.try_get(0))
        .map_err(pg_error)
    }

    fn traffic(&mut self, experiment: &str, variant: &str) -> Result<Traffic, String> {
        let sql = format!(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status >= 500),
                    COUNT(*) FILTER (WHERE fallback_level NOT IN ('primary', 'model')),
                    COUNT(*) FILTER (WHERE guardrails IS NOT NULL AND {PG_GUARDRAIL_FLAGGED}),
                    COALESCE(SUM(cost_usd), 0)::float8, COALESCE(SUM(cost_usd * cost_usd), 0)::float8
             FROM requests WHERE experiment = $1 AND variant = $2"
        );
        let r = self
            .query_one(&sql, &[&experiment, &variant])
            .map_err(pg_error)?;
        let latencies = self
            .query(
                "SELECT duration_ms::float8 FROM requests WHERE experiment = $1 AND variant = $2 ORDER BY duration_ms",
                &[&experiment, &variant],
            )
            .map_err(pg_error)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(pg_error)?;
        Ok(Traffic {
            n: r.try_get(0).map_err(pg_error)?,
            errors: r.try_get(1).map_err(pg_error)?,
            fallbacks: r.try_get(2).map_err(pg_error)?,
            guardrails: r.try_get(3).map_err(pg_error)?,
            cost: r.try_get(4).map_err(pg_error)?,
            cost_sq: r.try_get(5).map_err(pg_error)?,
            latencies,
        })
    }

    fn feedback(&mut self, experiment: &str, variant: &str, name: &str) -> Result<Sums, String> {
        let r = self
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(value_num), 0)::float8, COALESCE(SUM(value_num * value_num), 0)::float8,
                        COUNT(*) FILTER (WHERE negative::int = 0)
                 FROM feedback WHERE experiment = $1 AND variant = $2 AND name = $3",
                &[&experiment, &variant, &name],
            )
            .map_err(pg_error)?;
        Ok(Sums {
            n: r.try_get(0).map_err(pg_error)?,
            sum: r.try_get(1).map_err(pg_error)?,
            sumsq: r.try_get(2).map_err(pg_error)?,
            positive: r.try_get(3).map_err(pg_error)?,
        })
    }

    fn built_in(
        &mut self,
        experiment: &str,
        variant: &str,
        rate: BuiltIn,
    ) -> Result<(i64, i64), String> {
        let sql = match rate {
            BuiltIn::Regenerated => {
                "SELECT (SELECT COUNT(*) FROM requests WHERE experiment = $1 AND variant = $2),
                        (SELECT COUNT(DISTINCT trace_id) FROM feedback WHERE experiment = $1 AND variant = $2 AND name = 'regenerated')"
            }
            BuiltIn::OnlineEval => {
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE o.pass) FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id
                 WHERE r.experiment = $1 AND r.variant = $2"
            }
            BuiltIn::QualityEngagement => {
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE o.pass AND EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = o.trace_id AND f.source = 'api' AND f.negative::int = 0))
                 FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id WHERE r.experiment = $1 AND r.variant = $2"
            }
        };
        let r = self
            .query_one(sql, &[&experiment, &variant])
            .map_err(pg_error)?;
        Ok((
            r.try_get(0).map_err(pg_error)?,
            r.try_get(1).map_err(pg_error)?,
        ))
    }
}
