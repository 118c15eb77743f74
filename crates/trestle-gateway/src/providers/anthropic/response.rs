//! Anthropic Messages answer → OpenAI `chat.completion`.
//!
//! Text blocks are concatenated into `message.content`; `tool_use` blocks become `tool_calls`
//! (arguments = the JSON-encoded `input`); `thinking` blocks become `reasoning_content`, and
//! with `redacted_thinking` are kept as sent (signatures included) under the message's
//! `thinking_blocks`; other block kinds are skipped.
//! Usage: `prompt_tokens` counts all input (`input_tokens` + cache reads + cache writes) and
//! `cached_tokens` the cache reads. Cache writes have no OpenAI field, so Anthropic's own
//! `usage` object is kept verbatim under the completion's top-level `anthropic_usage` key.

use serde::Deserialize;
use serde_json::{Map, Value};
use trestle_core::openai::{
    ChatCompletion, Choice, FunctionCall, ResponseMessage, ToolCall, Usage, unix_now,
};

use super::request::THINKING_BLOCKS;
use crate::providers::http::error_message;
use crate::providers::{Completion, ProviderError};

/// The key under which Anthropic's own usage object is kept in `extra`.
pub const USAGE_KEY: &str = "anthropic_usage";

/// Anthropic's token counts (the cache fields may be absent or null).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Reads the counts from a usage object, ignoring fields it does not know.
    pub fn from_value(value: &Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// The OpenAI view: every input token is a prompt token; cache reads are "cached".
    pub fn to_openai(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt =
            self.input_tokens.unwrap_or(0) + read + self.cache_creation_input_tokens.unwrap_or(0);
        Usage::new(prompt, self.output_tokens.unwrap_or(0), read)
            .with_cache_writes(self.cache_creation_input_tokens.unwrap_or(0))
    }
}

/// `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

#[derive(Debug, Deserialize)]
struct MessageResponse {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    /// The stop sequence that ended the answer; kept on the choice as `stop_sequence`.
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    #[serde(other)]
    Other,
}

/// Parses a non-streamed Messages body into a `chat.completion`.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("anthropic message: {e}")))?;
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Err(ProviderError::Malformed(format!(
            "error body with a success status: {}",
            error_message(body)
        )));
    }
    let message: MessageResponse = serde_json::from_value(value)
        .map_err(|e| ProviderError::Malformed(format!("anthropic message: {e}")))?;

    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    for block in message.content {
        match block {
            Block::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
            Block::ToolUse { id, name, input } => {
                let input = if input.is_null() {
                    Value::Object(Map::new())
                } else {
                    input
                };
                calls.push(ToolCall {
                    id: Some(id),
                    kind: "function".into(),
                    function: FunctionCall {
                        name,
                        arguments: input.to_string(),
                    },
                });
            }
            Block::Thinking {
                thinking,
                signature,
            } => {
                reasoning.push_str(&thinking);
                thinking_blocks.push(
                    serde_json::json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                );
            }
            Block::RedactedThinking { data } => {
                thinking_blocks
                    .push(serde_json::json!({"type": "redacted_thinking", "data": data}));
            }
            Block::Other => {}
        }
    }
    let mut message_extra = Map::new();
    if !thinking_blocks.is_empty() {
        message_extra.insert("reasoning_content".into(), Value::String(reasoning));
        message_extra.insert(THINKING_BLOCKS.into(), Value::Array(thinking_blocks));
    }
    // OpenAI sends `content: null` beside tool calls, and a string otherwise.
    let content = if calls.is_empty() {
        Some(text.unwrap_or_default())
    } else {
        text
    };

    let mut extra = Map::new();
    let usage = message.usage.map(|raw| {
        let usage = AnthropicUsage::from_value(&raw).to_openai();
        extra.insert(USAGE_KEY.into(), raw);
        usage
    });
    Ok(Completion {
        body: ChatCompletion {
            id: message.id,
            object: "chat.completion".into(),
            created: unix_now(),
            model: message.model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: message_extra,
                },
                finish_reason: message
                    .stop_reason
                    .as_deref()
                    .map(|r| finish_reason(r).to_string()),
                extra: message
                    .stop_sequence
                    .map(|s| Map::from_iter([("stop_sequence".to_string(), Value::String(s))]))
                    .unwrap_or_default(),
            }],
            usage,
            extra,
        },
        raw: None,
    })
}
