//! Distances between two samples of a number (or of a category), computed as Evidently
//! computes them, so the figures can be compared with its reports (bench/drift-evidently).
//!
//! - [`psi`]: the population stability index. Binning follows Evidently 0.7's
//!   `get_binned_data`: when the reference has more than 20 distinct values, equal-width bins
//!   over the combined sample, as many as Sturges' rule gives (numpy's
//!   `histogram_bin_edges(combined, "sturges")`: width = range / (log2(n) + 1), at least 1
//!   when every value is a whole number, as numpy does for integer arrays); otherwise one
//!   bin per distinct value. An empty bin's share becomes 0.0001, or a millionth of the
//!   smallest non-empty share when that is at most 0.0001.
//! - [`wasserstein_normed`]: the 1-Wasserstein (earth mover's) distance divided by the
//!   reference's standard deviation (population, floored at 0.001).
//! - [`jensen_shannon`]: the Jensen-Shannon distance (natural logarithm, so 0 to √ln 2 ≈
//!   0.833) between two category mixes, as scipy's `jensenshannon` and Evidently's
//!   `jensenshannon` test compute it.

use std::collections::{BTreeMap, BTreeSet};

/// Evidently's default thresholds: PSI 0.1 (0.2 is a major shift), normed Wasserstein 0.1,
/// Jensen-Shannon distance 0.1.
pub const PSI_THRESHOLD: f64 = 0.1;
pub const PSI_MAJOR: f64 = 0.2;
pub const WASSERSTEIN_THRESHOLD: f64 = 0.1;
pub const JS_THRESHOLD: f64 = 0.1;

/// Above this many distinct reference values a number is binned; at or below, each value
/// is its own category (Evidently's rule).
const CATEGORICAL_MAX_DISTINCT: usize = 20;

/// The population stability index of `current` against `reference`: Σ (r − c) · ln(r / c)
/// over the bins' shares. `None` when either sample is empty or holds a non-finite value.
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    let (r, c) = binned_shares(reference, current, true)?;
    Some(r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum())
}

/// The bins' shares of each sample, as Evidently's `get_binned_data`; `fill_zeroes` replaces
/// empty shares by a small epsilon (PSI needs it; Jensen-Shannon does not).
pub fn binned_shares(
    reference: &[f64],
    current: &[f64],
    fill_zeroes: bool,
) -> Option<(Vec<f64>, Vec<f64>)> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    if reference.iter().chain(current).any(|v| !v.is_finite()) {
        return None;
    }
    let distinct: BTreeSet<u64> = reference.iter().map(|v| key(*v)).collect();
    let (mut r, mut c) = if distinct.len() > CATEGORICAL_MAX_DISTINCT {
        let edges = sturges_edges(reference, current);
        (histogram(reference, &edges), histogram(current, &edges))
    } else {
        let mut keys: BTreeSet<u64> = distinct;
        keys.extend(current.iter().map(|v| key(*v)));
        let count = |sample: &[f64]| -> Vec<f64> {
            let mut counts: BTreeMap<u64, usize> = keys.iter().map(|k| (*k, 0)).collect();
            for v in sample {
                *counts.entry(key(*v)).or_default() += 1;
            }
            counts
                .values()
                .map(|n| *n as f64 / sample.len() as f64)
                .collect()
        };
        (count(reference), count(current))
    };
    if fill_zeroes {
        fill(&mut r);
        fill(&mut c);
    }
    Some((r, c))
}

/// A value as a map key (so 1.0 and 1.0 are one category; −0.0 is 0.0).
fn key(v: f64) -> u64 {
    (v + 0.0).to_bits()
}

/// Equal-width bin edges over the combined sample, Sturges' count, as numpy computes them.
fn sturges_edges(reference: &[f64], current: &[f64]) -> Vec<f64> {
    let all = reference.iter().chain(current);
    let (mut lo, mut hi) = all
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let n = (reference.len() + current.len()) as f64;
    let mut width = (hi - lo) / (n.log2() + 1.0);
    let integers = all.clone().all(|v| v.fract() == 0.0);
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let bins = if width > 0.0 {
        if integers && width < 1.0 {
            width = 1.0;
        }
        ((hi - lo) / width).ceil().max(1.0) as usize
    } else {
        1
    };
    // numpy.linspace: start + i · step, the last edge exactly `hi`.
    let step = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| lo + i as f64 * step).collect();
    if let Some(last) = edges.last_mut() {
        *last = hi;
    }
    edges
}

