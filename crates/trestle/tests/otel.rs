//! OTLP export end to end: `trestle serve` with `[otel]` in front of `trestle mock`, and an
//! OTLP/HTTP receiver in this test process that decodes what arrives with prost. The
//! gateway's spans carry the GenAI conventions, join the client's trace, and the metrics
//! follow; a receiver that hangs or is gone costs requests nothing, and what is lost is
//! counted; shutdown sends what is queued.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use prost::Message;

/// What the receiver was sent.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// `content-type` and `authorization` of every export.
    headers: Vec<(String, String)>,
}

type Shared = Arc<(Mutex<Received>, Duration)>;

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn traces(State(s): State<Shared>, h: HeaderMap, body: Bytes) -> (StatusCode, Vec<u8>) {
    tokio::time::sleep(s.1).await;
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export in protobuf");
    let mut r = s.0.lock().unwrap();
    r.headers
        .push((header(&h, "content-type"), header(&h, "authorization")));
    r.traces.push(req);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn metrics(State(s): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    tokio::time::sleep(s.1).await;
    let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics export");
    let mut r = s.0.lock().unwrap();
    r.headers
        .push((header(&h, "content-type"), header(&h, "authorization")));
    r.metrics.push(req);
    StatusCode::OK
}

/// An OTLP/HTTP receiver on a free port that answers after `delay`.
async fn receiver(delay: Duration) -> (String, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shared: Shared = Arc::new((Mutex::new(Received::default()), delay));
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

fn all_spans(r: &Shared) -> Vec<Span> {
    let got = r.0.lock().unwrap();
    got.traces
        .iter()
        .flat_map(|t| &t.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(attrs: &[KeyValue], key: &str) -> Option<any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(attrs: &[KeyValue], key: &str) -> String {
    match value(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("attribute {key}: {other:?} in {attrs:?}"),
    }
}

fn int(attrs: &[KeyValue], key: &str) -> i64 {
    match value(attrs, key) {
        Some(any_value::Value::IntValue(i)) => i,
        other => panic!("attribute {key}: {other:?} in {attrs:?}"),
    }
}

/// Waits until `check` holds (10 s at most).
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A counter's value in `/metrics` text (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn config(mock: &Proc, endpoint: &str, otel: &str) -> String {
    format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{}/v1"
[providers.gone]
kind = "openai"
base_url = "http://127.0.0.1:{}/v1"
[routes.chat]
targets = ["up/m1"]
retries = 0
[routes.broken]
targets = ["gone/m9"]
retries = 0
[otel]
endpoint = "{endpoint}"
{otel}
"#,
        mock.url(),
        free_port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_follow_the_genai_conventions_and_join_the_callers_trace() {
    let (url, got) = receiver(Duration::ZERO).await;
    let up = mock(&[]);
    let gw = gateway(
        &config(
            &up,
            &format!("{url}/v1/traces"),
            "service_name = \"gw-test\"\ninterval_ms = 100\nmetrics_interval_s = 1\nheaders = { authorization = \"Bearer ${OTEL_TOKEN}\" }",
        ),
        &[("OTEL_TOKEN", "s3cret")],
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let r = post_with(
        &gw,
        &chat_body("chat", "hello there", false),
        &[
            ("traceparent", &traceparent),
            ("x-trestle-conversation-id", "conv-42"),
            ("x-trestle-user-id", "user-7"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    let usage = answer["usage"].clone();
    // A failure: the upstream is gone.
    let failed_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = post_with(
        &gw,
        &chat_body("broken", "hello", false),
        &[(
            "traceparent",
            &format!("00-{failed_trace}-b7ad6b7169203331-01"),
        )],
    )
    .await;
    assert!(r.status().is_server_error(), "{}", r.status());

    until("the spans of both requests", || {
        let spans = all_spans(&got);
        [trace_id, failed_trace]
            .iter()
            .all(|t| spans.iter().filter(|s| hex(&s.trace_id) == *t).count() >= 2)
    })
    .await;
    let spans = all_spans(&got);
    let of = |t: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == t)
            .cloned()
            .collect()
    };

    // The request: a SERVER span, child of the caller's span, in the caller's trace.
    let ok = of(trace_id);
    assert_eq!(ok.len(), 2, "{ok:#?}");
    let server = ok
        .iter()
        .find(|s| s.kind == span::SpanKind::Server as i32)
        .unwrap();
    assert_eq!(server.name, "chat chat");
    assert_eq!(hex(&server.parent_span_id), caller_span);
    let a = &server.attributes;
    assert_eq!(text(a, "gen_ai.operation.name"), "chat");
    assert_eq!(text(a, "gen_ai.provider.name"), "openai");
    assert_eq!(text(a, "gen_ai.request.model"), "chat");
    assert_eq!(text(a, "gen_ai.response.model"), "m1");
    assert_eq!(text(a, "gen_ai.conversation.id"), "conv-42");
    assert_eq!(text(a, "user.id"), "user-7");
    assert_eq!(
        int(a, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        int(a, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(text(a, "trestle.route"), "chat");
    assert_eq!(text(a, "trestle.cache"), "miss");
    assert_eq!(int(a, "http.response.status_code"), 200);
    assert!(server.status.is_none());
    assert!(server.end_time_unix_nano > server.start_time_unix_nano);

    // The upstream call: a CLIENT span under it.
    let client = ok
        .iter()
        .find(|s| s.kind == span::SpanKind::Client as i32)
        .unwrap();
    assert_eq!(client.name, "chat m1");
    assert_eq!(client.parent_span_id, server.span_id);
    let c = &client.attributes;
    assert_eq!(text(c, "gen_ai.provider.name"), "openai");
    assert_eq!(text(c, "gen_ai.request.model"), "m1");
    assert_eq!(text(c, "server.address"), "127.0.0.1");
    assert_eq!(int(c, "server.port"), i64::from(up.port));
    assert_eq!(text(c, "gen_ai.conversation.id"), "conv-42");
    assert!(int(c, "gen_ai.usage.output_tokens") > 0);
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano + 1_000_000);

    // The failure: error status and error.type on both spans.
    let bad = of(failed_trace);
    let server = bad
        .iter()
        .find(|s| s.kind == span::SpanKind::Server as i32)
        .unwrap();
    assert_eq!(server.name, "chat broken");
    assert_eq!(server.status.as_ref().map(|s| s.code), Some(2));
    assert!(text(&server.attributes, "error.type").starts_with('5'));
    let client = bad
        .iter()
        .find(|s| s.kind == span::SpanKind::Client as i32)
        .unwrap();
    assert_eq!(client.name, "chat m9");
    assert_eq!(client.status.as_ref().map(|s| s.code), Some(2));
    assert!(value(&client.attributes, "error.type").is_some());

    // The resource, and the headers of every export.
    {
        let r = got.0.lock().unwrap();
        let resource = r.traces[0].resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(text(&resource.attributes, "service.name"), "gw-test");
        assert!(
            r.headers
                .iter()
                .all(|(ct, auth)| { ct == "application/x-protobuf" && auth == "Bearer s3cret" })
        );
    }

    // Metrics: the GenAI client histograms, within a metrics interval or two.
    until("a metrics export with both GenAI metrics", || {
        let r = got.0.lock().unwrap();
        r.metrics.last().is_some_and(|m| {
            let names: Vec<&str> = m.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            names.contains(&"gen_ai.client.operation.duration")
                && names.contains(&"gen_ai.client.token.usage")
        })
    })
    .await;
    let m = got.0.lock().unwrap().metrics.last().cloned().unwrap();
    let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
    let histogram = |name: &str| match &metrics.iter().find(|m| m.name == name).unwrap().data {
        Some(metric::Data::Histogram(h)) => h.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let duration = histogram("gen_ai.client.operation.duration");
    // Two calls: one served, one failed (its own series, with error.type).
    assert_eq!(duration.data_points.iter().map(|p| p.count).sum::<u64>(), 2);
    assert!(
        duration
            .data_points
            .iter()
            .any(|p| value(&p.attributes, "error.type").is_some())
    );
    let tokens = histogram("gen_ai.client.token.usage");
    let input = tokens
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "gen_ai.token.type") == "input")
        .unwrap();
    assert_eq!(input.count, 1);
    assert_eq!(
        input.sum,
        Some(usage["prompt_tokens"].as_f64().unwrap()),
        "{input:?}"
    );
    assert_eq!(text(&input.attributes, "gen_ai.request.model"), "m1");

    let text = get_text(&format!("{}/metrics", gw.url())).await;
    assert_eq!(counter(&text, "trestle_otel_spans_exported_total"), 4.0);
    assert_eq!(counter(&text, "trestle_otel_spans_dropped_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_absent_receiver_costs_requests_nothing_and_losses_are_counted() {
    // Takes a minute to answer; the export times out after 1.5 s (and is retried).
    let (url, _got) = receiver(Duration::from_secs(60)).await;
    let up = mock(&[]);
    let mut gw = gateway(
        &config(
            &up,
            &url,
            "queue = 8\nbatch = 4\ninterval_ms = 20\ntimeout_ms = 1500",
        ),
        &[],
    );
    // Nothing listens there.
    let gone = gateway(
        &config(
            &up,
            &format!("http://127.0.0.1:{}", free_port()),
            "interval_ms = 20\ntimeout_ms = 500",
        ),
        &[],
    );
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        for g in [&gw, &gone] {
            let started = Instant::now();
            let r = post_with(g, &chat_body("chat", &format!("q{i}"), false), &[]).await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            slowest = slowest.max(started.elapsed());
        }
    }
    // An export blocking a request would take the 1.5 s export timeout at least.
    assert!(
        slowest < Duration::from_millis(1000),
        "slowest request {slowest:?}"
    );

    // The hanging receiver: the queue of 8 overflowed (120 spans made, one batch in flight,
    // 8 queued; a failed batch after 3 tries of 1.5 s makes room for a few more).
    let dropped_now = || async {
        let m = get_text(&format!("{}/metrics", gw.url())).await;
        counter(&m, "trestle_otel_spans_dropped_total")
    };
    let mut dropped = dropped_now().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = dropped_now().await;
        if again == dropped && dropped >= 50.0 {
            break;
        }
        dropped = again;
    }
    assert!(
        (50.0..=112.0).contains(&dropped),
        "dropped {dropped} of 120 spans"
    );
    let ready = get_json(&format!("{}/ready", gw.url())).await;
    assert_eq!(ready["otel"]["enabled"], true);
    assert_eq!(ready["otel"]["dropped"].as_f64(), Some(dropped));
    assert!(ready["otel"]["queued"].as_u64().unwrap() <= 8);

    // The absent receiver: exports fail after their retries, and are counted as failed.
    let mut failed = 0.0;
    for _ in 0..200 {
        let m = get_text(&format!("{}/metrics", gone.url())).await;
        failed = counter(&m, "trestle_otel_spans_failed_total");
        if failed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed > 0.0, "no failed spans counted");

    // Shutdown does not wait on the hanging receiver past its deadline.
    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_spans_still_queued() {
    let (url, got) = receiver(Duration::ZERO).await;
    let up = mock(&[]);
    // A partial batch would wait a minute; metrics are off.
    let mut gw = gateway(
        &config(&up, &url, "interval_ms = 60000\nmetrics_interval_s = 0"),
        &[],
    );
    for i in 0..3 {
        let r = post_with(&gw, &chat_body("chat", &format!("q{i}"), true), &[]).await;
        assert_eq!(r.status(), 200);
        answer_text(r).await;
    }
    // Written to the store, but not yet exported.
    let m = get_text(&format!("{}/metrics", gw.url())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(all_spans(&got).is_empty());
    assert_eq!(counter(&m, "trestle_otel_spans_exported_total"), 0.0);

    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let spans = all_spans(&got);
    let servers = spans
        .iter()
        .filter(|s| s.kind == span::SpanKind::Server as i32)
        .count();
    assert_eq!((servers, spans.len()), (3, 6), "{spans:#?}");
    assert!(got.0.lock().unwrap().metrics.is_empty());
}
