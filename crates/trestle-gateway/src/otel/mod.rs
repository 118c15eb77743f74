//! OTLP export (`[otel]`, docs/observability.md): the gateway's own spans and GenAI metrics,
//! sent over OTLP/HTTP (protobuf) to a collector or any OpenTelemetry backend.
//!
//! Nothing happens on the request path. The recorder's writer thread hands each batch of
//! traces to [`Feed`] (a [`TraceSink`]) before writing it; the feed encodes their spans
//! (`spans.rs`, `wire.rs`) into a bounded queue and folds their upstream calls into the
//! metrics (`metrics.rs`). A task sends the queue in batches — when a batch is full, or every
//! `interval_ms` — retrying a failed export a few times with backoff. A full queue drops
//! spans, an export that keeps failing loses its batch; both are counted
//! (`trestle_otel_spans_dropped_total`, `trestle_otel_spans_failed_total`), and neither
//! ever slows a request or the trace writer.

mod metrics;
mod send;
pub mod spans;
mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trestle_core::Config;
use trestle_core::otel::OtelConfig;

use metrics::Aggregator;
use spans::Providers;

use crate::store::{Trace, TraceSink};

/// What happened to the spans, as `/ready` reports it.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    /// Dropped because the queue was full (or the exporter had stopped).
    pub dropped: AtomicU64,
    /// Lost because the receiver refused them or could not be reached, after retries.
    pub failed: AtomicU64,
    pub metric_exports: AtomicU64,
    pub metric_failures: AtomicU64,
}

impl ExportStats {
    fn count(&self, counter: &AtomicU64, name: &'static str, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
            ::metrics::counter!(name).increment(n);
        }
    }

    fn dropped(&self, n: u64) {
        self.count(&self.dropped, "trestle_otel_spans_dropped_total", n);
    }
}

/// Spans encoded by the feed, ready to be concatenated into an export (`spans::append`).
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub spans: usize,
}

/// The spans waiting to be sent, at most `capacity`.
struct Queue {
    pending: Mutex<Pending>,
    capacity: usize,
    batch: usize,
    /// Woken when a full batch is waiting.
    full: Notify,
}

#[derive(Default)]
struct Pending {
    chunks: VecDeque<Chunk>,
    spans: usize,
}

impl Queue {
    fn new(capacity: usize, batch: usize) -> Self {
        Queue {
            pending: Mutex::new(Pending::default()),
            capacity,
            batch,
            full: Notify::new(),
        }
    }

    fn len(&self) -> usize {
        self.pending.lock().map_or(0, |q| q.spans)
    }

    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Adds chunks; answers how many spans did not fit.
    fn push(&self, chunks: Vec<Chunk>) -> usize {
        let Ok(mut q) = self.pending.lock() else {
            return chunks.iter().map(|c| c.spans).sum();
        };
        let mut over = 0;
        for c in chunks {
            if q.spans + c.spans <= self.capacity {
                q.spans += c.spans;
                q.chunks.push_back(c);
            } else {
                over += c.spans;
            }
        }
        let full = q.spans >= self.batch;
        drop(q);
        if full {
            self.full.notify_one();
        }
        over
    }

    /// About a batch of spans (chunks are not split): only a full one unless `partial`.
    fn take(&self, partial: bool) -> Vec<Chunk> {
        let Ok(mut q) = self.pending.lock() else {
            return Vec::new();
        };
        if q.spans == 0 || (!partial && q.spans < self.batch) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(c) = q.chunks.front() {
            if n > 0 && n + c.spans > self.batch {
                break;
            }
            n += c.spans;
            out.extend(q.chunks.pop_front());
        }
        q.spans -= n;
        out
    }

    /// Empties the queue; answers how many spans it held.
    fn clear(&self) -> usize {
        self.pending.lock().map_or(0, |mut q| {
            q.chunks.clear();
            std::mem::take(&mut q.spans)
        })
    }
}

/// What the writer thread's feed and the sending task share.
struct Shared {
    queue: Queue,
    /// Provider name → what the conventions call it; replaced on reload.
    providers: ArcSwap<Providers>,
    /// `None` when `metrics_interval_s = 0`.
    metrics: Option<Mutex<Aggregator>>,
    stats: ExportStats,
    /// Cancelled at shutdown: send what is queued, then stop.
    closing: CancellationToken,
}

