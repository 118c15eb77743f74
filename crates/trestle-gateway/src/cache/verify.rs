//! The semantic cache's verifier: a second opinion on a candidate, in process, before it is
//! served or turned down. An `[embedders.NAME]` of kind `cross_encoder` reads the cached
//! question and the new one together and gives the probability that they ask the same thing
//! ([`trestle_embed::CrossEncoder`]); a sentence encoder gives the cosine of their embeddings
//! (a larger model than the index's, e.g. all-mpnet-base-v2 over all-MiniLM-L6-v2). A score at
//! or above `verifier_threshold` is a yes. Verdicts, metrics and trace records are the
//! judge's ([`super::judge::Verdict`]): a failure is an `error`, which is a miss.

use tokio::time::Instant;

use super::embed::Embedder;
use super::eval::cosine;
use super::judge::{Asked, Verdict};

/// A model that scores pairs of texts in process: for each, the probability that both ask
/// the same thing. Runs on a blocking thread.
pub trait PairScorer: Send + Sync {
    /// What it is, for errors and reports.
    fn describe(&self) -> String;
    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, String>;
}

#[cfg(feature = "local-embeddings")]
impl PairScorer for trestle_embed::CrossEncoder {
    fn describe(&self) -> String {
        trestle_embed::CrossEncoder::describe(self)
    }

    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, String> {
        trestle_embed::CrossEncoder::score(self, pairs).map_err(|e| e.to_string())
    }
}

/// `verifier`'s score for each (cached, query) pair: a pair scorer's probability, or the
/// cosine of a sentence encoder's embeddings of the two.
pub async fn score_many(
    verifier: &Embedder,
    pairs: Vec<(String, String)>,
) -> Result<Vec<f32>, String> {
    match verifier {
        Embedder::Pairs(scorer) => {
            let scorer = scorer.clone();
            tokio::task::spawn_blocking(move || {
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                scorer.score(&refs)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        other => {
            let n = pairs.len();
            let texts: Vec<String> = pairs.into_iter().flat_map(|(a, b)| [a, b]).collect();
            let vectors = other.embed_many(texts).await?;
            if vectors.len() != 2 * n {
                return Err(format!(
                    "the verifier returned {} vectors for {} texts",
                    vectors.len(),
                    2 * n
                ));
            }
            Ok(vectors.chunks(2).map(|v| cosine(&v[0], &v[1])).collect())
        }
    }
}

/// Whether `verifier` takes `cached` and `query` for the same question (a score at or above
/// `threshold`), and the score when there is one.
pub async fn ask(
    verifier: &Embedder,
    cached: &str,
    query: &str,
    threshold: f32,
) -> (Asked, Option<f32>) {
    let started = Instant::now();
    let scored = score_many(verifier, vec![(cached.to_owned(), query.to_owned())]).await;
    let took = Some(started.elapsed());
    match scored.map(|s| s.first().copied()) {
        Ok(Some(score)) if score.is_finite() => {
            let verdict = if score >= threshold {
                Verdict::Same
            } else {
                Verdict::Different
            };
            let asked = Asked {
                verdict,
                took,
                error: None,
            };
            (asked, Some(score))
        }
        Ok(other) => (
            Asked::failed(
                format!("the verifier gave no usable score: {other:?}"),
                took,
            ),
            None,
        ),
        Err(e) => (Asked::failed(e, took), None),
    }
}

#[cfg(test)]
mod tests;
