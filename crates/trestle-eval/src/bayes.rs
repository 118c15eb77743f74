//! The Bayesian readout of an experiment (docs/experiments.md). Rates (thumbs up, errors) get
//! a beta-binomial model with a uniform prior; continuous metrics (latency, cost, scores) a
//! normal model of the mean. From posterior draws, for each variant: the probability that it
//! is the best, the expected loss of choosing it (how much worse it could be than the best,
//! on average over the posterior — GrowthBook's "risk"), a 95% credible interval of its mean
//! and of its relative change against control, and how many more samples the current
//! variance needs before the leader's chance to win can reach the decision threshold.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Beta, Distribution, Normal};
use serde::Serialize;

/// What was observed for one variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// `successes` of `n` (e.g. thumbs up of all thumbs).
    Rate { n: u64, successes: u64 },
    /// A continuous metric: count, mean and (sample) variance.
    Mean { n: u64, mean: f64, variance: f64 },
}

impl Observed {
    pub fn n(&self) -> u64 {
        match self {
            Observed::Rate { n, .. } | Observed::Mean { n, .. } => *n,
        }
    }

    /// The observed mean (the rate for a rate).
    pub fn mean(&self) -> f64 {
        match *self {
            Observed::Rate { n, successes } if n > 0 => successes as f64 / n as f64,
            Observed::Rate { .. } => 0.0,
            Observed::Mean { mean, .. } => mean,
        }
    }

    /// The posterior's mean and standard deviation (beta with a uniform prior; normal with
    /// the standard error).
    fn posterior_moments(&self) -> (f64, f64) {
        match *self {
            Observed::Rate { n, successes } => {
                let (a, b) = (successes as f64 + 1.0, (n - successes.min(n)) as f64 + 1.0);
                let m = a / (a + b);
                (m, (a * b / ((a + b).powi(2) * (a + b + 1.0))).sqrt())
            }
            Observed::Mean { n, mean, variance } => {
                (mean, (variance.max(0.0) / n.max(1) as f64).sqrt())
            }
        }
    }

    /// The variance of one observation (for sample sizes).
    fn unit_variance(&self) -> f64 {
        match *self {
            Observed::Rate { .. } => {
                let p = self.mean().clamp(0.01, 0.99);
                p * (1.0 - p)
            }
            Observed::Mean { variance, .. } => variance,
        }
    }

    fn sampler(&self) -> Sampler {
        match *self {
            Observed::Rate { n, successes } => {
                let (a, b) = (successes as f64 + 1.0, (n - successes.min(n)) as f64 + 1.0);
                Beta::new(a, b).map_or(Sampler::Fixed(0.5), Sampler::Beta)
            }
            Observed::Mean { .. } => {
                let (m, sd) = self.posterior_moments();
                if n_of(self) == 0 || !sd.is_finite() || sd <= 0.0 {
                    Sampler::Fixed(m)
                } else {
                    Normal::new(m, sd).map_or(Sampler::Fixed(m), Sampler::Normal)
                }
            }
        }
    }
}

fn n_of(o: &Observed) -> u64 {
    o.n()
}

enum Sampler {
    Beta(Beta<f64>),
    Normal(Normal<f64>),
    Fixed(f64),
}

impl Sampler {
    fn draw(&self, rng: &mut SmallRng) -> f64 {
        match self {
            Sampler::Beta(b) => b.sample(rng),
            Sampler::Normal(n) => n.sample(rng),
            Sampler::Fixed(v) => *v,
        }
    }
}

/// One variant's readout.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Arm {
    pub name: String,
    pub n: u64,
    pub mean: f64,
    /// 95% credible interval of the mean.
    pub ci_low: f64,
    pub ci_high: f64,
    pub prob_best: f64,
    /// Expected shortfall against the best variant if this one is chosen (metric units).
    pub expected_loss: f64,
    /// 95% credible interval of the relative change against control, and its median
    /// (none for control itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_change: Option<[f64; 3]>,
}

/// Posterior draws per readout: enough that `prob_best` moves by well under a point between
/// runs on the same data (it is seeded, so it does not move at all).
pub const DRAWS: usize = 20_000;

