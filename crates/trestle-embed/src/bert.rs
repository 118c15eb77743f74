//! BERT encoders (all-MiniLM-L6-v2): candle-transformers' model, with all-MiniLM-L6-v2's own
//! config for folders that lack config.json.

use std::path::Path;

use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};

use crate::EmbedError;
use crate::architecture::read_json;

/// Reads config.json, or falls back to all-MiniLM-L6-v2's own values when it is absent.
pub(crate) fn load_config(path: &Path) -> Result<Config, EmbedError> {
    if path.is_file() {
        read_json(path)
    } else {
        Ok(minilm_l6_config())
    }
}

/// all-MiniLM-L6-v2's config.json, for model folders that lack one.
pub(crate) fn minilm_l6_config() -> Config {
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

/// The BERT model whose weights `vb` holds.
pub(crate) fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<BertModel> {
    BertModel::load(vb, config)
}
