//! A small cross-encoder made here, written to real files and loaded back: the head's
//! arithmetic (sigmoid, softmax and the label it picks), batching against one pair at a time,
//! truncation. And, when `$TRESTLE_CROSS_ENCODER_DIR` names a real model's folder, that it
//! tells a paraphrase from a question that differs in one fact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use candle_core::Tensor;
use candle_nn::VarMap;

use super::*;

const WORDS: [&str; 16] = [
    "how", "do", "i", "reset", "my", "password", "what", "is", "the", "capital", "of", "france",
    "germany", "change", "way", "to",
];

/// A folder under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
        .into_iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert(w.into(), i.into());
    }
    let special = |id: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": id, "type_id": type_id}});
    let seq =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

/// A 2-layer, 16-dimension BERT classifier with `id2label`, random weights except for the
/// classifier when `head` gives its weight and bias.
fn tiny_model(name: &str, id2label: &[&str], head: Option<(Vec<f32>, Vec<f32>)>) -> TempDir {
    let dir = std::env::temp_dir().join(format!("trestle-cross-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let labels: serde_json::Map<String, serde_json::Value> = id2label
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), (*l).into()))
        .collect();
    let config = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": 4 + WORDS.len(),
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "max_position_embeddings": 24,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "id2label": labels,
    });
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    std::fs::write(dir.join(TOKENIZER_FILE), tokenizer_json()).unwrap();
    let config: Config = serde_json::from_value(config).unwrap();
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb.pp("bert"), &config).unwrap();
    candle_nn::linear(16, 16, vb.pp("bert.pooler.dense")).unwrap();
    candle_nn::linear(16, id2label.len(), vb.pp("classifier")).unwrap();
    if let Some((w, b)) = head {
        let n = b.len();
        let w = Tensor::from_vec(w, (n, 16), &Device::Cpu).unwrap();
        varmap.set_one("classifier.weight", w).unwrap();
        varmap
            .set_one("classifier.bias", Tensor::new(b, &Device::Cpu).unwrap())
            .unwrap();
    }
    varmap.save(dir.join(WEIGHTS_FILE)).unwrap();
    TempDir(dir)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn one_output_is_the_sigmoid_of_its_logit() {
    // A zero weight leaves the bias alone: every pair scores sigmoid(0.7).
    let dir = tiny_model("sigmoid", &["LABEL_0"], Some((vec![0.0; 16], vec![0.7])));
    let model = CrossEncoder::load(&dir.0).unwrap();
    assert_eq!(model.describe(), "BERT cross-encoder, 2 layers, 1 output");
    let scores = model
        .score(&[
            (
                "how do i reset my password",
                "what is the capital of france",
            ),
            ("i", "i"),
        ])
        .unwrap();
    for s in scores {
        assert!((s - sigmoid(0.7)).abs() < 1e-6, "{s}");
    }
}

#[test]
fn several_outputs_give_the_share_of_the_entailment_label() {
    // NLI order: contradiction, entailment, neutral. Logits (0, ln 2, 0): entailment's share
    // is 2 / 4, whatever its position.
    let bias = vec![0.0, 2f32.ln(), 0.0];
    let dir = tiny_model(
        "nli",
        &["contradiction", "entailment", "neutral"],
        Some((vec![0.0; 48], bias)),
    );
    let model = CrossEncoder::load(&dir.0).unwrap();
    let s = model
        .score(&[("what is the capital of france", "germany")])
        .unwrap();
    assert!((s[0] - 0.5).abs() < 1e-6, "{s:?}");
    // Labels named otherwise: the last one.
    let dir = tiny_model(
        "last",
        &["LABEL_0", "LABEL_1"],
        Some((vec![0.0; 32], vec![0.0, 3f32.ln()])),
    );
    let s = CrossEncoder::load(&dir.0)
        .unwrap()
        .score(&[("i", "do")])
        .unwrap();
    assert!((s[0] - 0.75).abs() < 1e-6, "{s:?}");
}

#[test]
fn batches_score_as_pairs_one_at_a_time_and_long_pairs_are_cut() {
    let dir = tiny_model("batch", &["LABEL_0"], None);
    let model = CrossEncoder::load(&dir.0).unwrap();
    // max_position_embeddings 24: a pair of 60 words only runs because it is cut.
    assert_eq!(model.max_tokens(), 24);
    let long = ["how do i reset my password"; 10].join(" ");
    let pairs: Vec<(&str, &str)> = vec![
        (
            "how do i reset my password",
            "what is the way to change my password",
        ),
        (
            "what is the capital of france",
            "what is the capital of germany",
        ),
        ("i", "do"),
        (long.as_str(), "reset my password"),
        (
            "what is the capital of france",
            "how do i reset my password",
        ),
    ];
    let together = model.score(&pairs).unwrap();
    assert_eq!(together.len(), pairs.len());
    for (pair, batched) in pairs.iter().zip(&together) {
        let alone = model.score(&[*pair]).unwrap()[0];
        assert!(
            (alone - batched).abs() < 1e-5,
            "{pair:?}: {alone} alone, {batched} in a batch"
        );
        assert!((0.0..=1.0).contains(batched));
    }
    // The order of the two texts matters to a cross-encoder (segment ids differ).
    let swapped = model.score(&[(pairs[0].1, pairs[0].0)]).unwrap()[0];
    assert!((swapped - together[0]).abs() > 1e-7, "{swapped}");
    // More pairs than one batch holds.
    let many: Vec<(&str, &str)> = std::iter::repeat_n(pairs[1], MAX_BATCH * 2 + 3).collect();
    let scores = model.score(&many).unwrap();
    assert_eq!(scores.len(), many.len());
    assert!(scores.iter().all(|s| (s - together[1]).abs() < 1e-5));
}

#[test]
fn a_folder_that_is_not_a_bert_classifier_is_refused() {
    let dir = tiny_model("refused", &["LABEL_0"], None);
    let config = dir.0.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"bert\"", "\"mpnet\"");
    std::fs::write(&config, text.replace("BertFor", "MPNetFor")).unwrap();
    let err = CrossEncoder::load(&dir.0).err().unwrap().to_string();
    assert!(err.contains("must be a BERT model"), "{err}");
    std::fs::remove_file(dir.0.join(WEIGHTS_FILE)).unwrap();
    let err = CrossEncoder::load(&dir.0).err().unwrap().to_string();
    assert!(err.contains(WEIGHTS_FILE), "{err}");
}

/// A real cross-encoder, when one is installed: `$TRESTLE_CROSS_ENCODER_DIR`.
#[test]
fn a_real_cross_encoder_tells_a_paraphrase_from_a_changed_fact() {
    let Some(dir) = std::env::var_os(CROSS_DIR_ENV).filter(|v| !v.is_empty()) else {
        eprintln!("skipped: set {CROSS_DIR_ENV} to a BERT cross-encoder's folder to run this test");
        return;
    };
    let model = CrossEncoder::load(Path::new(&dir)).unwrap();
    let s = model
        .score(&[
            (
                "How do I reset my password?",
                "What is the way to reset my password?",
            ),
            (
                "What is the capital of France?",
                "What is the capital of Germany?",
            ),
        ])
        .unwrap();
    assert!(s[0] > s[1], "{s:?}");
}
