//! What a model folder holds: the encoder architecture named by its config.json, and the
//! longest input sentence-transformers gives it (sentence_bert_config.json).

use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::EmbedError;

/// The sentence-transformers config that carries `max_seq_length`.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";

/// The encoder families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT, as in all-MiniLM-L6-v2 (candle-transformers' implementation).
    Bert,
    /// MPNet, as in all-mpnet-base-v2 (this crate's `mpnet` module).
    MpNet,
}

impl Architecture {
    /// The architecture of the model in `dir`, from its config.json: `model_type` first, then
    /// `architectures`. A folder without config.json is taken for all-MiniLM-L6-v2 (BERT).
    pub fn detect(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join(crate::CONFIG_FILE);
        if !path.is_file() {
            return Ok(Architecture::Bert);
        }
        let config: Value = read_json(&path)?;
        Self::from_config(&config).ok_or_else(|| EmbedError::UnknownArchitecture {
            path,
            model_type: config
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_owned(),
        })
    }

    /// The architecture a parsed config.json names, if it is one this crate runs.
    pub(crate) fn from_config(config: &Value) -> Option<Self> {
        let by_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .and_then(|t| match t.to_ascii_lowercase().as_str() {
                "bert" => Some(Architecture::Bert),
                "mpnet" => Some(Architecture::MpNet),
                _ => None,
            });
        by_type.or_else(|| {
            let names = config.get("architectures")?.as_array()?;
            names.iter().filter_map(Value::as_str).find_map(|name| {
                if name.starts_with("MPNet") {
                    Some(Architecture::MpNet)
                } else if name.starts_with("Bert") {
                    Some(Architecture::Bert)
                } else {
                    None
                }
            })
        })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::Bert => "BERT",
            Architecture::MpNet => "MPNet",
        })
    }
}

/// sentence_bert_config.json's `max_seq_length` in `dir`, when the file has one.
pub(crate) fn max_seq_length(dir: &Path) -> Result<Option<usize>, EmbedError> {
    let path = dir.join(SENTENCE_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let config: Value = read_json(&path)?;
    Ok(config
        .get("max_seq_length")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok()))
}

/// The sentence-transformers config that carries the model's prompts.
pub const PROMPTS_CONFIG_FILE: &str = "config_sentence_transformers.json";

/// The text sentence-transformers puts before every input of the model in `dir`: the prompt
/// config_sentence_transformers.json names as `default_prompt_name` (e5 folders, for instance,
/// can carry `{"prompts": {"query": "query: "}, "default_prompt_name": "query"}`). `None`
/// without one; a `default_prompt_name` missing from `prompts` is an error.
pub(crate) fn default_prompt(dir: &Path) -> Result<Option<String>, EmbedError> {
    let path = dir.join(PROMPTS_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let config: Value = read_json(&path)?;
    let Some(name) = config.get("default_prompt_name").and_then(Value::as_str) else {
        return Ok(None);
    };
    match config
        .get("prompts")
        .and_then(|p| p.get(name))
        .and_then(Value::as_str)
    {
        Some("") => Ok(None),
        Some(prompt) => Ok(Some(prompt.to_owned())),
        None => Err(EmbedError::Unsupported {
            path,
            reason: format!("default_prompt_name \"{name}\" is not one of its prompts"),
        }),
    }
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Config {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn model_type_then_architectures_pick_the_family() {
        let of = |v: Value| Architecture::from_config(&v);
        assert_eq!(of(json!({"model_type": "bert"})), Some(Architecture::Bert));
        assert_eq!(
            of(json!({"model_type": "mpnet"})),
            Some(Architecture::MpNet)
        );
        assert_eq!(
            of(json!({"architectures": ["MPNetForMaskedLM"]})),
            Some(Architecture::MpNet)
        );
        assert_eq!(
            of(json!({"architectures": ["BertModel"]})),
            Some(Architecture::Bert)
        );
        assert_eq!(of(json!({"model_type": "xlm-roberta"})), None);
        assert_eq!(of(json!({})), None);
    }

    #[test]
    fn an_unknown_model_type_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("trestle-embed-arch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Architecture::detect(&dir).unwrap(), Architecture::Bert);
        std::fs::write(dir.join(crate::CONFIG_FILE), r#"{"model_type": "t5"}"#).unwrap();
        let message = Architecture::detect(&dir).unwrap_err().to_string();
        assert!(message.contains("\"t5\""), "{message}");
        std::fs::write(dir.join(SENTENCE_CONFIG_FILE), r#"{"max_seq_length": 384}"#).unwrap();
        assert_eq!(max_seq_length(&dir).unwrap(), Some(384));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_prompt_is_the_one_named() {
        let dir = std::env::temp_dir().join(format!("trestle-embed-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(PROMPTS_CONFIG_FILE);
        assert_eq!(default_prompt(&dir).unwrap(), None, "no file");
        // A prompt that is there but not the default is not applied (as in sentence-transformers).
        std::fs::write(&path, r#"{"prompts": {"query": "query: "}}"#).unwrap();
        assert_eq!(default_prompt(&dir).unwrap(), None);
        std::fs::write(
            &path,
            r#"{"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"}"#,
        )
        .unwrap();
        assert_eq!(default_prompt(&dir).unwrap().as_deref(), Some("query: "));
        std::fs::write(&path, r#"{"prompts": {}, "default_prompt_name": "query"}"#).unwrap();
        let message = default_prompt(&dir).unwrap_err().to_string();
        assert!(message.contains("\"query\""), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
