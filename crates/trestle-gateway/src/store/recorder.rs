//! The recorder: a bounded queue in front of a writer thread that commits traces in batches.
//! Enqueueing never blocks; a full queue drops the trace, counts it and logs it.
//!
//! When the store refuses a batch (a full disk, an I/O error) the writer keeps the batch and
//! tries again with backoff for up to `RETRY_FOR`, meanwhile the queue absorbs new traces;
//! the failure is reported in `/ready` and `trestle_trace_store_up`, and writing resumes by
//! itself when the store takes batches again. Only what outlives the retries or overflows
//! the queue is lost, and it is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Trace, TraceSink, TraceStore};

enum Msg {
    Trace(Box<Trace>),
    Close,
}

/// Counters of what happened to traces.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub recorded: AtomicU64,
    pub written: AtomicU64,
    /// Dropped because the queue was full or the recorder had closed.
    pub dropped: AtomicU64,
    /// Lost because the store refused a batch for longer than the writer retries.
    pub failed: AtomicU64,
    /// The store's last refusal, while it lasts (cleared by the next good write).
    pub store_error: std::sync::Mutex<Option<StoreError>>,
}

/// A store refusing batches, as `/ready` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreError {
    pub error: String,
    /// Unix milliseconds of the first refusal in this run of them.
    pub since_ms: u64,
}

impl RecorderStats {
    /// The current refusal, if the store is refusing batches.
    pub fn store_error(&self) -> Option<StoreError> {
        self.store_error.lock().ok().and_then(|e| e.clone())
    }

    fn refused(&self, error: &anyhow::Error) {
        if let Ok(mut e) = self.store_error.lock() {
            let since_ms = e.as_ref().map_or_else(now_ms, |old| old.since_ms);
            if e.is_none() {
                tracing::error!(error = %error, "trace store refuses writes; retrying");
            }
            *e = Some(StoreError {
                error: format!("{error:#}"),
                since_ms,
            });
        }
        metrics::gauge!("trestle_trace_store_up").set(0.0);
    }

