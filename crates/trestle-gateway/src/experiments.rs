//! Experiments (docs/experiments.md): `[experiments.NAME]` on a route splits its traffic into
//! variants — prompt versions, targets or parameters — by a sticky hash of the assignment
//! unit, watches guard metrics live so a bad canary goes back to control at once, and reads
//! results out of the trace store with the Bayesian readout of `trestle_eval::bayes`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value, json};
use trestle_core::config::Config;
use trestle_core::experiment::{ExperimentConfig, FeedbackKind, PromptRef, Unit};
use trestle_eval::bayes::{self, Observed};

use crate::runtime::Target;

/// One variant, ready to apply.
pub struct Variant {
    pub name: String,
    pub prompt: Option<PromptRef>,
    pub targets: Option<Vec<Arc<Target>>>,
    pub params: Map<String, Value>,
}

/// An experiment as the runtime holds it.
pub struct Experiment {
    pub name: String,
    pub config: ExperimentConfig,
    pub variants: Vec<Variant>,
    /// Cumulative traffic weights, in variant order.
    cumulative: Vec<u64>,
    pub control: usize,
}

impl Experiment {
    pub fn build(
        name: &str,
        config: &ExperimentConfig,
        target: impl Fn(&str) -> anyhow::Result<Arc<Target>>,
    ) -> anyhow::Result<Experiment> {
        let mut variants = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for (vname, v) in &config.variants {
            let t = v.table();
            let prompt = t
                .prompt
                .as_deref()
                .map(PromptRef::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let targets = if t.targets.is_empty() {
                None
            } else {
                Some(
                    t.targets
                        .iter()
                        .map(|n| target(n))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            };
            total += u64::from(
                config
                    .traffic
                    .get(vname)
                    .copied()
                    .unwrap_or(if config.traffic.is_empty() { 1 } else { 0 }),
            );
            cumulative.push(total);
            variants.push(Variant {
                name: vname.clone(),
                prompt,
                targets,
                params: t.params,
            });
        }
        let control = match &config.control {
            Some(c) => variants.iter().position(|v| &v.name == c).unwrap_or(0),
            None => variants
                .iter()
                .position(|v| v.name == "control")
                .unwrap_or(0),
        };
        Ok(Experiment {
            name: name.to_string(),
            config: config.clone(),
            variants,
            cumulative,
            control,
        })
    }

    /// The variant for a unit id: a hash of the experiment's name and the id, so a user
    /// keeps their variant across requests, restarts and gateways.
    pub fn assign(&self, unit_id: &str) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return self.control;
        }
        let mut h = std::hash::DefaultHasher::new();
        self.name.hash(&mut h);
        unit_id.hash(&mut h);
        let bucket = h.finish() % total;
        self.cumulative
            .iter()
            .position(|c| bucket < *c)
            .unwrap_or(self.control)
    }

    /// The unit id of a request.
    pub fn unit_id<'a>(
        &self,
        user: Option<&'a str>,
        conversation: Option<&'a str>,
        trace_id: &'a str,
    ) -> Option<&'a str> {
        match self.config.unit {
            Unit::User => user,
            Unit::Conversation => conversation,
            Unit::Request => Some(trace_id),
        }
    }
}

/// A variant that was stopped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Stop {
    pub variant: String,
    pub reason: String,
    pub at_ms: i64,
}

/// What one request of a variant showed, for the guards.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub error: bool,
    pub fallback: bool,
    pub guardrail: bool,
    pub latency_ms: f64,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    errors: u64,
    fallbacks: u64,
    guardrail: u64,
    /// The latest latencies (for the p99 guard).
    latencies: VecDeque<f64>,
}

const LATENCY_WINDOW: usize = 2000;
/// Requests each side needs before the p99 guard can act.
const LATENCY_MIN: usize = 100;

