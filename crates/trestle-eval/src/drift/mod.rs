//! Drift: how recent traffic differs from a reference window (docs/observability.md, "Drift
//! and alerts"). The statistics are pure and live here; the gateway reads the windows from
//! its trace store and turns drifted signals into alerts.
//!
//! - [`distribution`]: PSI, normed Wasserstein and Jensen-Shannon, computed as Evidently
//!   computes them;
//! - [`text`]: language detection, refusal phrasing, and topic drift by a domain classifier;
//! - here: a [`Signal`] (one figure with its verdict) and the test for a rate that moved.

pub mod distribution;
pub mod text;

use serde::{Deserialize, Serialize};

pub use distribution::{jensen_shannon, psi, wasserstein, wasserstein_normed};
pub use text::{
    DomainClassifier, domain_classifier_texts, domain_classifier_vectors, is_refusal, language,
};

/// A signal's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Drifted,
    Ok,
    /// A window has fewer observations than the minimum: no verdict either way.
    NotEnoughData,
}

/// One figure of a drift report: what was measured, how, over what, and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Signal {
    /// The signal, named as its threshold key (`input_length_psi`, `refusal_rate`, …).
    pub name: String,
    /// What it is measured over: `route:NAME`, `prompt:NAME@N`, `target:provider/model`.
    pub scope: String,
    /// `psi`, `wasserstein_normed`, `jensen_shannon`, `domain_classifier_auc`,
    /// `rate_increase`, `rate_decrease`, `new_model_fingerprint`.
    pub method: String,
    /// The figure (`None` when there was not enough data to compute it).
    pub value: Option<f64>,
    pub threshold: f64,
    pub status: Status,
    pub reference_n: usize,
    pub current_n: usize,
    /// Words for a person: the rates compared, the classifier's luck threshold, a note.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Signal {
    /// A signal with no verdict for lack of data.
    pub fn not_enough(
        name: &str,
        scope: &str,
        method: &str,
        threshold: f64,
        n: (usize, usize),
        min: usize,
    ) -> Signal {
        Signal {
            name: name.to_string(),
            scope: scope.to_string(),
            method: method.to_string(),
            value: None,
            threshold,
            status: Status::NotEnoughData,
            reference_n: n.0,
            current_n: n.1,
            detail: format!(
                "not enough data: {} reference and {} current observations, {min} needed in each",
                n.0, n.1
            ),
        }
    }

    pub fn drifted(&self) -> bool {
        self.status == Status::Drifted
    }
}

/// A figure compared with its threshold (drifted at or above it, as Evidently's tests), or
/// "not enough data" when a window is under `min` observations or the figure is undefined.
#[allow(clippy::too_many_arguments)]
pub fn verdict(
    name: &str,
    scope: &str,
    method: &str,
    value: Option<f64>,
    threshold: f64,
    n: (usize, usize),
    min: usize,
    detail: String,
) -> Signal {
    match value {
        Some(v) if n.0 >= min && n.1 >= min => Signal {
            name: name.to_string(),
            scope: scope.to_string(),
            method: method.to_string(),
            value: Some(v),
            threshold,
            status: if v >= threshold {
                Status::Drifted
            } else {
                Status::Ok
            },
            reference_n: n.0,
            current_n: n.1,
            detail,
        },
        _ => Signal::not_enough(name, scope, method, threshold, n, min),
    }
}

/// How many random relabellings the luck threshold of a distance is drawn from, and the
/// most values per side they use (evenly picked).
const PERMUTATIONS: usize = 200;
const PERMUTATION_CAP: usize = 2000;

