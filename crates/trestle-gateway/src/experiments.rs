//! Experiments (docs/experiments.md): `[experiments.NAME]` on a route splits its traffic into
//! variants — prompt versions, targets or parameters — by a sticky hash of the assignment
//! unit, watches guard metrics live so a bad canary goes back to control at once (the stop is
//! kept in the store: `stops`), and reads results out of the store with the Bayesian readout
//! of `trestle_eval::bayes` (`readout`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use trestle_core::experiment::{ExperimentConfig, PromptRef, Unit};
use trestle_eval::bayes::{self, Observed};

use crate::db::Db;
use crate::runtime::Target;

mod figures;
mod readout;
pub mod stops;
#[cfg(test)]
mod store_tests;

pub use readout::readout;

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
/// also written to the store and read back at start (on PostgreSQL, every [`REFRESH`] as
/// well, so a stop made by one gateway holds on all).
pub struct ExperimentStates {
    place: Option<Arc<stops::Place>>,
    stops: Arc<RwLock<StopMap>>,
    counters: Mutex<HashMap<(String, String), Counters>>,
}

/// How often a gateway on PostgreSQL reads the stops other gateways made.
pub const REFRESH: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type StopMap = HashMap<String, Vec<Stop>>;

/// Adds the stops not known yet (by experiment and variant).
fn merge(map: &mut StopMap, found: Vec<(String, Stop)>) {
    for (e, s) in found {
        let list = map.entry(e).or_default();
        if !list.iter().any(|k| k.variant == s.variant) {
            list.push(s);
        }
    }
}

impl ExperimentStates {
    /// The states, with the stops recorded in `db` (`None`: kept in memory only). Blocks
    /// on the store; may be called from inside the async runtime.
    pub fn new(db: Option<Db>) -> Self {
        let place = db.map(|db| Arc::new(stops::Place::new(db)));
        let mut map = StopMap::new();
        if let Some(p) = &place {
            // On a thread of its own: the PostgreSQL client must not run inside an async task.
            match std::thread::scope(|s| s.spawn(|| p.load()).join()) {
                Ok(Ok(found)) => merge(&mut map, found),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "experiments: stopped variants could not be read; they run until stopped again")
                }
                Err(_) => tracing::warn!("experiments: reading stopped variants failed"),
            }
        }
        let stops = Arc::new(RwLock::new(map));
        if let Some(p) = &place
            && p.is_postgres()
        {
            spawn_refresher(Arc::downgrade(&stops), p.clone());
        }
        ExperimentStates {
            place,
            stops,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the stops recorded in the store since start (made by other gateways). Blocks:
    /// call it off the async runtime.
    pub fn refresh(&self) -> Result<(), String> {
        let Some(p) = &self.place else {
            return Ok(());
        };
        refresh(&self.stops, p)
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
        if let Some(place) = &self.place {
            persist(place.clone(), experiment.to_string(), s.clone());
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

/// Writes a stop to the store. SQLite is written at once, as before; PostgreSQL off the
/// async runtime (a stop is made on the request path), on its blocking pool when there is
/// one.
fn persist(place: Arc<stops::Place>, experiment: String, s: Stop) {
    let on_postgres = place.is_postgres();
    let write = move || {
        if let Err(e) = place.save(&experiment, &s) {
            tracing::error!(
                "the stop of {experiment}/{} could not be persisted: {e}",
                s.variant
            );
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if on_postgres => drop(handle.spawn_blocking(write)),
        _ => write(),
    }
}

fn refresh(stops: &RwLock<StopMap>, place: &stops::Place) -> Result<(), String> {
    let found = place.load()?;
    let mut map = stops
        .write()
        .map_err(|_| "experiments: lock poisoned".to_string())?;
    merge(&mut map, found);
    Ok(())
}

/// Every [`REFRESH`], reads the stops other gateways made, until the states are dropped.
fn spawn_refresher(stops: Weak<RwLock<StopMap>>, place: Arc<stops::Place>) {
    let spawned = std::thread::Builder::new()
        .name("trestle-experiment-stops".into())
        .spawn(move || {
            loop {
                std::thread::sleep(REFRESH);
                let Some(stops) = stops.upgrade() else {
                    return;
                };
                if let Err(e) = refresh(&stops, &place) {
                    tracing::warn!(error = %e, "experiments: cannot read other gateways' stops");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "experiments: no refresher thread; stops made by other gateways show after a restart");
    }
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
