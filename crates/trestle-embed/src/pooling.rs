//! Sentence-transformers' pooling head: attention-masked mean over tokens, then L2 normalization.

use candle_core::{D, DType, Result, Tensor};

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

/// Pools and normalizes in one step, returning plain vectors.
pub(crate) fn sentence_embeddings(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
    l2_normalize(&masked_mean(hidden, mask)?)?
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
}