/// Live state of every experiment: guard counters and stops. Outlives reloads; stops are
/// also written to the trace store and read back at start.
pub struct ExperimentStates {
    db: Option<PathBuf>,
    stops: RwLock<HashMap<String, Vec<Stop>>>,
    counters: Mutex<HashMap<(String, String), Counters>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiment_stops (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant)
);
";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ExperimentStates {
    pub fn new(db: Option<PathBuf>) -> Self {
        let mut stops: HashMap<String, Vec<Stop>> = HashMap::new();
        if let Some(path) = &db
            && let Ok(conn) = Connection::open(path)
            && conn.execute_batch(SCHEMA).is_ok()
            && let Ok(mut st) =
                conn.prepare("SELECT experiment, variant, reason, at_ms FROM experiment_stops")
            && let Ok(rows) = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Stop {
                        variant: r.get(1)?,
                        reason: r.get(2)?,
                        at_ms: r.get(3)?,
                    },
                ))
            })
        {
            for (e, s) in rows.flatten() {
                stops.entry(e).or_default().push(s);
            }
        }
        ExperimentStates {
            db,
            stops: RwLock::new(stops),
            counters: Mutex::new(HashMap::new()),
        }
    }

    pub fn stops(&self, experiment: &str) -> Vec<Stop> {
        self.stops
            .read()
            .ok()
            .and_then(|m| m.get(experiment).cloned())
            .unwrap_or_default()
    }

    pub fn is_stopped(&self, experiment: &str, variant: &str) -> bool {
        self.stops.read().is_ok_and(|m| {
            m.get(experiment)
                .is_some_and(|v| v.iter().any(|s| s.variant == variant))
        })
    }

    /// Counts a finished request of a variant and, every few requests, checks the guards.
    pub fn observe(&self, e: &Experiment, variant: &str, o: Outcome) {
        let check = {
            let Ok(mut c) = self.counters.lock() else {
                return;
            };
            let k = c.entry((e.name.clone(), variant.to_string())).or_default();
            k.requests += 1;
            k.errors += u64::from(o.error);
            k.fallbacks += u64::from(o.fallback);
            k.guardrail += u64::from(o.guardrail);
            if k.latencies.len() == LATENCY_WINDOW {
                k.latencies.pop_front();
            }
            k.latencies.push_back(o.latency_ms);
            k.requests % 10 == 0
        };
        if check && variant != e.variants[e.control].name {
            self.check_guards(e, variant);
        }
    }

    /// Stops `variant` when a guard metric is worse than control's by more than the margin
    /// with the configured probability.
    fn check_guards(&self, e: &Experiment, variant: &str) {
        if self.is_stopped(&e.name, variant) {
            return;
        }
        let g = &e.config.guards;
        let control = &e.variants[e.control].name;
        let verdict = {
            let Ok(c) = self.counters.lock() else {
                return;
            };
            let (Some(cc), Some(vc)) = (
                c.get(&(e.name.clone(), control.clone())),
                c.get(&(e.name.clone(), variant.to_string())),
            ) else {
                return;
            };
            if cc.requests < g.min_requests || vc.requests < g.min_requests {
                return;
            }
            let rate = |n: u64, s: u64| Observed::Rate { n, successes: s };
            let mut found = None;
            for m in &g.metrics {
                let (a, b) = match m.as_str() {
                    "error" => (rate(cc.requests, cc.errors), rate(vc.requests, vc.errors)),
                    "fallback" => (
                        rate(cc.requests, cc.fallbacks),
                        rate(vc.requests, vc.fallbacks),
                    ),
                    "guardrail" => (
                        rate(cc.requests, cc.guardrail),
                        rate(vc.requests, vc.guardrail),
                    ),
                    "latency_p99" => {
                        // The share of the variant's requests slower than control's p99 (with
                        // a slack of a quarter and 20 ms, so sub-millisecond jitter is no
                        // signal), against control's own share; a p99 needs 100 requests.
                        if cc.latencies.len() < LATENCY_MIN || vc.latencies.len() < LATENCY_MIN {
                            continue;
                        }
                        let mut l: Vec<f64> = cc.latencies.iter().copied().collect();
                        l.sort_by(f64::total_cmp);
                        let p99 = l[((l.len() as f64 * 0.99) as usize).min(l.len() - 1)];
                        let slow = p99 * 1.25 + 20.0;
                        let over_c = cc.latencies.iter().filter(|x| **x > slow).count() as u64;
                        let over_v = vc.latencies.iter().filter(|x| **x > slow).count() as u64;
                        (
                            rate(cc.latencies.len() as u64, over_c),
                            rate(vc.latencies.len() as u64, over_v),
                        )
                    }
                    _ => continue,
                };
                let p = bayes::prob_worse_by(&a, &b, g.margin);
                if p >= g.prob_worse {
                    found = Some(format!(
                        "{m} {:.1}% against control's {:.1}% (P(worse by more than {:.0} points) = {p:.3}) after {} requests",
                        b.mean() * 100.0,
                        a.mean() * 100.0,
                        g.margin * 100.0,
                        vc.requests
                    ));
                    break;
                }
            }
            found
        };
        if let Some(reason) = verdict {
            self.stop(&e.name, variant, &reason);
        }
    }

    /// Stops a variant: its traffic goes to control from now on, also after a restart.
    pub fn stop(&self, experiment: &str, variant: &str, reason: &str) {
        let s = Stop {
            variant: variant.to_string(),
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        tracing::warn!(
            experiment,
            variant,
            reason,
            "experiment variant stopped: its traffic returns to control"
        );
        metrics::counter!("trestle_experiment_stops_total", "experiment" => experiment.to_string(), "variant" => variant.to_string()).increment(1);
        if let Some(path) = &self.db {
            let write = Connection::open(path).and_then(|c| {
                c.execute_batch(SCHEMA)?;
                c.execute(
                    "INSERT OR REPLACE INTO experiment_stops VALUES (?1, ?2, ?3, ?4)",
                    params![experiment, variant, reason, s.at_ms],
                )
            });
            if let Err(e) = write {
                tracing::error!("the stop of {experiment}/{variant} could not be persisted: {e}");
            }
        }
        if let Ok(mut m) = self.stops.write() {
            m.entry(experiment.to_string()).or_default().push(s);
        }
    }

    /// Live request counts per variant (for the readout while traces are being written).
    pub fn live(&self, experiment: &str) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|((e, _), _)| e == experiment)
                    .map(|((_, v), k)| (v.clone(), k.requests))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The readout of one experiment, from the trace store.
