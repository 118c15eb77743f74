//! Every metric Trestle exports, named in one place. Recorded through the `metrics` facade;
//! rendered in Prometheus format at `GET /metrics`.

use std::time::Duration;

use crate::resilience::breaker::BreakerState;

use std::collections::HashMap;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 20.0, 60.0,
];
const COST_BUCKETS: &[f64] = &[0.000001, 0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0];

/// Installs the Prometheus recorder for this process and describes the metrics.
/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_usd".into()), COST_BUCKETS)?
        .install_recorder()?;
    // Histogram samples wait in a buffer until they are folded into their buckets, which a
    // scrape does; without a scraper the buffer would grow with every request (measured:
    // ~60 bytes a request). Fold them every few seconds instead.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("trestle-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })?;
    describe_histogram!(
        "trestle_request_duration_seconds",
        "Whole request time at the gateway, by route and status."
    );
    describe_histogram!(
        "trestle_ttft_seconds",
        "Time to the first streamed chunk sent to the client."
    );
    describe_histogram!(
        "trestle_upstream_duration_seconds",
        "One upstream attempt, by target and status."
    );
    describe_histogram!(
        "trestle_gateway_overhead_seconds",
        "Time the gateway itself added (total minus upstream waits and backoff)."
    );
    describe_histogram!(
        "trestle_cold_start_seconds",
        "Attempts that were a target's first since start or a long idle."
    );
    describe_histogram!(
        "trestle_request_cost_usd",
        "Cost of a request in USD; the sum is total spend."
    );
    describe_counter!(
        "trestle_tokens_total",
        "Tokens by route, target and kind (input, output, cached)."
    );
    describe_counter!(
        "trestle_requests_total",
        "Requests by route, status and fallback level."
    );
    describe_counter!(
        "trestle_state_fallback_total",
        "Things done locally because the shared state (Redis) did not answer, by use: keys (a key's limit decision), targets (a target's), cache (a lookup or write)."
    );
    describe_counter!(
        "trestle_state_cache_total",
        "Lookups in the caches shared on Redis after a local miss, by result (hit, miss)."
    );
    describe_counter!(
        "trestle_cache_persist_total",
        "Cache changes for the store ([cache] persist), by result (written, dropped, failed)."
    );
    describe_counter!(
        "trestle_traces_dropped_total",
        "Traces dropped because the queue was full or closed."
    );
    describe_counter!(
        "trestle_traces_written_total",
        "Traces written to the store."
    );
    describe_counter!(
        "trestle_traces_failed_total",
        "Traces lost because the store refused a batch."
    );
    describe_counter!(
        "trestle_otel_spans_exported_total",
        "Spans the OTLP exporter sent and the receiver took."
    );
    describe_counter!(
        "trestle_otel_spans_dropped_total",
        "Spans the OTLP exporter dropped because its queue was full."
    );
    describe_counter!(
        "trestle_otel_spans_failed_total",
        "Spans lost because the OTLP receiver refused them or could not be reached, after retries."
    );
    describe_counter!(
        "trestle_otel_metric_exports_total",
        "OTLP metric exports by result (ok, failed)."
    );
    describe_gauge!("trestle_streams_open", "Streams being relayed right now.");
    describe_gauge!(
        "trestle_breaker_state",
        "Circuit breaker per target: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "trestle_breaker_transitions_total",
        "Circuit breaker state changes by target and new state."
    );
    describe_gauge!(
        "trestle_capability_level",
        "Capability level per route: 5 full … 1 off."
    );
    describe_counter!(
        "trestle_capability_changes_total",
        "Capability level changes by route and direction."
    );
    describe_counter!(
        "trestle_targets_skipped_total",
        "Targets passed over without a call, by reason (circuit_open, cooling_down, at_capacity, over_rate_limit)."
    );
    describe_counter!(
        "trestle_hedges_total",
        "Hedged second attempts sent, by route and target."
    );
    describe_counter!(
        "trestle_cache_lookups_total",
        "Response-cache lookups by route and result (exact, semantic, miss)."
    );
    describe_histogram!(
        "trestle_cache_saved_usd",
        "Upstream cost a cache hit saved; the sum is the total saved."
    );
    describe_histogram!(
        "trestle_embedding_duration_seconds",
        "Query embeddings for the semantic cache, by embedder and result."
    );
    describe_histogram!(
        "trestle_cache_judge_duration_seconds",
        "Semantic-cache judge calls, by route and verdict (`same`, `different`, `unclear`, `timeout`, `error`; cached verdicts are not timed)."
    );
    describe_counter!(
        "trestle_cache_judge_total",
        "Semantic-cache candidates put to the judge, by route, verdict and whether the verdict was remembered (`cached`)."
    );
    describe_histogram!(
        "trestle_cache_verifier_duration_seconds",
        "Semantic-cache verifier scorings (in process), by route and verdict (`same`, `different`, `error`)."
    );
    describe_counter!(
        "trestle_cache_verifier_total",
        "Semantic-cache candidates put to the verifier, by route and verdict."
    );
    describe_counter!(
        "trestle_tool_cache_total",
        "Tool-response cache reads by namespace and result (hit, miss), and writes."
    );
    describe_counter!(
        "trestle_config_reloads_total",
        "Config reloads by result (ok, rejected)."
    );
    describe_counter!(
        "trestle_context_trimmed_total",
        "Requests whose oldest turns were dropped to fit the route's max_input_tokens."
    );
    Ok(handle)
}

