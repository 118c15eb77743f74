//! Provider adapters: each speaks one upstream API and translates it to and from the OpenAI
//! format. Every adapter lives in its own folder with its wire mapping and its tests over
//! recorded fixtures.

pub mod anthropic;
pub mod azure;
pub mod gemini;
pub(crate) mod http;
pub mod openai;
#[cfg(test)]
pub(crate) mod param_table;
pub mod placeholder;
pub mod vertex;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use trestle_core::config::{Config, ProviderConfig};
use trestle_core::openai::{
    ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest, EmbeddingsResponse,
};

pub use http::{HttpClient, install_tls};

/// A non-streamed answer. `raw` holds the upstream's JSON when it can be relayed byte for byte.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: ChatCompletion,
    pub raw: Option<Bytes>,
}

/// One streamed chunk. `raw` holds the upstream's `data:` payload when it can be relayed as is.
///
/// A pass-through stream ([`Provider::chat_stream_relayed`]) also yields runs of whole SSE
/// frames (`frames`): `raw` is then `data: …\n\n` bytes to send as they are, and `chunk` is
/// empty (nothing was parsed).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub chunk: ChatChunk,
    pub raw: Option<Bytes>,
    pub frames: bool,
}

impl Chunk {
    /// A run of whole SSE frames, relayed unread.
    pub fn frames(bytes: Bytes) -> Self {
        Chunk {
            chunk: ChatChunk::default(),
            raw: Some(bytes),
            frames: true,
        }
    }
}

impl From<ChatChunk> for Chunk {
    fn from(chunk: ChatChunk) -> Self {
        Chunk {
            chunk,
            raw: None,
            frames: false,
        }
    }
}

/// A stream of chunks; it ends after the last chunk (the adapter consumes any `[DONE]`).
pub type ChunkStream = BoxStream<'static, Result<Chunk, ProviderError>>;

/// What can go wrong talking to a provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("upstream answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// Delay the upstream asked for (429/503 `Retry-After`).
        retry_after: Option<Duration>,
    },
    #[error("malformed upstream response: {0}")]
    Malformed(String),
    #[error("upstream stream broke: {0}")]
    Stream(String),
    /// An output guardrail stopped the answer (a stream that had started ends with an error
    /// event saying so).
    #[error("{message}")]
    Blocked { guardrail: String, message: String },
    /// The gateway cannot put the request into this provider's terms: the client's error
    /// (400 naming `param`), never retried, never served from a fallback, and not held against
    /// the target's health, since nothing was sent.
    #[error("{message}")]
    Refused {
        message: String,
        /// The request field at fault, in OpenAI's notation (`messages[2].content[0]`).
        param: Option<String>,
    },
}

impl ProviderError {
    /// Whether another try (same or next target) may succeed: connect errors, timeouts,
    /// 408/409/429, 5xx and broken bodies. A 4xx about the request itself is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_)
            | ProviderError::Timeout(_)
            | ProviderError::Malformed(_)
            | ProviderError::Stream(_) => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429) || *status >= 500
            }
            ProviderError::Refused { .. } | ProviderError::Blocked { .. } => false,
        }
    }

    /// A refusal to translate the request (see [`ProviderError::Refused`]).
    pub fn refused(message: impl Into<String>) -> Self {
        ProviderError::Refused {
            message: message.into(),
            param: None,
        }
    }

    /// Places a refusal inside `field`: `refused(..).within("content[1]").within("messages[3]")`
    /// names `messages[3].content[1]`. Other errors pass through.
    pub fn within(self, field: &str) -> Self {
        match self {
            ProviderError::Refused { message, param } => {
                let param = match param {
                    None => field.to_string(),
                    Some(inner) if inner.starts_with('[') => format!("{field}{inner}"),
                    Some(inner) => format!("{field}.{inner}"),
                };
                ProviderError::Refused {
                    message,
                    param: Some(param),
                }
            }
            other => other,
        }
    }

    /// Whether the error is about the client's request (so no other target will do better):
    /// the upstream said 400, 413 or 422.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            ProviderError::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics and traces.
    pub fn label(&self) -> String {
        match self {
            ProviderError::Connect(_) => "connect".into(),
            ProviderError::Timeout(what) => format!("timeout {what}"),
            ProviderError::Status { status, .. } => status.to_string(),
            ProviderError::Malformed(_) => "malformed".into(),
            ProviderError::Stream(_) => "stream".into(),
            ProviderError::Refused { .. } => "refused".into(),
            ProviderError::Blocked { .. } => "blocked".into(),
        }
    }
}

