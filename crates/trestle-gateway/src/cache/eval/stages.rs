//! What each stage of the semantic cache adds, on a labelled set: the share of paraphrases
//! served and of the other pairs served by mistake (false hits), overall and per kind, at the
//! operating point of each stage that serves the most paraphrases within a target false-hit
//! rate (chosen on the set itself, so optimistic).
//!
//! The stages, each on top of the one before:
//! 1. the embedding's similarity alone, at a threshold;
//! 2. the lexical guard (numbers, negation, contrasts, names);
//! 3. the attribute rule ([`crate::cache::guard::attributes`]);
//! 4. learned thresholds: the route's estimator ([`crate::cache::learned::Model`]) started at
//!    a threshold and taught by verified outcomes — each pair the guard passes, from the
//!    floor up, observed as a verification — of the *other* folds' pairs (5 folds), then
//!    asked for the risk at each held-out pair's similarity, as a new entry of a route that
//!    has learned;
//! 5. the judge, on candidates the learned threshold does not serve, from `judge_from` up;
//!    and alone: the judge on every candidate from `judge_from` up (`judge_all`).
//!
//! The judge's verdicts come from the caller: a model over HTTP, or a simulated judge.
//!
//! With a verifier's scores ([`crate::cache::verify`]: a cross-encoder's probability or a
//! second encoder's cosine), [`verifier_stages`] adds, on top of the attribute rule: the
//! verifier on candidates below the threshold, from a floor up (`verifier_from`); and the
//! verifier on every candidate from a floor up (`verifier_all`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Pair;
use crate::cache::learned::{Evidence, Model, Observation, Params, Source};

/// One pair's figures, as the stages see it.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub similarity: f32,
    /// The lexical guard lets it through.
    pub lexical: bool,
    /// The attribute rule lets it through.
    pub attributes: bool,
    /// The judge's yes (`Some(true)`), no, or nothing (not asked, no answer in time).
    pub judge: Option<bool>,
    /// The verifier's score (not asked: none).
    pub verifier: Option<f32>,
}

/// One stage at its best operating point.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub stage: String,
    /// How it was run: the threshold, the judge's floor.
    pub point: String,
    /// Share of `same` pairs served.
    pub served: f64,
    /// Share of not-`same` pairs served.
    pub false_hits: f64,
    /// Share of each kind's pairs served.
    pub by_kind: BTreeMap<String, f64>,
}

/// Folds for the learned stage.
const FOLDS: usize = 5;
/// The bound the learned stage runs with (the default `max_false_hit_rate`).
const LEARNED_BOUND: f32 = 0.01;
/// How far below its start a learned threshold may go (the default reach).
const REACH: f32 = 0.15;

fn grid() -> impl Iterator<Item = f32> + Clone {
    (50..=100).map(|t| t as f32 / 100.0)
}

/// The share of `same` pairs served and of the others served.
fn rates(pairs: &[Pair], served: &[bool]) -> (f64, f64) {
    let (mut same, mut same_served, mut diff, mut diff_served) = (0usize, 0usize, 0usize, 0usize);
    for (p, s) in pairs.iter().zip(served) {
        if p.same {
            same += 1;
            same_served += usize::from(*s);
        } else {
            diff += 1;
            diff_served += usize::from(*s);
        }
    }
    (
        same_served as f64 / same.max(1) as f64,
        diff_served as f64 / diff.max(1) as f64,
    )
}

/// The share of each kind's pairs served.
fn by_kind(pairs: &[Pair], served: &[bool]) -> BTreeMap<String, f64> {
    let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (p, s) in pairs.iter().zip(served) {
        let k = kinds.entry(p.kind.as_str()).or_default();
        k.1 += 1;
        k.0 += usize::from(*s);
    }
    kinds
        .into_iter()
        .map(|(k, (s, n))| (k.to_string(), s as f64 / n.max(1) as f64))
        .collect()
}

/// The operating point among `points` (label, served per pair) that serves the most `same`
/// pairs with false hits within `target` (ties: the fewer false hits).
fn best(
    name: &str,
    pairs: &[Pair],
    target: f64,
    points: impl Iterator<Item = (String, Vec<bool>)>,
) -> Stage {
    let mut best: Option<(String, Vec<bool>, f64, f64)> = None;
    for (point, served) in points {
        let (s, f) = rates(pairs, &served);
        if f > target + 1e-12 {
            continue;
        }
        let better = best
            .as_ref()
            .is_none_or(|b| s > b.2 || (s == b.2 && f < b.3));
        if better {
            best = Some((point, served, s, f));
        }
    }
    match best {
        Some((point, served, s, f)) => Stage {
            stage: name.to_string(),
            point,
            served: s,
            false_hits: f,
            by_kind: by_kind(pairs, &served),
        },
        None => Stage {
            stage: name.to_string(),
            point: "nothing served".into(),
            served: 0.0,
            false_hits: 0.0,
            by_kind: by_kind(pairs, &vec![false; pairs.len()]),
        },
    }
}