/// What one request cost and how it went, for the request-level metrics.
pub struct RequestMetrics<'a> {
    pub route: &'a str,
    pub status: u16,
    pub fallback_level: &'a str,
    pub total: Duration,
    pub ttft: Option<Duration>,
    pub overhead: Option<Duration>,
}

pub fn request(m: &RequestMetrics<'_>) {
    let status = m.status.to_string();
    histogram!("trestle_request_duration_seconds", "route" => m.route.to_string(), "status" => status.clone())
        .record(m.total.as_secs_f64());
    counter!("trestle_requests_total", "route" => m.route.to_string(), "status" => status,
        "fallback_level" => m.fallback_level.to_string())
    .increment(1);
    if let Some(t) = m.ttft {
        histogram!("trestle_ttft_seconds", "route" => m.route.to_string()).record(t.as_secs_f64());
    }
    if let Some(o) = m.overhead {
        histogram!("trestle_gateway_overhead_seconds", "route" => m.route.to_string())
            .record(o.as_secs_f64());
    }
}

pub fn attempt(route: &str, target: &str, status: &str, latency: Duration, cold: bool) {
    histogram!("trestle_upstream_duration_seconds", "route" => route.to_string(),
        "target" => target.to_string(), "status" => status.to_string())
    .record(latency.as_secs_f64());
    if cold {
        histogram!("trestle_cold_start_seconds", "target" => target.to_string())
            .record(latency.as_secs_f64());
    }
}

pub fn usage(route: &str, target: &str, input: u64, output: u64, cached: u64, cost: Option<f64>) {
    for (kind, n) in [("input", input), ("output", output), ("cached", cached)] {
        if n > 0 {
            counter!("trestle_tokens_total", "route" => route.to_string(), "target" => target.to_string(),
                "kind" => kind)
            .increment(n);
        }
    }
    if let Some(cost) = cost {
        histogram!("trestle_request_cost_usd", "route" => route.to_string(), "target" => target.to_string())
            .record(cost);
    }
}

pub fn streams_open(delta: f64) {
    gauge!("trestle_streams_open").increment(delta);
}

pub fn breaker(target: &str, state: BreakerState) {
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    gauge!("trestle_breaker_state", "target" => target.to_string()).set(value);
    counter!("trestle_breaker_transitions_total", "target" => target.to_string(), "to" => state.as_str())
        .increment(1);
}

pub fn capability_level(route: &str, level: u8) {
    gauge!("trestle_capability_level", "route" => route.to_string()).set(f64::from(level));
}

