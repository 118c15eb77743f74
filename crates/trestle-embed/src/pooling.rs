//! Sentence-transformers' pooling head: the attention-masked mean over tokens
//! (all-MiniLM-L6-v2, all-mpnet-base-v2, e5, gte) or the first token's state (the `[CLS]`
//! pooling of bge), as the model folder's Pooling module says, then L2 normalization.

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Result, Tensor};
use serde_json::Value;

use crate::EmbedError;
use crate::architecture::read_json;

/// sentence-transformers' module list, naming the folder of the Pooling module.
pub const MODULES_FILE: &str = "modules.json";
/// The Pooling module's folder when modules.json does not name one.
pub const POOLING_DIR: &str = "1_Pooling";

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the tokens the attention mask keeps.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

impl Pooling {
    /// The pooling the model in `dir` was trained with: its Pooling module's config.json
    /// (the folder modules.json names, else `1_Pooling/`). A folder without one pools by the
    /// mean, as all-MiniLM-L6-v2 does. Modes this crate does not compute (max, last token,
    /// weighted mean, mean divided by √length, or several at once) are refused by name.
    pub fn detect(dir: &Path) -> std::result::Result<Self, EmbedError> {
        let path = pooling_config_path(dir)?;
        if !path.is_file() {
            return Ok(Pooling::Mean);
        }
        let config: Value = read_json(&path)?;
        Self::from_config(&config).map_err(|reason| EmbedError::Unsupported { path, reason })
    }

    /// The pooling a parsed Pooling config.json asks for: sentence-transformers' newer
    /// `pooling_mode` string, else its `pooling_mode_*` flags.
    pub(crate) fn from_config(config: &Value) -> std::result::Result<Self, String> {
        if let Some(mode) = config.get("pooling_mode").and_then(Value::as_str) {
            return match mode {
                "mean" => Ok(Pooling::Mean),
                "cls" => Ok(Pooling::Cls),
                other => Err(format!(
                    "pooling_mode \"{other}\" (only \"mean\" and \"cls\" are computed)"
                )),
            };
        }
        let on: Vec<&str> = config
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, value)| {
                key.starts_with("pooling_mode_") && value.as_bool() == Some(true)
            })
            .map(|(key, _)| key.as_str())
            .collect();
        match on.as_slice() {
            [] | ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
            ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
            modes => Err(format!(
                "{} (only pooling_mode_mean_tokens or pooling_mode_cls_token, alone, are computed)",
                modes.join(" + ")
            )),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "CLS",
        })
    }
}

/// Whether the Pooling module in `dir` pools over the prompt's tokens too: its `include_prompt`
/// (sentence-transformers' default, and this crate's only way, is yes).
pub(crate) fn includes_prompt(dir: &Path) -> std::result::Result<bool, EmbedError> {
    let path = pooling_config_path(dir)?;
    if !path.is_file() {
        return Ok(true);
    }
    let config: Value = read_json(&path)?;
    Ok(config.get("include_prompt").and_then(Value::as_bool) != Some(false))
}

/// The Pooling module's config.json in `dir`: under the path modules.json gives the module of
/// type `sentence_transformers.models.Pooling`, else under `1_Pooling/`.
fn pooling_config_path(dir: &Path) -> std::result::Result<PathBuf, EmbedError> {
    let modules = dir.join(MODULES_FILE);
    let mut folder = POOLING_DIR.to_owned();
    if modules.is_file() {
        let list: Value = read_json(&modules)?;
        let named = list.as_array().into_iter().flatten().find_map(|module| {
            let kind = module.get("type")?.as_str()?;
            kind.ends_with(".Pooling")
                .then(|| module.get("path")?.as_str().map(str::to_owned))?
        });
        if let Some(path) = named.filter(|p| !p.is_empty()) {
            folder = path;
        }
    }
    Ok(dir.join(folder).join(crate::CONFIG_FILE))
}

/// The first token's state of `hidden` (batch, tokens, dims): `[CLS]`, which the tokenizer
/// always puts first (padding goes to the right).
pub(crate) fn first_token(hidden: &Tensor) -> Result<Tensor> {
    hidden.narrow(1, 0, 1)?.squeeze(1)
}

