//! Cross-encoders: a BERT that reads two texts together and says how likely they mean the same
//! thing, as sentence-transformers' `CrossEncoder` does (BertForSequenceClassification: the
//! encoder, then a pooler, dense and tanh on the [CLS] token, then a linear classifier).
//!
//! A model with one output (the ms-marco, stsb and quora cross-encoders) gives the sigmoid of
//! its logit; one with several (NLI: contradiction, entailment, neutral; or not duplicate,
//! duplicate) gives the softmax share of the label `id2label` names entailment, duplicate,
//! paraphrase or same, else of the last label. The semantic cache uses it as a second opinion
//! on a candidate ("do these two questions ask the same thing?"), so both texts are short:
//! a pair is cut to [`CrossEncoder::max_tokens`], the longer text first.

use std::path::Path;

use candle_core::{D, DType, Device};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::architecture::read_json;
use crate::{Architecture, CONFIG_FILE, EmbedError, TOKENIZER_FILE, WEIGHTS_FILE};

/// The environment variable naming a cross-encoder's folder (the tests' real model).
pub const CROSS_DIR_ENV: &str = "TRESTLE_CROSS_ENCODER_DIR";
/// Longest pair in tokens, special tokens included, unless the model allows fewer.
pub const CROSS_MAX_TOKENS: usize = 256;
/// Pairs run through the model together.
const MAX_BATCH: usize = 16;
/// Label names that mean "the two texts say the same thing".
const POSITIVE_LABELS: [&str; 4] = ["entail", "duplicate", "paraphrase", "same"];

/// A BERT cross-encoder on the CPU.
pub struct CrossEncoder {
    bert: BertModel,
    pooler: Linear,
    classifier: Linear,
    tokenizer: Tokenizer,
    device: Device,
    labels: usize,
    positive: usize,
    layers: usize,
    max_tokens: usize,
}

/// The classifier's output count and which output means "same", from config.json.
fn labels(config: &Value) -> (usize, usize) {
    let names: Vec<(usize, String)> = config
        .get("id2label")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_ascii_lowercase())))
                .collect()
        })
        .unwrap_or_default();
    let count = config
        .get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| names.iter().map(|(i, _)| i + 1).max())
        .unwrap_or(1)
        .max(1);
    let positive = names
        .iter()
        .find(|(_, name)| POSITIVE_LABELS.iter().any(|p| name.contains(p)))
        .map_or(count - 1, |(i, _)| *i)
        .min(count - 1);
    (count, positive)
}

impl CrossEncoder {
    /// Loads model.safetensors, tokenizer.json and config.json from `dir`: a BERT sequence
    /// classifier (weights under `bert.`, `classifier.`, as transformers saves them; or
    /// without the `bert.` prefix).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let weights_path = crate::required(dir, WEIGHTS_FILE)?;
        let tokenizer_path = crate::required(dir, TOKENIZER_FILE)?;
        let config_path = crate::required(dir, CONFIG_FILE)?;
        let raw: Value = read_json(&config_path)?;
        if Architecture::from_config(&raw) != Some(Architecture::Bert) {
            return Err(EmbedError::Unsupported {
                path: config_path,
                reason: "a cross-encoder must be a BERT model (model_type \"bert\")".into(),
            });
        }
        let config: Config = read_json(&config_path)?;
        let (labels, positive) = labels(&raw);

        let device = Device::Cpu;
        let bytes = std::fs::read(&weights_path).map_err(|source| EmbedError::Read {
            path: weights_path.clone(),
            source,
        })?;
        let weights = |source| EmbedError::Weights {
            architecture: Architecture::Bert,
            path: weights_path.clone(),
            source,
        };
        let vb =
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(weights)?;
        let encoder = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let bert = BertModel::load(encoder.clone(), &config).map_err(weights)?;
        let hidden = config.hidden_size;
        let pooler =
            candle_nn::linear(hidden, hidden, encoder.pp("pooler").pp("dense")).map_err(weights)?;
        let classifier = candle_nn::linear(hidden, labels, vb.pp("classifier")).map_err(weights)?;
        let max_tokens = CROSS_MAX_TOKENS.min(config.max_position_embeddings);
        let tokenizer = crate::load_tokenizer(&tokenizer_path, max_tokens)?;
        Ok(Self {
            bert,
            pooler,
            classifier,
            tokenizer,
            device,
            labels,
            positive,
            layers: config.num_hidden_layers,
            max_tokens,
        })
    }

    /// For each pair, the probability that its two texts mean the same thing (see the
    /// module's notes), batched.
    pub fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, EmbedError> {
        crate::batched(pairs, MAX_BATCH, |batch| self.score_batch(batch))
    }

    /// Longest pair in tokens, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// What it is, for logs and reports: "BERT cross-encoder, 6 layers, 1 output".
    pub fn describe(&self) -> String {
        format!(
            "BERT cross-encoder, {} layers, {} output{}",
            self.layers,
            self.labels,
            if self.labels == 1 { "" } else { "s" }
        )
    }

    fn score_batch(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, EmbedError> {
        let inputs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(EmbedError::Tokenize)?;
        let matrix = |row: fn(&tokenizers::Encoding) -> &[u32]| {
            crate::input_matrix(&encodings, row, &self.device)
        };
        let ids = matrix(tokenizers::Encoding::get_ids)?;
        let types = matrix(tokenizers::Encoding::get_type_ids)?;
        let mask = matrix(tokenizers::Encoding::get_attention_mask)?;
        let head = || -> candle_core::Result<Vec<f32>> {
            let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
            let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
            let pooled = self.pooler.forward(&cls)?.tanh()?;
            let logits = self.classifier.forward(&pooled)?;
            let probs = if self.labels == 1 {
                candle_nn::ops::sigmoid(&logits)?
            } else {
                candle_nn::ops::softmax(&logits, D::Minus1)?
            };
            probs.narrow(1, self.positive, 1)?.squeeze(1)?.to_vec1()
        };
        head().map_err(EmbedError::compute("the cross-encoder forward pass"))
    }
}

#[cfg(test)]
mod tests;