pub fn capability_change(route: &str, from: u8, to: u8) {
    capability_level(route, to);
    let direction = if to < from { "down" } else { "up" };
    counter!("trestle_capability_changes_total", "route" => route.to_string(), "direction" => direction)
        .increment(1);
}

pub fn skipped(route: &str, target: &str, reason: &'static str) {
    counter!("trestle_targets_skipped_total", "route" => route.to_string(),
        "target" => target.to_string(), "reason" => reason)
    .increment(1);
}

/// The share of a route's requests answered by a model over the last 5 minutes (set when
/// `/metrics` is read).
pub fn model_served_share(route: &str, share: f64) {
    gauge!("trestle_model_served_share", "route" => route.to_string()).set(share);
}

/// A request refused before it had a trace (its body too large, or too slow to arrive), or
/// a connection closed for sending its headers too slowly.
pub fn refused_early(reason: &'static str) {
    counter!("trestle_requests_refused_total", "reason" => reason).increment(1);
}

/// A cascade answered at `step` (0 = the cheapest), saving `saved_usd` against the last step.
pub fn cascade(route: &str, step: usize, saved_usd: f64) {
    counter!("trestle_cascade_answers_total", "route" => route.to_string(), "step" => step.to_string())
        .increment(1);
    if saved_usd > 0.0 {
        counter!("trestle_cascade_saved_usd_micros_total", "route" => route.to_string())
            .increment((saved_usd * 1e6).round() as u64);
    }
}

/// One guardrail's outcome on one request.
pub fn guardrail(name: &str, stage: &'static str, action: &'static str, outcome: &str) {
    counter!("trestle_guardrail_checks_total", "guardrail" => name.to_string(), "stage" => stage,
        "action" => action, "outcome" => outcome.to_string())
    .increment(1);
}

/// A request waited for a target to come back (every target was unavailable).
pub fn waited(route: &str, pause: std::time::Duration) {
    counter!("trestle_unavailable_waits_total", "route" => route.to_string()).increment(1);
    histogram!("trestle_unavailable_wait_seconds", "route" => route.to_string())
        .record(pause.as_secs_f64());
}

/// A request's context was trimmed to the route's `max_input_tokens`.
pub fn context_trimmed(route: &str) {
    counter!("trestle_context_trimmed_total", "route" => route.to_string()).increment(1);
}

pub fn hedged(route: &str, target: &str) {
    counter!("trestle_hedges_total", "route" => route.to_string(), "target" => target.to_string())
        .increment(1);
}

pub fn reload(ok: bool) {
    counter!("trestle_config_reloads_total", "result" => if ok { "ok" } else { "rejected" })
        .increment(1);
}

/// A route's metric handles for the common case (status 200, an `ok` attempt), registered
/// once when the route is built: a request then records without building label sets or
/// looking them up. Anything else goes through the functions above.
pub struct RouteMetrics {
    route: String,
    duration_ok: Histogram,
    requests_ok_primary: Counter,
    ttft: Histogram,
    overhead: Histogram,
    /// Response-cache lookups: exact, semantic, miss.
    cache: [Counter; 3],
    targets: HashMap<String, TargetMetrics>,
}

struct TargetMetrics {
    upstream_ok: Histogram,
    /// input, output, cached.
    tokens: [Counter; 3],
    cost: Histogram,
}

