//! The estimator behind learned semantic thresholds: for one route, what the chance is that
//! an entry's answer is wrong for a query at a given similarity, from what is known of that
//! entry and of every other entry on the route.
//!
//! **The model.** Each entry has a threshold `t` and a level `l`: a query at similarity
//! `s >= t` shares the entry's answer; below `t` a share `l` of queries do not (`l = 1`: none
//! do; `l = 0.1`: one in ten near misses is a different question). `l < 1` is what real
//! embeddings need: near misses ("within 60 days") can score *above* true paraphrases, so a
//! paraphrase confirmed at 0.82 does not prove 0.90 safe. The hypotheses are a grid: `t` from
//! the route's floor (`min_threshold`) to 1 in steps of 0.01 (plus "never": no similarity is
//! enough) times five levels.
//!
//! **Evidence.** An observation is a similarity and whether reuse there was right, with the
//! chance that the signal itself is wrong: 2% for a verification (a fresh answer compared with
//! the cached one), 10% for feedback (users thumbs-down good answers too). An entry keeps its
//! last [`MAX_OBSERVATIONS`].
//!
//! **Pooling (empirical Bayes).** An entry's prior is the route's: the configured threshold
//! (worth [`PRIOR_WEIGHT`] entries: `t = threshold, l = 1` with all but `max_false_hit_rate / 2`
//! of the mass, the rest spread over the grid) plus the posterior of every entry with evidence
//! — one online EM step per observation. A new entry thus starts from what the route has
//! learned: where its entries turned out to be safe, and how often near misses hide above a
//! paraphrase.
//!
//! **The decision.** The risk at `s` is the posterior probability that reuse there is wrong;
//! an answer is served only when it is at most `max_false_hit_rate`. With no evidence at all
//! that is exactly "similarity at or above `threshold`", as before learning.

use std::collections::VecDeque;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Similarity between two neighbouring thresholds of the grid.
const STEP: f32 = 0.01;
/// The threshold meaning "no similarity is enough".
const NEVER: f32 = 2.0;
/// The shares of near misses below an entry's threshold that are different questions.
const LEVELS: [f64; 5] = [1.0, 0.3, 0.1, 0.03, 0.01];
/// How many entries' worth of evidence the configured threshold counts for in a route's prior.
pub const PRIOR_WEIGHT: f64 = 10.0;
/// The prior mass on thresholds below the configured one: how readily it is lowered.
const DOUBT_BELOW: f64 = 0.2;
/// Observations kept per entry (the newest).
pub const MAX_OBSERVATIONS: usize = 32;

/// Where an observation comes from, and so how far it is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh answer compared with the cached one.
    Verification,
    /// A user's feedback on, or regeneration of, an answer the semantic cache served.
    Feedback,
}

impl Source {
    /// The chance the signal says the opposite of the truth.
    fn noise(self) -> f64 {
        match self {
            Source::Verification => 0.02,
            Source::Feedback => 0.10,
        }
    }

    fn index(self) -> usize {
        match self {
            Source::Verification => 0,
            Source::Feedback => 1,
        }
    }
}

/// One reuse of an entry's answer (or a would-be reuse, verified).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub similarity: f32,
    pub wrong: bool,
    pub source: Source,
}

/// What is known of one cached entry.
#[derive(Debug, Default)]
pub struct Evidence {
    observations: VecDeque<Observation>,
    /// The entry's posterior as last added to its model's pool (model id, posterior).
    pooled: Option<(u64, Vec<f64>)>,
}

impl Evidence {
    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        self.observations.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }
}

/// The settings a model is built from (`[routes.NAME.cache.semantic]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The configured threshold: where every entry starts.
    pub threshold: f32,
    /// The lowest threshold the grid reaches.
    pub floor: f32,
    pub max_false_hit_rate: f32,
}

/// One hypothesis about an entry.
#[derive(Debug, Clone, Copy)]
struct Cell {
    threshold: f32,
    /// Index into [`LEVELS`].
    level: usize,
}