/// Shares of `sample` per bin: [e_i, e_i+1), the last bin closed (numpy.histogram).
fn histogram(sample: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len().saturating_sub(1).max(1);
    let inner = &edges[1..edges.len().saturating_sub(1).max(1)];
    let mut counts = vec![0usize; bins];
    for v in sample {
        if edges.first().is_some_and(|lo| v < lo) || edges.last().is_some_and(|hi| v > hi) {
            continue;
        }
        let i = inner.partition_point(|e| e <= v);
        counts[i.min(bins - 1)] += 1;
    }
    counts
        .into_iter()
        .map(|c| c as f64 / sample.len() as f64)
        .collect()
}

/// Evidently's epsilon for empty bins.
fn fill(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let eps = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = eps;
    }
}

/// The 1-Wasserstein distance between two samples: the area between their empirical CDFs
/// (scipy's `wasserstein_distance`). `None` when either is empty.
pub fn wasserstein(u: &[f64], v: &[f64]) -> Option<f64> {
    if u.is_empty() || v.is_empty() || u.iter().chain(v).any(|x| !x.is_finite()) {
        return None;
    }
    let mut u = u.to_vec();
    let mut v = v.to_vec();
    u.sort_by(f64::total_cmp);
    v.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = u.iter().chain(&v).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let mut total = 0.0;
    for pair in all.windows(2) {
        let x = pair[0];
        let cu = u.partition_point(|a| *a <= x) as f64 / nu;
        let cv = v.partition_point(|a| *a <= x) as f64 / nv;
        total += (cu - cv).abs() * (pair[1] - pair[0]);
    }
    Some(total)
}

