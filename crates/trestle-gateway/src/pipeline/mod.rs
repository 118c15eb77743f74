//! The request path of `POST /v1/chat/completions`, stage by stage (DESIGN.md §1):
//! ingress → resolve → infer → deliver, with the trace recorded at the end of every path.

mod deliver;
mod infer;
pub mod ingress;
mod record;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::time::Instant;
use trestle_core::openai::{ChatRequest, EmbeddingsRequest};

use deliver::Relay;
pub use deliver::trestle_headers;
use infer::Served;
use record::TraceGuard;

use crate::error::GatewayError;
use crate::runtime::Route;
use crate::state::SharedState;

/// Serves one chat completion.
pub async fn chat(state: SharedState, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    if state.draining.load(Ordering::Relaxed) {
        return deliver::error(GatewayError::ShuttingDown, HeaderMap::new());
    }
    // Ingress: body within its limit, parsed and checked; identity and trace context.
    let limit = state.runtime.config.server.max_body_bytes;
    let raw = match ingress::read_body(&headers, body, limit).await {
        Ok(raw) => raw,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let parsed = ingress::parse_chat(&raw);
    let identity = ingress::identity(
        &headers,
        parsed.as_ref().ok().unwrap_or(&ChatRequest::default()),
    );
    let out_headers =
        |level: Option<&str>| trestle_headers(&identity.trace_id, &identity.span_id, level);
    let model = parsed.as_ref().map(|r| r.model.clone()).unwrap_or_default();
    let mut guard = TraceGuard::new(state.clone(), &identity, &model, started, Some(raw));
    let req = match parsed {
        Ok(req) => req,
        Err(e) => {
            guard.fail(&e);
            return deliver::error(e, out_headers(None));
        }
    };

    // Resolve: the route (or direct target) and its caps.
    let route = match state.runtime.resolve(&req.model) {
        Ok(route) => route,
        Err(e) => {
            guard.fail(&e);
            return deliver::error(e, out_headers(None));
        }
    };
    let stream = req.is_stream();
    guard.set_route(&route.name, route.config.class.as_str(), stream);
    let include_usage = req.wants_stream_usage();
    let req = apply_caps(req, &route);

    // Infer: the target chain with retries, timeouts and model fallback.
    let mut inference = infer::run(&route, &req, stream, started).await;
    guard.inference(&mut inference);
    let headers = out_headers(Some(inference.fallback_level()));
    match inference.result {
        Err(e) => {
            guard.fail(&e);
            deliver::error(e, headers)
        }
        Ok(Served::Complete(completion)) => {
            guard.complete(&completion.body, completion.raw.as_ref());
            deliver::json(completion, headers)
        }
        Ok(Served::Stream { first, rest }) => {
            let deadline_ms = route.config.total_timeout_ms();
            let relay = Relay {
                guard,
                deadline: started + Duration::from_millis(deadline_ms),
                deadline_ms,
                include_usage,
                hard_stop: state.hard_stop.clone(),
            };
            deliver::sse(relay, first, rest, headers)
        }
    }
}

/// Lowers the client's output cap to the route's `max_tokens`.
fn apply_caps(mut req: ChatRequest, route: &Route) -> ChatRequest {
    if let Some(cap) = route.config.max_tokens
        && req.output_cap().is_none_or(|asked| asked > cap)
    {
        if req.max_completion_tokens.is_some() {
            req.max_completion_tokens = Some(cap);
            req.max_tokens = req.max_tokens.map(|m| m.min(cap));
        } else {
            req.max_tokens = Some(cap);
        }
    }
    req
}

/// Serves `POST /v1/embeddings` from the route's first target that has embeddings.
pub async fn embeddings(state: SharedState, headers: HeaderMap, body: Body) -> Response {
    let limit = state.runtime.config.server.max_body_bytes;
    let raw = match ingress::read_body(&headers, body, limit).await {
        Ok(raw) => raw,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let req: EmbeddingsRequest = match ingress::parse_json(&raw) {
        Ok(r) => r,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let route = match state.runtime.resolve(&req.model) {
        Ok(r) => r,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let timeout = Duration::from_millis(route.config.total_timeout_ms());
    let mut failures = Vec::new();
    for target in &route.targets {
        match tokio::time::timeout(timeout, target.provider.embed(&target.model, &req)).await {
            Ok(Ok(mut answer)) => {
                answer.model.clone_from(&target.model);
                return axum::response::IntoResponse::into_response(axum::Json(answer));
            }
            Ok(Err(e)) => failures.push(format!("{}: {e}", target.name)),
            Err(_) => failures.push(format!("{}: timed out", target.name)),
        }
    }
    deliver::error(
        GatewayError::UpstreamFailed {
            message: format!(
                "no target of `{}` produced embeddings: {}",
                route.name,
                failures.join("; ")
            ),
            timed_out: false,
        },
        HeaderMap::new(),
    )
}