/// Each threshold on the grid, and which pairs `keep` lets through at or above it.
fn sweep<'a>(
    scores: &'a [Scored],
    keep: impl Fn(&Scored) -> bool + 'a,
) -> impl Iterator<Item = (String, Vec<bool>)> + 'a {
    grid().map(move |t| {
        let served = scores
            .iter()
            .map(|s| keep(s) && s.similarity >= t)
            .collect();
        (format!("threshold {t:.2}"), served)
    })
}

/// Which pairs learned thresholds started at `start` serve (k-fold, see the module's notes).
pub fn learned(pairs: &[Pair], scores: &[Scored], start: f32) -> Vec<bool> {
    let floor = (start - REACH).max(0.0);
    let params = Params {
        threshold: start,
        floor,
        max_false_hit_rate: LEARNED_BOUND,
    };
    let guarded = |s: &Scored| s.lexical && s.attributes;
    let mut served = vec![false; pairs.len()];
    for fold in 0..FOLDS {
        let model = Model::new(params);
        for (i, (p, s)) in pairs.iter().zip(scores).enumerate() {
            if i % FOLDS != fold && guarded(s) && s.similarity >= floor {
                let mut evidence = Evidence::default();
                let o = Observation {
                    similarity: s.similarity.min(1.0),
                    wrong: !p.same,
                    source: Source::Verification,
                };
                model.observe(&mut evidence, o);
            }
        }
        for (i, s) in scores.iter().enumerate() {
            if i % FOLDS == fold {
                served[i] = guarded(s) && model.allows(model.risk(None, s.similarity));
            }
        }
    }
    served
}

/// Every stage at its best point within `target` false hits. `judge_name` labels the judge
/// stages (e.g. "simulated judge, 95% accurate"); without verdicts they are left out.
pub fn stages(
    pairs: &[Pair],
    scores: &[Scored],
    target: f64,
    judge_name: Option<&str>,
) -> Vec<Stage> {
    let mut out = vec![
        best("similarity alone", pairs, target, sweep(scores, |_| true)),
        best(
            "+ lexical guard",
            pairs,
            target,
            sweep(scores, |s| s.lexical),
        ),
        best(
            "+ attribute rule",
            pairs,
            target,
            sweep(scores, |s| s.lexical && s.attributes),
        ),
    ];
    let learned_by_start: Vec<(f32, Vec<bool>)> =
        grid().map(|t| (t, learned(pairs, scores, t))).collect();
    out.push(best(
        "+ learned thresholds",
        pairs,
        target,
        learned_by_start.iter().map(|(t, s)| {
            (
                format!("start {t:.2}, floor {:.2}", (t - REACH).max(0.0)),
                s.clone(),
            )
        }),
    ));
    if let Some(judge) = judge_name {
        let yes = |s: &Scored, from: f32| {
            s.lexical && s.attributes && s.similarity >= from && s.judge == Some(true)
        };
        let band = learned_by_start.iter().flat_map(|(t, learned)| {
            grid().filter(move |f| f <= t).map(move |from| {
                let served: Vec<bool> = scores
                    .iter()
                    .zip(learned)
                    .map(|(s, l)| *l || yes(s, from))
                    .collect();
                (format!("learned from {t:.2}, judge from {from:.2}"), served)
            })
        });
        out.push(best(&format!("+ judge ({judge})"), pairs, target, band));
        let all = grid().map(|from| {
            let served: Vec<bool> = scores.iter().map(|s| yes(s, from)).collect();
            (format!("judge on every candidate from {from:.2}"), served)
        });
        out.push(best(
            &format!("guard + judge on every candidate ({judge})"),
            pairs,
            target,
            all,
        ));
    }
    out
}

/// The verifier's thresholds tried: 0.05 to 0.99.
fn verifier_grid() -> impl Iterator<Item = f32> + Clone {
    (5..=99).map(|t| t as f32 / 100.0)
}

/// The floors tried for the verifier's band: 0.50 to 1.00 by 0.05.
fn floor_grid() -> impl Iterator<Item = f32> + Clone {
    (10..=20).map(|t| t as f32 / 20.0)
}