    fn accepted(&self) {
        if let Ok(mut e) = self.store_error.lock()
            && e.take().is_some()
        {
            tracing::info!("trace store accepts writes again");
        }
        metrics::gauge!("trestle_trace_store_up").set(1.0);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a refused batch is retried before it is counted as failed.
const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Hands traces to the writer thread.
pub struct Recorder {
    tx: Option<mpsc::Sender<Msg>>,
    stats: Arc<RecorderStats>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The writer, to wake from its linger when a batch is queued or the recorder closes.
    writer_thread: Option<std::thread::Thread>,
    /// Queued traces that complete a batch (the lingering writer holds at least one more):
    /// the writer is woken when there are this many.
    wake_at: usize,
    last_drop_log: std::sync::Mutex<Option<Instant>>,
}

impl Recorder {
    /// Starts the writer thread over `store`.
    ///
    /// The writer commits a batch when it holds `batch` traces or `linger` after the first
    /// one arrived: fewer, larger transactions write each hot index page once per batch
    /// instead of once per trace (group commit). It lingers parked, woken early only by a
    /// full batch or the close: one wake per batch, not one every 2 ms to look at the queue
    /// (up to 500 a second, each taking a core from a request; BENCHMARKS.md, "Sixth
    /// session").
    pub fn start(
        store: Box<dyn TraceStore>,
        capacity: usize,
        batch: usize,
        linger: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with_sink(store, capacity, batch, linger, None)
    }

    /// [`Recorder::start`], with a sink that is handed each batch before it is written.
    pub fn start_with_sink(
        mut store: Box<dyn TraceStore>,
        capacity: usize,
        batch: usize,
        linger: Duration,
        mut sink: Option<Box<dyn TraceSink>>,
    ) -> anyhow::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Msg>(capacity.max(1));
        let stats = Arc::new(RecorderStats::default());
        let writer_stats = stats.clone();
        let batch = batch.max(1);
        let writer = std::thread::Builder::new()
            .name("trestle-trace-writer".into())
            .spawn(move || {
                let mut pending: Vec<Trace> = Vec::with_capacity(batch);
                let mut closing = false;
                while !closing {
                    match rx.blocking_recv() {
                        Some(Msg::Trace(t)) => pending.push(*t),
                        Some(Msg::Close) | None => closing = true,
                    }
                    let first_at = Instant::now();
                    // Take whatever else arrives within the linger, up to a batch.
                    while pending.len() < batch && !closing {
                        match rx.try_recv() {
                            Ok(Msg::Trace(t)) => pending.push(*t),
                            Ok(Msg::Close) => closing = true,
                            Err(mpsc::error::TryRecvError::Disconnected) => closing = true,
                            Err(mpsc::error::TryRecvError::Empty) => {
                                let waited = first_at.elapsed();
                                if waited >= linger {
                                    break;
                                }
                                std::thread::park_timeout(linger - waited);
                            }
                        }
                    }
                    if closing {
                        // No new traces after this; write all that were queued before.
                        rx.close();
                        while let Ok(msg) = rx.try_recv() {
                            if let Msg::Trace(t) = msg {
                                pending.push(*t);
                            }
                        }
                    }
                    if !pending.is_empty() {
                        // Flags first: the store and the sink (OTLP export) both carry them.
                        crate::anomaly::flag_all(&mut pending);
                        if let Some(sink) = sink.as_mut() {
                            sink.take(&pending);
                        }
                    }
                    flush(store.as_mut(), &mut pending, &writer_stats, !closing);
                }
            })?;
        Ok(Recorder {
            tx: Some(tx),
            stats,
            writer_thread: Some(writer.thread().clone()),
            writer: std::sync::Mutex::new(Some(writer)),
            wake_at: (batch - 1).max(1),
            last_drop_log: std::sync::Mutex::new(None),
        })
    }

    /// A recorder that keeps nothing (store disabled).
    pub fn disabled() -> Self {
        Recorder {
            tx: None,
            stats: Arc::new(RecorderStats::default()),
            writer: std::sync::Mutex::new(None),
            writer_thread: None,
            wake_at: 1,
            last_drop_log: std::sync::Mutex::new(None),
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// Queues a trace without waiting. A full or closed queue drops it, counted and logged.
    pub fn record(&self, trace: Trace) {
        let Some(tx) = &self.tx else { return };
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(Msg::Trace(Box::new(trace))).is_ok() {
            // A batch is waiting: end the writer's linger now (an atomic swap when it is
            // already awake).
            if tx.max_capacity() - tx.capacity() >= self.wake_at
                && let Some(writer) = &self.writer_thread
            {
                writer.unpark();
            }
        } else {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("trestle_traces_dropped_total").increment(1);
            self.log_drop(dropped);
        }
    }

    fn log_drop(&self, dropped: u64) {
        let Ok(mut last) = self.last_drop_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped_total = dropped,
                "trace queue full or closed: trace dropped"
            );
        }
    }

    /// Writes everything queued and stops the writer; waits at most `deadline`.
    pub async fn close(&self, deadline: Duration) {
        let Some(tx) = &self.tx else { return };
        let _ = tokio::time::timeout(deadline, tx.send(Msg::Close)).await;
        if let Some(writer) = &self.writer_thread {
            writer.unpark();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join());
            if tokio::time::timeout(deadline, joined).await.is_err() {
                tracing::error!("trace writer did not finish within {deadline:?}");
            }
        }
    }
}

