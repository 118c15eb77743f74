//! State shared by every request: the runtime config, the recorder, the trace reader, and the
//! shutdown signals.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;
use crate::store::{Recorder, SqliteStore};

pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub recorder: Recorder,
    /// A read connection to the trace store, used from `spawn_blocking`.
    pub reader: Option<Arc<Mutex<SqliteStore>>>,
    pub metrics: Option<PrometheusHandle>,
    /// Set once shutdown starts: `/ready` answers 503 and new requests are refused.
    pub draining: AtomicBool,
    /// Cancelled when the shutdown grace period ends: open streams end at once.
    pub hard_stop: CancellationToken,
}

pub type SharedState = Arc<AppState>;
