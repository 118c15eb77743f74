//! Semantic-cache quality on a labelled paraphrase set (`data/cache-eval/paraphrases.jsonl`):
//! for each threshold, the hit rate (pairs that should share an answer and would), the
//! false-hit rate (pairs that should not and would) and precision, overall and per kind, both
//! for the embedding alone and as the cache serves (similarity and the guard); and the lowest
//! threshold that keeps false hits under each target rate.

pub mod stages;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One labelled pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub id: String,
    pub topic: String,
    pub a: String,
    pub b: String,
    /// One cached answer to `a` is a correct answer to `b`.
    pub same: bool,
    pub kind: String,
}

/// Reads a JSON Lines set; a bad line is an error naming its number.
pub fn read_pairs(text: &str) -> Result<Vec<Pair>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Figures at one threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AtThreshold {
    pub threshold: f32,
    /// Share of `same` pairs at or above the threshold.
    pub hit_rate: f64,
    /// Share of not-`same` pairs at or above the threshold.
    pub false_hit_rate: f64,
    /// Of the pairs served, the share that were right.
    pub precision: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pairs: usize,
    pub same: usize,
    pub different: usize,
    /// As the cache serves: similarity at or above the threshold and the guard passes.
    pub sweep: Vec<AtThreshold>,
    /// The embedding alone.
    pub sweep_raw: Vec<AtThreshold>,
    /// Target false-hit rate → the lowest threshold that meets it (and its figures).
    /// (Target false-hit rate, the lowest threshold that meets it), in rising target order.
    pub recommended: Vec<(f64, AtThreshold)>,
    /// At the default threshold: the share of each kind served from the cache.
    pub served_by_kind: BTreeMap<String, f64>,
    pub default_threshold: f32,
    /// Each pair's similarity and whether the guard lets it through, in set order, so any
    /// threshold can be broken down afterwards (`bench/cache-encoders.sh` does).
    pub scores: Vec<PairScore>,
    /// Embedding latency, when the caller measured it (`trestle cache eval` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Each stage at its best point, per target false-hit rate and judge
    /// ([`stages::stages`]; `trestle cache eval` fills them in).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRun>,
}

/// The stages within one target false-hit rate, with one judge (or none).
#[derive(Debug, Clone, Serialize)]
pub struct StageRun {
    pub target_false_hits: f64,
    /// Which judge: "none", "simulated, 95% accurate", or the model asked.
    pub judge: String,
    pub stages: Vec<stages::Stage>,
}

/// One pair's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PairScore {
    pub id: String,
    pub kind: String,
    pub same: bool,
    pub similarity: f32,
    pub guard: bool,
}

/// Embedding latency: queries one at a time, as the cache embeds them, and in batches.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Single queries timed.
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Batches of 64 texts, per text.
    pub batched_ms_per_text: f64,
}

fn at(similarities: &[(f32, bool)], threshold: f32) -> AtThreshold {
    let same = similarities.iter().filter(|(_, s)| *s).count().max(1) as f64;
    let different = similarities.iter().filter(|(_, s)| !*s).count().max(1) as f64;
    let hits = similarities
        .iter()
        .filter(|(v, s)| *s && *v >= threshold)
        .count() as f64;
    let false_hits = similarities
        .iter()
        .filter(|(v, s)| !*s && *v >= threshold)
        .count() as f64;
    AtThreshold {
        threshold,
        hit_rate: hits / same,
        false_hit_rate: false_hits / different,
        precision: if hits + false_hits > 0.0 {
            hits / (hits + false_hits)
        } else {
            1.0
        },
    }
}

