//! Anthropic's Messages API (`POST /v1/messages`), translated to and from OpenAI chat
//! completions.
//!
//! The wire mapping lives in three pure, unit-tested modules: [`request`] (OpenAI request →
//! Messages body), [`response`] (Messages answer → `chat.completion`) and [`stream`] (Messages
//! SSE events → `chat.completion.chunk`s). This file only sends and receives. Answers are
//! translated, so `raw` is always `None`. Embeddings are not offered (the trait's default).

pub mod request;
pub mod response;
pub mod stream;

use std::collections::VecDeque;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use trestle_core::config::HttpProviderConfig;
use trestle_core::openai::{ChatChunk, ChatRequest};

use super::http::{Auth, HttpClient, SseEvent};
use super::{Chunk, ChunkStream, Completion, Provider, ProviderError};

pub use request::{DEFAULT_MAX_TOKENS, build_request, request_body};
pub use response::parse_completion;
pub use stream::StreamState;

#[cfg(test)]
mod param_tests;
#[cfg(test)]
mod tests;

/// The public endpoint; `base_url` in the config overrides it.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";
const MESSAGES_PATH: &str = "/v1/messages";
const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

pub struct Anthropic {
    http: HttpClient,
    /// Mark the stable prefix (tools, system) as a prompt-cache breakpoint.
    prompt_cache: bool,
}

impl Anthropic {
    pub fn new(config: &HttpProviderConfig) -> anyhow::Result<Self> {
        Ok(Anthropic {
            http: HttpClient::new(config, DEFAULT_BASE_URL, Auth::Header("x-api-key"))?,
            prompt_cache: config.prompt_cache,
        })
    }

    fn body(
        &self,
        model: &str,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<bytes::Bytes, ProviderError> {
        let mut body = build_request(model, req, stream)?;
        if self.prompt_cache {
            request::mark_cache_breakpoint(&mut body);
        }
        serde_json::to_vec(&body)
            .map(bytes::Bytes::from)
            .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
    }
}

impl Provider for Anthropic {
    fn dropped(&self, req: &ChatRequest) -> Vec<String> {
        // `top_k`, `thinking` and `parallel_tool_calls` are mapped when well typed; `user`
        // becomes `metadata.user_id`; JSON modes become an instruction.
        super::dropped_params(
            req,
            &[
                ("top_k", serde_json::Value::is_u64),
                ("parallel_tool_calls", serde_json::Value::is_boolean),
                ("thinking", serde_json::Value::is_object),
            ],
            &[("metadata", req.metadata.is_some())],
        )
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let body = self.body(model, req, false);
        let http = self.http.clone();
        Box::pin(async move {
            let response = http
                .post_json(MESSAGES_PATH, body?, &[("anthropic-version", API_VERSION)])
                .await?;
            parse_completion(&http.read_body(response).await?)
        })
    }

    fn count_tokens(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Option<BoxFuture<'static, Result<u64, ProviderError>>> {
        // The Messages body without the fields count_tokens does not take.
        let body = build_request(model, req, false).and_then(|mut body| {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("max_tokens");
                obj.remove("stream");
                obj.remove("metadata");
            }
            serde_json::to_vec(&body)
                .map(bytes::Bytes::from)
                .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
        });
        let http = self.http.clone();
        Some(Box::pin(async move {
            let response = http
                .post_json(
                    COUNT_TOKENS_PATH,
                    body?,
                    &[("anthropic-version", API_VERSION)],
                )
                .await?;
            let bytes = http.read_body(response).await?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("input_tokens").and_then(serde_json::Value::as_u64))
                .ok_or_else(|| ProviderError::Malformed("count_tokens: no `input_tokens`".into()))
        }))
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let body = self.body(model, req, true);
        let http = self.http.clone();
        Box::pin(async move {
            let response = http
                .post_json(MESSAGES_PATH, body?, &[("anthropic-version", API_VERSION)])
                .await?;
            Ok(chunk_stream(http.sse_events(response)))
        })
    }
}

/// Drives a [`StreamState`] over the upstream's events. The stream ends after `message_stop`
/// or the first error; an upstream that closes before `message_stop` yields a
/// [`ProviderError::Stream`] so a cut-off answer is never mistaken for a whole one.
fn chunk_stream(events: BoxStream<'static, Result<SseEvent, ProviderError>>) -> ChunkStream {
    struct Pump {
        events: BoxStream<'static, Result<SseEvent, ProviderError>>,
        state: StreamState,
        queue: VecDeque<Result<ChatChunk, ProviderError>>,
        finished: bool,
    }

    let pump = Pump {
        events,
        state: StreamState::new(),
        queue: VecDeque::new(),
        finished: false,
    };
    futures_util::stream::unfold(pump, |mut p| async move {
        loop {
            if let Some(item) = p.queue.pop_front() {
                return Some((item.map(Chunk::from), p));
            }
            if p.finished {
                return None;
            }
            match p.events.next().await {
                Some(Ok(event)) => match p.state.on_event(&event.event, &event.data) {
                    Ok(chunks) => {
                        p.queue.extend(chunks.into_iter().map(Ok));
                        p.finished = p.state.is_done();
                    }
                    Err(e) => {
                        p.queue.push_back(Err(e));
                        p.finished = true;
                    }
                },
                Some(Err(e)) => {
                    p.queue.push_back(Err(e));
                    p.finished = true;
                }
                None => {
                    p.finished = true;
                    if !p.state.is_done() {
                        p.queue.push_back(Err(ProviderError::Stream(
                            "the stream ended before message_stop".into(),
                        )));
                    }
                }
            }
        }
    })
    .boxed()
}
