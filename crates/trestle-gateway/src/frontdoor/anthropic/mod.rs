//! The Anthropic front door: `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//!
//! A Messages request is translated at ingress into the pipeline's OpenAI-shaped request
//! ([`request`]), served by [`crate::pipeline::chat`] like any chat completion (routes,
//! caches, fallbacks, guardrails, traces, costs, keys and budgets), and its answer translated
//! back at delivery ([`response`] for JSON and errors, [`stream`] for SSE, frame by frame as
//! the chunks arrive). Errors on these endpoints are Anthropic-shaped; the `x-trestle-*`
//! headers stay, and `request-id` carries the trace id.

pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use trestle_core::openai::ChatCompletion;

use crate::error::GatewayError;
use crate::pipeline::ingress;
use crate::state::SharedState;

/// The header that lists what the gateway could not carry.
const DROPPED_HEADER: &str = "x-trestle-dropped-params";

/// Serves `POST /v1/messages`.
pub async fn messages(
    state: SharedState,
    caller: Option<crate::keys::Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let server = state.runtime().config.server.clone();
    let raw = match ingress::read_body(&headers, body, &server).await {
        Ok(raw) => raw,
        Err(e) => return refused(&state, caller.as_ref(), &headers, None, &e),
    };
    let translated = match request::parse(&raw, false).and_then(|req| {
        let keep = anthropic_only(&state, &req.model);
        request::to_chat(req, keep)
    }) {
        Ok(t) => t,
        Err(e) => return refused(&state, caller.as_ref(), &headers, Some(raw), &e),
    };
    let model = translated.chat.model.clone();
    let body = match serde_json::to_vec(&translated.chat) {
        Ok(b) => b,
        Err(e) => {
            return error(&GatewayError::Internal(format!(
                "cannot encode request: {e}"
            )));
        }
    };
    let mut headers = headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let answer = crate::pipeline::chat(state, caller, headers, Body::from(body)).await;
    deliver(
        answer,
        &model,
        translated.stop_sequences,
        &translated.dropped,
    )
    .await
}

/// The Anthropic-shaped error of a request the front door could not read or translate, with
/// its trace recorded (`x-trestle-trace-id`), as the chat door keeps its own refusals.
fn refused(
    state: &SharedState,
    caller: Option<&crate::keys::Caller>,
    headers: &HeaderMap,
    raw: Option<bytes::Bytes>,
    e: &GatewayError,
) -> Response {
    let model = raw
        .as_deref()
        .and_then(|r| serde_json::from_slice::<Value>(r).ok())
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let trace_id = crate::pipeline::record_refused(state, caller, headers, &model, raw, e);
    let mut out = error(e);
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        out.headers_mut().insert("x-trestle-trace-id", v.clone());
        out.headers_mut().insert("request-id", v);
    }
    out
}

