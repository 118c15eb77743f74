//! An experiment's readout (docs/experiments.md, "Readout"): per variant the traffic
//! figures and, per metric, the Bayesian comparison with control (`trestle_eval::bayes`),
//! then the decision. The figures are read from the store by [`Figures`] (SQLite or
//! PostgreSQL); everything made of them here is the same for both.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use trestle_core::config::Config;
use trestle_core::experiment::{ExperimentConfig, FeedbackKind};
use trestle_eval::bayes::{self, Observed};

use super::figures::{BuiltIn, Figures, Sums, Traffic};
use super::{ExperimentStates, Stop, now_ms};
use crate::db::Db;

/// The readout of one experiment, from the store `db`. Blocks: call it off the async
/// runtime.
pub fn readout(
    db: &Db,
    config: &Config,
    name: &str,
    states: &ExperimentStates,
) -> Result<Value, String> {
    match db {
        Db::Sqlite(path) => {
            let mut conn =
                rusqlite::Connection::open(path).map_err(|e| format!("experiments: {e}"))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| format!("experiments: {e}"))?;
            compute(&mut conn, config, name, states)
        }
        Db::Postgres(pool) => pool
            .with(|client| Ok(compute(client, config, name, states)))
            .map_err(|e| format!("experiments (PostgreSQL): {e:#}"))?,
    }
}

/// The readout from figures read through `src`.
pub(super) fn compute(
    src: &mut dyn Figures,
    config: &Config,
    name: &str,
    states: &ExperimentStates,
) -> Result<Value, String> {
    let e = config
        .experiments
        .get(name)
        .ok_or_else(|| format!("no experiment `{name}`"))?;
    let names: Vec<String> = e.variants.keys().cloned().collect();
    let control = e
        .control
        .as_ref()
        .and_then(|c| names.iter().position(|n| n == c))
        .or_else(|| names.iter().position(|n| n == "control"))
        .unwrap_or(0);
    let has_requests = src.has("requests", "experiment");
    let started_ms = if has_requests {
        src.started_ms(name)?
    } else {
        None
    };
    let mut per_variant = PerVariant::default();
    if has_requests {
        for v in &names {
            per_variant.add(v, &src.traffic(name, v)?);
        }
    }
    let has_feedback = src.has("feedback", "variant");
    let has_online = src.has("eval_online_scores", "pass");
    let mut metrics = serde_json::Map::new();
    let mut primary: Option<(Vec<bayes::Arm>, Vec<Observed>)> = None;
    let metric_list: Vec<String> = if e.metrics.is_empty() {
        vec!["error".into()]
    } else {
        e.metrics.clone()
    };
    let tables = Tables {
        feedback: has_feedback,
        online: has_online,
    };
    for m in &metric_list {
        if let Some((obs, higher)) = metric_obs(src, config, name, &names, &per_variant, tables, m)?
        {
            let arms = bayes::readout(&names, &obs, control, higher);
            if primary.is_none() {
                primary = Some((arms.clone(), obs.clone()));
            }
            metrics.insert(
                m.clone(),
                json!({"higher_is_better": higher, "variants": arms}),
            );
        }
    }
    let stops = states.stops(name);
    let elapsed_h = started_ms.map_or(0.0, |s| (now_ms() - s) as f64 / 3_600_000.0);
    let (variants, decision) = match primary {
        None => (Vec::new(), "no data yet".to_string()),
        Some((arms, obs)) => {
            let d = decide(e, &arms, &obs, control, elapsed_h, &stops);
            (arms, d)
        }
    };
    let variants: Vec<Value> = variants
        .into_iter()
        .map(|a| {
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            if let Some(t) = per_variant.traffic.get(&a.name) {
                v["traffic"] = t.clone();
            }
            if let Some(s) = stops.iter().find(|s| s.variant == a.name) {
                v["stopped"] = json!(s);
            }
            v
        })
        .collect();
    let status = if !e.enabled {
        "paused"
    } else if !stops.is_empty() {
        "stopped"
    } else {
        "running"
    };
    Ok(json!({
        "name": name,
        "route": e.route,
        "unit": format!("{:?}", e.unit).to_lowercase(),
        "status": status,
        "control": names[control],
        "primary_metric": metric_list.first(),
        "elapsed_h": elapsed_h,
        "min_duration_h": e.min_duration_h,
        "variants": variants,
        "metrics": metrics,
        "stops": stops,
        "decision": decision,
    }))
}

