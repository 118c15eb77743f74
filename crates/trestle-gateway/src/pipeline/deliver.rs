//! Delivery: a JSON body, or an SSE stream relayed chunk by chunk as it arrives. A stream that
//! fails after it started ends with an OpenAI-shaped error event and `[DONE]`, never silently.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream;
use http_body::Frame;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::TraceGuard;
use crate::error::GatewayError;
use crate::providers::{Chunk, ChunkStream, Completion};
use crate::repoll::OnWake;

/// How an answer was served, for the `x-trestle-*` headers.
pub struct Served {
    /// `primary`, `model`, `cache`, `template` or `omitted`.
    pub fallback_level: &'static str,
    /// `miss`, `exact` or `semantic`.
    pub cache: &'static str,
    /// 5 (full) … 1 (off).
    pub capability: u8,
    /// Age of a cached answer, in seconds.
    pub age_s: Option<u64>,
    /// A cached answer served as a fallback, past its freshness.
    pub stale: bool,
}

/// The `x-trestle-*` headers every answer carries; `served` is known once a route resolved.
pub fn trestle_headers(trace_id: &str, span_id: &str, served: Option<&Served>) -> HeaderMap {
    // This map becomes the answer's (`json_bytes`, `sse`): sized for these, the stages' own
    // headers, content-type and content-length, so it is never grown and rehashed on the way
    // out (growing a full map was about 2% of the request path's CPU in a profile).
    let mut h = HeaderMap::with_capacity(HEADERS_CAPACITY);
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put("x-trestle-trace-id", trace_id);
    put("traceparent", &format!("00-{trace_id}-{span_id}-01"));
    if let Some(s) = served {
        put("x-trestle-fallback-level", s.fallback_level);
        put("x-trestle-cache", s.cache);
        put(
            "x-trestle-capability-level",
            CAPABILITY[usize::from(s.capability.clamp(1, 5))],
        );
        if let Some(age) = s.age_s {
            put("age", &age.to_string());
        }
        if s.stale {
            put("x-trestle-cache-stale", "true");
        }
    }
    h
}

const CAPABILITY: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

/// Headers an answer carries at most, give or take: the `x-trestle-*` ones, rate-limit and
/// dropped-parameter headers, content-type, cache-control, content-length.
const HEADERS_CAPACITY: usize = 20;

/// A JSON answer with any status (the `omitted` level).
pub fn json_value(status: u16, body: &serde_json::Value, headers: HeaderMap) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    json_bytes(status, Bytes::from(body.to_string()), headers)
}

fn json_bytes(status: StatusCode, body: Bytes, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pub fn error(error: GatewayError, headers: HeaderMap) -> Response {
    let mut response = error.into_response();
    response.headers_mut().extend(headers);
    response
}

pub fn json(completion: Completion, headers: HeaderMap) -> Response {
    let body = match completion.raw {
        Some(raw) => raw,
        None => match serde_json::to_vec(&completion.body) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                return self::error(
                    GatewayError::Internal(format!("cannot encode response: {e}")),
                    headers,
                );
            }
        },
    };
    json_bytes(StatusCode::OK, body, headers)
}

/// What the relay needs besides the stream.
pub struct Relay {
    pub guard: TraceGuard,
    pub deadline: Instant,
    pub deadline_ms: u64,
    /// Pass usage-only chunks through (the client set `stream_options.include_usage`).
    pub include_usage: bool,
    pub hard_stop: CancellationToken,
}