impl Cell {
    /// The chance that reuse at `similarity` is wrong under this hypothesis.
    fn wrong(&self, similarity: f32) -> f64 {
        if self.clears(similarity) {
            0.0
        } else {
            LEVELS[self.level]
        }
    }

    /// Whether `similarity` is at or above the threshold (up to rounding).
    fn clears(&self, similarity: f32) -> bool {
        similarity + 1e-5 >= self.threshold
    }
}

/// The log-likelihood of each signal: by source, by the chance reuse is wrong (an index into
/// [`LEVELS`], or `LEVELS.len()` for none), and by what the signal says (right, wrong).
type LogLikelihoods = [[[f64; 2]; LEVELS.len() + 1]; 2];

fn log_likelihoods() -> LogLikelihoods {
    let mut table = [[[0.0; 2]; LEVELS.len() + 1]; 2];
    for source in [Source::Verification, Source::Feedback] {
        let noise = source.noise();
        for (i, slot) in table[source.index()].iter_mut().enumerate() {
            let p = LEVELS.get(i).copied().unwrap_or(0.0);
            let says_wrong = p * (1.0 - noise) + (1.0 - p) * noise;
            *slot = [(1.0 - says_wrong).ln(), says_wrong.ln()];
        }
    }
    table
}

/// The route's pool: the configured start and the sum of its entries' posteriors.
struct Pool {
    sum: Vec<f64>,
    entries: f64,
    /// The prior a new entry starts from (`start` and `sum` mixed).
    prior: Vec<f64>,
}

/// A route's estimator.
pub struct Model {
    params: Params,
    id: u64,
    cells: Vec<Cell>,
    start: Vec<f64>,
    pool: RwLock<Pool>,
    log_likelihoods: LogLikelihoods,
}

static MODEL_IDS: AtomicU64 = AtomicU64::new(1);

