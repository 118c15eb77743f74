//! The pipeline's SSE stream (`chat.completion.chunk`s, `[DONE]`) → Anthropic's events, one
//! frame at a time as it arrives:
//!
//! - the first chunk → `message_start` (usage not known yet: zeros) and a `ping`;
//! - reasoning, text and tool-call deltas → `content_block_start` (`thinking`, `text`,
//!   `tool_use` with its id and name) then `content_block_delta` (`thinking_delta`,
//!   `text_delta`, `input_json_delta`; `signature_delta` and whole `redacted_thinking`
//!   blocks from an Anthropic target); a block of another kind, or another tool call,
//!   closes the open one with `content_block_stop`;
//! - `finish_reason` closes the open block; the usage chunk is kept;
//! - `[DONE]` → `message_delta` (`stop_reason`, `stop_sequence`, usage with the input and
//!   cache counts) and `message_stop`;
//! - an error event (the upstream failed mid-stream, a guardrail blocked) → Anthropic's
//!   `error` event, and the stream ends there.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use trestle_core::openai::{ChatChunk, Usage};

use super::response::{error_body, matched_stop, message_id, reasoning, stop_reason, usage};
use crate::providers::anthropic::request::{THINKING_BLOCKS, safe_id};
use crate::providers::anthropic::response::USAGE_KEY;
use crate::providers::anthropic::stream::THINKING_SIGNATURE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u32),
}

/// Translation state for one stream.
#[derive(Debug)]
pub struct Events {
    model: String,
    stops: Vec<String>,
    started: bool,
    /// The open content block and its index.
    open: Option<(Open, u64)>,
    next_block: u64,
    /// OpenAI tool index → content block index, for every tool call seen.
    tools: Vec<(u32, u64)>,
    finish: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
    anthropic_usage: Option<Value>,
    done: bool,
}

impl Events {
    /// `model` stands in when the chunks carry none.
    pub fn new(model: &str, stops: Vec<String>) -> Self {
        Events {
            model: model.to_string(),
            stops,
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
            anthropic_usage: None,
            done: false,
        }
    }

    /// Whether the stream has ended (`message_stop` or `error` sent).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one SSE `data:` payload, appending events to `out`.
    pub fn on_data(&mut self, data: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.finish(out);
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if value.get("error").is_some() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("the stream failed");
            let status = match value.pointer("/error/code").and_then(Value::as_str) {
                Some("shutting_down") => 503,
                Some("guardrail_blocked") => 422,
                _ => 502,
            };
            self.error(status, message, out);
            return;
        }
        match serde_json::from_value::<ChatChunk>(value) {
            Ok(chunk) => self.on_chunk(&chunk, out),
            Err(e) => self.error(502, &format!("unreadable stream chunk: {e}"), out),
        }
    }

    /// Ends the stream with an `error` event.
    pub fn error(&mut self, status: u16, message: &str, out: &mut BytesMut) {
        event(out, "error", &error_body(status, message));
        self.done = true;
    }

    /// Translates one chunk.
    pub fn on_chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.start(chunk, out);
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        if let Some(raw) = chunk.extra.get(USAGE_KEY) {
            self.anthropic_usage = Some(raw.clone());
        }
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        let delta = &choice.delta;
        if let Some(thinking) = reasoning(&delta.extra) {
            let index = self.ensure(Open::Thinking, out, thinking_block);
            let delta = json!({"type": "thinking_delta", "thinking": thinking});
            block_delta(out, index, delta);
        }
        if let Some(signature) = delta.extra.get(THINKING_SIGNATURE).and_then(Value::as_str) {
            let index = self.ensure(Open::Thinking, out, thinking_block);
            let delta = json!({"type": "signature_delta", "signature": signature});
            block_delta(out, index, delta);
        }
        // Whole blocks (an Anthropic target's redacted thinking): started and stopped at once.
        for block in delta
            .extra
            .get(THINKING_BLOCKS)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.close(out);
            let index = self.next_block;
            self.next_block += 1;
            event(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block}),
            );
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure(Open::Text, out, || json!({"type": "text", "text": ""}));
            block_delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        for call in delta.tool_calls.iter().flatten() {
            let known = self.tools.iter().find(|(i, _)| *i == call.index).copied();
            let block = match known {
                Some((_, block)) => block,
                None => {
                    let function = call.function.as_ref();
                    let id = call
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("toolu_{}", self.next_block));
                    let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                    let block = self.ensure(Open::Tool(call.index), out, || {
                        json!({"type": "tool_use", "id": safe_id(&id), "name": name, "input": {}})
                    });
                    self.tools.push((call.index, block));
                    block
                }
            };
            let arguments = call
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty());
            if let Some(partial) = arguments {
                let delta = json!({"type": "input_json_delta", "partial_json": partial});
                block_delta(out, block, delta);
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.close(out);
            self.finish = Some(reason.clone());
            self.stop_sequence = matched_stop(&choice.extra, &self.stops).map(str::to_string);
        }
    }

    fn start(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        self.started = true;
        if !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        let message = json!({
            "id": message_id(&chunk.id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        event(out, "ping", &json!({"type": "ping"}));
    }

    /// The index of the open block of `kind`, starting it (and closing another) if needed.
    fn ensure(&mut self, kind: Open, out: &mut BytesMut, block: impl FnOnce() -> Value) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block()}),
        );
        index
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// `[DONE]`: the open block closed, `message_delta` and `message_stop`.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if !self.started {
            self.start(&ChatChunk::default(), out);
        }
        self.close(out);
        let stop_sequence = self.stop_sequence.as_deref();
        let delta = json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(self.finish.as_deref(), stop_sequence),
                "stop_sequence": stop_sequence,
            },
            "usage": usage(self.usage.as_ref(), self.anthropic_usage.as_ref()),
        });
        event(out, "message_delta", &delta);
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}

fn thinking_block() -> Value {
    json!({"type": "thinking", "thinking": "", "signature": ""})
}

/// One named SSE event.
fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

fn block_delta(out: &mut BytesMut, index: u64, delta: Value) {
    event(
        out,
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    );
}

/// Splits an SSE byte stream into `data:` payloads as frames complete.
#[derive(Debug, Default)]
pub struct Frames {
    buffer: BytesMut,
}

impl Frames {
    /// Adds bytes; returns the `data:` payloads of every frame now complete.
    pub fn push(&mut self, bytes: &Bytes) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let frame = self.buffer.split_to(end + 2);
            let text = String::from_utf8_lossy(&frame);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}
