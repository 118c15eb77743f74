//! `streamGenerateContent?alt=sse` → OpenAI chunks.
//!
//! Each SSE `data:` payload is a partial `GenerateContentResponse`. [`StreamState`] turns them
//! into chunks: a first chunk with the `assistant` role, content deltas, one tool-call delta per
//! `functionCall` (Gemini sends a call whole, so its arguments arrive in one piece), a
//! finish-reason chunk, and at the end a `choices: []` chunk with the last usage reported.

use serde_json::{Map, Value};
use trestle_core::openai::{
    ChatChunk, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, Usage, unix_now,
};

use super::ids;
use super::response::{GenerateContentResponse, UsageMetadata, finish_reason, read_parts};
use crate::providers::{ProviderError, http};

/// The translation state of one stream.
#[derive(Debug)]
pub struct StreamState {
    id: String,
    model: String,
    created: u64,
    /// Whether any chunk went out (the id and model are fixed from then on).
    started: bool,
    /// Tool calls emitted so far: the next call's `index`.
    tool_calls: u32,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamState {
    /// A stream for `model` (the requested name, until Gemini reports its `modelVersion`).
    pub fn new(model: &str) -> Self {
        StreamState {
            id: ids::completion_id(),
            model: model.to_string(),
            created: unix_now(),
            started: false,
            tool_calls: 0,
            finished: false,
            usage: None,
        }
    }

    /// Translates one `data:` payload. An `{"error":…}` payload is a broken stream.
    pub fn on_data(&mut self, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::Malformed(format!("Gemini stream event: {e}")))?;
        if value.get("error").is_some() {
            return Err(ProviderError::Stream(http::error_message(data.as_bytes())));
        }
        let response: GenerateContentResponse = serde_json::from_value(value)
            .map_err(|e| ProviderError::Malformed(format!("Gemini stream event: {e}")))?;

        let mut out = Vec::new();
        if !self.started {
            if let Some(id) = response.response_id.as_deref().filter(|s| !s.is_empty()) {
                self.id = id.to_string();
            }
            if let Some(model) = response.model_version.as_deref().filter(|s| !s.is_empty()) {
                self.model = model.to_string();
            }
            self.started = true;
            out.push(self.chunk(Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            }));
        }
        if let Some(usage) = response.usage_metadata {
            self.usage = Some(UsageMetadata::to_usage(usage));
        }
        if self.finished {
            // Gemini may repeat usage after the finish; nothing else counts.
            return Ok(out);
        }

        let Some(candidate) = response.candidates.first() else {
            if response
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .is_some()
            {
                // The prompt was refused: an empty answer, filtered (as non-streamed).
                out.push(self.finish_chunk("content_filter"));
            }
            return Ok(out);
        };
        let parts = candidate
            .content
            .as_ref()
            .map(|c| c.parts.as_slice())
            .unwrap_or(&[]);
        let piece = read_parts(parts);
        if !piece.text.is_empty() {
            out.push(self.chunk(Delta {
                content: Some(piece.text),
                ..Delta::default()
            }));
        }
        for call in piece.tool_calls {
            let index = self.tool_calls;
            self.tool_calls += 1;
            out.push(self.chunk(Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    id: call.id,
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name),
                        arguments: Some(call.function.arguments),
                    }),
                }]),
                ..Delta::default()
            }));
        }
        if let Some(reason) = candidate.finish_reason.as_deref().filter(|r| !r.is_empty()) {
            let reason = finish_reason(reason, self.tool_calls > 0);
            out.push(self.finish_chunk(reason));
        }
        Ok(out)
    }

    /// The closing chunks once the upstream stream ended: a finish reason if Gemini never sent
    /// one (`stop`, or `tool_calls` after calls), then the usage chunk if usage was reported.
    pub fn finish(&mut self) -> Vec<ChatChunk> {
        let mut out = Vec::new();
        if !self.finished {
            if !self.started {
                self.started = true;
                out.push(self.chunk(Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Delta::default()
                }));
            }
            let reason = if self.tool_calls > 0 {
                "tool_calls"
            } else {
                "stop"
            };
            out.push(self.finish_chunk(reason));
        }
        if let Some(usage) = self.usage.take() {
            let mut last = self.chunk(Delta::default());
            last.choices.clear();
            last.usage = Some(usage);
            out.push(last);
        }
        out
    }

    fn chunk(&self, delta: Delta) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta)
    }

    fn finish_chunk(&mut self, reason: &str) -> ChatChunk {
        self.finished = true;
        let mut chunk = self.chunk(Delta::default());
        chunk.choices = vec![ChunkChoice {
            index: 0,
            delta: Delta::default(),
            finish_reason: Some(reason.to_string()),
            extra: Map::new(),
        }];
        chunk
    }
}