/// Writes `pending`, retrying a refused batch with backoff for up to `RETRY_FOR` (once only
/// when `retry` is false, as at shutdown).
fn flush(store: &mut dyn TraceStore, pending: &mut Vec<Trace>, stats: &RecorderStats, retry: bool) {
    if pending.is_empty() {
        return;
    }
    let n = pending.len() as u64;
    let started = Instant::now();
    let mut pause = RETRY_FIRST;
    loop {
        match store.write_batch(pending) {
            Ok(()) => {
                stats.written.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("trestle_traces_written_total").increment(n);
                stats.accepted();
                break;
            }
            Err(e) => {
                stats.refused(&e);
                if retry && started.elapsed() + pause <= RETRY_FOR {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_MAX);
                    continue;
                }
                stats.failed.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("trestle_traces_failed_total").increment(n);
                tracing::error!(traces = n, error = %e, "trace store refused a batch; traces lost");
                break;
            }
        }
    }
    pending.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{TraceFilter, TraceSummary};
    use std::sync::Mutex;

    /// A store that keeps traces in memory, optionally slowly.
    struct Memory(Arc<Mutex<Vec<String>>>, Duration);

    impl TraceStore for Memory {
        fn write_batch(&mut self, traces: &[Trace]) -> anyhow::Result<()> {
            std::thread::sleep(self.1);
            self.0
                .lock()
                .unwrap()
                .extend(traces.iter().map(|t| t.span_id.clone()));
            Ok(())
        }
        fn get(&self, _: &str) -> anyhow::Result<Option<serde_json::Value>> {
            Ok(None)
        }
        fn list(&self, _: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
            Ok(vec![])
        }
    }

    /// A recorder over a [`Memory`] store that takes `delay` per batch, and what it keeps.
    fn memory_recorder(
        capacity: usize,
        batch: usize,
        linger: Duration,
        delay: Duration,
    ) -> (Recorder, Arc<Mutex<Vec<String>>>) {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let r = Recorder::start(
            Box::new(Memory(kept.clone(), delay)),
            capacity,
            batch,
            linger,
        )
        .unwrap();
        (r, kept)
    }

    fn trace(span: &str) -> Trace {
        crate::store::sqlite::tests::sample("t", span, "c")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn close_flushes_everything_queued() {
        let (r, kept) = memory_recorder(1000, 7, Duration::from_millis(5), Duration::ZERO);
        for i in 0..500 {
            r.record(trace(&i.to_string()));
        }
        r.close(Duration::from_secs(5)).await;
        assert_eq!(kept.lock().unwrap().len(), 500);
        assert_eq!(r.stats().written.load(Ordering::Relaxed), 500);
        // After close, traces are counted as dropped, not silently lost.
        r.record(trace("late"));
        assert_eq!(r.stats().dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_batch_or_the_close_ends_the_linger() {
        let (r, kept) = memory_recorder(1000, 8, Duration::from_secs(60), Duration::ZERO);
        // The first trace starts the linger; the writer parks holding it.
        r.record(trace("0"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 1..8 {
            r.record(trace(&i.to_string()));
        }
        let started = Instant::now();
        while kept.lock().unwrap().len() < 8 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Well within the 60 s linger: the eighth trace woke the writer.
        assert_eq!(kept.lock().unwrap().len(), 8);
        // The close wakes a lingering writer too.
        r.record(trace("8"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.close(Duration::from_secs(5)).await;
        assert_eq!(kept.lock().unwrap().len(), 9);
    }

    /// A sink that notes the span ids it is handed.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl TraceSink for Seen {
        fn take(&mut self, traces: &[Trace]) {
            let mut seen = self.0.lock().unwrap();
            seen.extend(traces.iter().map(|t| t.span_id.clone()));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_sink_sees_every_trace_written_also_at_close() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let r = Recorder::start_with_sink(
            Box::new(Memory(kept.clone(), Duration::ZERO)),
            1000,
            16,
            Duration::from_millis(5),
            Some(Box::new(Seen(seen.clone()))),
        )
        .unwrap();
        for i in 0..300 {
            r.record(trace(&i.to_string()));
        }
        r.close(Duration::from_secs(5)).await;
        assert_eq!(*seen.lock().unwrap(), *kept.lock().unwrap());
        assert_eq!(seen.lock().unwrap().len(), 300);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_drops_and_counts() {
        let (r, kept) = memory_recorder(4, 1, Duration::ZERO, Duration::from_millis(50));
        for i in 0..100 {
            r.record(trace(&i.to_string()));
        }
        r.close(Duration::from_secs(10)).await;
        let written = kept.lock().unwrap().len() as u64;
        let dropped = r.stats().dropped.load(Ordering::Relaxed);
        assert!(dropped > 0);
        assert_eq!(written + dropped, 100);
    }
}
