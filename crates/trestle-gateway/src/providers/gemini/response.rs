//! Gemini `GenerateContentResponse` → OpenAI completion, plus the embeddings mapping.
//!
//! Only the first candidate is read (Trestle never asks for more). Thought parts
//! (`thought: true`) are not relayed; their tokens count as completion tokens.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use trestle_core::openai::{
    ChatCompletion, Choice, Embedding, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse,
    FunctionCall, ResponseMessage, ToolCall, Usage, unix_now,
};

use super::ids;
use crate::providers::{Completion, ProviderError};

/// The parts of a `GenerateContentResponse` Trestle reads (the same shape streams in pieces).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default)]
    pub content: Option<WireContent>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireContent {
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: bool,
    #[serde(default)]
    pub thought_signature: Option<String>,
    #[serde(default)]
    pub function_call: Option<WireFunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireFunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// Thinking tokens are billed as output, so they count as completion tokens; tokens of
    /// tool-use prompts (e.g. search results Gemini read) count as prompt tokens.
    pub fn to_usage(self) -> Usage {
        Usage::new(
            self.prompt_token_count + self.tool_use_prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
            self.cached_content_token_count,
        )
    }
}

/// What one response (or one streamed piece) says: visible text and tool calls.
#[derive(Debug, Default)]
pub struct Output {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
}

/// Reads a candidate's parts: text (thoughts skipped) and function calls.
pub fn read_parts(parts: &[Part]) -> Output {
    let mut out = Output::default();
    for part in parts {
        if part.thought {
            continue;
        }
        if let Some(call) = &part.function_call {
            let args = call
                .args
                .clone()
                .unwrap_or_else(|| Value::Object(Map::new()));
            out.tool_calls.push(ToolCall {
                id: Some(ids::tool_call_id(
                    call.id.as_deref(),
                    part.thought_signature.as_deref(),
                )),
                kind: "function".into(),
                function: FunctionCall {
                    name: call.name.clone(),
                    arguments: args.to_string(),
                },
            });
        } else if let Some(text) = &part.text {
            out.text.push_str(text);
        }
    }
    out
}

/// Gemini's `finishReason` in OpenAI terms; `STOP` after function calls is `tool_calls`.
pub fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// Parses a non-streamed body. `model` is the requested model, used when Gemini does not
/// name its `modelVersion`.
///
/// A prompt Gemini refused outright comes back with no candidate and a
/// `promptFeedback.blockReason`; it becomes an empty answer with finish reason
/// `content_filter`, as OpenAI reports its own filter.
pub fn parse_completion(body: &[u8], model: &str) -> Result<Completion, ProviderError> {
    let response: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("Gemini response: {e}")))?;
    let (message, finish) = match response.candidates.first() {
        Some(candidate) => {
            let parts = candidate
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or(&[]);
            let out = read_parts(parts);
            let called = !out.tool_calls.is_empty();
            let finish =
                finish_reason(candidate.finish_reason.as_deref().unwrap_or("STOP"), called);
            let message = ResponseMessage {
                role: "assistant".into(),
                content: (!called || !out.text.is_empty()).then_some(out.text),
                tool_calls: called.then_some(out.tool_calls),
                extra: Map::new(),
            };
            (message, finish)
        }
        None => {
            if response
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .is_none()
            {
                return Err(ProviderError::Malformed(
                    "Gemini response has no candidate and no block reason".into(),
                ));
            }
            let message = ResponseMessage {
                role: "assistant".into(),
                content: Some(String::new()),
                tool_calls: None,
                extra: Map::new(),
            };
            (message, "content_filter")
        }
    };
    let body = ChatCompletion {
        id: response.response_id.unwrap_or_else(ids::completion_id),
        object: "chat.completion".into(),
        created: unix_now(),
        model: response.model_version.unwrap_or_else(|| model.to_string()),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish.into()),
            extra: Map::new(),
        }],
        usage: response.usage_metadata.map(UsageMetadata::to_usage),
        extra: Map::new(),
    };
    Ok(Completion { body, raw: None })
}

/// The body for `models/{model}:batchEmbedContents`: one request per input text.
pub fn embed_body(model: &str, req: &EmbeddingsRequest) -> Value {
    let requests: Vec<Value> = req
        .input
        .texts()
        .into_iter()
        .map(|text| {
            let mut one = json!({
                "model": format!("models/{model}"),
                "content": { "parts": [{ "text": text }] },
            });
            if let (Some(dims), Some(object)) = (req.dimensions, one.as_object_mut()) {
                object.insert("outputDimensionality".into(), json!(dims));
            }
            one
        })
        .collect();
    json!({ "requests": requests })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchEmbedResponse {
    embeddings: Vec<ContentEmbedding>,
    #[serde(default)]
    usage_metadata: Option<EmbedUsage>,
}

#[derive(Deserialize)]
struct ContentEmbedding {
    values: Vec<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    total_token_count: Option<u64>,
}

/// A `batchEmbedContents` answer as an OpenAI embeddings list (usage zero unless reported).
pub fn parse_embeddings(body: &[u8], model: &str) -> Result<EmbeddingsResponse, ProviderError> {
    let parsed: BatchEmbedResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("Gemini embeddings: {e}")))?;
    let usage = parsed
        .usage_metadata
        .map_or_else(EmbeddingUsage::default, |u| EmbeddingUsage {
            prompt_tokens: u.prompt_token_count,
            total_tokens: u.total_token_count.unwrap_or(u.prompt_token_count),
        });
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data: parsed
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, e)| Embedding {
                object: "embedding".into(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
                embedding: e.values,
            })
            .collect(),
        model: model.to_string(),
        usage,
    })
}
