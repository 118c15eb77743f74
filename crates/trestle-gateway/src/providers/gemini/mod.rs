//! Google's Gemini API (`generativelanguage.googleapis.com`): chat completions translated to
//! `generateContent` / `streamGenerateContent` and back, embeddings via `batchEmbedContents`.
//!
//! The translation lives in pure functions, tested over fixtures written from the public API
//! reference: [`request`] (OpenAI request → Gemini body), [`schema`] (tool schemas in the form
//! Gemini accepts), [`response`] (Gemini answer → OpenAI completion, embeddings), [`stream`]
//! (SSE events → OpenAI chunks) and [`ids`] (generated ids, thought signatures carried in
//! tool-call ids). Answers are translated, so nothing is relayed raw.

pub mod ids;
#[cfg(test)]
pub(crate) mod param_tests;
pub mod request;
pub mod response;
pub mod schema;
pub mod stream;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::Value;
use trestle_core::config::HttpProviderConfig;
use trestle_core::openai::{ChatChunk, ChatRequest, EmbeddingsRequest, EmbeddingsResponse};

use super::http::{Auth, HttpClient, SseEvent};
use super::{ChunkStream, Completion, Provider, ProviderError};
pub use stream::StreamState;

/// The Gemini API adapter; the key goes in `x-goog-api-key`.
pub struct Gemini {
    http: HttpClient,
}

impl Gemini {
    pub fn new(config: &HttpProviderConfig) -> anyhow::Result<Self> {
        Ok(Gemini {
            http: HttpClient::new(
                config,
                "https://generativelanguage.googleapis.com/v1beta",
                Auth::Header("x-goog-api-key"),
            )?,
        })
    }
}

/// The model's resource path; a `models/` prefix in the configured name is tolerated.
fn model_path(model: &str, method: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("/models/{model}:{method}")
}

fn encode(body: Result<Value, ProviderError>) -> Result<Bytes, ProviderError> {
    serde_json::to_vec(&body?)
        .map(Bytes::from)
        .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
}

/// The request's parameters Gemini has no counterpart for (also used by `vertex`).
pub fn dropped(req: &ChatRequest) -> Vec<String> {
    super::dropped_params(
        req,
        &[
            ("seed", Value::is_number),
            ("presence_penalty", Value::is_number),
            ("frequency_penalty", Value::is_number),
            ("top_k", Value::is_number),
        ],
        &[
            ("user", req.user.is_some()),
            ("metadata", req.metadata.is_some()),
        ],
    )
}

impl Provider for Gemini {
    fn dropped(&self, req: &ChatRequest) -> Vec<String> {
        dropped(req)
    }

    fn kind(&self) -> &'static str {
        "gemini"
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let body = encode(request::request_body(req));
        let path = model_path(model, "generateContent");
        let model = model.to_string();
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json(&path, body?, &[]).await?;
            response::parse_completion(&http.read_body(response).await?, &model)
        })
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let body = encode(request::request_body(req));
        let path = model_path(model, "streamGenerateContent?alt=sse");
        let state = StreamState::new(model);
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json(&path, body?, &[]).await?;
            Ok(chunks(http.sse_events(response), state))
        })
    }

    fn embed(
        &self,
        model: &str,
        req: &EmbeddingsRequest,
    ) -> BoxFuture<'static, Result<EmbeddingsResponse, ProviderError>> {
        let model = model.strip_prefix("models/").unwrap_or(model).to_string();
        let body = encode(Ok(response::embed_body(&model, req)));
        let path = model_path(&model, "batchEmbedContents");
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json(&path, body?, &[]).await?;
            response::parse_embeddings(&http.read_body(response).await?, &model)
        })
    }
}

/// Drives a [`StreamState`] over SSE events; ends after the first error or the closing chunks.
pub(crate) fn chunks(
    events: BoxStream<'static, Result<SseEvent, ProviderError>>,
    state: StreamState,
) -> ChunkStream {
    struct Pump {
        events: BoxStream<'static, Result<SseEvent, ProviderError>>,
        state: StreamState,
        pending: VecDeque<ChatChunk>,
        done: bool,
    }
    let pump = Pump {
        events,
        state,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(pump, |mut p| async move {
        loop {
            if let Some(chunk) = p.pending.pop_front() {
                return Some((Ok(chunk.into()), p));
            }
            if p.done {
                return None;
            }
            match p.events.next().await {
                Some(Ok(event)) => match p.state.on_data(&event.data) {
                    Ok(out) => p.pending.extend(out),
                    Err(e) => {
                        p.done = true;
                        return Some((Err(e), p));
                    }
                },
                Some(Err(e)) => {
                    p.done = true;
                    return Some((Err(e), p));
                }
                None => {
                    p.done = true;
                    p.pending.extend(p.state.finish());
                }
            }
        }
    })
    .boxed()
}
