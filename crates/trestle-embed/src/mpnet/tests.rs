//! MPNet on a tiny random model (8 dims, 2 heads, 2 layers) built here, so CI needs no weights;
//! then, `#[ignore]`d, the real all-mpnet-base-v2 from `$TRESTLE_MPNET_DIR`
//! (`bench/cache-encoders.sh` unpacks it; `cargo test -p trestle-embed -- --ignored mpnet`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::roberta::RobertaProcessing;

use super::*;
use crate::{Architecture, SentenceEncoder, pooling};

const PAD: u32 = 1;

fn tiny_config() -> Config {
    Config {
        vocab_size: 24,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        hidden_act: HiddenAct::Gelu,
        max_position_embeddings: 40,
        layer_norm_eps: 1e-5,
        pad_token_id: PAD,
        relative_attention_num_buckets: 32,
    }
}

/// A tiny MPNet with random weights (candle's default initializers: the embeddings and the
/// relative bias are standard normal, so the bias matters), and the map that holds them.
fn tiny_model() -> (MpNet, VarMap) {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = MpNet::load(vb, &tiny_config()).unwrap();
    (model, vars)
}

fn u32s(rows: &[&[u32]]) -> Tensor {
    let width = rows[0].len();
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap()
}

fn embed_ids(model: &MpNet, ids: &[&[u32]], mask: &[&[u32]]) -> Vec<Vec<f32>> {
    let (ids, mask) = (u32s(ids), u32s(mask));
    let hidden = model.forward(&ids, &mask).unwrap();
    assert_eq!(
        hidden.dims(),
        &[ids.dim(0).unwrap(), ids.dim(1).unwrap(), 8]
    );
    pooling::sentence_embeddings(&hidden, &mask).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn buckets_match_hand_computed_values() {
    // relative = key position − query position; 32 buckets: 0–15 for keys at or before the
    // query, 16–31 for keys after it; exact below 8, then 8 + ⌊ln(d/8) / ln(16) · 8⌋, at most 15.
    let cases: [(i64, u32); 20] = [
        (0, 0),
        (-1, 1),
        (-7, 7),
        (-8, 8),
        (-11, 8),   // ln(11/8)/ln 16 · 8 = 0.92
        (-12, 9),   // 1.17
        (-16, 10),  // exactly 2
        (-20, 10),  // 2.64
        (-32, 12),  // exactly 4
        (-64, 14),  // exactly 6
        (-80, 14),  // 6.64
        (-127, 15), // 7.98
        (-128, 15),
        (-5000, 15),
        (1, 17),
        (7, 23),
        (8, 24),
        (16, 26),
        (64, 30),
        (200, 31),
    ];
    for (relative, bucket) in cases {
        assert_eq!(
            relative_position_bucket(relative, 32, MAX_DISTANCE),
            bucket,
            "relative position {relative}"
        );
    }
}

#[test]
fn position_ids_count_from_after_the_pad_id() {
    let mask = u32s(&[&[1, 1, 1, 0, 0], &[1, 1, 1, 1, 1]]);
    let ids = position_ids(&mask, PAD).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(ids, vec![vec![2, 3, 4, 1, 1], vec![2, 3, 4, 5, 6]]);
}

#[test]
fn position_bias_looks_up_each_pairs_bucket() {
    let (model, _vars) = tiny_model();
    let bias = model.position_bias(5).unwrap();
    assert_eq!(bias.dims(), &[1, 2, 5, 5]);
    let bias = bias.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    let table = model.relative_bias.to_vec2::<f32>().unwrap();
    for (head, rows) in bias.iter().enumerate() {
        for (query, row) in rows.iter().enumerate() {
            for (key, value) in row.iter().enumerate() {
                let bucket = relative_position_bucket(key as i64 - query as i64, 32, 128);
                assert_eq!(*value, table[bucket as usize][head], "{head} {query} {key}");
            }
        }
    }
}

#[test]
fn padding_does_not_change_a_sentences_embedding() {
    let (model, _vars) = tiny_model();
    let short: &[u32] = &[0, 5, 6, 7, 2];
    let alone = embed_ids(&model, &[short], &[&[1; 5]]);
    let batch = embed_ids(
        &model,
        &[&[0, 5, 6, 7, 2, PAD, PAD, PAD], &[0, 5, 6, 7, 8, 9, 10, 2]],
        &[&[1, 1, 1, 1, 1, 0, 0, 0], &[1; 8]],
    );
    assert!(max_diff(&alone[0], &batch[0]) < 1e-5, "{alone:?} {batch:?}");
    for v in alone.iter().chain(&batch) {
        assert_eq!(v.len(), 8);
        assert!((norm(v) - 1.0).abs() < 1e-5, "norm {}", norm(v));
    }
    // Different sentences, different vectors.
    assert!(max_diff(&batch[0], &batch[1]) > 1e-3);
}

#[test]
fn word_order_matters_through_the_positions() {
    let (model, _vars) = tiny_model();
    let v = embed_ids(
        &model,
        &[&[0, 5, 6, 7, 2], &[0, 7, 6, 5, 2]],
        &[&[1; 5], &[1; 5]],
    );
    assert!(max_diff(&v[0], &v[1]) > 1e-4, "{v:?}");
}

/// A folder shaped like all-mpnet-base-v2's: config.json, model.safetensors, a WordPiece
/// tokenizer.json with RoBERTa's special tokens, sentence_bert_config.json.
fn tiny_model_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (_model, vars) = tiny_model();
    vars.save(dir.join(crate::WEIGHTS_FILE)).unwrap();
    let config = serde_json::json!({
        "architectures": ["MPNetForMaskedLM"], "model_type": "mpnet", "vocab_size": 24,
        "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": 40,
        "layer_norm_eps": 1e-5, "pad_token_id": 1, "relative_attention_num_buckets": 32,
    });
    std::fs::write(dir.join(crate::CONFIG_FILE), config.to_string()).unwrap();
    std::fs::write(
        dir.join(crate::SENTENCE_CONFIG_FILE),
        r#"{"max_seq_length": 12, "do_lower_case": false}"#,
    )
    .unwrap();
    let words = [
        "<s>", "<pad>", "</s>", "[UNK]", "hello", "world", "how", "do", "i", "reset", "my",
        "password", "?", "the", "cat", "##s", "sat",
    ];
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, words.join("\n")).unwrap();
    let wordpiece = WordPiece::from_file(vocab.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::default()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(RobertaProcessing::new(
            ("</s>".into(), 2),
            ("<s>".into(), 0),
        )))
        .with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::Fixed(20),
            pad_id: PAD,
            pad_token: "<pad>".into(),
            ..Default::default()
        }));
    tokenizer
        .save(dir.join(crate::TOKENIZER_FILE), false)
        .unwrap();
}

