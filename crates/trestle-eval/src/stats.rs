//! The figures of a run: pass rates per category, the gates, the paired comparison with a
//! baseline (win/tie/loss and an exact sign test), and the agreement figures that calibrate
//! a judge against people (Cohen's kappa, weighted for ordinal scales).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What the figures need of one case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub id: String,
    pub category: String,
    pub pass: bool,
    pub errored: bool,
    pub latency_ms: u64,
    pub cost_usd: f64,
}

/// A category's figures (the category `all` covers every case).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryStats {
    pub cases: usize,
    pub passed: usize,
    pub pass_rate: f64,
    /// Cases whose request failed (no answer to score).
    pub errors: usize,
    pub latency_p50_ms: u64,
    pub latency_p90_ms: u64,
    pub cost_usd: f64,
}

/// The category that stands for every case.
pub const ALL: &str = "all";

/// Figures per category, plus [`ALL`].
pub fn summarize<'a>(
    results: impl IntoIterator<Item = &'a Scored>,
) -> BTreeMap<String, CategoryStats> {
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut out: BTreeMap<String, CategoryStats> = BTreeMap::new();
    for r in results {
        for cat in [r.category.as_str(), ALL] {
            let s = out.entry(cat.to_string()).or_default();
            s.cases += 1;
            s.passed += usize::from(r.pass);
            s.errors += usize::from(r.errored);
            s.cost_usd += r.cost_usd;
            latencies
                .entry(cat.to_string())
                .or_default()
                .push(r.latency_ms);
        }
    }
    for (cat, s) in out.iter_mut() {
        s.pass_rate = s.passed as f64 / s.cases.max(1) as f64;
        if let Some(l) = latencies.get_mut(cat) {
            l.sort_unstable();
            s.latency_p50_ms = percentile(l, 0.5);
            s.latency_p90_ms = percentile(l, 0.9);
        }
    }
    out
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A gate on one category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The lowest pass rate that ships (0 to 1).
    #[serde(default)]
    pub min_pass_rate: Option<f64>,
    /// The most the pass rate may fall below the baseline's (0 to 1).
    #[serde(default)]
    pub max_drop: Option<f64>,
}

/// How one gate came out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateResult {
    pub category: String,
    pub pass_rate: Option<f64>,
    pub baseline_pass_rate: Option<f64>,
    pub gate: Gate,
    pub held: bool,
    /// Why it failed; or a note (no baseline to check `max_drop` against).
    pub reason: String,
}

/// Checks each category against its gate (`gates[category]`, else `gates["default"]`). A
/// gate named for a category with no cases fails: a category that disappears from a run is
/// a regression too. The `all` category has a gate only when one is named for it.
pub fn check_gates(
    current: &BTreeMap<String, CategoryStats>,
    baseline: Option<&BTreeMap<String, CategoryStats>>,
    gates: &BTreeMap<String, Gate>,
) -> Vec<GateResult> {
    let default = gates.get("default").copied();
    let mut categories: Vec<&str> = current
        .keys()
        .map(String::as_str)
        .filter(|c| *c != ALL)
        .collect();
    for name in gates.keys() {
        if name != "default" && name != ALL && !current.contains_key(name) {
            categories.push(name);
        }
    }
    if gates.contains_key(ALL) {
        categories.push(ALL);
    }
    let mut out = Vec::new();
    for cat in categories {
        let gate = if cat == ALL {
            gates.get(ALL).copied()
        } else {
            gates.get(cat).copied().or(default)
        };
        let Some(gate) = gate else {
            continue;
        };
        let stats = current.get(cat);
        let rate = stats.map(|s| s.pass_rate);
        let base = baseline.and_then(|b| b.get(cat)).map(|s| s.pass_rate);
        let mut reasons = Vec::new();
        let mut held = true;
        match rate {
            None => {
                held = false;
                reasons.push("no cases in this run".to_string());
            }
            Some(r) => {
                if let Some(min) = gate.min_pass_rate
                    && r + 1e-12 < min
                {
                    held = false;
                    reasons.push(format!("pass rate {:.1}% < {:.1}%", r * 100.0, min * 100.0));
                }
                match (gate.max_drop, base) {
                    (Some(max), Some(b)) if b - r > max + 1e-12 => {
                        held = false;
                        reasons.push(format!(
                            "dropped {:.1} points from {:.1}% (at most {:.1})",
                            (b - r) * 100.0,
                            b * 100.0,
                            max * 100.0
                        ));
                    }
                    (Some(_), None) => reasons.push("no baseline: max_drop not checked".into()),
                    _ => {}
                }
            }
        }
        out.push(GateResult {
            category: cat.to_string(),
            pass_rate: rate,
            baseline_pass_rate: base,
            gate,
            held,
            reason: reasons.join("; "),
        });
    }
    out
}