/// Reads out variants (`arms[control]` is control). `higher_is_better` is false for metrics
/// like latency or cost.
pub fn readout(
    names: &[String],
    arms: &[Observed],
    control: usize,
    higher_is_better: bool,
) -> Vec<Arm> {
    readout_with(names, arms, control, higher_is_better, DRAWS, 0x007e_571e)
}

pub fn readout_with(
    names: &[String],
    arms: &[Observed],
    control: usize,
    higher_is_better: bool,
    draws: usize,
    seed: u64,
) -> Vec<Arm> {
    let k = arms.len();
    let samplers: Vec<Sampler> = arms.iter().map(Observed::sampler).collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut wins = vec![0usize; k];
    let mut loss = vec![0.0f64; k];
    let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(draws); k];
    let mut rel: Vec<Vec<f64>> = vec![Vec::with_capacity(draws); k];
    let mut theta = vec![0.0f64; k];
    for _ in 0..draws {
        for (t, s) in theta.iter_mut().zip(&samplers) {
            *t = s.draw(&mut rng);
        }
        let sign = if higher_is_better { 1.0 } else { -1.0 };
        let (best_i, best) = theta.iter().enumerate().map(|(i, t)| (i, t * sign)).fold(
            (0, f64::NEG_INFINITY),
            |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
        );
        wins[best_i] += 1;
        for i in 0..k {
            loss[i] += best - theta[i] * sign;
            values[i].push(theta[i]);
            if i != control && theta[control] != 0.0 {
                rel[i].push((theta[i] - theta[control]) / theta[control].abs());
            }
        }
    }
    (0..k)
        .map(|i| {
            let (lo, hi) = interval(&mut values[i]);
            Arm {
                name: names[i].clone(),
                n: arms[i].n(),
                mean: arms[i].mean(),
                ci_low: lo,
                ci_high: hi,
                prob_best: wins[i] as f64 / draws as f64,
                expected_loss: loss[i] / draws as f64,
                relative_change: (i != control && !rel[i].is_empty()).then(|| {
                    let mid = quantile(&mut rel[i], 0.5);
                    let (lo, hi) = interval(&mut rel[i]);
                    [lo, mid, hi]
                }),
            }
        })
        .collect()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    *v.select_nth_unstable_by(i, f64::total_cmp).1
}

fn interval(v: &mut [f64]) -> (f64, f64) {
    (quantile(v, 0.025), quantile(v, 0.975))
}