// Short-lived, one at a time: boxing the chunk would only add an allocation per chunk.
#[allow(clippy::large_enum_variant)]
enum Next {
    Chunk(Chunk),
    End,
    Fail(&'static str, String),
}

/// Why a stream stops before its end.
enum Stop {
    Shutdown,
    Deadline,
}

pub fn sse(mut relay: Relay, first: Chunk, rest: ChunkStream, headers: HeaderMap) -> Response {
    relay.guard.stream_started();
    // The deadline and the shutdown signal are armed once for the whole stream, and polled
    // again only when one of them fires (crate::repoll::OnWake), not at every chunk.
    let stops = {
        let (deadline, hard_stop) = (relay.deadline, relay.hard_stop.clone());
        OnWake::new(Box::pin(async move {
            tokio::select! {
                biased;
                () = hard_stop.cancelled_owned() => Stop::Shutdown,
                () = tokio::time::sleep_until(deadline) => Stop::Deadline,
            }
        }) as StopSignals)
    };
    let body = SseBody {
        relay,
        first: Some(first),
        rest,
        done: false,
        stops,
    };
    let mut headers = headers;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    let mut response = Response::new(Body::new(body));
    *response.headers_mut() = headers;
    response
}

type StopSignals = Pin<Box<dyn Future<Output = Stop> + Send>>;

/// A streamed answer's body: each poll relays what the upstream has ready. Its state stays in
/// place between frames (a `stream::unfold` moved all of it, the trace guard included, into a
/// new future at every frame; see docs/architecture.md, "The hot path").
struct SseBody {
    relay: Relay,
    first: Option<Chunk>,
    rest: ChunkStream,
    done: bool,
    stops: OnWake<StopSignals>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let next = match this.first.take() {
                Some(chunk) => Next::Chunk(chunk),
                // The stream first: a chunk that is ready goes out without looking at the stop
                // signals.
                None => match this.rest.poll_next_unpin(cx) {
                    Poll::Ready(None) => Next::End,
                    Poll::Ready(Some(Err(e @ crate::providers::ProviderError::Blocked { .. }))) => {
                        Next::Fail("blocked", e.to_string())
                    }
                    Poll::Ready(Some(Err(e))) => Next::Fail(
                        "stream_error",
                        format!("the upstream failed mid-stream: {e}"),
                    ),
                    Poll::Ready(Some(Ok(chunk))) => Next::Chunk(chunk),
                    Poll::Pending => match Pin::new(&mut this.stops).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Stop::Shutdown) => {
                            Next::Fail("shutdown", "the gateway is shutting down".into())
                        }
                        Poll::Ready(Stop::Deadline) => Next::Fail(
                            "stream_error",
                            format!(
                                "the route deadline of {} ms was reached mid-stream",
                                this.relay.deadline_ms
                            ),
                        ),
                    },
                },
            };
            if let Some(out) = this.relay.next(next) {
                this.done = out.1;
                return Poll::Ready(Some(Ok(Frame::data(out.0))));
            }
        }
    }
}

impl Relay {
    /// What goes out for `next`, if anything, and whether the stream ends with it.
    fn next(&mut self, next: Next) -> Option<(Bytes, bool)> {
        match next {
            Next::Chunk(chunk) if chunk.frames => {
                // Pass-through: whole frames, as the upstream sent them.
                let frames = chunk.raw?;
                self.guard.frame(&frames);
                Some((frames, false))
            }
            Next::Chunk(chunk) => {
                self.guard.observe(&chunk.chunk);
                let usage_only = chunk.chunk.choices.is_empty() && chunk.chunk.usage.is_some();
                if usage_only && !self.include_usage && !self.guard.keeps_frames() {
                    return None;
                }
                let frame = match &chunk.raw {
                    Some(raw) => frame(raw),
                    None => frame(&serde_json::to_vec(&chunk.chunk).ok()?),
                };
                // A pass-through trace keeps the usage chunk even when the client did not ask
                // for it.
                self.guard.frame(&frame);
                if usage_only && !self.include_usage {
                    return None;
                }
                Some((frame, false))
            }
            Next::End => {
                self.guard.end_stream("ok", None);
                Some((Bytes::from_static(b"data: [DONE]\n\n"), true))
            }
            Next::Fail(outcome, message) => {
                self.guard.end_stream(outcome, Some(message.clone()));
                let (kind, code) = match outcome {
                    "shutdown" => ("upstream_error", "shutting_down"),
                    "blocked" => ("guardrail_error", "guardrail_blocked"),
                    _ => ("upstream_error", "stream_interrupted"),
                };
                let event = json!({"error": {"message": message, "type": kind,
                "code": code, "param": null}});
                let mut out = BytesMut::from(&frame(event.to_string().as_bytes())[..]);
                out.put_slice(b"data: [DONE]\n\n");
                Some((out.freeze(), true))
            }
        }
    }
}

/// One SSE `data:` event.
pub fn frame(json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Sends a completion the gateway holds (cached or made here) as JSON, or as a stream when
/// the client asked for one.
pub fn replay(
    completion: trestle_core::openai::ChatCompletion,
    guard: TraceGuard,
    stream: bool,
    headers: HeaderMap,
    relay: impl FnOnce(TraceGuard) -> Relay,
) -> Response {
    if stream {
        let mut chunks = crate::resilience::fallback::chunks(&completion)
            .into_iter()
            .map(Chunk::from);
        let Some(first) = chunks.next() else {
            let e = GatewayError::Internal("an empty cached answer".into());
            guard.fail(&e);
            return error(e, headers);
        };
        let rest = stream::iter(chunks.map(Ok)).boxed();
        sse(relay(guard), first, rest, headers)
    } else {
        guard.complete(&completion, None);
        let answer = Completion {
            body: completion,
            raw: None,
        };
        json(answer, headers)
    }
}