impl RouteMetrics {
    pub fn new<'a>(route: &str, targets: impl Iterator<Item = &'a str>) -> Self {
        let r = route.to_string();
        let targets = targets
            .map(|t| {
                let t = t.to_string();
                let tokens = ["input", "output", "cached"].map(|kind| {
                    counter!("trestle_tokens_total", "route" => r.clone(), "target" => t.clone(), "kind" => kind)
                });
                let handles = TargetMetrics {
                    upstream_ok: histogram!("trestle_upstream_duration_seconds", "route" => r.clone(),
                        "target" => t.clone(), "status" => "ok"),
                    tokens,
                    cost: histogram!("trestle_request_cost_usd", "route" => r.clone(), "target" => t.clone()),
                };
                (t, handles)
            })
            .collect();
        RouteMetrics {
            duration_ok: histogram!("trestle_request_duration_seconds", "route" => r.clone(), "status" => "200"),
            requests_ok_primary: counter!("trestle_requests_total", "route" => r.clone(), "status" => "200",
                "fallback_level" => "primary"),
            ttft: histogram!("trestle_ttft_seconds", "route" => r.clone()),
            overhead: histogram!("trestle_gateway_overhead_seconds", "route" => r.clone()),
            cache: ["exact", "semantic", "miss"].map(|result| {
                counter!("trestle_cache_lookups_total", "route" => r.clone(), "result" => result)
            }),
            route: r,
            targets,
        }
    }

    pub fn request(&self, m: &RequestMetrics<'_>) {
        if m.status != 200 || m.fallback_level != "primary" {
            return request(m);
        }
        self.duration_ok.record(m.total.as_secs_f64());
        self.requests_ok_primary.increment(1);
        if let Some(t) = m.ttft {
            self.ttft.record(t.as_secs_f64());
        }
        if let Some(o) = m.overhead {
            self.overhead.record(o.as_secs_f64());
        }
    }

    /// A response-cache lookup's result: `exact`, `semantic` or `miss`.
    pub fn cache_lookup(&self, result: &str) {
        let i = match result {
            "exact" => 0,
            "semantic" => 1,
            _ => 2,
        };
        self.cache[i].increment(1);
    }

    pub fn attempt(&self, target: &str, status: &str, latency: Duration, cold: bool) {
        match self.targets.get(target) {
            Some(h) if status == "ok" && !cold => h.upstream_ok.record(latency.as_secs_f64()),
            _ => attempt(&self.route, target, status, latency, cold),
        }
    }

    pub fn usage(&self, target: &str, input: u64, output: u64, cached: u64, cost: Option<f64>) {
        let Some(h) = self.targets.get(target) else {
            return usage(&self.route, target, input, output, cached, cost);
        };
        for (counter, n) in h.tokens.iter().zip([input, output, cached]) {
            if n > 0 {
                counter.increment(n);
            }
        }
        if let Some(cost) = cost {
            h.cost.record(cost);
        }
    }
}

/// A semantic candidate put to the verifier: its verdict and the time it took.
pub fn cache_verifier(route: &str, verdict: &'static str, took: Option<Duration>) {
    counter!("trestle_cache_verifier_total", "route" => route.to_string(), "verdict" => verdict)
        .increment(1);
    if let Some(took) = took {
        histogram!("trestle_cache_verifier_duration_seconds", "route" => route.to_string(),
            "verdict" => verdict)
        .record(took.as_secs_f64());
    }
}

pub fn cache_saved(usd: f64) {
    histogram!("trestle_cache_saved_usd").record(usd);
}

/// A semantic candidate put to the judge: its verdict, and the call's time when one was made.
pub fn cache_judge(route: &str, verdict: &'static str, took: Option<Duration>) {
    counter!("trestle_cache_judge_total", "route" => route.to_string(), "verdict" => verdict,
        "cached" => if took.is_none() { "true" } else { "false" })
    .increment(1);
    if let Some(took) = took {
        histogram!("trestle_cache_judge_duration_seconds", "route" => route.to_string(),
            "verdict" => verdict)
        .record(took.as_secs_f64());
    }
}

pub fn embedding(embedder: &str, took: Duration, ok: bool) {
    histogram!("trestle_embedding_duration_seconds", "embedder" => embedder.to_string(),
        "result" => if ok { "ok" } else { "error" })
    .record(took.as_secs_f64());
}

pub fn tool_cache(namespace: &str, result: &'static str) {
    counter!("trestle_tool_cache_total", "namespace" => namespace.to_string(), "result" => result)
        .increment(1);
}
