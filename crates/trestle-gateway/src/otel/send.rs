//! The sending task: batches of spans and the metrics over OTLP/HTTP (protobuf), one export
//! at a time, a failed export retried a few times with backoff, then counted as lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::time::MissedTickBehavior;
use trestle_core::otel::OtelConfig;

use super::metrics::Attrs;
use super::{Chunk, Shared, wire};

/// Tries of one export; the retries wait `RETRY_FIRST`, doubled each time (or what the
/// receiver's `Retry-After` asks, up to `RETRY_MAX`).
const TRIES: u32 = 3;
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An export the receiver did not take.
struct Failed {
    why: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Where and how exports are sent.
pub struct Sender {
    client: reqwest::Client,
    traces_url: String,
    metrics_url: String,
    resource_message: Resource,
    scope_message: InstrumentationScope,
    /// The same, encoded once.
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Sender {
    pub fn new(otel: &OtelConfig) -> anyhow::Result<Self> {
        crate::providers::install_tls();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        for (name, value) in &otel.headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| anyhow::anyhow!("otel.headers.{name}: {e}"))?,
                HeaderValue::from_str(value)
                    .map_err(|e| anyhow::anyhow!("otel.headers.{name}: {e}"))?,
            );
        }
        let timeout = Duration::from_millis(otel.timeout_ms);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_max_idle_per_host(2)
            .build()?;
        let mut attrs = Attrs::with_capacity(2);
        attrs.str("service.name", &otel.service_name);
        attrs.str("service.version", env!("CARGO_PKG_VERSION"));
        let resource_message = Resource {
            attributes: attrs.0,
            ..Default::default()
        };
        let scope_message = InstrumentationScope {
            name: "trestle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        Ok(Sender {
            client,
            traces_url: otel.traces_url(),
            metrics_url: otel.metrics_url(),
            resource: resource_message.encode_to_vec(),
            scope: scope_message.encode_to_vec(),
            resource_message,
            scope_message,
        })
    }

    /// An `ExportTraceServiceRequest` around chunks of encoded spans: one resource, one
    /// scope, the spans one after the other; written into one buffer of the right size.
    fn traces(&self, chunks: Vec<Chunk>) -> Vec<u8> {
        let field = |len: usize| 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        let spans: usize = chunks.iter().map(|c| c.bytes.len()).sum();
        let scope_spans = field(self.scope.len()) + spans;
        let resource_spans = field(self.resource.len()) + field(scope_spans);
        let mut request = Vec::with_capacity(field(resource_spans));
        wire::header(1, resource_spans, &mut request);
        wire::bytes(1, &self.resource, &mut request);
        wire::header(2, scope_spans, &mut request);
        wire::bytes(1, &self.scope, &mut request);
        for c in chunks {
            request.extend_from_slice(&c.bytes);
        }
        debug_assert_eq!(request.len(), field(resource_spans));
        request
    }

    fn metrics(&self, shared: &Shared) -> Option<Vec<u8>> {
        let m = shared.metrics.as_ref()?.lock().ok()?;
        if m.is_empty() {
            return None;
        }
        let metrics = m.metrics(now_nanos());
        drop(m);
        Some(
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(self.resource_message.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(self.scope_message.clone()),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        )
    }

    async fn post_once(&self, url: &str, body: bytes::Bytes) -> Result<(), Failed> {
        let answer = self.client.post(url).body(body).send().await;
        let r = match answer {
            Ok(r) => r,
            Err(e) => {
                return Err(Failed {
                    why: format!("{url}: {e}"),
                    retryable: true,
                    retry_after: None,
                });
            }
        };
        let status = r.status();
        if status.is_success() {
            // A partial success names spans the receiver refused; they are not retried.
            return Ok(());
        }
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(Failed {
            why: format!("{url} answered {status}"),
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
        })
    }

    /// Sends a body, retrying a retryable failure up to `TRIES` times; a shutdown ends the
    /// retries.
    async fn post(&self, url: &str, body: Vec<u8>, shared: &Shared) -> Result<(), String> {
        let body = bytes::Bytes::from(body);
        let mut pause = RETRY_FIRST;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.post_once(url, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retryable && tries < TRIES && !shared.closing.is_cancelled() => {
                    let wait = f.retry_after.unwrap_or(pause).min(RETRY_MAX);
                    tracing::debug!(error = %f.why, "OTLP export failed; retrying in {wait:?}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shared.closing.cancelled() => {}
                    }
                    pause *= 2;
                }
                Err(f) => return Err(f.why),
            }
        }
    }
}