/// Mean of `hidden` (batch, tokens, dims) over the tokens whose `mask` (batch, tokens) is 1.
pub(crate) fn masked_mean(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    // A row with no tokens at all would divide by zero; the tokenizer always adds [CLS] and
    // [SEP], so the clamp only guards against misuse.
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Scales each row of `x` (batch, dims) to unit L2 norm.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norms)
}

/// Pools (by the mean) and normalizes in one step, returning plain vectors.
#[cfg(test)]
pub(crate) fn sentence_embeddings(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
    pooled_embeddings(hidden, mask, Pooling::Mean)
}

/// Pools as `pooling` says and normalizes, returning plain vectors.
pub(crate) fn pooled_embeddings(
    hidden: &Tensor,
    mask: &Tensor,
    pooling: Pooling,
) -> Result<Vec<Vec<f32>>> {
    let pooled = match pooling {
        Pooling::Mean => masked_mean(hidden, mask)?,
        Pooling::Cls => first_token(hidden)?,
    };
    l2_normalize(&pooled)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn masked_tokens_do_not_count_and_rows_get_unit_norm() {
        let hidden = Tensor::new(
            &[
                [[3.0f32, 0.0], [0.0, 4.0], [100.0, 100.0]],
                [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu).unwrap();
        let mean = masked_mean(&hidden, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mean, vec![vec![1.5, 2.0], vec![1.0, 1.0]]);
        let out = sentence_embeddings(&hidden, &mask).unwrap();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(out[0][0], 0.6) && close(out[0][1], 0.8), "{out:?}");
        assert!(close(out[1][0], std::f32::consts::FRAC_1_SQRT_2), "{out:?}");
    }

    #[test]
    fn cls_pooling_takes_the_first_token_only() {
        let hidden = Tensor::new(
            &[
                [[3.0f32, 4.0], [100.0, 0.0], [0.0, 100.0]],
                [[0.0, -2.0], [5.0, 5.0], [1.0, 1.0]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu).unwrap();
        let out = pooled_embeddings(&hidden, &mask, Pooling::Cls).unwrap();
        assert_eq!(out, vec![vec![0.6, 0.8], vec![0.0, -1.0]]);
    }

    #[test]
    fn the_pooling_config_picks_the_mode() {
        use serde_json::json;
        let of = |v: Value| Pooling::from_config(&v);
        let flags = |cls: bool, mean: bool, max: bool| {
            json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": cls,
                   "pooling_mode_mean_tokens": mean, "pooling_mode_max_tokens": max,
                   "pooling_mode_mean_sqrt_len_tokens": false})
        };
        assert_eq!(of(flags(false, true, false)), Ok(Pooling::Mean));
        assert_eq!(of(flags(true, false, false)), Ok(Pooling::Cls));
        assert_eq!(of(json!({})), Ok(Pooling::Mean));
        assert_eq!(of(json!({"pooling_mode": "cls"})), Ok(Pooling::Cls));
        let max = of(flags(false, false, true)).unwrap_err();
        assert!(max.contains("pooling_mode_max_tokens"), "{max}");
        let both = of(flags(true, true, false)).unwrap_err();
        assert!(
            both.contains("pooling_mode_cls_token + pooling_mode_mean_tokens"),
            "{both}"
        );
        let last = of(json!({"pooling_mode": "lasttoken"})).unwrap_err();
        assert!(last.contains("lasttoken"), "{last}");
    }

    #[test]
    fn detect_reads_the_folder_modules_json_names() {
        let dir =
            std::env::temp_dir().join(format!("trestle-embed-pooling-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        assert_eq!(Pooling::detect(&dir).unwrap(), Pooling::Mean, "no config");
        let cls = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#;
        std::fs::write(dir.join("1_Pooling/config.json"), cls).unwrap();
        assert_eq!(Pooling::detect(&dir).unwrap(), Pooling::Cls);
        // modules.json pointing elsewhere wins over 1_Pooling/.
        std::fs::create_dir_all(dir.join("pool")).unwrap();
        std::fs::write(
            dir.join("pool/config.json"),
            r#"{"pooling_mode_max_tokens": true}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join(MODULES_FILE),
            r#"[{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "path": "pool", "type": "sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        let err = Pooling::detect(&dir).unwrap_err();
        assert!(matches!(err, EmbedError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("pool/config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