impl Model {
    pub fn new(params: Params) -> Self {
        // The grid runs through the configured threshold exactly, so the start is exact.
        let below = ((params.threshold - params.floor) / STEP + 1e-3)
            .floor()
            .max(0.0) as i32;
        let above = ((1.0 - params.threshold) / STEP + 1e-3).floor().max(0.0) as i32;
        let mut thresholds: Vec<f32> = (-below..=above)
            .map(|i| params.threshold + i as f32 * STEP)
            .collect();
        thresholds.push(NEVER);
        thresholds.sort_by(f32::total_cmp);
        let cells: Vec<Cell> = (0..LEVELS.len())
            .flat_map(|level| {
                thresholds
                    .iter()
                    .map(move |&threshold| Cell { threshold, level })
            })
            .collect();
        // The start: the configured threshold, doubted two ways. That it is too strict for
        // an entry (thresholds below it) costs nothing at or above it, and makes a lower
        // threshold quick to learn; that it is too loose (above it) is held to half the
        // allowed rate, so that with no evidence the risk at or above it stays under
        // `max_false_hit_rate`.
        let doubt_above = f64::from(params.max_false_hit_rate) / 2.0;
        let is_start = |c: &Cell| c.level == 0 && c.threshold == params.threshold;
        let count = |f: &dyn Fn(&Cell) -> bool| cells.iter().filter(|c| f(c)).count().max(1);
        let n_above = count(&|c| c.threshold > params.threshold) as f64;
        let n_below = count(&|c| c.threshold <= params.threshold && !is_start(c)) as f64;
        let start: Vec<f64> = cells
            .iter()
            .map(|c| {
                if is_start(c) {
                    1.0 - DOUBT_BELOW - doubt_above
                } else if c.threshold > params.threshold {
                    doubt_above / n_above
                } else {
                    DOUBT_BELOW / n_below
                }
            })
            .collect();
        let pool = Pool {
            sum: vec![0.0; cells.len()],
            entries: 0.0,
            prior: start.clone(),
        };
        Model {
            params,
            id: MODEL_IDS.fetch_add(1, Ordering::Relaxed),
            cells,
            start,
            pool: RwLock::new(pool),
            log_likelihoods: log_likelihoods(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Below this similarity nothing is ever served or explored.
    pub fn floor(&self) -> f32 {
        self.params.floor
    }

    /// Whether an answer with this risk may be served.
    pub fn allows(&self, risk: f64) -> bool {
        risk <= f64::from(self.params.max_false_hit_rate)
    }

    /// The chance that reusing the entry's answer at `similarity` is wrong.
    pub fn risk(&self, evidence: Option<&Evidence>, similarity: f32) -> f64 {
        if similarity < self.params.floor {
            return 1.0;
        }
        let risk = |weights: &[f64]| {
            self.cells
                .iter()
                .zip(weights)
                .map(|(c, p)| p * c.wrong(similarity))
                .sum::<f64>()
                .clamp(0.0, 1.0)
        };
        match evidence.filter(|e| !e.is_empty()) {
            Some(e) => risk(&self.posterior(e)),
            None => self.pool.read().map_or(1.0, |pool| risk(&pool.prior)),
        }
    }

    /// The entry's posterior over the grid, from the route's prior (without the entry's own
    /// part in it: its evidence is counted once) and its observations.
    fn posterior(&self, evidence: &Evidence) -> Vec<f64> {
        let prior = match (self.pool.read(), &evidence.pooled) {
            (Ok(pool), Some((id, own))) if *id == self.id => {
                let total = PRIOR_WEIGHT + pool.entries - 1.0;
                self.start
                    .iter()
                    .zip(&pool.sum)
                    .zip(own)
                    .map(|((s, a), o)| ((PRIOR_WEIGHT * s + (a - o).max(0.0)) / total).max(0.0))
                    .collect()
            }
            (Ok(pool), _) => pool.prior.clone(),
            (Err(_), _) => self.start.clone(),
        };
        let mut log: Vec<f64> = self
            .cells
            .iter()
            .zip(&prior)
            .map(|(c, p)| {
                let l: f64 = evidence
                    .observations
                    .iter()
                    .map(|o| {
                        let p = if c.clears(o.similarity) {
                            LEVELS.len()
                        } else {
                            c.level
                        };
                        self.log_likelihoods[o.source.index()][p][usize::from(o.wrong)]
                    })
                    .sum();
                p.max(1e-300).ln() + l
            })
            .collect();
        let top = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for v in &mut log {
            *v = (*v - top).exp();
            total += *v;
        }
        if total > 0.0 {
            for v in &mut log {
                *v /= total;
            }
        }
        log
    }

    /// Adds an observation to the entry's evidence and the entry's new posterior to the pool.
    pub fn observe(&self, evidence: &mut Evidence, o: Observation) {
        if !(0.0..=1.0 + 1e-4).contains(&o.similarity) {
            return;
        }
        evidence.observations.push_back(o);
        while evidence.observations.len() > MAX_OBSERVATIONS {
            evidence.observations.pop_front();
        }
        let posterior = self.posterior(evidence);
        let Ok(mut pool) = self.pool.write() else {
            return;
        };
        match evidence.pooled.take() {
            Some((id, old)) if id == self.id => {
                for (s, o) in pool.sum.iter_mut().zip(&old) {
                    *s -= o;
                }
            }
            _ => pool.entries += 1.0,
        }
        for (s, p) in pool.sum.iter_mut().zip(&posterior) {
            *s += p;
        }
        let total = PRIOR_WEIGHT + pool.entries;
        let prior: Vec<f64> = self
            .start
            .iter()
            .zip(&pool.sum)
            .map(|(s, a)| ((PRIOR_WEIGHT * s + a.max(0.0)) / total).max(0.0))
            .collect();
        pool.prior = prior;
        evidence.pooled = Some((self.id, posterior));
    }

    /// The lowest similarity at which the entry's answer would be served now (for
    /// diagnostics and tests); `None`: nowhere.
    pub fn threshold(&self, evidence: Option<&Evidence>) -> Option<f32> {
        let steps = ((1.0 - self.params.floor) / STEP).round().max(0.0) as i32;
        (0..=steps)
            .map(|i| (self.params.floor + i as f32 * STEP).min(1.0))
            .find(|&s| self.allows(self.risk(evidence, s)))
    }
}
