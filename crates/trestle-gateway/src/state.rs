//! State shared by every request: the runtime (swapped whole on reload), the health
//! registry that outlives reloads, the recorder, the trace reader, and the shutdown signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::resilience::Registry;
use crate::runtime::Runtime;
use crate::store::{Recorder, TraceReader};

pub struct AppState {
    /// The current config's runtime; a request keeps the one it started with.
    pub runtime: ArcSwap<Runtime>,
    /// Breakers, capacity, capability levels and remembered answers.
    pub registry: Arc<Registry>,
    /// The file a reload re-reads (none: the built-in config, which never changes).
    pub config_path: Option<PathBuf>,
    pub recorder: Recorder,
    /// `[otel]`: the gateway's spans and metrics out over OTLP (fed by the recorder).
    pub otel: crate::otel::Exporter,
    /// Spans the app sends over OTLP.
    pub spans: crate::otlp::SpanStore,
    /// Client keys and their usage.
    pub keys: crate::keys::Keys,
    /// Human review labels.
    pub review: crate::review::Review,
    /// Feedback: its store, recent traces, the regeneration detector.
    pub feedback: Arc<crate::feedback::Feedback>,
    /// Where prompt labels point (moved by file or API), across reloads.
    pub prompt_labels: crate::prompts::PromptLabels,
    /// Experiments' guard counters and stopped variants, across reloads.
    pub experiments: crate::experiments::ExperimentStates,
    /// `[evals.online]`: the queue to the scoring worker.
    pub online: crate::evals::OnlineEvaluator,
    /// Where rows are kept (`[store]`; `None` when it is off): drift, alerts, experiment
    /// readouts and online eval figures are read from it, off the async runtime.
    pub db: Option<crate::db::Db>,
    /// A read connection to the trace store, used from `spawn_blocking`.
    pub reader: Option<Arc<dyn TraceReader>>,
    pub metrics: Option<PrometheusHandle>,
    /// Set once shutdown starts: `/ready` answers 503 and new requests are refused.
    pub draining: AtomicBool,
    /// Cancelled when the shutdown grace period ends: open streams end at once.
    pub hard_stop: CancellationToken,
}

impl AppState {
    /// The runtime to serve one request with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}

pub type SharedState = Arc<AppState>;