pub fn readout(
    conn: &Connection,
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
    let has_requests = table_has(conn, "requests", "experiment");
    let started_ms: Option<i64> = if has_requests {
        conn.query_row(
            "SELECT MIN(started_at_ms) FROM requests WHERE experiment = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .flatten()
    } else {
        None
    };
    // Per variant: the traffic figures.
    let mut traffic: BTreeMap<String, Value> = BTreeMap::new();
    let mut latency_obs: BTreeMap<String, Observed> = BTreeMap::new();
    let mut cost_obs: BTreeMap<String, Observed> = BTreeMap::new();
    let mut rate_obs: BTreeMap<(&str, String), Observed> = BTreeMap::new();
    for v in &names {
        if !has_requests {
            break;
        }
        let (n, errors, fallbacks, guardrails, cost, cost_sq): (i64, i64, i64, i64, f64, f64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(status >= 500), 0), COALESCE(SUM(fallback_level NOT IN ('primary', 'model')), 0),
                        COALESCE(SUM(guardrails IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(guardrails) g WHERE json_extract(g.value, '$.outcome') != 'pass')), 0),
                        COALESCE(SUM(cost_usd), 0), COALESCE(SUM(cost_usd * cost_usd), 0)
                 FROM requests WHERE experiment = ?1 AND variant = ?2",
                params![name, v],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .map_err(db)?;
        let mut st = conn.prepare("SELECT duration_ms FROM requests WHERE experiment = ?1 AND variant = ?2 ORDER BY duration_ms").map_err(db)?;
        let lat: Vec<f64> = st
            .query_map(params![name, v], |r| r.get(0))
            .map_err(db)?
            .filter_map(Result::ok)
            .collect();
        let pct = |q: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1]
            }
        };
        let n = n.max(0) as u64;
        let mean_cost = if n > 0 { cost / n as f64 } else { 0.0 };
        cost_obs.insert(
            v.clone(),
            Observed::Mean {
                n,
                mean: mean_cost,
                variance: if n > 1 {
                    (cost_sq / n as f64 - mean_cost * mean_cost).max(0.0)
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
        latency_obs.insert(
            v.clone(),
            Observed::Mean {
                n: lat.len() as u64,
                mean: lmean,
                variance: lvar,
            },
        );
        rate_obs.insert(
            ("error", v.clone()),
            Observed::Rate {
                n,
                successes: errors.max(0) as u64,
            },
        );
        rate_obs.insert(
            ("fallback", v.clone()),
            Observed::Rate {
                n,
                successes: fallbacks.max(0) as u64,
            },
        );
        rate_obs.insert(
            ("guardrail", v.clone()),
            Observed::Rate {
                n,
                successes: guardrails.max(0) as u64,
            },
        );
        traffic.insert(
            v.clone(),
            json!({
                "requests": n, "error_rate": ratio(errors, n), "fallback_rate": ratio(fallbacks, n),
                "guardrail_rate": ratio(guardrails, n), "latency_p50_ms": pct(0.5), "latency_p90_ms": pct(0.9),
                "latency_p99_ms": pct(0.99), "cost_per_request_usd": mean_cost,
            }),
        );
    }
    // Feedback metrics per variant.
    let has_feedback = table_has(conn, "feedback", "variant");
    let metric_obs = |metric: &str| -> Result<Option<(Vec<Observed>, bool)>, String> {
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
        let obs: Vec<Observed> = match metric {
            "latency_ms" => names
                .iter()
                .map(|v| {
                    latency_obs.get(v).cloned().unwrap_or(Observed::Mean {
                        n: 0,
                        mean: 0.0,
                        variance: 0.0,
                    })
                })
                .collect(),
            "cost_usd" => names
                .iter()
                .map(|v| {
                    cost_obs.get(v).cloned().unwrap_or(Observed::Mean {
                        n: 0,
                        mean: 0.0,
                        variance: 0.0,
                    })
                })
                .collect(),
            "error" | "fallback" | "guardrail" => names
                .iter()
                .map(|v| {
                    rate_obs
                        .get(&(metric_key(metric), v.clone()))
                        .cloned()
                        .unwrap_or(Observed::Rate { n: 0, successes: 0 })
                })
                .collect(),
            "regenerated" | "online_eval" | "quality_engagement" => {
                let mut out = Vec::new();
                for v in &names {
                    out.push(built_in_rate(conn, name, v, metric, has_feedback)?);
                }
                out
            }
            "correction_distance" if has_feedback => {
                let mut out = Vec::new();
                for v in &names {
                    let (n, sum, sumsq): (i64, f64, f64) = conn
                        .query_row(
                            "SELECT COUNT(*), COALESCE(SUM(value_num), 0), COALESCE(SUM(value_num * value_num), 0)
                             FROM feedback WHERE experiment = ?1 AND variant = ?2 AND name = 'correction_distance'",
                            params![name, v],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .map_err(db)?;
                    let n = n.max(0) as u64;
                    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                    let variance = if n > 1 {
                        ((sumsq - n as f64 * mean * mean) / (n - 1) as f64).max(0.0)
                    } else {
                        0.0
                    };
                    out.push(Observed::Mean { n, mean, variance });
                }
                out
            }
            _ if !has_feedback => return Ok(None),
            _ => {
                let kind = config.feedback.get(metric).map(|f| f.kind);
                let mut out = Vec::new();
                for v in &names {
                    let (n, sum, sumsq, positive): (i64, f64, f64, i64) = conn
                        .query_row(
                            "SELECT COUNT(*), COALESCE(SUM(value_num), 0), COALESCE(SUM(value_num * value_num), 0), COALESCE(SUM(negative = 0), 0)
                             FROM feedback WHERE experiment = ?1 AND variant = ?2 AND name = ?3",
                            params![name, v, metric],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .map_err(db)?;
                    let n = n.max(0) as u64;
                    out.push(match kind {
                        Some(FeedbackKind::Number) => {
                            let mean = if n > 0 { sum / n as f64 } else { 0.0 };
                            Observed::Mean {
                                n,
                                mean,
                                variance: if n > 1 {
                                    ((sumsq - n as f64 * mean * mean) / (n - 1) as f64).max(0.0)
                                } else {
                                    0.0
                                },
                            }
                        }
                        Some(FeedbackKind::Boolean) | None => Observed::Rate {
                            n,
                            successes: sum.max(0.0) as u64,
                        },
                        Some(FeedbackKind::Category) => Observed::Rate {
                            n,
                            successes: positive.max(0) as u64,
                        },
                    });
                }
                out
            }
        };
        Ok(Some((obs, higher)))
    };
    let mut metrics = serde_json::Map::new();
    let mut primary: Option<(Vec<bayes::Arm>, Vec<Observed>)> = None;
    let metric_list: Vec<String> = if e.metrics.is_empty() {
        vec!["error".into()]
    } else {
        e.metrics.clone()
    };
    for m in &metric_list {
        if let Some((obs, higher)) = metric_obs(m)? {
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
            if let Some(t) = traffic.get(&a.name) {
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

/// The built-in rates: regenerations per answer; online-eval pass rate; the quality-gated
/// engagement rate (answers with positive explicit feedback whose online eval passed, of the
/// answers online evals scored — engagement alone rewards entertaining wrong answers).
fn built_in_rate(
    conn: &Connection,
    experiment: &str,
    variant: &str,
    metric: &str,
    has_feedback: bool,
) -> Result<Observed, String> {
    let has_online = table_has(conn, "eval_online_scores", "pass");
    let sql = match metric {
        "regenerated" if has_feedback => {
            "SELECT (SELECT COUNT(*) FROM requests WHERE experiment = ?1 AND variant = ?2),
                    (SELECT COUNT(DISTINCT trace_id) FROM feedback WHERE experiment = ?1 AND variant = ?2 AND name = 'regenerated')"
        }
        "online_eval" if has_online => {
            "SELECT COUNT(*), COALESCE(SUM(o.pass), 0) FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id
             WHERE r.experiment = ?1 AND r.variant = ?2"
        }
        "quality_engagement" if has_online && has_feedback => {
            "SELECT COUNT(*), COALESCE(SUM(o.pass = 1 AND EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = o.trace_id AND f.source = 'api' AND f.negative = 0)), 0)
             FROM eval_online_scores o JOIN requests r ON r.trace_id = o.trace_id WHERE r.experiment = ?1 AND r.variant = ?2"
        }
        _ => return Ok(Observed::Rate { n: 0, successes: 0 }),
    };
    let (n, successes): (i64, i64) = conn
        .query_row(sql, params![experiment, variant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(db)?;
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

fn db(e: rusqlite::Error) -> String {
    format!("experiments: {e}")
}

fn table_has(conn: &Connection, table: &str, column: &str) -> bool {
    conn.prepare(&format!("SELECT {column} FROM {table} LIMIT 0"))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn experiment(toml_text: &str) -> Experiment {
        let cfg: ExperimentConfig = toml::from_str(toml_text).unwrap();
        Experiment::build("tone", &cfg, |_| anyhow::bail!("no targets here")).unwrap()
    }

    #[test]
    fn assignment_is_sticky_and_follows_the_shares() {
        let e = experiment(
            "route = \"chat\"\nvariants = { control = \"p@1\", concise = \"p@2\" }\ntraffic = { control = 80, concise = 20 }",
        );
        let a = e.assign("user-42");
        assert!((0..100).all(|_| e.assign("user-42") == a));
        let n = 20_000;
        let concise = (0..n)
            .filter(|i| e.variants[e.assign(&format!("u{i}"))].name == "concise")
            .count();
        let share = concise as f64 / f64::from(n);
        assert!((share - 0.2).abs() < 0.015, "{share}");
        let other =
            experiment("route = \"chat\"\nvariants = { control = \"p@1\", concise = \"p@2\" }");
        // Another experiment's name reshuffles the units.
        let e2 = Experiment {
            name: "other".into(),
            ..other
        };
        let moved = (0..2000)
            .filter(|i| e.assign(&format!("u{i}")) != e2.assign(&format!("u{i}")))
            .count();
        assert!(moved > 300, "{moved}");
    }

    fn run_canary(error_rate: f64, seed: u64) -> Option<u64> {
        let e = experiment(
            "route = \"chat\"\nvariants = { control = \"p@1\", canary = \"p@2\" }\ntraffic = { control = 90, canary = 10 }",
        );
        let states = ExperimentStates::new(None);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        for i in 0..3000u64 {
            let v = &e.variants[e.assign(&format!("u{seed}-{i}"))].name;
            if states.is_stopped("tone", v) {
                continue;
            }
            let p = if v == "canary" {
                0.02 + error_rate
            } else {
                0.02
            };
            let o = Outcome {
                error: rng.random::<f64>() < p,
                fallback: false,
                guardrail: false,
                latency_ms: 100.0 + rng.random::<f64>() * 20.0,
            };
            states.observe(&e, v, o);
            if states.is_stopped("tone", "canary") {
                return Some(i + 1);
            }
        }
        None
    }

    #[test]
    fn a_bad_canary_is_stopped_within_a_few_hundred_requests_and_an_equal_one_is_not() {
        for seed in 0..10 {
            let at = run_canary(0.20, seed).expect("a canary 20 points worse is stopped");
            assert!(at <= 600, "stopped only after {at} requests (seed {seed})");
        }
        let false_stops = (0..40)
            .filter(|s| run_canary(0.0, 100 + s).is_some())
            .count();
        assert!(
            false_stops <= 1,
            "an equal canary was stopped in {false_stops}/40 runs"
        );
    }
}
