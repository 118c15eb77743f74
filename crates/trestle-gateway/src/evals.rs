//! Evals in production (`[evals.online]`, docs/evals.md): a share of answered requests is
//! scored with suite assertions and the judge, off the request path. The request path only
//! decides whether a finished trace is sampled (a hash of its id) and hands a copy of its
//! bodies to a bounded queue; a worker scores under its own concurrency, rate and daily
//! judge budget, and writes each score to the store (SQLite or PostgreSQL: `scores`), where
//! `GET /v1/evals/online` reads daily aggregates. Nothing is dropped silently: every skip is
//! counted by reason.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use trestle_core::config::OnlineEvalConfig;
use trestle_core::openai::ChatRequest;
use trestle_eval::assertion::{Assertion, Observed};
use trestle_eval::dataset::{Case, content_text};
use trestle_eval::judge::{self, Judge};
use trestle_eval::online::OnlineScore;
use trestle_eval::run::{self, Checks, Services};

use crate::db::Db;
use crate::runtime::Runtime;
use crate::store::{Body, Trace};

pub mod mining;
pub mod runs;
pub mod scores;

pub use scores::{OnlineScores, daily};

/// `[evals.online]`, checked and ready: built with the runtime, so a reload changes it.
pub struct OnlinePlan {
    pub config: OnlineEvalConfig,
    /// Sampled when the first 32 bits of the trace id fall under this.
    threshold: u64,
    routes: HashSet<String>,
    asserts: Vec<Assertion>,
    judge: Option<Judge>,
}