/// The standard normal CDF.
pub fn phi(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The standard normal quantile (by bisection on [`phi`]; exact to 1e-9).
pub fn phi_inv(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..80 {
        let mid = (lo + hi) / 2.0;
        if phi(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// More samples per variant the leader (against control) needs, at the current means and
/// variances, for its chance to win to reach `threshold`; `None` when the means are equal
/// (no sample size is enough) or there is no data.
pub fn samples_needed(control: &Observed, variant: &Observed, threshold: f64) -> Option<u64> {
    let delta = (variant.mean() - control.mean()).abs();
    if delta <= f64::EPSILON || control.n() == 0 || variant.n() == 0 {
        return None;
    }
    let z = phi_inv(threshold);
    let need = z * z * (control.unit_variance() + variant.unit_variance()) / (delta * delta);
    Some((need.ceil() as u64).saturating_sub(control.n().min(variant.n())))
}

/// The posterior probability that `variant`'s rate exceeds `control`'s by more than
/// `margin` (normal approximation of the two beta posteriors: fast enough to run on every
/// guard check).
pub fn prob_worse_by(control: &Observed, variant: &Observed, margin: f64) -> f64 {
    let (mc, sc) = control.posterior_moments();
    let (mv, sv) = variant.posterior_moments();
    let sd = (sc * sc + sv * sv).sqrt();
    if sd <= 0.0 {
        return if mv - mc > margin { 1.0 } else { 0.0 };
    }
    1.0 - phi((margin - (mv - mc)) / sd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn names(k: usize) -> Vec<String> {
        ["control", "b", "c"]
            .iter()
            .take(k)
            .map(|s| s.to_string())
            .collect()
    }

    /// `n` answers per variant with true thumbs-up rates `rates`; each answer's chance is
    /// itself noisy (AI output varies), around the variant's rate.
    fn simulate(rates: &[f64], n: u64, rng: &mut SmallRng) -> Vec<Observed> {
        let noise = Normal::new(0.0, 0.15).unwrap();
        rates
            .iter()
            .map(|&p| {
                let successes = (0..n)
                    .filter(|_| rng.random::<f64>() < (p + noise.sample(rng)).clamp(0.0, 1.0))
                    .count() as u64;
                Observed::Rate { n, successes }
            })
            .collect()
    }

    #[test]
    fn a_five_point_difference_is_found_and_the_wrong_winner_is_rare() {
        let mut rng = SmallRng::seed_from_u64(1);
        // One run: the better variant reaches the 0.95 threshold.
        let arms = simulate(&[0.60, 0.65], 3000, &mut rng);
        let r = readout(&names(2), &arms, 0, true);
        assert!(r[1].prob_best >= 0.95, "{r:?}");
        assert!(r[1].expected_loss < r[0].expected_loss);
        let [lo, _, hi] = r[1].relative_change.unwrap();
        assert!(lo > 0.0 && hi < 0.25, "{lo} {hi}");
        // Many seeded runs: declaring the worse variant the winner happens at most at the
        // rate the 0.95 rule promises (5%).
        let runs = 200;
        let wrong = (0..runs)
            .filter(|_| {
                let arms = simulate(&[0.60, 0.65], 1000, &mut rng);
                readout_with(&names(2), &arms, 0, true, 4000, rng.random())[0].prob_best >= 0.95
            })
            .count();
        assert!(
            wrong as f64 / runs as f64 <= 0.05,
            "wrong winner in {wrong}/{runs}"
        );
    }

    #[test]
    fn no_true_difference_declares_a_winner_no_more_than_the_rule_allows() {
        let mut rng = SmallRng::seed_from_u64(2);
        let runs = 400;
        let declared = (0..runs)
            .filter(|_| {
                let arms = simulate(&[0.6, 0.6], 1000, &mut rng);
                let r = readout_with(&names(2), &arms, 0, true, 4000, rng.random());
                r.iter().any(|a| a.prob_best >= 0.95)
            })
            .count();
        // Each of two arms may cross 0.95 by chance 5% of the time: 10% in all, with a margin
        // for 400 runs (a standard error of 1.5 points).
        let rate = declared as f64 / runs as f64;
        assert!(
            rate <= 0.13,
            "a winner was declared in {declared}/{runs} runs with no difference"
        );
    }

    #[test]
    fn continuous_metrics_lower_is_better() {
        let arms = [
            Observed::Mean {
                n: 500,
                mean: 800.0,
                variance: 200.0f64.powi(2),
            },
            Observed::Mean {
                n: 500,
                mean: 700.0,
                variance: 200.0f64.powi(2),
            },
        ];
        let r = readout(&names(2), &arms, 0, false);
        assert!(r[1].prob_best > 0.99, "{r:?}");
        let [lo, mid, hi] = r[1].relative_change.unwrap();
        assert!(
            lo < mid && mid < hi && (mid + 0.125).abs() < 0.02,
            "{lo} {mid} {hi}"
        );
    }

    #[test]
    fn guards_and_sample_sizes() {
        let control = Observed::Rate {
            n: 200,
            successes: 4,
        };
        let worse = Observed::Rate {
            n: 200,
            successes: 44,
        };
        assert!(prob_worse_by(&control, &worse, 0.02) > 0.999);
        let same = Observed::Rate {
            n: 200,
            successes: 5,
        };
        assert!(prob_worse_by(&control, &same, 0.02) < 0.5);
        assert!((phi(1.959964) - 0.975).abs() < 1e-6 && (phi_inv(0.95) - 1.644854).abs() < 1e-5);
        let c = Observed::Rate {
            n: 100,
            successes: 60,
        };
        let v = Observed::Rate {
            n: 100,
            successes: 65,
        };
        // z² (0.24 + 0.2275) / 0.05² ≈ 508 per variant, 408 more than the 100 each has.
        let more = samples_needed(&c, &v, 0.95).unwrap();
        assert!((400..420).contains(&more), "{more}");
        assert_eq!(samples_needed(&c, &c, 0.95), None);
    }
}
