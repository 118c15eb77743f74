//! Ingress: read the body within its limit, parse and validate it, and find the request's
//! identity — trace context, conversation and user.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use rand::Rng;
use trestle_core::openai::ChatRequest;

use crate::error::GatewayError;

pub const CONVERSATION_HEADER: &str = "x-trestle-conversation-id";
pub const USER_HEADER: &str = "x-trestle-user-id";

/// Who is asking and under which trace.
#[derive(Debug, Clone)]
pub struct Identity {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    server: &trestle_core::config::ServerConfig,
) -> Result<Bytes, GatewayError> {
    let limit = server.max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared.filter(|s| *s > limit) {
        crate::metrics::refused_early("body_too_large");
        return Err(GatewayError::PayloadTooLarge { size, limit });
    }
    // A client that trickles its body (slow loris) is cut off after body_read_timeout_ms.
    let timeout = Duration::from_millis(server.body_read_timeout_ms);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            crate::metrics::refused_early("body_timeout");
            tracing::info!(
                timeout_ms = server.body_read_timeout_ms,
                "request body too slow to arrive: 408"
            );
            Err(GatewayError::RequestTimeout {
                timeout_ms: server.body_read_timeout_ms,
            })
        }
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
            if too_large {
                crate::metrics::refused_early("body_too_large");
                Err(GatewayError::PayloadTooLarge {
                    size: declared.unwrap_or(limit + 1),
                    limit,
                })
            } else {
                Err(GatewayError::invalid(
                    format!("the request body could not be read: {e}"),
                    None,
                ))
            }
        }
    }
}

/// Parses JSON into `T`, naming the exact field that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid(
            "the request body is empty; send a JSON object (Content-Type: application/json)",
            None,
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let message = if syntax {
            format!("the request body is not valid JSON: {inner}")
        } else if path == "." || path.is_empty() {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body at `{path}`: {inner}")
        };
        let param = (!syntax && path != "." && !path.is_empty()).then_some(path);
        GatewayError::invalid(message, param.as_deref())
    })
}

/// Parses and checks a chat request.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let req: ChatRequest = parse_json(body)?;
    if req.model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "`model` is empty; name a route or provider/model",
            Some("model"),
        ));
    }
    if req.messages.is_empty() {
        return Err(GatewayError::invalid(
            "`messages` is empty; send at least one message",
            Some("messages"),
        ));
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(GatewayError::invalid(
            format!("`temperature` is {t}; it must be between 0 and 2"),
            Some("temperature"),
        ));
    }
    if req.output_cap() == Some(0) {
        return Err(GatewayError::invalid(
            "`max_tokens` must be at least 1",
            Some("max_tokens"),
        ));
    }
    Ok(req)
}

/// The request's identity from headers, then the body's `user` and `metadata`.
pub fn identity(headers: &HeaderMap, req: &ChatRequest) -> Identity {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let meta = |key: &str| {
        req.metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let (trace_id, parent_span_id) =
        match header("traceparent").as_deref().and_then(parse_traceparent) {
            Some((trace, parent)) => (trace, Some(parent)),
            None => (new_trace_id(), None),
        };
    Identity {
        trace_id,
        span_id: new_span_id(),
        parent_span_id,
        conversation_id: header(CONVERSATION_HEADER).or_else(|| meta("conversation_id")),
        user_id: header(USER_HEADER)
            .or_else(|| req.user.clone())
            .or_else(|| meta("user_id")),
    }
}

/// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`) into trace and parent ids.
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then(|| (trace.to_string(), parent.to_string()))
}

/// A new W3C trace id: its first 48 bits are the Unix time in milliseconds and its last 80
/// random (Trace Context level 2 asks only that the rightmost 7 bytes be random). Ids made
/// close in time sort close together, so the store's trace-id index grows at its end instead
/// of dirtying a random page for every trace: a batch of trace rows costs SQLite about half
/// the CPU (BENCHMARKS.md, "Performance (issue 16)"). Sampling by trace id reads the random
/// tail (`evals::OnlinePlan`).
pub fn new_trace_id() -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = rand::rng().random::<u128>() >> 48;
    format!("{:012x}{:020x}", now_ms & 0xffff_ffff_ffff, random | 1)
}

pub fn new_span_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>() | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_trace_ids_are_valid_and_sort_by_time() {
        let first = new_trace_id();
        std::thread::sleep(Duration::from_millis(2));
        let second = new_trace_id();
        for id in [&first, &second] {
            let parent = new_span_id();
            assert_eq!(
                parse_traceparent(&format!("00-{id}-{parent}-01")),
                Some((id.clone(), parent)),
                "{id} is not a W3C trace id"
            );
        }
        assert!(first < second, "{first} then {second}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let stamped = u64::from_str_radix(&second[..12], 16).unwrap();
        assert!(
            now_ms - stamped < 1_000,
            "{second} carries {stamped}, now {now_ms}"
        );
        assert_ne!(new_trace_id()[12..], new_trace_id()[12..]);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let e = parse_chat(b"{\"model\": \"x\", ").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e =
            parse_chat(br#"{"model":"x","messages":[{"role":"bot","content":"hi"}]}"#).unwrap_err();
        assert!(e.to_string().contains("messages[0]"), "{e}");
        let e = parse_chat(br#"{"model":"x","messages":[]}"#).unwrap_err();
        assert!(e.to_string().contains("`messages` is empty"), "{e}");
        let e = parse_chat(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.to_string().contains("model"), "{e}");
        let e = parse_chat(
            br#"{"model":"x","temperature":3,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("temperature"), "{e}");
        assert!(parse_chat(b"").unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn identity_prefers_headers_then_body() {
        let req = parse_chat(
            br#"{"model":"x","user":"body-user","metadata":{"conversation_id":"c-meta"},
                "messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        let id = identity(&headers, &req);
        assert_eq!(id.user_id.as_deref(), Some("body-user"));
        assert_eq!(id.conversation_id.as_deref(), Some("c-meta"));
        assert_eq!(id.trace_id.len(), 32);
        headers.insert(USER_HEADER, "h-user".parse().unwrap());
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let id = identity(&headers, &req);
        assert_eq!(id.user_id.as_deref(), Some("h-user"));
        assert_eq!(id.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn traceparent_validation() {
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none()
        );
        assert!(
            parse_traceparent("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
    }
}