/// Scores `pairs` given each pair's cosine similarity and whether the guard lets it through
/// (same order).
pub fn evaluate(
    pairs: &[Pair],
    similarity: &[f32],
    guard: &[bool],
    default_threshold: f32,
) -> Report {
    // A pair the guard stops is never served, whatever its similarity.
    let served: Vec<f32> = similarity
        .iter()
        .zip(guard)
        .map(|(v, ok)| if *ok { *v } else { f32::NEG_INFINITY })
        .collect();
    let sweep_of = |sims: &[f32]| -> Vec<AtThreshold> {
        let labelled: Vec<(f32, bool)> =
            sims.iter().zip(pairs).map(|(v, p)| (*v, p.same)).collect();
        (50..=99).map(|t| at(&labelled, t as f32 / 100.0)).collect()
    };
    let sweep = sweep_of(&served);
    let sweep_raw = sweep_of(similarity);
    let mut recommended = Vec::new();
    for target in [0.0, 0.01, 0.02, 0.05, 0.10] {
        if let Some(best) = sweep.iter().find(|s| s.false_hit_rate <= target) {
            recommended.push((target, best.clone()));
        }
    }
    let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (p, v) in pairs.iter().zip(&served) {
        let e = by_kind.entry(p.kind.clone()).or_default();
        e.1 += 1;
        if *v >= default_threshold {
            e.0 += 1;
        }
    }
    Report {
        pairs: pairs.len(),
        same: pairs.iter().filter(|p| p.same).count(),
        different: pairs.iter().filter(|p| !p.same).count(),
        sweep,
        sweep_raw,
        recommended,
        served_by_kind: by_kind
            .into_iter()
            .map(|(k, (served, n))| (k, served as f64 / n.max(1) as f64))
            .collect(),
        default_threshold,
        scores: pairs
            .iter()
            .zip(similarity.iter().zip(guard))
            .map(|(p, (v, ok))| PairScore {
                id: p.id.clone(),
                kind: p.kind.clone(),
                same: p.same,
                similarity: *v,
                guard: *ok,
            })
            .collect(),
        latency: None,
        stages: Vec::new(),
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A labelled pair with empty texts (the stage tests use it too).
    pub(super) fn pair(same: bool, kind: &str) -> Pair {
        Pair {
            id: String::new(),
            topic: "t".into(),
            a: String::new(),
            b: String::new(),
            same,
            kind: kind.into(),
        }
    }

    #[test]
    fn rates_and_recommendations() {
        let pairs = vec![
            pair(true, "paraphrase"),
            pair(true, "paraphrase"),
            pair(false, "negation"),
            pair(false, "unrelated"),
        ];
        let sims = [0.95, 0.80, 0.85, 0.10];
        let r = evaluate(&pairs, &sims, &[true; 4], 0.9);
        let at_90 = r.sweep.iter().find(|s| s.threshold == 0.9).unwrap();
        assert_eq!(at_90.hit_rate, 0.5);
        assert_eq!(at_90.false_hit_rate, 0.0);
        assert_eq!(at_90.precision, 1.0);
        let at_80 = r.sweep.iter().find(|s| s.threshold == 0.8).unwrap();
        assert_eq!(at_80.hit_rate, 1.0);
        assert_eq!(at_80.false_hit_rate, 0.5);
        // No false hits: the lowest threshold above the negation's 0.85.
        assert_eq!(r.recommended[0].0, 0.0);
        assert_eq!(r.recommended[0].1.threshold, 0.86);
        assert_eq!(r.served_by_kind["negation"], 0.0);
        assert_eq!(r.served_by_kind["paraphrase"], 0.5);
        assert!(
            read_pairs("{\"bad\": 1}")
                .unwrap_err()
                .starts_with("line 1")
        );
        // The guard stopping the negation removes its false hit at every threshold.
        let guarded = evaluate(&pairs, &sims, &[true, true, false, true], 0.9);
        let at_80 = guarded.sweep.iter().find(|s| s.threshold == 0.8).unwrap();
        assert_eq!((at_80.hit_rate, at_80.false_hit_rate), (1.0, 0.0));
        assert_eq!(guarded.sweep_raw, r.sweep_raw);
        assert_eq!(guarded.scores.len(), 4);
        assert!(!guarded.scores[2].guard && guarded.scores[2].similarity == 0.85);
    }
}
