//! Traces and where they are kept. A backend implements [`TraceStore`]; the [`Recorder`]
//! feeds it in batches from a background thread, never from the request path.

#[cfg(test)]
mod pg_server;
mod postgres;
mod recorder;
mod sqlite;
#[cfg(test)]
mod suite;
mod trace;
mod views;

pub use postgres::{
    NOT_YET_ON_POSTGRES, PostgresStore, open_configured as postgres_open_configured,
};
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
