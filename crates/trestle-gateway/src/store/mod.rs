//! Traces and where they are kept. A backend implements [`TraceStore`]; the [`Recorder`]
//! feeds it in batches from a background thread, never from the request path.

mod filter;
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]
pub mod pg_server;
mod postgres;
mod recorder;
mod sqlite;
#[cfg(test)]
mod suite;
mod trace;
pub(crate) mod views;

pub use postgres::{PostgresStore, write_app_spans};
pub use recorder::{Recorder, RecorderStats};
#[cfg(test)]
pub(crate) use sqlite::tests::sample as sqlite_sample;
/// A filled-in trace for other modules' tests.
#[cfg(test)]
pub(crate) use sqlite::tests::sample as sample_trace;
pub use sqlite::{SqliteStore, now_ms};
pub use trace::{Attempt, Body, InputBudget, Trace, TraceFilter, TraceSummary};
pub use views::{
    ConversationTurn, RouteStats, answer_text, question_text, retain_tenant, scoped_trace,
};

/// Rewrites a text before it is stored (the `[store] redact` guardrails).
pub type Redactor = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Something that sees every batch of traces the recorder's writer takes, just before the
/// batch is written (the OTLP exporter). It runs on the writer thread: it must not block.
pub trait TraceSink: Send {
    fn take(&mut self, traces: &[Trace]);
}

/// A store that keeps nothing: the recorder still runs for its sink when `[store]` is off.
pub struct Discard;

impl TraceStore for Discard {
    fn write_batch(&mut self, _: &[Trace]) -> anyhow::Result<()> {
        Ok(())
    }
    fn get(&self, _: &str) -> anyhow::Result<Option<serde_json::Value>> {
        Ok(None)
    }
    fn list(&self, _: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
        Ok(Vec::new())
    }
}

/// A place traces are written to and read from. Calls block; callers run them off the
/// async runtime (the recorder's thread, or `spawn_blocking`).
pub trait TraceStore: Send {
    fn write_batch(&mut self, traces: &[Trace]) -> anyhow::Result<()>;
    fn get(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>>;
    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>>;
}

/// What the API, the UI and review read: one trace, a filtered list, a conversation, the
/// app's spans, route figures. Both stores answer the same JSON for the same rows (the
/// store suite checks it). Calls block; callers run them in `spawn_blocking`.
pub trait TraceReader: Send + Sync {
    fn get(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>>;
    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>>;
    /// The app's OTLP spans of a trace, oldest first.
    fn app_spans(&self, trace_id: &str) -> anyhow::Result<Vec<serde_json::Value>>;
    /// A conversation's requests, oldest first, with their feedback; a tenant's only when
    /// one is given.
    fn conversation(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<ConversationTurn>>;
    /// The app's spans of a conversation: those carrying its id, and those of its
    /// requests' traces; oldest first.
    fn conversation_spans(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<serde_json::Value>>;
    /// Per-route figures for requests started in `[since_ms, until_ms)`.
    fn route_stats(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<RouteStats>>;
    /// Traces whose app spans include a failed one, newest first.
    fn traces_with_failed_spans(&self, limit: u32) -> anyhow::Result<Vec<String>>;
    /// Every distinct value of a filter column seen recently (the UI's filter lists).
    fn distinct(&self, column: &str) -> anyhow::Result<Vec<String>>;
}

/// The SQLite store reads through one connection, taken in turn.
impl TraceReader for std::sync::Mutex<SqliteStore> {
    fn get(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        TraceStore::get(&*lock(self)?, trace_id)
    }
    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
        TraceStore::list(&*lock(self)?, filter)
    }
    fn app_spans(&self, trace_id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        lock(self)?.app_spans(trace_id)
    }
    fn conversation(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<ConversationTurn>> {
        lock(self)?.conversation(conversation_id, tenant)
    }
    fn conversation_spans(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        lock(self)?.conversation_spans(conversation_id, tenant)
    }
    fn route_stats(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<RouteStats>> {
        lock(self)?.route_stats(since_ms, until_ms)
    }
    fn traces_with_failed_spans(&self, limit: u32) -> anyhow::Result<Vec<String>> {
        lock(self)?.traces_with_failed_spans(limit)
    }
    fn distinct(&self, column: &str) -> anyhow::Result<Vec<String>> {
        lock(self)?.distinct(column)
    }
}

fn lock(
    store: &std::sync::Mutex<SqliteStore>,
) -> anyhow::Result<std::sync::MutexGuard<'_, SqliteStore>> {
    store
        .lock()
        .map_err(|_| anyhow::anyhow!("trace reader poisoned"))
}

/// The filter columns the UI lists values of.
pub(crate) fn distinct_column(column: &str) -> anyhow::Result<&str> {
    match column {
        "route" | "outcome" | "fallback_level" | "experiment" | "prompt_version" => Ok(column),
        other => anyhow::bail!("no filter list for `{other}`"),
    }
}

/// The writer the recorder feeds, for the configured place.
pub fn open_writer(
    db: &crate::db::Db,
    redactor: Option<Redactor>,
) -> anyhow::Result<Box<dyn TraceStore>> {
    Ok(match db {
        crate::db::Db::Sqlite(path) => Box::new(SqliteStore::open(path)?.with_redaction(redactor)),
        crate::db::Db::Postgres(pool) => Box::new(
            crate::db::off_runtime(|| PostgresStore::on(pool.clone()))?.with_redaction(redactor),
        ),
    })
}

/// The reader the API and the UI share, for the configured place.
pub fn open_reader(db: &crate::db::Db) -> anyhow::Result<std::sync::Arc<dyn TraceReader>> {
    Ok(match db {
        crate::db::Db::Sqlite(path) => {
            std::sync::Arc::new(std::sync::Mutex::new(SqliteStore::open(path)?))
        }
        crate::db::Db::Postgres(pool) => {
            std::sync::Arc::new(crate::db::off_runtime(|| PostgresStore::on(pool.clone()))?)
        }
    })
}
