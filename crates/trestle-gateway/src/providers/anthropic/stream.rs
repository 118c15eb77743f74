//! Anthropic Messages SSE events → OpenAI `chat.completion.chunk`s, as a small state machine.
//!
//! - `message_start` → a chunk with `delta.role = "assistant"` (and empty content).
//! - `content_block_start` of a `tool_use` block → a `tool_calls` delta with the next OpenAI
//!   tool index, the id, the name and empty arguments; `content_block_delta` carries
//!   `text_delta` as content and `input_json_delta` as arguments of that tool index. A tool
//!   block that streamed no arguments at all gets `{}` at `content_block_stop`.
//! - `message_delta` → a chunk with the `finish_reason`; its usage (cumulative) is recorded.
//! - `message_stop` → a final chunk with no choices and the usage (same rules as
//!   [`super::response`], Anthropic's own usage under `anthropic_usage`); the stream is done.
//! - `thinking_delta` → `delta.reasoning_content`, `signature_delta` →
//!   `delta.thinking_signature`, a `redacted_thinking` block → `delta.thinking_blocks`.
//! - `ping`, other block kinds and unknown events are ignored; an `error`
//!   event becomes [`ProviderError::Stream`] (retryable, as `overloaded_error` should be).

use std::collections::HashMap;

use serde_json::{Map, Value};
use trestle_core::openai::{ChatChunk, Delta, FunctionCallDelta, ToolCallDelta, unix_now};

use super::request::THINKING_BLOCKS;
use super::response::{AnthropicUsage, USAGE_KEY, finish_reason};

/// The delta field carrying a thinking block's signature (from `signature_delta`).
pub const THINKING_SIGNATURE: &str = "thinking_signature";
use crate::providers::ProviderError;

/// One streamed tool call: its OpenAI index and whether any arguments went out.
#[derive(Debug, Clone, Copy)]
struct ToolSlot {
    index: u32,
    sent_arguments: bool,
}

/// Translation state for one streamed answer.
#[derive(Debug, Clone)]
pub struct StreamState {
    id: String,
    model: String,
    created: u64,
    /// Anthropic's usage object, merged over `message_start` and `message_delta`.
    usage: Map<String, Value>,
    /// Content block index → tool slot.
    tools: HashMap<u64, ToolSlot>,
    next_tool: u32,
    done: bool,
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    pub fn new() -> Self {
        StreamState {
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            usage: Map::new(),
            tools: HashMap::new(),
            next_tool: 0,
            done: false,
        }
    }

