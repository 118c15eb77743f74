//! The verifier's verdicts from a deterministic scorer through [`PairScorer`], and a
//! sentence encoder's cosine through the placeholder provider's pseudo-embeddings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::resilience::Registry;
use crate::runtime::Runtime;

/// Scores from the texts: 0.9 when both name the same fruit, 0.1 when not, NaN for "nan",
/// an error for "broken".
pub(crate) struct Fruit;

impl PairScorer for Fruit {
    fn describe(&self) -> String {
        "fruit scorer".into()
    }

    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, String> {
        let fruit = |t: &str| ["apple", "pear"].into_iter().find(|f| t.contains(f));
        pairs
            .iter()
            .map(|(a, b)| {
                if a.contains("broken") || b.contains("broken") {
                    Err("the scorer broke".to_string())
                } else if a.contains("nan") || b.contains("nan") {
                    Ok(f32::NAN)
                } else if fruit(a) == fruit(b) {
                    Ok(0.9)
                } else {
                    Ok(0.1)
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn a_score_at_or_above_the_threshold_is_a_yes_anything_else_a_miss() {
    let v = Embedder::Pairs(Arc::new(Fruit));
    let (asked, score) = ask(&v, "reset my apple id", "apple id reset", 0.5).await;
    assert_eq!((asked.verdict, score), (Verdict::Same, Some(0.9)));
    assert!(asked.took.is_some() && asked.error.is_none());
    let (asked, score) = ask(&v, "reset my apple id", "apple id reset", 0.95).await;
    assert_eq!((asked.verdict, score), (Verdict::Different, Some(0.9)));
    let (asked, _) = ask(&v, "reset my apple id", "pear", 0.5).await;
    assert_eq!(asked.verdict, Verdict::Different);
    let (asked, score) = ask(&v, "broken", "apple", 0.5).await;
    assert_eq!((asked.verdict, score), (Verdict::Error, None));
    assert_eq!(asked.error.as_deref(), Some("the scorer broke"));
    let (asked, _) = ask(&v, "nan", "apple", 0.0).await;
    assert_eq!(asked.verdict, Verdict::Error, "a NaN is never a yes");
    // A pair scorer embeds nothing.
    let err = v.embed("apple").await.unwrap_err();
    assert!(err.contains("use it as a `verifier`"), "{err}");
}

#[tokio::test]
async fn a_sentence_encoder_verifies_with_the_cosine_of_both_questions() {
    let text = "[providers.p]\nkind = \"placeholder\"\n[embedders.e]\nkind = \"provider\"\ntarget = \"p/embed\"\n";
    let config = trestle_core::Config::parse(text, &|_| None).unwrap().config;
    let rt = Runtime::build(config, Arc::new(Registry::new(&Default::default()))).unwrap();
    let e = &rt.embedders["e"];
    let (a, b) = ("how do i reset my password", "how can i reset my password");
    let want = cosine(&e.embed(a).await.unwrap(), &e.embed(b).await.unwrap());
    assert!(want > 0.3 && want < 0.99, "{want}");
    let got = score_many(e, vec![(a.into(), b.into()), (a.into(), a.into())])
        .await
        .unwrap();
    assert!(
        (got[0] - want).abs() < 1e-6 && (got[1] - 1.0).abs() < 1e-5,
        "{got:?}"
    );
    let (asked, score) = ask(e, a, b, want - 0.01).await;
    assert_eq!((asked.verdict, score.is_some()), (Verdict::Same, true));
    let (asked, _) = ask(e, a, b, want + 0.01).await;
    assert_eq!(asked.verdict, Verdict::Different);
}