/// Sends full batches as they fill, everything queued every `interval`, the metrics every
/// `metrics_every` (never when zero), until shutdown; then what is left, once.
pub async fn run(shared: Arc<Shared>, sender: Sender, interval: Duration, metrics_every: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(metrics_every.max(Duration::from_millis(1)));
    metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Both fire at once; the first real ones are a period away.
    tick.tick().await;
    metrics_tick.tick().await;
    let metrics_on = shared.metrics.is_some() && !metrics_every.is_zero();
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let (partial, send_metrics) = tokio::select! {
            () = shared.queue.full.notified() => (false, false),
            _ = tick.tick() => (true, false),
            _ = metrics_tick.tick(), if metrics_on => (false, true),
            () = shared.closing.cancelled() => break,
        };
        send_spans(&shared, &sender, partial, &mut last_error_log).await;
        if send_metrics {
            send_metrics_once(&shared, &sender).await;
        }
    }
    // Shutdown: everything queued, then the metrics as they stand.
    send_spans(&shared, &sender, true, &mut last_error_log).await;
    if metrics_on {
        send_metrics_once(&shared, &sender).await;
    }
}

async fn send_spans(
    shared: &Shared,
    sender: &Sender,
    partial: bool,
    last_error_log: &mut Option<tokio::time::Instant>,
) {
    loop {
        let batch = shared.queue.take(partial);
        if batch.is_empty() {
            return;
        }
        let n = batch.iter().map(|c| c.spans as u64).sum();
        let body = sender.traces(batch);
        match sender.post(&sender.traces_url, body, shared).await {
            Ok(()) => shared.stats.count(
                &shared.stats.exported,
                "trestle_otel_spans_exported_total",
                n,
            ),
            Err(why) => {
                shared
                    .stats
                    .count(&shared.stats.failed, "trestle_otel_spans_failed_total", n);
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    *last_error_log = Some(tokio::time::Instant::now());
                    tracing::warn!(spans = n, error = %why, "OTLP span export failed; spans lost");
                }
            }
        }
    }
}

async fn send_metrics_once(shared: &Shared, sender: &Sender) {
    let Some(body) = sender.metrics(shared) else {
        return;
    };
    match sender.post(&sender.metrics_url, body, shared).await {
        Ok(()) => {
            shared.stats.metric_exports.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!("trestle_otel_metric_exports_total", "result" => "ok").increment(1);
        }
        Err(why) => {
            shared.stats.metric_failures.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!("trestle_otel_metric_exports_total", "result" => "failed")
                .increment(1);
            tracing::warn!(error = %why, "OTLP metrics export failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn chunks_make_one_export_request() {
        let otel: OtelConfig =
            toml::from_str("endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"gw\"").unwrap();
        let sender = Sender::new(&otel).unwrap();
        let config = trestle_core::Config::builtin();
        let providers = super::super::spans::providers(&config);
        let mut chunks = Vec::new();
        for i in 1..=3u32 {
            let mut t = crate::store::sample_trace(&format!("{i:032x}"), &format!("{i:016x}"), "c");
            t.attempts.clear();
            let (mut scratch, mut bytes) = (Vec::new(), Vec::new());
            let spans = super::super::spans::append(&t, &providers, &mut scratch, &mut bytes);
            chunks.push(Chunk { bytes, spans });
        }
        let body = sender.traces(chunks);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "trestle");
        let ids: Vec<u8> = ss.spans.iter().map(|s| s.span_id[7]).collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