/// Which optional tables the store has.
#[derive(Clone, Copy)]
struct Tables {
    feedback: bool,
    online: bool,
}

/// What the traffic of each variant shows: its figures for the readout, and the
/// observations of the traffic metrics.
#[derive(Default)]
struct PerVariant {
    traffic: BTreeMap<String, Value>,
    latency: BTreeMap<String, Observed>,
    cost: BTreeMap<String, Observed>,
    rates: BTreeMap<(&'static str, String), Observed>,
}

impl PerVariant {
    fn add(&mut self, v: &str, t: &Traffic) {
        let lat = &t.latencies;
        let pct = |q: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1]
            }
        };
        let n = t.n.max(0) as u64;
        let mean_cost = if n > 0 { t.cost / n as f64 } else { 0.0 };
        self.cost.insert(
            v.to_string(),
            Observed::Mean {
                n,
                mean: mean_cost,
                variance: if n > 1 {
                    (t.cost_sq / n as f64 - mean_cost * mean_cost).max(0.0)
                } else {
                    0.0
                },
            },
        );
        let lmean = if lat.is_empty() {
            0.0
        } else {
            lat.iter().sum::<f64>() / lat.len() as f64
        };
        let lvar = if lat.len() > 1 {
            lat.iter().map(|x| (x - lmean).powi(2)).sum::<f64>() / (lat.len() - 1) as f64
        } else {
            0.0
        };
        self.latency.insert(
            v.to_string(),
            Observed::Mean {
                n: lat.len() as u64,
                mean: lmean,
                variance: lvar,
            },
        );
        for (metric, count) in [
            ("error", t.errors),
            ("fallback", t.fallbacks),
            ("guardrail", t.guardrails),
        ] {
            self.rates.insert(
                (metric, v.to_string()),
                Observed::Rate {
                    n,
                    successes: count.max(0) as u64,
                },
            );
        }
        self.traffic.insert(
            v.to_string(),
            json!({
                "requests": n, "error_rate": ratio(t.errors, n), "fallback_rate": ratio(t.fallbacks, n),
                "guardrail_rate": ratio(t.guardrails, n), "latency_p50_ms": pct(0.5), "latency_p90_ms": pct(0.9),
                "latency_p99_ms": pct(0.99), "cost_per_request_usd": mean_cost,
            }),
        );
    }
}

/// A metric's observation per variant and whether higher is better; `None` when the store
/// has nothing to measure it with (a feedback metric without feedback).
fn metric_obs(
    src: &mut dyn Figures,
    config: &Config,
    name: &str,
    names: &[String],
    traffic: &PerVariant,
    tables: Tables,
    metric: &str,
) -> Result<Option<(Vec<Observed>, bool)>, String> {
    let higher = !matches!(
        metric,
        "error"
            | "fallback"
            | "guardrail"
            | "latency_ms"
            | "cost_usd"
            | "regenerated"
            | "correction_distance"
    );
    let no_mean = Observed::Mean {
        n: 0,
        mean: 0.0,
        variance: 0.0,
    };
    let obs: Vec<Observed> = match metric {
        "latency_ms" => names
            .iter()
            .map(|v| traffic.latency.get(v).cloned().unwrap_or(no_mean.clone()))
            .collect(),
        "cost_usd" => names
            .iter()
            .map(|v| traffic.cost.get(v).cloned().unwrap_or(no_mean.clone()))
            .collect(),
        "error" | "fallback" | "guardrail" => names
            .iter()
            .map(|v| {
                traffic
                    .rates
                    .get(&(metric_key(metric), v.clone()))
                    .cloned()
                    .unwrap_or(Observed::Rate { n: 0, successes: 0 })
            })
            .collect(),
        "regenerated" | "online_eval" | "quality_engagement" => {
            let mut out = Vec::new();
            for v in names {
                out.push(built_in_rate(src, name, v, metric, tables)?);
            }
            out
        }
        "correction_distance" if tables.feedback => {
            let mut out = Vec::new();
            for v in names {
                out.push(mean_of(&src.feedback(name, v, "correction_distance")?));
            }
            out
        }
        _ if !tables.feedback => return Ok(None),
        _ => {
            let kind = config.feedback.get(metric).map(|f| f.kind);
            let mut out = Vec::new();
            for v in names {
                let sums = src.feedback(name, v, metric)?;
                let n = sums.n.max(0) as u64;
                out.push(match kind {
                    Some(FeedbackKind::Number) => mean_of(&sums),
                    Some(FeedbackKind::Boolean) | None => Observed::Rate {
                        n,
                        successes: sums.sum.max(0.0) as u64,
                    },
                    Some(FeedbackKind::Category) => Observed::Rate {
                        n,
                        successes: sums.positive.max(0) as u64,
                    },
                });
            }
            out
        }
    };
    Ok(Some((obs, higher)))
}