/// A distance between two samples of a number (`stat`: PSI, normed Wasserstein), with its
/// verdict: drifted when it is at or above `threshold` *and* above the 95th percentile of
/// the same distance between random relabellings of the pooled samples (200 of them, seeded)
/// — so the noise of a small sample never reads as drift, while large samples are judged by
/// the threshold alone, as Evidently judges them.
#[allow(clippy::too_many_arguments)]
pub fn distance(
    name: &str,
    scope: &str,
    method: &str,
    samples: (&[f64], &[f64]),
    stat: fn(&[f64], &[f64]) -> Option<f64>,
    threshold: f64,
    min: usize,
    detail: String,
) -> Signal {
    let n = (samples.0.len(), samples.1.len());
    let value = stat(samples.0, samples.1);
    let mut signal = verdict(name, scope, method, value, threshold, n, min, detail);
    if signal.status == Status::Drifted
        && let (Some(v), Some(luck)) = (value, permutation_p95(samples.0, samples.1, stat))
        && v <= luck
    {
        signal.status = Status::Ok;
        let note =
            format!("within what chance gives for these sample sizes ({luck:.3}, 95th percentile)");
        signal.detail = if signal.detail.is_empty() {
            note
        } else {
            format!("{}; {note}", signal.detail)
        };
    }
    signal
}