/// An upstream that answers chat completions (and maybe embeddings) in OpenAI terms.
///
/// The futures are `'static`: an adapter builds its request body before returning, so the
/// caller's borrow ends at the call.
pub trait Provider: Send + Sync {
    /// The adapter's kind, e.g. `openai`.
    fn kind(&self) -> &'static str;

    /// A non-streamed completion from `model` (the upstream's own model name).
    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>>;

    /// A streamed completion; resolves once the upstream accepted the request.
    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>>;

    /// A streamed completion for a relay that reads no chunk but the first and those carrying
    /// usage: an adapter that can relays the upstream's SSE frames as they arrived (runs of
    /// [`Chunk::frames`] between the parsed chunks); the others answer as
    /// [`Provider::chat_stream`].
    fn chat_stream_relayed(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        self.chat_stream(model, req)
    }

    /// The request's parameters this provider cannot take and leaves out (reported in
    /// `x-trestle-dropped-params` and on the trace, never silently).
    fn dropped(&self, req: &ChatRequest) -> Vec<String> {
        let _ = req;
        Vec::new()
    }

    /// The upstream's own count of the request's input tokens, where it has an endpoint for
    /// it (Anthropic's `count_tokens`); `None` means count locally.
    fn count_tokens(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Option<BoxFuture<'static, Result<u64, ProviderError>>> {
        let _ = (model, req);
        None
    }

    /// A moderation verdict (`POST /v1/moderations`, OpenAI's answer shape), where the
    /// provider has one.
    fn moderate(
        &self,
        model: &str,
        input: &str,
    ) -> BoxFuture<'static, Result<serde_json::Value, ProviderError>> {
        let _ = (model, input);
        let kind = self.kind();
        Box::pin(async move {
            Err(ProviderError::refused(format!(
                "the {kind} provider has no moderations endpoint"
            )))
        })
    }

    /// Embeddings, where the provider has them.
    fn embed(
        &self,
        model: &str,
        req: &EmbeddingsRequest,
    ) -> BoxFuture<'static, Result<EmbeddingsResponse, ProviderError>> {
        let _ = (model, req);
        let kind = self.kind();
        Box::pin(async move {
            Err(ProviderError::refused(format!(
                "the {kind} provider has no embeddings endpoint"
            )))
        })
    }
}

/// The fields of `extra` an adapter maps, each with the test its value must pass to be
/// mapped (an adapter forwards only well-typed values; the rest are dropped like unknowns).
pub type Used<'a> = &'a [(&'a str, fn(&serde_json::Value) -> bool)];

/// The parameters of `req` an adapter drops: its unknown fields (`extra`) not in `used` or
/// whose value fails `used`'s test, and the typed ones it has no counterpart for
/// (`unmapped`). Sorted.
pub fn dropped_params(req: &ChatRequest, used: Used<'_>, unmapped: &[(&str, bool)]) -> Vec<String> {
    let mut out: Vec<String> = req
        .extra
        .iter()
        .filter(|(k, v)| !used.iter().any(|(name, ok)| name == k && ok(v)))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(
        unmapped
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| k.to_string()),
    );
    out.sort();
    out
}

/// Builds every configured provider, keyed by name.
pub fn build_all(config: &Config) -> anyhow::Result<HashMap<String, Arc<dyn Provider>>> {
    let mut out: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    for (name, pc) in &config.providers {
        let provider: Arc<dyn Provider> = match pc {
            ProviderConfig::Openai(c) => Arc::new(openai::OpenAi::new(c)?),
            ProviderConfig::Anthropic(c) => Arc::new(anthropic::Anthropic::new(c)?),
            ProviderConfig::Gemini(c) => Arc::new(gemini::Gemini::new(c)?),
            ProviderConfig::AzureOpenai(c) => Arc::new(azure::AzureOpenAi::new(c)?),
            ProviderConfig::Vertex(c) => Arc::new(
                vertex::Vertex::new(c, config.base_dir.as_deref())
                    .map_err(|e| anyhow::anyhow!("providers.{name}: {e}"))?,
            ),
            ProviderConfig::Placeholder(c) => Arc::new(placeholder::Placeholder::new(c.clone())?),
        };
        out.insert(name.clone(), provider);
    }
    Ok(out)
}
