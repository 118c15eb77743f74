//! MPNet, the encoder of all-mpnet-base-v2, on candle (candle-transformers has none).
//!
//! The layers are BERT's (self-attention, then a GELU feed-forward, each followed by a
//! residual LayerNorm) under other tensor names, with two differences that change the numbers:
//! - position ids are RoBERTa's: real tokens count up from `pad_token_id + 1` (so from 2), and
//!   there are no token-type embeddings;
//! - every layer adds the same learned bias to its attention scores, looked up by the bucketed
//!   distance between the query and the key token (T5-style buckets, both directions), from
//!   `encoder.relative_attention_bias` (buckets × heads).

#[cfg(test)]
mod tests;

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use candle_transformers::models::bert::HiddenAct;
use serde::Deserialize;

/// Relative distances at or beyond this share the last bucket of their direction.
pub const MAX_DISTANCE: usize = 128;

/// The keys of an MPNet config.json this implementation reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_buckets() -> usize {
    32
}

impl Config {
    /// The longest input in tokens the position table allows (positions start after the pad id).
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id as usize + 1)
    }
}

/// The bucket of the distance `relative` = key position − query position: exact for distances
/// under a quarter of the buckets, logarithmic up to [`MAX_DISTANCE`], with separate halves for
/// keys after the query and keys before it. Computed in `f32` as the reference implementation
/// does, so borderline distances land in the same bucket.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> u32 {
    let half = num_buckets / 2;
    let base = if relative > 0 { half } else { 0 };
    let distance = relative.unsigned_abs() as usize;
    let max_exact = half / 2;
    let offset = if distance < max_exact {
        distance
    } else {
        let scale = (distance as f32 / max_exact as f32).ln()
            / (max_distance as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        (max_exact + scale as usize).min(half - 1)
    };
    (base + offset) as u32
}

/// Word and position embeddings, then LayerNorm.
struct Embeddings {
    words: Embedding,
    positions: Embedding,
    norm: LayerNorm,
    pad_id: u32,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        Ok(Self {
            words: embedding(c.vocab_size, c.hidden_size, vb.pp("word_embeddings"))?,
            positions: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
            pad_id: c.pad_token_id,
        })
    }

    /// `ids` and `mask` are (batch, tokens) `u32`.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let positions = position_ids(mask, self.pad_id)?;
        let x = self
            .words
            .forward(ids)?
            .add(&self.positions.forward(&positions)?)?;
        self.norm.forward(&x)
    }
}

/// RoBERTa's position ids: the n-th real token gets `pad_id + n` (from `pad_id + 1`), padding
/// gets `pad_id`.
pub(crate) fn position_ids(mask: &Tensor, pad_id: u32) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?;
    let counted = mask.cumsum(D::Minus1)?.mul(&mask)?;
    (counted + f64::from(pad_id))?.to_dtype(DType::U32)
}

/// One encoder layer.
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: HiddenAct,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        let attn = attention.pp("attn");
        Ok(Self {
            q: linear(h, h, attn.pp("q"))?,
            k: linear(h, h, attn.pp("k"))?,
            v: linear(h, h, attn.pp("v"))?,
            o: linear(h, h, attn.pp("o"))?,
            attention_norm: layer_norm(h, c.layer_norm_eps, attention.pp("LayerNorm"))?,
            intermediate: linear(h, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            output: linear(c.intermediate_size, h, vb.pp("output").pp("dense"))?,
            output_norm: layer_norm(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            act: c.hidden_act,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// `x` is (batch, tokens, hidden); `bias` (batch or 1, heads, tokens, tokens) is added to
    /// the attention scores: the relative position bias and the padding mask.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (batch, tokens, hidden) = x.dims3()?;
        let split = |t: Tensor| {
            t.reshape((batch, tokens, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(bias)?)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, tokens, hidden))?;
        let attended = self
            .attention_norm
            .forward(&self.o.forward(&context)?.add(x)?)?;
        let inner = self.intermediate.forward(&attended)?;
        let inner = match self.act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        self.output_norm
            .forward(&self.output.forward(&inner)?.add(&attended)?)
    }
}

/// An MPNet encoder: token ids in, one hidden state per token out.
pub struct MpNet {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// (buckets, heads).
    relative_bias: Tensor,
    num_buckets: usize,
    device: Device,
}

impl MpNet {
    /// Loads the weights under `vb` (`embeddings.*`, `encoder.layer.N.*`,
    /// `encoder.relative_attention_bias.weight`); the pooler is not needed.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let encoder = vb.pp("encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(encoder.pp("layer").pp(i), config))
            .collect::<Result<Vec<_>>>()?;
        let relative_bias = embedding(
            config.relative_attention_num_buckets,
            config.num_attention_heads,
            encoder.pp("relative_attention_bias"),
        )?
        .embeddings()
        .clone();
        Ok(Self {
            embeddings: Embeddings::load(vb.pp("embeddings"), config)?,
            layers,
            relative_bias,
            num_buckets: config.relative_attention_num_buckets,
            device: vb.device().clone(),
        })
    }

    /// Hidden states (batch, tokens, hidden) for `ids` and `mask` (batch, tokens, `u32`; mask 1
    /// on real tokens, 0 on padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, tokens) = ids.dims2()?;
        let mut x = self.embeddings.forward(ids, mask)?;
        let bias = self
            .position_bias(tokens)?
            .broadcast_add(&padding_bias(mask)?)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }

    /// (1, heads, tokens, tokens): the learned bias for query `i` attending to key `j`.
    pub(crate) fn position_bias(&self, tokens: usize) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..tokens)
            .flat_map(|query| {
                (0..tokens).map(move |key| {
                    relative_position_bucket(
                        key as i64 - query as i64,
                        self.num_buckets,
                        MAX_DISTANCE,
                    )
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, tokens * tokens, &self.device)?;
        let heads = self.relative_bias.dim(1)?;
        self.relative_bias
            .index_select(&buckets, 0)?
            .reshape((tokens, tokens, heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }
}

/// (batch, 1, 1, tokens): 0 on real tokens, the most negative `f32` on padding, so no token
/// attends to padding.
fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    mask.to_dtype(DType::F32)?
        .affine(-1.0, 1.0)?
        .affine(f64::from(f32::MIN), 0.0)?
        .unsqueeze(1)?
        .unsqueeze(1)
}