/// Serves `POST /v1/messages/count_tokens`: an Anthropic target counts with its own endpoint;
/// any other is counted with the target's tokenizer (`tokens.rs`), as route budgets count.
pub async fn count_tokens(
    state: SharedState,
    caller: Option<crate::keys::Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let runtime = state.runtime();
    let raw = match ingress::read_body(&headers, body, &runtime.config.server).await {
        Ok(raw) => raw,
        Err(e) => return error(&e),
    };
    let chat = match request::parse(&raw, true).and_then(|req| {
        let keep = anthropic_only(&state, &req.model);
        request::to_chat(req, keep)
    }) {
        Ok(t) => t.chat,
        Err(e) => return error(&e),
    };
    let route = match runtime.resolve(&chat.model) {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    if let Some(c) = &caller
        && !c.key.allows_route(&route.name)
    {
        return error(&GatewayError::Forbidden {
            message: format!("API key {} may not call `{}`", c.key.id, route.name),
            code: "route_not_allowed",
        });
    }
    let Some(target) = route.targets.first() else {
        return error(&GatewayError::Unavailable(format!(
            "route `{}` has no targets",
            route.name
        )));
    };
    if let Some(counting) = target.provider.count_tokens(&target.model, &chat) {
        match counting.await {
            Ok(n) => return counted(n, "provider"),
            Err(e) => {
                tracing::info!(target = %target.name, error = %e, "count_tokens upstream failed; counting locally");
            }
        }
    }
    let tokenizer = &target.tokenizer;
    let n = crate::tokens::REPLY_PRIMING
        + chat
            .messages
            .iter()
            .map(|m| tokenizer.message(m))
            .sum::<u64>()
        + chat.tools.as_deref().map_or(0, |t| tokenizer.tools(t));
    counted(n, tokenizer.name())
}

/// Whether every target that may serve `model` (the route's, and its capability levels')
/// is Anthropic, so `cache_control` markers can be carried to it.
fn anthropic_only(state: &SharedState, model: &str) -> bool {
    state.runtime().resolve(model).is_ok_and(|route| {
        !route.targets.is_empty()
            && route
                .targets
                .iter()
                .chain(route.level_targets.values().flatten())
                .all(|t| t.provider.kind() == "anthropic")
    })
}

fn counted(n: u64, by: &str) -> Response {
    let mut response = axum::Json(json!({"input_tokens": n})).into_response();
    if let Ok(v) = HeaderValue::from_str(by) {
        response.headers_mut().insert("x-trestle-tokenizer", v);
    }
    response
}

/// An Anthropic-shaped error response.
pub fn error(e: &GatewayError) -> Response {
    let status = e.status();
    let body = response::error_body(status.as_u16(), &e.to_string());
    let mut out = (status, axum::Json(body)).into_response();
    // Keep Retry-After and the like from the gateway's own response.
    let own = e.clone().into_response();
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = own.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// On the front door's paths, turns any OpenAI-shaped error response of the gateway (the
/// auth middleware's, a wrong method) into Anthropic's shape; other paths and answers pass
/// untouched. A layer around the whole router, outside auth.
pub async fn anthropic_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !req.uri().path().starts_with("/v1/messages") {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    if response.status().is_success() || !is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let out = response::error_from_openai(parts.status.as_u16(), &value);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out.to_string()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The pipeline's response in Anthropic's terms: errors, a `message`, or the event stream.
async fn deliver(
    answer: Response,
    model: &str,
    stops: Vec<String>,
    dropped: &[String],
) -> Response {
    let (mut parts, body) = answer.into_parts();
    if let Some(trace) = parts.headers.get("x-trestle-trace-id").cloned() {
        parts.headers.insert("request-id", trace);
    }
    if !dropped.is_empty() {
        let mut all: Vec<String> = parts
            .headers
            .get(DROPPED_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(", ").map(str::to_string).collect())
            .unwrap_or_default();
        all.extend(dropped.iter().cloned());
        all.sort();
        all.dedup();
        if let Ok(v) = HeaderValue::from_str(&all.join(", ")) {
            parts.headers.insert(DROPPED_HEADER, v);
        }
    }
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if streamed && parts.status.is_success() {
        let events = stream::Events::new(model, stops);
        return Response::from_parts(parts, Body::from_stream(translate_stream(body, events)));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            parts.status = StatusCode::BAD_GATEWAY;
            let body = response::error_body(502, &format!("the answer could not be read: {e}"));
            return Response::from_parts(parts, Body::from(body.to_string()));
        }
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let status = parts.status.as_u16();
    let out = if !parts.status.is_success() || value.get("error").is_some() {
        response::error_from_openai(status, &value)
    } else {
        match serde_json::from_value::<ChatCompletion>(value) {
            Ok(c) => response::message(&c, model, &stops),
            Err(e) => {
                parts.status = StatusCode::BAD_GATEWAY;
                response::error_body(502, &format!("the answer could not be translated: {e}"))
            }
        }
    };
    Response::from_parts(parts, Body::from(out.to_string()))
}

/// The relay's SSE body, translated frame by frame; nothing is held back.
fn translate_stream(
    body: Body,
    events: stream::Events,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    let state = (body.into_data_stream(), stream::Frames::default(), events);
    futures_util::stream::unfold(state, |(mut inner, mut frames, mut events)| async move {
        loop {
            if events.is_done() {
                return None;
            }
            let mut out = bytes::BytesMut::new();
            match inner.next().await {
                Some(Ok(bytes)) => {
                    for data in frames.push(&bytes) {
                        events.on_data(&data, &mut out);
                    }
                }
                Some(Err(e)) => events.error(502, &format!("the stream broke: {e}"), &mut out),
                None => events.error(502, "the stream ended before it was complete", &mut out),
            }
            if !out.is_empty() {
                return Some((Ok(out.freeze()), (inner, frames, events)));
            }
        }
    })
}