/// The exporter, as the gateway holds it.
pub struct Exporter {
    shared: Option<Arc<Shared>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    /// An exporter that exports nothing (no `[otel]`).
    pub fn disabled() -> Self {
        Exporter {
            shared: None,
            task: Mutex::new(None),
        }
    }

    /// Starts the sending task on the current tokio runtime.
    pub fn start(otel: &OtelConfig, config: &Config) -> anyhow::Result<Self> {
        let sender = send::Sender::new(otel)?;
        let shared = Arc::new(Shared {
            queue: Queue::new(otel.queue, otel.batch),
            providers: ArcSwap::from_pointee(spans::providers(config)),
            metrics: (otel.metrics_interval_s > 0)
                .then(|| Mutex::new(Aggregator::new(send::now_nanos()))),
            stats: ExportStats::default(),
            closing: CancellationToken::new(),
        });
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the OTLP exporter needs a tokio runtime"))?;
        let task = handle.spawn(send::run(
            shared.clone(),
            sender,
            Duration::from_millis(otel.interval_ms),
            Duration::from_secs(otel.metrics_interval_s),
        ));
        tracing::info!(
            traces = %otel.traces_url(),
            metrics = %if otel.metrics_interval_s > 0 { otel.metrics_url() } else { "off".into() },
            "OTLP export on"
        );
        Ok(Exporter {
            shared: Some(shared),
            task: Mutex::new(Some(task)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// The feed the recorder's writer hands traces to.
    pub fn feed(&self) -> Option<Box<dyn TraceSink>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Feed {
            shared,
            scratch: Vec::new(),
        }))
    }

    /// Takes a reloaded config's providers.
    pub fn configure(&self, config: &Config) {
        if let Some(s) = &self.shared {
            s.providers.store(Arc::new(spans::providers(config)));
        }
    }

    /// Counters and the queue's length, for `/ready`.
    pub fn snapshot(&self) -> serde_json::Value {
        let Some(s) = &self.shared else {
            return serde_json::json!({"enabled": false});
        };
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "enabled": true,
            "queued": s.queue.len(),
            "exported": n(&s.stats.exported),
            "dropped": n(&s.stats.dropped),
            "failed": n(&s.stats.failed),
            "metric_exports": n(&s.stats.metric_exports),
            "metric_failures": n(&s.stats.metric_failures),
        })
    }

    /// Sends what is queued (and the metrics once more) and stops, within `deadline`; what
    /// is still queued then is counted as dropped. Call after the recorder has closed, so
    /// the last traces are in the queue.
    pub async fn close(&self, deadline: Duration) {
        let Some(shared) = &self.shared else { return };
        shared.closing.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task
            && tokio::time::timeout(deadline, &mut task).await.is_err()
        {
            task.abort();
            tracing::warn!("OTLP export did not finish within {deadline:?}");
        }
        let left = shared.queue.clear();
        shared.stats.dropped(left as u64);
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            exported = n(&shared.stats.exported),
            dropped = n(&shared.stats.dropped),
            failed = n(&shared.stats.failed),
            "OTLP export stopped"
        );
    }
}

/// Runs on the recorder's writer thread: traces in, spans encoded and queued, metrics
/// folded in.
struct Feed {
    shared: Arc<Shared>,
    /// Where each span is encoded before it is framed into its chunk.
    scratch: Vec<u8>,
}