/// Population standard deviation.
pub fn std_dev(sample: &[f64]) -> f64 {
    if sample.is_empty() {
        return 0.0;
    }
    let n = sample.len() as f64;
    let mean = sample.iter().sum::<f64>() / n;
    (sample.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// The Wasserstein distance in units of the reference's standard deviation (Evidently's
/// "Wasserstein distance (normed)"; the deviation is floored at 0.001).
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Option<f64> {
    let d = wasserstein(reference, current)?;
    Some(d / std_dev(reference).max(0.001))
}

/// The Jensen-Shannon distance between two category mixes given as counts (categories
/// absent from one side count 0). `None` when either side has no observations.
pub fn jensen_shannon(
    reference: &BTreeMap<String, usize>,
    current: &BTreeMap<String, usize>,
) -> Option<f64> {
    let keys: BTreeSet<&String> = reference.keys().chain(current.keys()).collect();
    let (nr, nc) = (
        reference.values().sum::<usize>() as f64,
        current.values().sum::<usize>() as f64,
    );
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let rel = |a: f64, m: f64| if a > 0.0 { a * (a / m).ln() } else { 0.0 };
    let mut js = 0.0;
    for k in keys {
        let p = reference.get(k).copied().unwrap_or(0) as f64 / nr;
        let q = current.get(k).copied().unwrap_or(0) as f64 / nc;
        let m = (p + q) / 2.0;
        js += rel(p, m) + rel(q, m);
    }
    Some((js / 2.0).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    fn normal(seed: u64, mean: f64, sd: f64, n: usize) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let d = Normal::new(mean, sd).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn psi_flags_a_shift_and_not_a_null() {
        let reference = normal(1, 100.0, 20.0, 2000);
        let same = normal(2, 100.0, 20.0, 2000);
        let shifted = normal(3, 120.0, 20.0, 2000);
        let null = psi(&reference, &same).unwrap();
        let shift = psi(&reference, &shifted).unwrap();
        assert!(null < PSI_THRESHOLD, "null PSI {null}");
        assert!(shift > PSI_MAJOR, "shift PSI {shift}");
    }

    #[test]
    fn psi_of_identical_samples_is_zero() {
        let a = normal(4, 0.0, 1.0, 500);
        assert!(psi(&a, &a).unwrap().abs() < 1e-12);
        assert_eq!(psi(&[], &a), None);
    }

    #[test]
    fn sturges_edges_match_numpy() {
        // numpy.histogram_bin_edges([0., 1, 2, 3, 4, 5, 6, 7.5], "sturges"):
        // 8 values → width 7.5 / 4 → 4 bins [0, 1.875, 3.75, 5.625, 7.5].
        let e = sturges_edges(&[0.0, 1.0, 2.0, 3.0], &[4.0, 5.0, 6.0, 7.5]);
        assert_eq!(e, vec![0.0, 1.875, 3.75, 5.625, 7.5]);
        // Whole numbers: the width is at least 1 (numpy on integer arrays).
        let ints: Vec<f64> = (0..1000).map(|i| f64::from(i % 5)).collect();
        let e = sturges_edges(&ints, &ints);
        assert_eq!(e.len(), 5, "{e:?}");
        // The last edge closes the last bin.
        let h = histogram(&[0.0, 1.875, 7.5], &[0.0, 1.875, 3.75, 5.625, 7.5]);
        assert_eq!(
            h.iter()
                .map(|s| (s * 3.0).round() as u32)
                .collect::<Vec<_>>(),
            [1, 1, 0, 1]
        );
    }

    #[test]
    fn few_distinct_values_are_categories() {
        // 3 distinct values: one bin each; a value new in the current sample gets the epsilon
        // share in the reference.
        let r = [1.0, 1.0, 2.0, 3.0];
        let c = [1.0, 2.0, 2.0, 9.0];
        let (rs, cs) = binned_shares(&r, &c, true).unwrap();
        assert_eq!(rs, vec![0.5, 0.25, 0.25, 0.0001]);
        assert_eq!(cs, vec![0.25, 0.5, 0.0001, 0.25]);
    }

    #[test]
    fn wasserstein_matches_hand_figures() {
        // Shifting every value by 3 moves the distribution by exactly 3.
        let a = [0.0, 1.0, 3.0];
        let b = [3.0, 4.0, 6.0];
        assert!((wasserstein(&a, &b).unwrap() - 3.0).abs() < 1e-12);
        // scipy: wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.
        assert!((wasserstein(&a, &[5.0, 6.0, 8.0]).unwrap() - 5.0).abs() < 1e-12);
        // Unequal sizes: scipy gives 0.25 for [0, 1] vs [0, 0.5, 1, 1.5]... by the CDF areas.
        let d = wasserstein(&[0.0, 1.0], &[0.0, 0.5, 1.0, 1.5]).unwrap();
        assert!((d - 0.25).abs() < 1e-12, "{d}");
    }

    #[test]
    fn normed_wasserstein_flags_a_shift_and_not_a_null() {
        let reference = normal(5, 50.0, 10.0, 1000);
        let same = normal(6, 50.0, 10.0, 1000);
        let shifted = normal(7, 53.0, 10.0, 1000);
        let null = wasserstein_normed(&reference, &same).unwrap();
        let shift = wasserstein_normed(&reference, &shifted).unwrap();
        assert!(null < WASSERSTEIN_THRESHOLD, "null {null}");
        assert!(shift > WASSERSTEIN_THRESHOLD * 2.0, "shift {shift}");
        assert!((std_dev(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn jensen_shannon_of_language_mixes() {
        let mix = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let r = mix(&[("eng", 800), ("fra", 200)]);
        assert!(jensen_shannon(&r, &r).unwrap() < 1e-9);
        assert!(jensen_shannon(&r, &mix(&[("eng", 790), ("fra", 210)])).unwrap() < JS_THRESHOLD);
        assert!(jensen_shannon(&r, &mix(&[("eng", 400), ("deu", 600)])).unwrap() > 0.3);
        // Disjoint mixes reach the maximum, √ln 2.
        let far = jensen_shannon(&mix(&[("a", 1)]), &mix(&[("b", 1)])).unwrap();
        assert!((far - std::f64::consts::LN_2.sqrt()).abs() < 1e-12);
        let mut rng = SmallRng::seed_from_u64(9);
        let draw = |rng: &mut SmallRng, p: f64| -> BTreeMap<String, usize> {
            let eng = (0..500).filter(|_| rng.random::<f64>() < p).count();
            mix(&[("eng", eng), ("spa", 500 - eng)])
        };
        let a = draw(&mut rng, 0.7);
        let b = draw(&mut rng, 0.7);
        assert!(jensen_shannon(&a, &b).unwrap() < JS_THRESHOLD);
    }
}
