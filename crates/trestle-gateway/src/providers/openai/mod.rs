//! OpenAI-compatible upstreams: OpenAI itself, vLLM, llama.cpp server, Ollama, Groq, Together…
//!
//! The request goes out as the client sent it (unknown fields included) with the upstream's
//! model name; answers are relayed byte for byte, parsed only to read usage and content.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};
use trestle_core::config::HttpProviderConfig;
use trestle_core::openai::{
    ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest, EmbeddingsResponse, Message,
    ResponseFormat, Stop, StreamOptions, Tool, ToolChoice,
};

use super::http::{self, Auth, HttpClient};
use super::{Chunk, ChunkStream, Completion, Provider, ProviderError};

mod relay;
pub(crate) mod template;
#[cfg(test)]
pub(crate) mod tests;

pub struct OpenAi {
    http: HttpClient,
}

impl OpenAi {
    pub fn new(config: &HttpProviderConfig) -> anyhow::Result<Self> {
        Ok(OpenAi {
            http: HttpClient::new(config, "https://api.openai.com/v1", Auth::Bearer)?,
        })
    }

    /// Sends a streamed chat request; the caller reads the answer as events or as bytes.
    fn open_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> impl Future<Output = Result<(HttpClient, http::Response), ProviderError>> + Send + 'static
    {
        let body = request_body(model, req, true);
        let http = self.http.clone();
        async move {
            let response = http.post_json("/chat/completions", body?, &[]).await?;
            Ok((http, response))
        }
    }
}

/// The outgoing body: the client's request with the upstream model name; streams always ask
/// for usage so cost is known (the gateway strips it again if the client did not ask).
/// Serialized from borrowed fields: the request is never copied.
pub fn request_body(model: &str, req: &ChatRequest, stream: bool) -> Result<Bytes, ProviderError> {
    let stream_options = stream.then(|| StreamOptions {
        include_usage: Some(true),
        extra: req
            .stream_options
            .as_ref()
            .map(|o| o.extra.clone())
            .unwrap_or_default(),
    });
    let out = Outgoing {
        model,
        messages: &req.messages,
        stream: stream.then_some(true),
        stream_options: stream_options.as_ref(),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_tokens,
        max_completion_tokens: req.max_completion_tokens,
        stop: req.stop.as_ref(),
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        response_format: req.response_format.as_ref(),
        user: req.user.as_deref(),
        metadata: req.metadata.as_ref(),
        extra: &req.extra,
    };
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
}

/// [`ChatRequest`]'s fields, borrowed, in the same order.
#[derive(Serialize)]
struct Outgoing<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<&'a StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// Parses a non-streamed body.
pub fn parse_completion(body: Bytes) -> Result<Completion, ProviderError> {
    let parsed: ChatCompletion = serde_json::from_slice(&body)
        .map_err(|e| ProviderError::Malformed(format!("chat completion: {e}")))?;
    Ok(Completion {
        body: parsed,
        raw: Some(body),
    })
}

/// Parses one SSE `data:` payload; `Ok(None)` for the closing `[DONE]`.
pub fn parse_chunk(data: &str) -> Result<Option<Chunk>, ProviderError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(None);
    }
    if data.starts_with("{\"error\"") {
        return Err(ProviderError::Stream(http::error_message(data.as_bytes())));
    }
    let chunk: ChatChunk = serde_json::from_str(data)
        .map_err(|e| ProviderError::Malformed(format!("stream chunk: {e}")))?;
    Ok(Some(Chunk {
        chunk,
        raw: Some(Bytes::copy_from_slice(data.as_bytes())),
        frames: false,
    }))
}

impl Provider for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let body = request_body(model, req, false);
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json("/chat/completions", body?, &[]).await?;
            parse_completion(http.read_body(response).await?)
        })
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let opened = self.open_stream(model, req);
        Box::pin(async move {
            let (http, response) = opened.await?;
            let events = http.sse_events(response);
            let chunks = events
                .map(|event| event.and_then(|e| parse_chunk(&e.data)))
                // `[DONE]` (Ok(None)) ends the stream.
                .take_while(|item| std::future::ready(!matches!(item, Ok(None))))
                .filter_map(|item| std::future::ready(item.transpose()));
            Ok(chunks.boxed())
        })
    }

    fn chat_stream_relayed(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let opened = self.open_stream(model, req);
        Box::pin(async move {
            let (http, response) = opened.await?;
            Ok(relay::relay(http.sse_bytes(response)))
        })
    }

    fn moderate(
        &self,
        model: &str,
        input: &str,
    ) -> BoxFuture<'static, Result<Value, ProviderError>> {
        let body = serde_json::to_vec(&serde_json::json!({"model": model, "input": input}))
            .map(Bytes::from);
        let http = self.http.clone();
        Box::pin(async move {
            let body = body.map_err(|e| ProviderError::refused(e.to_string()))?;
            let response = http.post_json("/moderations", body, &[]).await?;
            let bytes = http.read_body(response).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Malformed(format!("moderations: {e}")))
        })
    }

    fn embed(
        &self,
        model: &str,
        req: &EmbeddingsRequest,
    ) -> BoxFuture<'static, Result<EmbeddingsResponse, ProviderError>> {
        let mut out = req.clone();
        out.model = model.to_string();
        let body = serde_json::to_vec(&out).map(Bytes::from);
        let http = self.http.clone();
        Box::pin(async move {
            let body = body.map_err(|e| ProviderError::refused(e.to_string()))?;
            let response = http.post_json("/embeddings", body, &[]).await?;
            let bytes = http.read_body(response).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Malformed(format!("embeddings: {e}")))
        })
    }
}