    /// Whether `message_stop` was seen; later events are ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one SSE event (`event:` name and `data:` payload) into zero or more chunks.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        if self.done || event == "ping" {
            return Ok(Vec::new());
        }
        let payload: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::Malformed(format!("anthropic stream event: {e}")))?;
        // The payload's `type` names the event too; use it when the SSE line had no name.
        let kind = match event {
            "" | "message" => payload.get("type").and_then(Value::as_str).unwrap_or(""),
            named => named,
        };
        match kind {
            "message_start" => Ok(self.message_start(&payload)),
            "content_block_start" => Ok(self.block_start(&payload)),
            "content_block_delta" => Ok(self.block_delta(&payload)),
            "content_block_stop" => Ok(self.block_stop(&payload)),
            "message_delta" => Ok(self.message_delta(&payload)),
            "message_stop" => {
                self.done = true;
                Ok(vec![self.usage_chunk()])
            }
            "error" => Err(stream_error(&payload)),
            _ => Ok(Vec::new()),
        }
    }

    fn chunk(&self, delta: Delta) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta)
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        for (key, value) in usage.and_then(Value::as_object).into_iter().flatten() {
            if !value.is_null() {
                self.usage.insert(key.clone(), value.clone());
            }
        }
    }

    fn message_start(&mut self, payload: &Value) -> Vec<ChatChunk> {
        let message = payload.get("message");
        let field = |name: &str| {
            message
                .and_then(|m| m.get(name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        self.id = field("id");
        self.model = field("model");
        self.merge_usage(message.and_then(|m| m.get("usage")));
        vec![self.chunk(Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
            ..Default::default()
        })]
    }

    fn block_start(&mut self, payload: &Value) -> Vec<ChatChunk> {
        let block = payload.get("content_block");
        let block_type = block.and_then(|b| b.get("type")).and_then(Value::as_str);
        match block_type {
            Some("text") => {
                let text = block
                    .and_then(|b| b.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.text_chunk(text)
            }
            Some("tool_use") => {
                let index = self.next_tool;
                self.next_tool += 1;
                let block_index = payload.get("index").and_then(Value::as_u64).unwrap_or(0);
                self.tools.insert(
                    block_index,
                    ToolSlot {
                        index,
                        sent_arguments: false,
                    },
                );
                let field = |name: &str| {
                    block
                        .and_then(|b| b.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                vec![self.tool_chunk(ToolCallDelta {
                    index,
                    id: field("id"),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: field("name"),
                        arguments: Some(String::new()),
                    }),
                })]
            }
            // Redacted reasoning goes to the client whole, to be sent back as it came.
            Some("redacted_thinking") => {
                let mut delta = Delta::default();
                let blocks = Value::Array(block.into_iter().cloned().collect());
                delta.extra.insert(THINKING_BLOCKS.into(), blocks);
                vec![self.chunk(delta)]
            }
            _ => Vec::new(),
        }
    }

    /// A chunk whose delta carries one extra field (`reasoning_content`, …).
    fn extra_chunk(&self, key: &str, value: &str) -> Vec<ChatChunk> {
        if value.is_empty() {
            return Vec::new();
        }
        let mut delta = Delta::default();
        delta.extra.insert(key.into(), Value::String(value.into()));
        vec![self.chunk(delta)]
    }

    fn block_delta(&mut self, payload: &Value) -> Vec<ChatChunk> {
        let Some(delta) = payload.get("delta") else {
            return Vec::new();
        };
        let text = |name: &str| delta.get(name).and_then(Value::as_str).unwrap_or_default();
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => self.text_chunk(text("text")),
            Some("thinking_delta") => self.extra_chunk("reasoning_content", text("thinking")),
            Some("signature_delta") => self.extra_chunk(THINKING_SIGNATURE, text("signature")),
            Some("input_json_delta") => {
                let partial = text("partial_json");
                let block_index = payload.get("index").and_then(Value::as_u64).unwrap_or(0);
                match self.tools.get_mut(&block_index) {
                    Some(slot) if !partial.is_empty() => {
                        slot.sent_arguments = true;
                        let index = slot.index;
                        vec![self.arguments_chunk(index, partial.to_string())]
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn block_stop(&mut self, payload: &Value) -> Vec<ChatChunk> {
        let block_index = payload.get("index").and_then(Value::as_u64).unwrap_or(0);
        match self.tools.get_mut(&block_index) {
            // A tool without parameters streams no input; OpenAI clients expect valid JSON.
            Some(slot) if !slot.sent_arguments => {
                slot.sent_arguments = true;
                let index = slot.index;
                vec![self.arguments_chunk(index, "{}".into())]
            }
            _ => Vec::new(),
        }
    }

    fn message_delta(&mut self, payload: &Value) -> Vec<ChatChunk> {
        self.merge_usage(payload.get("usage"));
        let stop_reason = payload
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        match stop_reason {
            Some(reason) => {
                let mut chunk = self.chunk(Delta::default());
                if let Some(choice) = chunk.choices.first_mut() {
                    choice.finish_reason = Some(finish_reason(reason).to_string());
                    if let Some(s) = payload
                        .get("delta")
                        .and_then(|d| d.get("stop_sequence"))
                        .filter(|s| s.is_string())
                    {
                        choice.extra.insert("stop_sequence".into(), s.clone());
                    }
                }
                vec![chunk]
            }
            None => Vec::new(),
        }
    }

    fn usage_chunk(&self) -> ChatChunk {
        let raw = Value::Object(self.usage.clone());
        let mut chunk = self.chunk(Delta::default());
        chunk.choices.clear();
        chunk.usage = Some(AnthropicUsage::from_value(&raw).to_openai());
        chunk.extra.insert(USAGE_KEY.into(), raw);
        chunk
    }

    fn text_chunk(&self, text: &str) -> Vec<ChatChunk> {
        if text.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(Delta {
            content: Some(text.to_string()),
            ..Default::default()
        })]
    }

    fn tool_chunk(&self, call: ToolCallDelta) -> ChatChunk {
        self.chunk(Delta {
            tool_calls: Some(vec![call]),
            ..Default::default()
        })
    }

    fn arguments_chunk(&self, index: u32, arguments: String) -> ChatChunk {
        self.tool_chunk(ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta {
                name: None,
                arguments: Some(arguments),
            }),
        })
    }
}

/// `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` →
/// `Stream("overloaded_error: Overloaded")`.
fn stream_error(payload: &Value) -> ProviderError {
    let error = payload.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    match error.and_then(|e| e.get("type")).and_then(Value::as_str) {
        Some(kind) => ProviderError::Stream(format!("{kind}: {message}")),
        None => ProviderError::Stream(message.to_string()),
    }
}
