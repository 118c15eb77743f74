//! The pipeline's answers → Anthropic's shapes: a `chat.completion` → a `message`, and an
//! OpenAI-shaped error → `{"type":"error","error":{"type","message"}}`.
//!
//! - `finish_reason` → `stop_reason`: `stop` → `end_turn` (or `stop_sequence` when the
//!   upstream says which sequence matched: an Anthropic target, or vLLM's `stop_reason`),
//!   `length` → `max_tokens`, `tool_calls` → `tool_use`, `content_filter` → `refusal`.
//! - Usage: `input_tokens` is the prompt less cache reads and writes (Anthropic counts them
//!   apart), `cache_read_input_tokens` and `cache_creation_input_tokens` when known; an
//!   Anthropic target's own usage object is used as it is.
//! - Reasoning an OpenAI-compatible server returns (`reasoning_content` or `reasoning`)
//!   becomes a `thinking` block, with an empty `signature`; an Anthropic target's thinking
//!   and redacted thinking blocks come back as it sent them, signatures included.
//! - Tool-call ids are kept, except ids Anthropic would refuse (`functions.f:0`), which are
//!   encoded (`tid_` + hex) and decoded again when they come back.

use serde_json::{Map, Value, json};
use trestle_core::openai::{ChatCompletion, Usage};

use crate::providers::anthropic::request::{THINKING_BLOCKS, safe_id};
use crate::providers::anthropic::response::USAGE_KEY;

/// OpenAI `finish_reason` (and the matched stop sequence, if known) → `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>, stop_sequence: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if stop_sequence.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

/// The stop sequence that ended a choice, when the upstream named one of the request's.
pub fn matched_stop<'a>(choice_extra: &Map<String, Value>, stops: &'a [String]) -> Option<&'a str> {
    let named = ["stop_sequence", "stop_reason"]
        .iter()
        .find_map(|k| choice_extra.get(*k).and_then(Value::as_str))?;
    stops.iter().find(|s| *s == named).map(String::as_str)
}

/// Anthropic's usage object for OpenAI usage (and an Anthropic target's own, if kept).
pub fn usage(usage: Option<&Usage>, anthropic: Option<&Value>) -> Value {
    let mut out = Map::new();
    if let Some(u) = usage {
        let read = u.cached_tokens();
        let written = u.cache_write_tokens();
        out.insert(
            "input_tokens".into(),
            json!(u.prompt_tokens.saturating_sub(read + written)),
        );
        out.insert("output_tokens".into(), json!(u.completion_tokens));
        if read > 0 || written > 0 {
            out.insert("cache_read_input_tokens".into(), json!(read));
            out.insert("cache_creation_input_tokens".into(), json!(written));
        }
    } else {
        out.insert("input_tokens".into(), json!(0));
        out.insert("output_tokens".into(), json!(0));
    }
    // An Anthropic target's own counts are exact; take them over the derived ones.
    for (k, v) in anthropic.and_then(Value::as_object).into_iter().flatten() {
        if matches!(
            k.as_str(),
            "input_tokens"
                | "output_tokens"
                | "cache_read_input_tokens"
                | "cache_creation_input_tokens"
        ) && !v.is_null()
        {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// A `msg_…` id for the answer's id.
pub fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!(
            "msg_{}",
            id.trim_start_matches("chatcmpl-")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect::<String>()
        )
    }
}

/// A reasoning text OpenAI-compatible servers put beside the content.
pub fn reasoning(extra: &Map<String, Value>) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| extra.get(*k).and_then(Value::as_str))
        .filter(|r| !r.is_empty())
}

/// A tool call's arguments as the `input` object (`{}` when they are not a JSON object).
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// A `chat.completion` as an Anthropic `message`. `model` stands in when the answer has none.
pub fn message(c: &ChatCompletion, model: &str, stops: &[String]) -> Value {
    let mut content = Vec::new();
    let mut finish = None;
    let mut stop_sequence = None;
    if let Some(choice) = c.choices.first() {
        let m = &choice.message;
        // An Anthropic target's thinking blocks as it sent them; else reasoning as one.
        match m.extra.get(THINKING_BLOCKS).and_then(Value::as_array) {
            Some(blocks) => content.extend(blocks.iter().cloned()),
            None => {
                if let Some(thinking) = reasoning(&m.extra) {
                    content
                        .push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
                }
            }
        }
        if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for (n, call) in m.tool_calls.iter().flatten().enumerate() {
            let id = call
                .id
                .clone()
                .unwrap_or_else(|| format!("toolu_{}_{n}", message_id(&c.id)));
            content.push(json!({
                "type": "tool_use",
                "id": safe_id(&id),
                "name": call.function.name,
                "input": tool_input(&call.function.arguments),
            }));
        }
        finish = choice.finish_reason.as_deref();
        stop_sequence = matched_stop(&choice.extra, stops);
    }
    json!({
        "id": message_id(&c.id),
        "type": "message",
        "role": "assistant",
        "model": if c.model.is_empty() { model } else { c.model.as_str() },
        "content": content,
        "stop_reason": stop_reason(finish, stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": usage(c.usage.as_ref(), c.extra.get(USAGE_KEY)),
    })
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An Anthropic error body.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// An OpenAI-shaped error body (`{"error":{"message",…}}`) as Anthropic's; the OpenAI
/// `param`, when there is one, is named in the message.
pub fn error_from_openai(status: u16, body: &Value) -> Value {
    let error = body.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("the gateway could not serve the request");
    let message = match error.and_then(|e| e.get("param")).and_then(Value::as_str) {
        Some(param) if !message.contains(param) => format!("{message} (at `{param}`)"),
        _ => message.to_string(),
    };
    error_body(status, &message)
}
