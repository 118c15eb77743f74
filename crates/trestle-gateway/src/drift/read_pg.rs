//! The drift windows read from the PostgreSQL store: the queries of `read` in PostgreSQL's
//! dialect (`guardrails` is JSONB, `pass` and `negative` are compared as numbers whether kept
//! as integers or booleans), and the same sampling by row id.

use postgres::Client;
use postgres::types::ToSql;

use super::read::{
    Counts, MAX_ROWS, Numbers, Seen, Source, Span, Texts, Window, last_user_message, refusal,
    stride,
};

const SCOPE: &str = "CASE WHEN prompt_version IS NOT NULL THEN 'prompt:' || prompt_version ELSE 'route:' || route END";

/// `$1` the window's start, `$2` its end, `$3` the route (or NULL).
const FILTER: &str =
    "started_at_ms >= $1 AND started_at_ms < $2 AND ($3::text IS NULL OR route = $3)";

/// A guardrail record that did not pass, in the `guardrails` JSONB array.
const GUARDRAIL_FLAGGED: &str = "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(guardrails) = 'array' THEN guardrails ELSE '[]'::jsonb END) g
     WHERE g->>'outcome' != 'pass')";

fn table_exists(client: &mut Client, name: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = ANY (current_schemas(false)) AND table_name = $1)",
            &[&name],
        )?
        .try_get(0)?)
}

/// `(scope, (requests, hits))` rows into counts.
fn counts(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> anyhow::Result<Counts> {
    let mut out = Counts::new();
    for r in client.query(sql, params)? {
        let n: i64 = r.try_get(1)?;
        let hits: i64 = r.try_get(2)?;
        out.insert(r.try_get(0)?, (n.max(0) as usize, hits.max(0) as usize));
    }
    Ok(out)
}

impl Source for Client {
    fn window(
        &mut self,
        span: Span,
        route: Option<&str>,
        max_texts: usize,
    ) -> anyhow::Result<Window> {
        if !table_exists(self, "requests")? {
            anyhow::bail!(
                "the PostgreSQL store has no requests table yet: start a gateway on it, or run `trestle migrate`"
            );
        }
        let args: [&(dyn ToSql + Sync); 3] = [&span.start_ms, &span.end_ms, &route];
        let requests: i64 = self
            .query_one(
                &format!("SELECT COUNT(*) FROM requests WHERE {FILTER}"),
                &args,
            )?
            .try_get(0)?;
        let mut w = Window {
            requests: requests.max(0) as usize,
            ..Window::default()
        };
        let every = stride(requests, MAX_ROWS);
        let rows = self.query(
            &format!(
                "SELECT route, {SCOPE}, status, tokens_in, tokens_out FROM requests \
                 WHERE {FILTER} AND id % $4 = 0"
            ),
            &[&span.start_ms, &span.end_ms, &route, &every],
        )?;
        for r in rows {
            let status: i32 = r.try_get(2)?;
            let tokens_in: i64 = r.try_get(3)?;
            let tokens_out: i64 = r.try_get(4)?;
            w.numbers.push(Numbers {
                route: r.try_get(0)?,
                scope: r.try_get(1)?,
                ok: status == 200,
                tokens_in: tokens_in.max(0) as u64,
                tokens_out: tokens_out.max(0) as u64,
            });
        }
        let with_bodies: i64 = self
            .query_one(
                &format!("SELECT COUNT(*) FROM requests WHERE {FILTER} AND request IS NOT NULL"),
                &args,
            )?
            .try_get(0)?;
        let every = stride(with_bodies, max_texts as i64);
        let rows = self.query(
            &format!(
                "SELECT route, {SCOPE}, request, CASE WHEN status = 200 THEN response END FROM requests \
                 WHERE {FILTER} AND request IS NOT NULL AND id % $4 = 0 ORDER BY id"
            ),
            &[&span.start_ms, &span.end_ms, &route, &every],
        )?;
        for r in rows {
            let request: Option<String> = r.try_get(2)?;
            let response: Option<String> = r.try_get(3)?;
            w.texts.push(Texts {
                route: r.try_get(0)?,
                scope: r.try_get(1)?,
                user: request.as_deref().and_then(last_user_message),
                refusal: response.as_deref().and_then(refusal),
            });
        }
        w.texts.truncate(max_texts);
        w.fallbacks = counts(
            self,
            &format!(
                "SELECT {SCOPE}, COUNT(*), COUNT(*) FILTER (WHERE fallback_level != 'primary') \
                 FROM requests WHERE {FILTER} GROUP BY 1"
            ),
            &args,
        )?;
        w.guardrails = counts(
            self,
            &format!(
                "SELECT {SCOPE}, COUNT(*), COUNT(*) FILTER (WHERE {GUARDRAIL_FLAGGED}) \
                 FROM requests WHERE {FILTER} GROUP BY 1"
            ),
            &args,
        )?;
        if table_exists(self, "feedback")? {
            w.feedback = counts(
                self,
                "SELECT CASE WHEN prompt_version IS NOT NULL THEN 'prompt:' || prompt_version ELSE 'route:' || COALESCE(route, '') END, \
                 COUNT(*), COUNT(*) FILTER (WHERE negative::int = 0) FROM feedback \
                 WHERE created_at_ms >= $1 AND created_at_ms < $2 AND ($3::text IS NULL OR route = $3) GROUP BY 1",
                &args,
            )?;
        }
        if table_exists(self, "eval_online_scores")? {
            w.evals = counts(
                self,
                &format!(
                    "SELECT {SCOPE}, COUNT(*), COUNT(*) FILTER (WHERE pass::int != 0) FROM eval_online_scores \
                     WHERE at_ms >= $1 AND at_ms < $2 AND ($3::text IS NULL OR route = $3) GROUP BY 1"
                ),
                &args,
            )?;
        }
        Ok(w)
    }

    fn providers(
        &mut self,
        reference: Span,
        current: Span,
        route: Option<&str>,
    ) -> anyhow::Result<Vec<Seen>> {
        let rows = self.query(
            "SELECT served_by, response_model, system_fingerprint, MIN(started_at_ms), MAX(started_at_ms), COUNT(*), \
                    COUNT(*) FILTER (WHERE started_at_ms < $2), COUNT(*) FILTER (WHERE started_at_ms >= $2) \
             FROM requests \
             WHERE started_at_ms >= $1 AND started_at_ms < $3 AND ($4::text IS NULL OR route = $4) \
               AND served_by IS NOT NULL AND cache = 'miss' \
               AND (response_model IS NOT NULL OR system_fingerprint IS NOT NULL) \
             GROUP BY 1, 2, 3 ORDER BY 4",
            &[
                &reference.start_ms,
                &current.start_ms,
                &current.end_ms,
                &route,
            ],
        )?;
        rows.iter()
            .map(|r| {
                let requests: i64 = r.try_get(5)?;
                let in_reference: i64 = r.try_get(6)?;
                let in_current: i64 = r.try_get(7)?;
                Ok(Seen {
                    target: r.try_get(0)?,
                    model: r.try_get(1)?,
                    system_fingerprint: r.try_get(2)?,
                    first_seen_ms: r.try_get(3)?,
                    last_seen_ms: r.try_get(4)?,
                    requests: requests.max(0) as usize,
                    in_reference: in_reference > 0,
                    in_current: in_current > 0,
                })
            })
            .collect()
    }
}