#[test]
fn a_model_folder_saying_mpnet_loads_as_mpnet_and_embeds() {
    let dir = std::env::temp_dir().join(format!("trestle-embed-mpnet-{}", std::process::id()));
    tiny_model_folder(&dir);
    let encoder = SentenceEncoder::load(&dir).unwrap();
    assert_eq!(encoder.architecture(), Architecture::MpNet);
    assert_eq!((encoder.dims(), encoder.max_tokens()), (8, 12));
    assert_eq!(encoder.describe(), "MPNet, 2 layers, 8 dims");

    let texts = [
        "Hello world",
        "how do I reset my password?",
        "the cats sat",
        "?",
    ];
    let batch = encoder.embed(&texts).unwrap();
    for (text, batched) in texts.iter().zip(&batch) {
        let alone = encoder.embed(&[text]).unwrap().remove(0);
        assert!(max_diff(&alone, batched) < 1e-5, "{text:?}");
        assert!((norm(&alone) - 1.0).abs() < 1e-5, "{text:?}");
    }
    // Truncated at 12 tokens, <s> and </s> included: what comes after is ignored.
    let long = "the cat sat ".repeat(5);
    let longer = format!("{long} hello world");
    let (a, b) = (
        encoder.embed(&[&long]).unwrap().remove(0),
        encoder.embed(&[&longer]).unwrap().remove(0),
    );
    assert!(max_diff(&a, &b) < 1e-6);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- The real all-mpnet-base-v2 ($TRESTLE_MPNET_DIR), not run in CI. ----

fn real_model() -> &'static SentenceEncoder {
    static MODEL: std::sync::OnceLock<SentenceEncoder> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::var_os(crate::MPNET_DIR_ENV)
            .map(PathBuf::from)
            .expect("set TRESTLE_MPNET_DIR to the all-mpnet-base-v2 folder");
        SentenceEncoder::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn real_embed(text: &str) -> Vec<f32> {
    real_model().embed(&[text]).unwrap().remove(0)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
#[ignore = "needs all-mpnet-base-v2 in $TRESTLE_MPNET_DIR"]
fn mpnet_real_weights_rank_and_match_the_reference() {
    assert_eq!(real_model().architecture(), Architecture::MpNet);
    assert_eq!((real_model().dims(), real_model().max_tokens()), (768, 384));
    let query = real_embed("How do I reset my password?");
    assert!((norm(&query) - 1.0).abs() < 1e-4);
    let paraphrase = cosine(
        &query,
        &real_embed("I forgot my password, how can I change it?"),
    );
    let unrelated = cosine(&query, &real_embed("What is the capital of France?"));
    println!("password paraphrase {paraphrase:.4}, unrelated {unrelated:.4}");
    assert!(paraphrase > unrelated + 0.4, "{paraphrase} vs {unrelated}");
    // First components from bench/mpnet_reference.py (float64 NumPy MPNet over the same files).
    let expected = REFERENCE_PASSWORD;
    for (i, (g, e)) in query.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() < 1e-4,
            "component {i}: got {g}, reference {e}"
        );
    }
}

/// The first components of "How do I reset my password?" by bench/mpnet_reference.py.
const REFERENCE_PASSWORD: [f32; 5] = [-0.073603, -0.022082, 0.004216, 0.042382, -0.005848];