/// The mean and sample variance of a numeric feedback.
fn mean_of(s: &Sums) -> Observed {
    let n = s.n.max(0) as u64;
    let mean = if n > 0 { s.sum / n as f64 } else { 0.0 };
    let variance = if n > 1 {
        ((s.sumsq - n as f64 * mean * mean) / (n - 1) as f64).max(0.0)
    } else {
        0.0
    };
    Observed::Mean { n, mean, variance }
}

/// The built-in rates: regenerations per answer; online-eval pass rate; the quality-gated
/// engagement rate (answers with positive explicit feedback whose online eval passed, of the
/// answers online evals scored — engagement alone rewards entertaining wrong answers).
/// A rate whose tables the store lacks is empty.
fn built_in_rate(
    src: &mut dyn Figures,
    experiment: &str,
    variant: &str,
    metric: &str,
    tables: Tables,
) -> Result<Observed, String> {
    let rate = match metric {
        "regenerated" if tables.feedback => BuiltIn::Regenerated,
        "online_eval" if tables.online => BuiltIn::OnlineEval,
        "quality_engagement" if tables.online && tables.feedback => BuiltIn::QualityEngagement,
        _ => return Ok(Observed::Rate { n: 0, successes: 0 }),
    };
    let (n, successes) = src.built_in(experiment, variant, rate)?;
    Ok(Observed::Rate {
        n: n.max(0) as u64,
        successes: successes.clamp(0, n.max(0)) as u64,
    })
}

fn metric_key(m: &str) -> &'static str {
    match m {
        "error" => "error",
        "fallback" => "fallback",
        _ => "guardrail",
    }
}

/// The decision: ship a variant, keep control, or keep running (and for how long).
fn decide(
    e: &ExperimentConfig,
    arms: &[bayes::Arm],
    obs: &[Observed],
    control: usize,
    elapsed_h: f64,
    stops: &[Stop],
) -> String {
    if let Some(s) = stops.first() {
        return format!(
            "stopped {}: {}; its traffic went back to control",
            s.variant, s.reason
        );
    }
    if elapsed_h < e.min_duration_h {
        return format!(
            "keep running: {:.1} h of the minimum {:.0} h to go",
            e.min_duration_h - elapsed_h,
            e.min_duration_h
        );
    }
    let rule = &e.decision;
    if let Some(best) = arms
        .iter()
        .enumerate()
        .find(|(_, a)| a.prob_best >= rule.prob_best && a.expected_loss <= rule.max_expected_loss)
    {
        return if best.0 == control {
            format!(
                "keep {}: it is best with probability {:.3}",
                best.1.name, best.1.prob_best
            )
        } else {
            format!(
                "ship {}: best with probability {:.3}, expected loss {:.4}",
                best.1.name, best.1.prob_best, best.1.expected_loss
            )
        };
    }
    let leader = arms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != control)
        .max_by(|a, b| a.1.prob_best.total_cmp(&b.1.prob_best))
        .map(|(i, _)| i);
    match leader.and_then(|i| bayes::samples_needed(&obs[control], &obs[i], rule.prob_best)) {
        Some(more) => {
            format!("keep running: about {more} more samples per variant at the current difference")
        }
        None => "keep running: no difference so far".into(),
    }
}

fn ratio(a: i64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        a.max(0) as f64 / n as f64
    }
}