/// The 95th percentile of `stat` over random relabellings of the pooled samples.
fn permutation_p95(a: &[f64], b: &[f64], stat: fn(&[f64], &[f64]) -> Option<f64>) -> Option<f64> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let pick = |s: &[f64]| -> Vec<f64> {
        let step = s.len().div_ceil(PERMUTATION_CAP).max(1);
        s.iter().step_by(step).copied().collect()
    };
    let (a, b) = (pick(a), pick(b));
    let mut pooled: Vec<f64> = a.iter().chain(&b).copied().collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xd1f7);
    let mut values: Vec<f64> = (0..PERMUTATIONS)
        .filter_map(|_| {
            pooled.shuffle(&mut rng);
            let (x, y) = pooled.split_at(a.len());
            stat(x, y)
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = 0.95 * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

/// Which way a rate moving is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Refusals, fallbacks, guardrail findings: a rise is drift.
    Up,
    /// Feedback score, online-eval pass rate: a fall is drift.
    Down,
}

/// A rate that moved the bad way: drifted when the change is at least `threshold` (an
/// absolute share, 0.05 = five points) *and* a one-sided two-proportion z-test says it is
/// not chance (z ≥ 1.645, 5%). `hits` and `n` are (reference, current). The value is the
/// change, signed (current − reference).
pub fn rate_change(
    name: &str,
    scope: &str,
    worse: Worse,
    hits: (usize, usize),
    n: (usize, usize),
    threshold: f64,
    min: usize,
) -> Signal {
    let method = match worse {
        Worse::Up => "rate_increase",
        Worse::Down => "rate_decrease",
    };
    if n.0 < min || n.1 < min {
        return Signal::not_enough(name, scope, method, threshold, n, min);
    }
    let (r, c) = (hits.0 as f64 / n.0 as f64, hits.1 as f64 / n.1 as f64);
    let change = c - r;
    let bad = match worse {
        Worse::Up => change,
        Worse::Down => -change,
    };
    let z = z_two_proportions(hits, n);
    let z_bad = if worse == Worse::Up { z } else { -z };
    let drifted = bad >= threshold && z_bad >= 1.645;
    Signal {
        name: name.to_string(),
        scope: scope.to_string(),
        method: method.to_string(),
        value: Some(change),
        threshold,
        status: if drifted { Status::Drifted } else { Status::Ok },
        reference_n: n.0,
        current_n: n.1,
        detail: format!("{:.1}% → {:.1}% (z = {z:.2})", r * 100.0, c * 100.0),
    }
}

/// The pooled two-proportion z statistic of current against reference (0 when both rates
/// are 0 or both 1).
fn z_two_proportions(hits: (usize, usize), n: (usize, usize)) -> f64 {
    let (n0, n1) = (n.0 as f64, n.1 as f64);
    let (p0, p1) = (hits.0 as f64 / n0, hits.1 as f64 / n1);
    let pooled = (hits.0 + hits.1) as f64 / (n0 + n1);
    let se = (pooled * (1.0 - pooled) * (1.0 / n0 + 1.0 / n1)).sqrt();
    if se == 0.0 { 0.0 } else { (p1 - p0) / se }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn draws(rng: &mut SmallRng, p: f64, n: usize) -> usize {
        (0..n).filter(|_| rng.random::<f64>() < p).count()
    }

    #[test]
    fn a_rising_rate_is_flagged_and_a_steady_one_is_not() {
        let mut rng = SmallRng::seed_from_u64(3);
        let (r, same, up) = (
            draws(&mut rng, 0.05, 1000),
            draws(&mut rng, 0.05, 1000),
            draws(&mut rng, 0.15, 1000),
        );
        let null = rate_change(
            "refusal_rate",
            "route:a",
            Worse::Up,
            (r, same),
            (1000, 1000),
            0.05,
            30,
        );
        let shift = rate_change(
            "refusal_rate",
            "route:a",
            Worse::Up,
            (r, up),
            (1000, 1000),
            0.05,
            30,
        );
        assert_eq!(null.status, Status::Ok, "{null:?}");
        assert_eq!(shift.status, Status::Drifted, "{shift:?}");
        assert!(shift.value.unwrap() > 0.05);
        // A fall in refusals is not drift of this signal.
        let down = rate_change(
            "refusal_rate",
            "route:a",
            Worse::Up,
            (up, r),
            (1000, 1000),
            0.05,
            30,
        );
        assert_eq!(down.status, Status::Ok);
        // A fall in the feedback score is.
        let fb = rate_change(
            "feedback_score",
            "route:a",
            Worse::Down,
            (900, 700),
            (1000, 1000),
            0.1,
            30,
        );
        assert_eq!(fb.status, Status::Drifted);
    }

    #[test]
    fn a_big_change_on_few_observations_is_not_a_verdict() {
        // 10 points on 40 each: over the threshold but within chance.
        let s = rate_change(
            "fallback_rate",
            "route:a",
            Worse::Up,
            (2, 6),
            (40, 40),
            0.05,
            30,
        );
        assert_eq!(s.status, Status::Ok, "{s:?}");
        let s = rate_change(
            "fallback_rate",
            "route:a",
            Worse::Up,
            (0, 5),
            (10, 10),
            0.05,
            30,
        );
        assert_eq!(s.status, Status::NotEnoughData);
        assert!(s.detail.starts_with("not enough data"), "{}", s.detail);
        assert_eq!(s.value, None);
    }

    #[test]
    fn small_samples_need_more_than_the_threshold() {
        use rand_distr::{Distribution, Normal};
        let mut rng = SmallRng::seed_from_u64(5);
        let d = Normal::new(40.0f64, 10.0).unwrap();
        let mut draw =
            |n: usize| -> Vec<f64> { (0..n).map(|_| d.sample(&mut rng).round()).collect() };
        // 40 values a side: PSI's noise alone is near its threshold.
        let (a, b) = (draw(40), draw(40));
        let raw = psi(&a, &b).unwrap();
        let s = distance(
            "x_psi",
            "route:a",
            "psi",
            (&a, &b),
            psi,
            0.1,
            30,
            String::new(),
        );
        assert!(raw >= 0.1, "the example needs a noisy PSI, got {raw}");
        assert_eq!(s.status, Status::Ok, "{s:?}");
        assert!(s.detail.contains("chance"), "{s:?}");
        // A real shift on the same sizes still counts.
        let c: Vec<f64> = draw(40).into_iter().map(|x| x + 25.0).collect();
        let s = distance(
            "x_psi",
            "route:a",
            "psi",
            (&a, &c),
            psi,
            0.1,
            30,
            String::new(),
        );
        assert_eq!(s.status, Status::Drifted, "{s:?}");
    }

    #[test]
    fn verdicts_compare_with_the_threshold() {
        let v = verdict(
            "input_length_psi",
            "route:a",
            "psi",
            Some(0.25),
            0.1,
            (100, 100),
            30,
            String::new(),
        );
        assert!(v.drifted());
        let v = verdict(
            "input_length_psi",
            "route:a",
            "psi",
            Some(0.05),
            0.1,
            (100, 100),
            30,
            String::new(),
        );
        assert_eq!(v.status, Status::Ok);
        let v = verdict(
            "input_length_psi",
            "route:a",
            "psi",
            Some(0.5),
            0.1,
            (100, 3),
            30,
            String::new(),
        );
        assert_eq!(v.status, Status::NotEnoughData);
        assert_eq!(
            serde_json::to_value(&v).unwrap()["status"],
            "not_enough_data"
        );
    }
}
