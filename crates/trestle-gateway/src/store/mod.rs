//! Traces and where they are kept. A backend implements [`TraceStore`]; the [`Recorder`]
//! feeds it in batches from a background thread, never from the request path.

mod recorder;
mod sqlite;
mod trace;

pub use recorder::{Recorder, RecorderStats};
pub use sqlite::SqliteStore;
pub use trace::{Attempt, Body, Trace, TraceFilter, TraceSummary};

/// Rewrites a text before it is stored (the `[store] redact` guardrails).
pub type Redactor = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A place traces are written to and read from. Calls block; callers run them off the
/// async runtime (the recorder's thread, or `spawn_blocking`).
pub trait TraceStore: Send {
    fn write_batch(&mut self, traces: &[Trace]) -> anyhow::Result<()>;
    fn get(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>>;
    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>>;
}