impl OnlinePlan {
    pub fn build(cfg: &OnlineEvalConfig) -> anyhow::Result<OnlinePlan> {
        let mut asserts = Vec::new();
        for (i, v) in cfg.asserts.iter().enumerate() {
            let a: Assertion = serde_json::from_value(v.clone())
                .map_err(|e| anyhow::anyhow!("evals.online.assert[{i}]: {e}"))?;
            a.prepare(None)
                .map_err(|e| anyhow::anyhow!("evals.online.assert[{i}]: {e}"))?;
            asserts.push(a);
        }
        let judge = cfg.judge.as_ref().map(|j| Judge {
            route: j.route.clone(),
            prompt: judge::DEFAULT_PROMPT.to_string(),
            criteria: judge::default_criteria(),
        });
        let judge_criteria = cfg
            .judge
            .as_ref()
            .map(|j| j.criteria.clone())
            .unwrap_or_default();
        if let Some(j) = &judge {
            let unknown = j.unknown(&judge_criteria);
            if !unknown.is_empty() {
                anyhow::bail!(
                    "evals.online.judge.criteria: {} not in the rubric ({})",
                    unknown.join(", "),
                    j.criteria.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            asserts.push(Assertion::Judge {
                criteria: judge_criteria.clone(),
                min_score: None,
            });
        }
        if asserts.is_empty() {
            anyhow::bail!("evals.online: give `assert` or a `judge`; there is nothing to score");
        }
        Ok(OnlinePlan {
            threshold: (cfg.sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64,
            routes: cfg.routes.iter().cloned().collect(),
            config: cfg.clone(),
            asserts,
            judge,
        })
    }

    /// Whether a finished trace is scored: an answered request of a chosen route (never the
    /// judge's own), in the sample.
    fn wants(&self, t: &Trace) -> bool {
        if t.status != 200
            || t.outcome != "ok"
            || !matches!(t.fallback_level.as_str(), "primary" | "model")
        {
            return false;
        }
        if self.judge.as_ref().is_some_and(|j| j.route == t.route) {
            return false;
        }
        if !self.routes.is_empty() && !self.routes.contains(&t.route) {
            return false;
        }
        self.sampled(&t.trace_id)
    }

    /// The sampling decision: the same trace is always in or out, whichever gateway sees it.
    /// It reads the id's last 8 hex digits: the random part of the gateway's own ids (their
    /// head is a timestamp, `ingress::new_trace_id`) and of any W3C level 2 id.
    fn sampled(&self, trace_id: &str) -> bool {
        let tail = trace_id
            .len()
            .checked_sub(8)
            .and_then(|start| trace_id.get(start..))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        u64::from(tail) < self.threshold.max(1)
    }
}

/// Counters, reported by `GET /v1/evals/online` and as metrics.
#[derive(Debug, Default, Serialize)]
pub struct OnlineStats {
    pub sampled: AtomicU64,
    pub scored: AtomicU64,
    pub passed: AtomicU64,
    /// Skipped: the queue was full.
    pub skipped_queue: AtomicU64,
    /// Skipped: over `max_per_minute`.
    pub skipped_rate: AtomicU64,
    /// Judge left out: the day's judge budget was spent.
    pub judge_over_budget: AtomicU64,
    /// A score that could not be written.
    pub write_errors: AtomicU64,
    /// Judge spend today, in millionths of a USD.
    judge_spend_micro_usd: AtomicU64,
    /// The UTC day the spend counts for (days since the epoch).
    spend_day: AtomicU64,
}

impl OnlineStats {
    fn judge_spent_today(&self, day: u64) -> f64 {
        if self.spend_day.swap(day, Ordering::Relaxed) != day {
            self.judge_spend_micro_usd.store(0, Ordering::Relaxed);
        }
        self.judge_spend_micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn add_judge_spend(&self, usd: f64) {
        self.judge_spend_micro_usd
            .fetch_add((usd * 1e6).round() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "sampled": get(&self.sampled),
            "scored": get(&self.scored),
            "passed": get(&self.passed),
            "skipped_queue_full": get(&self.skipped_queue),
            "skipped_rate_limit": get(&self.skipped_rate),
            "judge_over_budget": get(&self.judge_over_budget),
            "write_errors": get(&self.write_errors),
            "judge_spend_usd_today": get(&self.judge_spend_micro_usd) as f64 / 1e6,
        })
    }
}

struct Sample {
    runtime: Arc<Runtime>,
    trace_id: String,
    route: String,
    started_at_ms: i64,
    latency_ms: u64,
    cost_usd: f64,
    request: Body,
    response: Body,
}

/// The queue to the scoring worker (none when there is no trace store or no async runtime).
pub struct OnlineEvaluator {
    tx: Option<mpsc::Sender<Sample>>,
    pub stats: Arc<OnlineStats>,
}

impl OnlineEvaluator {
    pub fn disabled() -> Self {
        OnlineEvaluator {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Starts the worker, writing to the store `db`. It idles until a config with
    /// `[evals.online]` is served (a reload can turn online evals on and off; `queue` is
    /// read at start).
    pub fn start(db: Db, queue: usize) -> Self {
        let stats = Arc::new(OnlineStats::default());
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Self::disabled();
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        handle.spawn(worker(rx, db, stats.clone()));
        OnlineEvaluator {
            tx: Some(tx),
            stats,
        }
    }

    /// Called as a trace finishes: queues it for scoring when the plan samples it.
    pub fn offer(&self, runtime: &arc_swap::ArcSwap<Runtime>, t: &Trace) {
        let Some(tx) = &self.tx else {
            return;
        };
        let runtime = runtime.load();
        if !runtime.online.as_ref().is_some_and(|plan| plan.wants(t)) {
            return;
        }
        let (Some(request), Some(response)) = (t.request.clone(), t.response.clone()) else {
            return;
        };
        self.stats.sampled.fetch_add(1, Ordering::Relaxed);
        let sample = Sample {
            runtime: arc_swap::Guard::into_inner(runtime),
            trace_id: t.trace_id.clone(),
            route: t.route.clone(),
            started_at_ms: t.started_at_ms,
            latency_ms: t.duration_ms as u64,
            cost_usd: t.cost_usd,
            request,
            response,
        };
        if tx.try_send(sample).is_err() {
            self.stats.skipped_queue.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("trestle_online_evals_skipped_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<Sample>, db: Db, stats: Arc<OnlineStats>) {
    let store = match tokio::task::spawn_blocking(move || OnlineScores::open(&db)).await {
        Ok(Ok(s)) => Arc::new(s),
        Ok(Err(e)) => {
            tracing::error!("online evals are off: {e}");
            return;
        }
        Err(e) => {
            tracing::error!("online evals are off: {e}");
            return;
        }
    };
    let mut running = JoinSet::new();
    let mut window = (Instant::now(), 0u32);
    while let Some(sample) = rx.recv().await {
        let Some(plan) = sample.runtime.online.clone() else {
            continue;
        };
        if window.0.elapsed() >= Duration::from_secs(60) {
            window = (Instant::now(), 0);
        }
        if window.1 >= plan.config.max_per_minute {
            stats.skipped_rate.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("trestle_online_evals_skipped_total", "reason" => "rate_limit")
                .increment(1);
            continue;
        }
        window.1 += 1;
        while running.len() >= plan.config.concurrency.max(1) {
            running.join_next().await;
        }
        running.spawn(score(sample, plan, store.clone(), stats.clone()));
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// What the assertions that need services use inside the gateway: its embedders, its
/// guardrails, and the judge route's first target, called directly (no trace of its own).
struct RuntimeServices<'a> {
    runtime: &'a Runtime,
    embedder: Option<&'a str>,
    stats: &'a OnlineStats,
}

impl Services for RuntimeServices<'_> {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let e = match self.embedder {
            Some(name) => self.runtime.embedders.get(name),
            None => self.runtime.embedders.values().next(),
        };
        e.ok_or("no [embedders] configured for `similar`")?
            .embed_many(texts)
            .await
    }

    async fn guardrail(&self, name: &str, text: &str) -> Result<Vec<String>, String> {
        let g = self
            .runtime
            .guardrails
            .get(name)
            .ok_or_else(|| format!("no guardrail `{name}`"))?;
        let v = g.check(text, &crate::guard::Context::default()).await?;
        let mut found: Vec<String> = v.findings.iter().map(|f| f.entity.clone()).collect();
        if found.is_empty() && v.violated {
            found.push(v.detail.unwrap_or_else(|| "a violation".into()));
        }
        Ok(found)
    }

    async fn complete(&self, route: &str, messages: Vec<Value>) -> Result<String, String> {
        let target = self
            .runtime
            .routes
            .get(route)
            .and_then(|r| r.targets.first().cloned())
            .ok_or_else(|| format!("no route `{route}`"))?;
        let req: ChatRequest = serde_json::from_value(
            json!({"model": target.model, "messages": messages, "temperature": 0}),
        )
        .map_err(|e| e.to_string())?;
        let answer = target
            .provider
            .chat(&target.model, &req)
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(price), Some(usage)) = (target.price, answer.body.usage) {
            self.stats.add_judge_spend(price.cost(&usage));
        }
        Ok(answer
            .body
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default())
    }
}

async fn score(
    sample: Sample,
    plan: Arc<OnlinePlan>,
    store: Arc<OnlineScores>,
    stats: Arc<OnlineStats>,
) {
    let request: Value = serde_json::from_str(&sample.request.to_text()).unwrap_or_default();
    let response: Value = serde_json::from_str(&sample.response.to_text()).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let category = request["metadata"]["category"]
        .as_str()
        .unwrap_or(trestle_eval::dataset::DEFAULT_CATEGORY)
        .to_string();
    let case = Case {
        id: sample.trace_id.clone(),
        category: category.clone(),
        messages,
        expected: None,
        asserts: Vec::new(),
        metadata: Default::default(),
        trace_id: Some(sample.trace_id.clone()),
    };
    // Over the day's judge budget, the judge is left out and the rest still scores.
    let day = (sample.started_at_ms / 86_400_000) as u64;
    let over_budget =
        plan.judge.is_some() && stats.judge_spent_today(day) >= plan.config.max_judge_usd_per_day;
    let asserts: Vec<Assertion> = if over_budget {
        stats.judge_over_budget.fetch_add(1, Ordering::Relaxed);
        plan.asserts
            .iter()
            .filter(|a| !matches!(a, Assertion::Judge { .. }))
            .cloned()
            .collect()
    } else {
        plan.asserts.clone()
    };
    if asserts.is_empty() {
        return;
    }
    let Ok(checks) = Checks::new(&case, &asserts) else {
        return;
    };
    let seen = Observed {
        text: content_text(&response["choices"][0]["message"]),
        latency_ms: sample.latency_ms,
        cost_usd: Some(sample.cost_usd),
    };
    let services = RuntimeServices {
        runtime: &sample.runtime,
        embedder: plan.config.embedder.as_deref(),
        stats: &stats,
    };
    let outcomes = run::score(&services, plan.judge.as_ref(), &case, &checks, &seen).await;
    let row = OnlineScore {
        trace_id: sample.trace_id,
        at_ms: sample.started_at_ms,
        route: sample.route.clone(),
        prompt_version: None,
        category,
        outcomes,
    };
    let pass = row.pass();
    let written = tokio::task::spawn_blocking(move || store.insert(&[row])).await;
    if !matches!(written, Ok(Ok(()))) {
        stats.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("an online eval score could not be written: {written:?}");
    }
    // Counted after the write: whoever reads `scored` going up finds the row in the store
    // (or the failed write in `write_errors`).
    stats.scored.fetch_add(1, Ordering::Relaxed);
    stats.passed.fetch_add(u64::from(pass), Ordering::Relaxed);
    metrics::counter!("trestle_online_evals_total", "route" => sample.route, "result" => if pass { "pass" } else { "fail" }).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> OnlineEvalConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn samples_the_configured_share_of_trace_ids() {
        let plan = OnlinePlan::build(&cfg(
            "sample = 0.02\nassert = [{type = \"not_contains\", value = \"x\"}]",
        ))
        .unwrap();
        let mut rng = rand::rng();
        let n = 200_000;
        let hits = (0..n)
            .filter(|_| plan.sampled(&format!("{:032x}", rand::Rng::random::<u128>(&mut rng))))
            .count();
        let share = hits as f64 / f64::from(n);
        assert!((share - 0.02).abs() < 0.002, "sampled {share}");
        assert!(
            plan.sampled("aaaaaaaaaaaaaaaaaaaaaaaa00000000")
                && !plan.sampled("aaaaaaaaaaaaaaaaaaaaaaaaffffffff")
        );
        // The gateway's own ids, made within one millisecond, are sampled at the same share.
        let hits = (0..n)
            .filter(|_| plan.sampled(&crate::pipeline::ingress::new_trace_id()))
            .count();
        let share = hits as f64 / f64::from(n);
        assert!((share - 0.02).abs() < 0.002, "sampled {share} of new ids");
    }

    #[test]
    fn a_plan_with_nothing_to_score_or_a_bad_assertion_is_refused() {
        let e = OnlinePlan::build(&cfg("sample = 0.02"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nothing to score"), "{e}");
        let e = OnlinePlan::build(&cfg(
            "sample = 0.02\nassert = [{type = \"regex\", value = \"(\"}]",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("evals.online.assert[0]") && e.contains("regex"),
            "{e}"
        );
        let e = OnlinePlan::build(&cfg(
            "sample = 0.02\njudge = {route = \"j\", criteria = [\"vibes\"]}",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("vibes"), "{e}");
    }
}