impl TraceSink for Feed {
    fn take(&mut self, traces: &[Trace]) {
        let s = &self.shared;
        let providers = s.providers.load();
        if let Some(m) = &s.metrics
            && let Ok(mut m) = m.lock()
        {
            for t in traces {
                m.record(t, &providers);
            }
        }
        if s.closing.is_cancelled() {
            // The task has stopped taking spans.
            let n: usize = traces.iter().map(spans::count).sum();
            s.stats.dropped(n as u64);
            return;
        }
        // Spans that cannot fit are never encoded. Chunks of about a batch each.
        let room = s.queue.room();
        let (mut used, mut dropped) = (0, 0);
        let mut chunks = Vec::new();
        let mut chunk = Chunk {
            bytes: Vec::new(),
            spans: 0,
        };
        for t in traces {
            let n = spans::count(t);
            if used + n > room {
                dropped += n;
                continue;
            }
            if chunk.bytes.capacity() == 0 {
                chunk.bytes.reserve(1024 * traces.len().min(s.queue.batch));
            }
            let added = spans::append(t, &providers, &mut self.scratch, &mut chunk.bytes);
            used += added;
            chunk.spans += added;
            dropped += n.saturating_sub(added);
            if chunk.spans >= s.queue.batch {
                chunks.push(std::mem::replace(
                    &mut chunk,
                    Chunk {
                        bytes: Vec::new(),
                        spans: 0,
                    },
                ));
            }
        }
        if chunk.spans > 0 {
            chunks.push(chunk);
        }
        dropped += s.queue.push(chunks);
        s.stats.dropped(dropped as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> Vec<Chunk> {
        sizes
            .iter()
            .map(|&spans| Chunk {
                bytes: vec![0; spans],
                spans,
            })
            .collect()
    }

    fn sizes(chunks: &[Chunk]) -> Vec<usize> {
        chunks.iter().map(|c| c.spans).collect()
    }

    #[test]
    fn the_queue_is_bounded_and_hands_out_batches() {
        let q = Queue::new(10, 4);
        assert_eq!(q.push(chunks(&[1, 2])), 0);
        assert!(q.take(false).is_empty(), "no full batch yet");
        assert_eq!(q.push(chunks(&[2, 3, 4, 2])), 4, "the 4 did not fit");
        assert_eq!((q.len(), q.room()), (10, 0));
        assert_eq!(sizes(&q.take(false)), [1, 2]);
        assert_eq!(sizes(&q.take(false)), [2]);
        assert_eq!(sizes(&q.take(false)), [3]);
        assert!(q.take(false).is_empty());
        assert_eq!(sizes(&q.take(true)), [2]);
        assert!(q.take(true).is_empty());
        assert_eq!(q.push(chunks(&[6])), 0, "a chunk over a batch goes whole");
        assert_eq!(sizes(&q.take(false)), [6]);
        q.push(chunks(&[1, 1]));
        assert_eq!(q.clear(), 2);
        assert_eq!(q.len(), 0);
    }

    fn shared(capacity: usize, batch: usize) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Queue::new(capacity, batch),
            providers: ArcSwap::from_pointee(Providers::new()),
            metrics: Some(Mutex::new(Aggregator::new(0))),
            stats: ExportStats::default(),
            closing: CancellationToken::new(),
        })
    }

    fn trace(i: u32) -> Trace {
        let mut t =
            crate::store::sample_trace(&format!("{i:032x}"), &format!("{:016x}", i + 1), "c");
        t.attempts[0].span_id = format!("{:016x}", u64::from(i) << 32 | 7);
        t
    }

    #[test]
    fn the_feed_drops_what_does_not_fit_and_counts_it() {
        let s = shared(5, 2);
        let mut feed = Feed {
            shared: s.clone(),
            scratch: Vec::new(),
        };
        // Two spans a trace (the request and its one call).
        feed.take(&(0..4).map(trace).collect::<Vec<_>>());
        assert_eq!(s.queue.len(), 4);
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 4);
        let mut queued = Vec::new();
        loop {
            let chunks = s.queue.take(true);
            if chunks.is_empty() {
                break;
            }
            queued.extend(chunks.into_iter().flat_map(|c| c.bytes));
        }
        let spans = <opentelemetry_proto::tonic::trace::v1::ScopeSpans as prost::Message>::decode(
            queued.as_slice(),
        )
        .unwrap()
        .spans;
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        // Metrics count every trace, dropped spans or not.
        let m = s.metrics.as_ref().unwrap().lock().unwrap().metrics(1);
        match &m[0].data {
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => {
                assert_eq!(h.data_points[0].count, 4)
            }
            other => panic!("{other:?}"),
        }
        s.closing.cancel();
        feed.take(&[trace(9)]);
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 6);
    }
}