/// The verifier's stages at their best points within `target` false hits (see the module's
/// notes); `name` labels them. Pairs without a verifier score are never served by it.
pub fn verifier_stages(pairs: &[Pair], scores: &[Scored], target: f64, name: &str) -> Vec<Stage> {
    let guarded = |s: &Scored| s.lexical && s.attributes;
    let yes = |s: &Scored, from: f32, v: f32| {
        guarded(s) && s.similarity >= from && s.verifier.is_some_and(|x| x >= v)
    };
    let band = grid().flat_map(|t| {
        floor_grid().filter(move |f| *f <= t).flat_map(move |from| {
            verifier_grid().map(move |v| {
                let served: Vec<bool> = scores
                    .iter()
                    .map(|s| (guarded(s) && s.similarity >= t) || yes(s, from, v))
                    .collect();
                (
                    format!("threshold {t:.2}, verifier from {from:.2} at {v:.2}"),
                    served,
                )
            })
        })
    });
    let all = floor_grid().flat_map(|from| {
        verifier_grid().map(move |v| {
            let served: Vec<bool> = scores.iter().map(|s| yes(s, from, v)).collect();
            (format!("verifier from {from:.2} at {v:.2}"), served)
        })
    });
    vec![
        best(
            &format!("+ verifier below threshold ({name})"),
            pairs,
            target,
            band,
        ),
        best(
            &format!("guard + verifier, every candidate ({name})"),
            pairs,
            target,
            all,
        ),
    ]
}

/// A judge that answers from the labels, wrong with probability `1 - accuracy` (a fixed
/// pseudo-random stream from `seed`): a stand-in, never a measured model.
pub fn simulated_judge(pairs: &[Pair], accuracy: f64, seed: u64) -> Vec<Option<bool>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    pairs
        .iter()
        .map(|p| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            Some(if u < accuracy { p.same } else { !p.same })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::pair;
    use super::*;

    #[test]
    fn each_stage_adds_what_it_should() {
        // Paraphrases from 0.70 to 0.99; negations at 0.95 the attribute rule stops; numbers
        // at 0.97 the lexical guard stops; unrelated pairs low.
        let mut pairs = Vec::new();
        let mut scores = Vec::new();
        for i in 0..30 {
            pairs.push(pair(true, "paraphrase"));
            scores.push(Scored {
                similarity: 0.70 + i as f32 * 0.01,
                lexical: true,
                attributes: true,
                judge: Some(true),
                verifier: Some(0.8),
            });
        }
        for (kind, sim, lexical, attributes) in [
            ("negation", 0.95, true, false),
            ("near_miss_number", 0.97, false, true),
            ("unrelated", 0.60, true, true),
        ] {
            for _ in 0..10 {
                pairs.push(pair(false, kind));
                scores.push(Scored {
                    similarity: sim,
                    lexical,
                    attributes,
                    judge: Some(false),
                    verifier: Some(if kind == "negation" { 0.9 } else { 0.2 }),
                });
            }
        }
        let s = stages(&pairs, &scores, 0.0, Some("perfect"));
        let served: Vec<f64> = s.iter().map(|s| s.served).collect();
        assert!(served[0] <= 2.0 / 30.0 + 1e-9, "{s:?}"); // only above both traps
        assert!(served[1] < served[2], "{s:?}");
        assert_eq!(served[2], 1.0, "the guard stops every trap: {s:?}");
        assert!(s.iter().all(|s| s.false_hits == 0.0));
        assert_eq!(s[5].served, 1.0);
        assert_eq!(s[2].by_kind["negation"], 0.0);
        // The verifier: the negations (0.95, scored 0.9) pass it, the numbers the guard
        // stops, the unrelated (0.2) do not: in the band from 0.70 at 0.25..0.80 it serves
        // every paraphrase with no false hit; on every candidate too.
        let v = verifier_stages(&pairs, &scores, 0.0, "fake");
        assert_eq!((v[0].served, v[0].false_hits), (1.0, 0.0), "{v:?}");
        assert_eq!((v[1].served, v[1].false_hits), (1.0, 0.0), "{v:?}");
        let unguarded: Vec<Scored> = scores
            .iter()
            .map(|s| Scored {
                attributes: true,
                ..*s
            })
            .collect();
        // Without the attribute rule the negations score 0.9: above any point that serves
        // the paraphrases (0.8), so within no false hits nothing beyond 0.95 is served.
        let v = verifier_stages(&pairs, &unguarded, 0.0, "fake");
        assert!(v[1].served < 1.0 && v[1].false_hits == 0.0, "{v:?}");
        assert_eq!(v[1].by_kind["negation"], 0.0);
        // A simulated judge is as accurate as asked, over many pairs.
        let many: Vec<Pair> = (0..4000).map(|i| pair(i % 2 == 0, "k")).collect();
        let verdicts = simulated_judge(&many, 0.9, 7);
        let right = many
            .iter()
            .zip(&verdicts)
            .filter(|(p, v)| **v == Some(p.same))
            .count() as f64
            / 4000.0;
        assert!((right - 0.9).abs() < 0.02, "{right}");
    }
}