/// Win, tie and loss counts of paired cases in a category, with the sign test's p-value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Two-sided exact sign test on wins against losses (ties dropped).
    pub p_value: f64,
}

/// Pairs cases by id: a win is a case that fails in the baseline and passes now, a loss the
/// reverse. Cases in only one run are left out. Keys: categories and `all`.
pub fn paired<'a>(
    current: impl IntoIterator<Item = &'a Scored>,
    baseline: &HashMap<String, bool>,
) -> BTreeMap<String, Paired> {
    let mut out: BTreeMap<String, Paired> = BTreeMap::new();
    for r in current {
        let Some(&before) = baseline.get(&r.id) else {
            continue;
        };
        for cat in [r.category.as_str(), ALL] {
            let p = out.entry(cat.to_string()).or_default();
            match (before, r.pass) {
                (false, true) => p.wins += 1,
                (true, false) => p.losses += 1,
                _ => p.ties += 1,
            }
        }
    }
    for p in out.values_mut() {
        p.p_value = sign_test(p.wins, p.losses);
    }
    out
}

/// The two-sided exact sign test: the chance of a split at least this uneven between wins
/// and losses if each were a fair coin.
pub fn sign_test(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    let k = wins.min(losses);
    // P(X <= k) for X ~ Binomial(n, 1/2), in logs so large n stays finite.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// How disagreements are weighted in Cohen's kappa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// Every disagreement counts the same (categorical labels).
    None,
    /// By distance on the scale (ordinal scores).
    Linear,
    /// By squared distance.
    Quadratic,
}

/// Labels (sorted) and the confusion matrix: `matrix[i][j]` counts pairs where the first
/// rater gave `labels[i]` and the second `labels[j]`.
pub fn confusion(a: &[i64], b: &[i64]) -> (Vec<i64>, Vec<Vec<usize>>) {
    let mut labels: Vec<i64> = a.iter().chain(b).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let index: HashMap<i64, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut m = vec![vec![0usize; labels.len()]; labels.len()];
    for (x, y) in a.iter().zip(b) {
        m[index[x]][index[y]] += 1;
    }
    (labels, m)
}

