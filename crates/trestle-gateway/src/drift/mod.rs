//! Drift monitoring and alerts (docs/observability.md, "Drift and alerts"), off the request
//! path: a report compares a current window of traffic with a reference window, on demand
//! (`GET /v1/drift`, `trestle drift report`) and on a schedule (`[drift] interval`), and
//! the schedule turns drifted signals into alerts (`GET /v1/alerts`, a webhook).
//!
//! - [`read`]: the windows from the trace store (SQLite; PostgreSQL in `read_pg`);
//! - [`report`]: the signals and their verdicts (the statistics are `trestle_eval::drift`);
//! - [`alerts`]: alert state in the store, deduplicated and resolved, and webhook delivery;
//! - [`api`]: the endpoints and the scheduled monitor.

pub mod alerts;
pub mod api;
pub mod read;
mod read_pg;
pub mod report;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use trestle_core::drift::DriftConfig;

use crate::cache::embed::Embedder;
use crate::db::Db;
pub use report::Report;

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Query {
    /// The current window's length.
    pub window: Duration,
    /// The reference window's length, just before the current one.
    pub reference: Duration,
    /// Where the current window ends (default now), Unix ms.
    pub end_ms: Option<i64>,
    /// Only this route.
    pub route: Option<String>,
}

impl Query {
    /// The configured windows, ending now, every route.
    pub fn from_config(config: &DriftConfig) -> Query {
        Query {
            window: config.window,
            reference: config.reference,
            end_ms: None,
            route: None,
        }
    }

    /// (reference, current).
    fn spans(&self, now_ms: i64) -> (read::Span, read::Span) {
        let end = self.end_ms.unwrap_or(now_ms);
        let start = end - self.window.as_millis() as i64;
        let ref_start = start - self.reference.as_millis() as i64;
        (
            read::Span {
                start_ms: ref_start,
                end_ms: start,
            },
            read::Span {
                start_ms: start,
                end_ms: end,
            },
        )
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A read-only connection to the trace store.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the trace store {}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The windows and provider pairs of a query.
struct Read {
    spans: (read::Span, read::Span),
    reference: read::Window,
    current: read::Window,
    seen: Vec<read::Seen>,
}

fn read_all(
    src: &mut dyn read::Source,
    config: &DriftConfig,
    query: &Query,
    now: i64,
) -> anyhow::Result<Read> {
    let spans = query.spans(now);
    let route = query.route.as_deref();
    Ok(Read {
        spans,
        reference: src.window(spans.0, route, config.max_texts)?,
        current: src.window(spans.1, route, config.max_texts)?,
        seen: src.providers(spans.0, spans.1, route)?,
    })
}

/// Reads a query's windows from the store `db`. Blocks: call it off the async runtime.
fn read_db(db: &Db, config: &DriftConfig, query: &Query, now: i64) -> anyhow::Result<Read> {
    match db {
        Db::Sqlite(path) => read_all(&mut open(path)?, config, query, now),
        Db::Postgres(pool) => pool.with(|client| read_all(client, config, query, now)),
    }
}

fn build(
    read: &Read,
    config: &DriftConfig,
    query: &Query,
    vectors: Option<report::Vectors>,
    now: i64,
) -> Report {
    report::build(report::Inputs {
        config,
        route: query.route.clone(),
        spans: read.spans,
        windows: (&read.reference, &read.current),
        seen: read.seen.clone(),
        vectors,
        now_ms: now,
    })
}

/// A report computed on this thread from an open store, with TF-IDF topic features.
pub fn compute(
    src: &mut dyn read::Source,
    config: &DriftConfig,
    query: &Query,
) -> anyhow::Result<Report> {
    let now = now_ms();
    let read = read_all(src, config, query, now)?;
    Ok(build(&read, config, query, None, now))
}

/// A report from the store at `db`: reads and statistics off the async runtime; the user
/// texts are embedded with `embedder` (its name, and it) when given, else topic drift uses
/// TF-IDF. An embedder that fails falls back to TF-IDF, with a warning.
pub async fn run(
    db: Db,
    config: DriftConfig,
    query: Query,
    embedder: Option<(String, Embedder)>,
) -> anyhow::Result<Report> {
    let now = now_ms();
    let (c, q) = (config.clone(), query.clone());
    let read = tokio::task::spawn_blocking(move || read_db(&db, &c, &q, now)).await??;
    let vectors = match embedder {
        None => None,
        Some((name, e)) => match embed(&e, &read).await {
            Ok((reference, current)) => Some(report::Vectors {
                reference,
                current,
                embedder: name,
            }),
            Err(err) => {
                tracing::warn!(embedder = %name, error = %err, "drift: embedding failed; topic drift uses TF-IDF");
                None
            }
        },
    };
    Ok(tokio::task::spawn_blocking(move || build(&read, &config, &query, vectors, now)).await?)
}

type Embedded = Vec<Option<Vec<f32>>>;

/// The user texts of both windows, embedded in batches.
async fn embed(embedder: &Embedder, read: &Read) -> Result<(Embedded, Embedded), String> {
    let mut out = Vec::new();
    for w in [&read.reference, &read.current] {
        let texts: Vec<(usize, String)> = w
            .texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.user.clone()?)))
            .collect();
        let mut vectors: Embedded = vec![None; w.texts.len()];
        for batch in texts.chunks(64) {
            let got = embedder
                .embed_many(batch.iter().map(|(_, t)| t.clone()).collect())
                .await?;
            if got.len() != batch.len() {
                return Err(format!("{} vectors for {} texts", got.len(), batch.len()));
            }
            for ((i, _), v) in batch.iter().zip(got) {
                vectors[*i] = Some(v);
            }
        }
        out.push(vectors);
    }
    let current = out.pop().unwrap_or_default();
    let reference = out.pop().unwrap_or_default();
    Ok((reference, current))
}

#[cfg(test)]
mod tests;
