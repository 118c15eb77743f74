//! The placeholder model: an in-process LLM stand-in with configurable time to first token,
//! streaming speed and text, so Trestle works with no provider and tests have a real upstream.
//! `trestle mock` serves the same model over HTTP.

mod plan;
mod render;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use trestle_core::config::{PlaceholderConfig, TextMode};
use trestle_core::openai::{
    ChatRequest, Embedding, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse,
};

pub use plan::{Plan, Replies, example, plan, sample, split_tokens};
pub use render::{chunks, completion, new_id, paced};

use super::{ChunkStream, Completion, Provider, ProviderError};

/// The placeholder model. Cheap to clone.
#[derive(Clone)]
pub struct Placeholder {
    inner: Arc<Inner>,
}

struct Inner {
    config: PlaceholderConfig,
    replies: Replies,
    requests: AtomicU64,
}

impl Placeholder {
    pub fn new(config: PlaceholderConfig) -> anyhow::Result<Self> {
        let replies = match (&config.mode, &config.file) {
            (TextMode::File | TextMode::Script, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read placeholder replies {}: {e}", path.display())
                })?;
                Replies::parse(config.mode, &text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            _ => Replies::default(),
        };
        Ok(Placeholder {
            inner: Arc::new(Inner {
                config,
                replies,
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// Plans the answer to a request for the model it names (each call advances the timing
    /// draws).
    pub fn plan(&self, req: &ChatRequest) -> Plan {
        self.plan_for(&req.model, req)
    }

    /// Plans the answer as `model` (the model names `echo`, `lorem` and `transcript` pick a
    /// mode).
    pub fn plan_for(&self, model: &str, req: &ChatRequest) -> Plan {
        let nonce = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        plan(&self.inner.config, &self.inner.replies, model, req, nonce)
    }
}

impl Provider for Placeholder {
    fn kind(&self) -> &'static str {
        "placeholder"
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let plan = self.plan_for(model, req);
        let model = model.to_string();
        Box::pin(async move {
            let wait = plan.duration();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(Completion {
                body: completion(&plan, &new_id(), &model),
                raw: None,
            })
        })
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let plan = self.plan_for(model, req);
        let all = chunks(&plan, &new_id(), model, true);
        Box::pin(async move {
            let stream = paced(all, plan.ttft, plan.gap).map(|c| Ok(c.into()));
            Ok(stream.boxed())
        })
    }

    fn embed(
        &self,
        model: &str,
        req: &EmbeddingsRequest,
    ) -> BoxFuture<'static, Result<EmbeddingsResponse, ProviderError>> {
        let texts = req.input.texts();
        let dims = req.dimensions.unwrap_or(64).clamp(1, 4096) as usize;
        let model = model.to_string();
        Box::pin(async move {
            let mut tokens = 0u64;
            let data = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    tokens += (t.len() as u64).div_ceil(4);
                    Embedding {
                        object: "embedding".into(),
                        index: i as u32,
                        embedding: render::pseudo_embedding(t, dims),
                    }
                })
                .collect();
            Ok(EmbeddingsResponse {
                object: "list".into(),
                data,
                model,
                usage: EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            })
        })
    }
}