/// Share of pairs where both raters agree exactly.
pub fn agreement(a: &[i64], b: &[i64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64
}

/// Cohen's kappa between two raters' labels of the same items, with disagreement weights on
/// the labels' positions in sorted order (as scikit-learn's `cohen_kappa_score` does). 1 is
/// perfect agreement, 0 what chance gives; `None` when it is undefined (one label only).
pub fn kappa(a: &[i64], b: &[i64], weights: Weights) -> Option<f64> {
    let (labels, m) = confusion(a, b);
    let k = labels.len();
    let n: usize = m.iter().flatten().sum();
    if n == 0 {
        return None;
    }
    let rows: Vec<f64> = m.iter().map(|r| r.iter().sum::<usize>() as f64).collect();
    let cols: Vec<f64> = (0..k)
        .map(|j| m.iter().map(|r| r[j]).sum::<usize>() as f64)
        .collect();
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            let w = match weights {
                Weights::None => f64::from(u8::from(i != j)),
                Weights::Linear => i.abs_diff(j) as f64,
                Weights::Quadratic => (i.abs_diff(j) as f64).powi(2),
            };
            observed += w * m[i][j] as f64;
            expected += w * rows[i] * cols[j] / n as f64;
        }
    }
    (expected > 0.0).then(|| 1.0 - observed / expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(id: &str, cat: &str, pass: bool) -> Scored {
        Scored {
            id: id.into(),
            category: cat.into(),
            pass,
            errored: false,
            latency_ms: 10,
            cost_usd: 0.001,
        }
    }

    #[test]
    fn gates_hold_per_category() {
        let run: Vec<Scored> = (0..20)
            .map(|i| scored(&format!("r{i}"), "returns", i != 0))
            .chain((0..10).map(|i| scored(&format!("b{i}"), "billing", i < 6)))
            .collect();
        let stats = summarize(&run);
        assert_eq!(stats["returns"].pass_rate, 0.95);
        assert_eq!(stats[ALL].cases, 30);
        let gates: BTreeMap<String, Gate> = toml::from_str(
            "default = { min_pass_rate = 0.9 }\nreturns = { min_pass_rate = 0.95, max_drop = 0.02 }\nshipping = { min_pass_rate = 0.5 }",
        )
        .unwrap();
        let base = summarize(
            &run.iter()
                .map(|r| scored(&r.id, &r.category, true))
                .collect::<Vec<_>>(),
        );
        let results = check_gates(&stats, Some(&base), &gates);
        let by: HashMap<&str, &GateResult> =
            results.iter().map(|g| (g.category.as_str(), g)).collect();
        assert!(!by["billing"].held && by["billing"].reason.contains("60.0% < 90.0%"));
        assert!(
            !by["returns"].held && by["returns"].reason.contains("dropped 5.0 points"),
            "{}",
            by["returns"].reason
        );
        assert!(!by["shipping"].held && by["shipping"].reason.contains("no cases"));
        let no_base = check_gates(&stats, None, &gates);
        assert!(
            no_base
                .iter()
                .any(|g| g.category == "returns" && g.held && g.reason.contains("no baseline"))
        );
    }

    #[test]
    fn sign_test_matches_the_binomial() {
        // 8 wins, 2 losses: 2 * P(X <= 2), X ~ B(10, 0.5) = 2 * 56/1024.
        assert!((sign_test(8, 2) - 0.109375).abs() < 1e-12);
        assert_eq!(sign_test(0, 0), 1.0);
        assert_eq!(sign_test(5, 5), 1.0);
        assert!(sign_test(0, 2000) < 1e-100);
    }

    #[test]
    fn paired_counts_wins_and_losses() {
        let base: HashMap<String, bool> = [("a", true), ("b", false), ("c", true), ("d", true)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let now = [
            scored("a", "x", false),
            scored("b", "x", true),
            scored("c", "y", true),
            scored("e", "y", true),
        ];
        let p = paired(&now, &base);
        assert_eq!((p["x"].wins, p["x"].losses, p["x"].ties), (1, 1, 0));
        assert_eq!((p["y"].wins, p["y"].ties), (0, 1));
        assert_eq!(p[ALL].wins + p[ALL].losses + p[ALL].ties, 3);
    }

    #[test]
    fn kappa_by_hand() {
        // 2x2: [[20, 5], [10, 15]]: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (x, y, n) in [(1, 1, 20), (1, 2, 5), (2, 1, 10), (2, 2, 15)] {
            for _ in 0..n {
                a.push(x);
                b.push(y);
            }
        }
        assert!((kappa(&a, &b, Weights::None).unwrap() - 0.4).abs() < 1e-12);
        assert!((agreement(&a, &b) - 0.7).abs() < 1e-12);
        // With two labels every weighting is the same.
        assert!((kappa(&a, &b, Weights::Quadratic).unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(kappa(&[3, 3], &[3, 3], Weights::None), None);
        let (labels, m) = confusion(&a, &b);
        assert_eq!(labels, vec![1, 2]);
        assert_eq!(m, vec![vec![20, 5], vec![10, 15]]);
    }
}
