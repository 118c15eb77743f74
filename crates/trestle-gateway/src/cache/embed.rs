//! Embedders for the semantic cache: any configured `provider/model` with an
//! OpenAI-compatible embeddings endpoint, or all-MiniLM-L6-v2 / all-mpnet-base-v2 in process
//! (the `local-embeddings` build feature). Vectors come back unit-length. A cross-encoder
//! ([`super::verify`]) is kept here too, by name, though it only scores pairs.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Map;
use trestle_core::config::EmbedderConfig;
use trestle_core::openai::{EmbeddingInput, EmbeddingsRequest};

use super::semantic::normalize;
use crate::runtime::Target;

#[derive(Clone)]
pub enum Embedder {
    Provider(Arc<Target>),
    #[cfg(feature = "local-embeddings")]
    Local(Arc<trestle_embed::SentenceEncoder>),
    /// A model that scores pairs (a cross-encoder): a `verifier` only, it embeds nothing.
    Pairs(Arc<dyn super::verify::PairScorer>),
}

/// The `[embedders.NAME]` for the in-process model in `dir` (`$TRESTLE_MINILM_DIR` without
/// one): `mpnet` when the folder's config.json names MPNet, else `minilm`.
pub fn local_config(dir: Option<PathBuf>) -> EmbedderConfig {
    #[cfg(feature = "local-embeddings")]
    {
        let mpnet = dir.as_deref().map(trestle_embed::Architecture::detect);
        if matches!(mpnet, Some(Ok(trestle_embed::Architecture::MpNet))) {
            return EmbedderConfig::Mpnet { path: dir };
        }
    }
    EmbedderConfig::Minilm { path: dir }
}

impl Embedder {
    /// What it is, for errors and metrics.
    pub fn describe(&self) -> String {
        match self {
            Embedder::Provider(t) => t.name.clone(),
            #[cfg(feature = "local-embeddings")]
            Embedder::Local(model) => format!("{} (in process)", model.describe()),
            Embedder::Pairs(scorer) => format!("{} (in process)", scorer.describe()),
        }
    }

    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut all = self.embed_many(vec![text.to_string()]).await?;
        all.pop()
            .ok_or_else(|| "the embedder returned no vector".to_string())
    }

    /// Several texts at once (the eval and the bench batch them).
    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        match self {
            Embedder::Provider(target) => {
                let req = EmbeddingsRequest {
                    model: target.model.clone(),
                    input: EmbeddingInput::Many(texts),
                    encoding_format: None,
                    dimensions: None,
                    user: None,
                    extra: Map::new(),
                };
                let mut answer = target
                    .provider
                    .embed(&target.model, &req)
                    .await
                    .map_err(|e| format!("{}: {e}", target.name))?;
                answer.data.sort_by_key(|d| d.index);
                Ok(answer
                    .data
                    .into_iter()
                    .map(|d| normalize(d.embedding))
                    .collect())
            }
            Embedder::Pairs(scorer) => Err(format!(
                "{} scores pairs of questions and embeds nothing: use it as a `verifier`",
                scorer.describe()
            )),
            #[cfg(feature = "local-embeddings")]
            Embedder::Local(model) => {
                let model = model.clone();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model.embed(&refs).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }
}
