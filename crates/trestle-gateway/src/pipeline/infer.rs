//! Inference: the route's target chain. Targets are ordered by the route's `balance`; a
//! target whose breaker is open, that is cooling down after a 429, or that is at capacity is
//! skipped without a call (the request overflows to the next). Each target gets `retries`
//! extra tries on retryable errors (exponential backoff with full jitter, `Retry-After`
//! honoured), then the next target serves; a route may hedge its first attempt. A stream is
//! committed once its first chunk arrives; before that, any failure falls through invisibly.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::Either;
use rand::Rng;
use tokio::time::Instant;
use trestle_core::config::Balance;
use trestle_core::openai::{ChatRequest, Content};

use super::ingress::new_span_id;
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::{Chunk, ChunkStream, Completion, ProviderError};
use crate::resilience::health::{Admission, Skip};
use crate::runtime::{Route, Target};
use crate::store::Attempt;

/// What the chain produced.
pub enum Served {
    Complete(Completion),
    Stream { first: Chunk, rest: ChunkStream },
}

/// What the chain may use for this request, after the capability level's behaviour.
pub struct Plan<'a> {
    pub targets: &'a [Arc<Target>],
    pub retries: u32,
    pub hedge: bool,
    /// A stream whose chunks no stage reads: relayed as the upstream's frames where the
    /// provider can ([`crate::providers::Provider::chat_stream_relayed`]).
    pub relayed: bool,
}

/// The chain's result with everything the trace needs.
pub struct Inference {
    pub result: Result<Served, GatewayError>,
    pub attempts: Vec<Attempt>,
    /// Index of the serving target in this request's order (0 = primary).
    pub level: usize,
    pub target: Option<Arc<Target>>,
    /// Time spent waiting on upstreams and backoff before the answer was ready.
    pub waited: Duration,
    /// The serving target's admission: a stream holds its `max_concurrency` place until it
    /// ends, and its token estimate is settled to the reported usage.
    pub admission: Option<Admission>,
}

impl Inference {
    /// No chain ran (the capability level serves fallbacks only).
    pub fn not_run(why: String) -> Self {
        Inference {
            result: Err(GatewayError::Unavailable(why)),
            attempts: Vec::new(),
            level: 0,
            target: None,
            waited: Duration::ZERO,
            admission: None,
        }
    }

    /// The chain did not run because the request was refused before it.
    pub fn failed(error: GatewayError) -> Self {
        Inference {
            result: Err(error),
            ..Inference::not_run(String::new())
        }
    }

    pub fn fallback_level(&self) -> &'static str {
        if self.level == 0 { "primary" } else { "model" }
    }
}

/// Used when a route hedges and the target has no latency history yet.
const DEFAULT_HEDGE_AFTER: Duration = Duration::from_millis(200);
const MIN_HEDGE_AFTER: Duration = Duration::from_millis(5);

/// Runs the chain for one request. `started` is when the request arrived.
///
/// Each target has `retries + 1` tries. A retryable failure is retried on the same target
/// after a backoff; a 429 moves on to the next target at once (its unused tries stay for
/// later), and the chain comes back round while any target has tries left. When every
/// target with tries left is momentarily unavailable (breaker open, paused, throttled, full),
/// the request waits for the soonest to come back, as long as the route's deadline allows.
pub async fn run(
    route: &Route,
    plan: &Plan<'_>,
    req: &ChatRequest,
    stream: bool,
    started: Instant,
) -> Inference {
    let cfg = &route.config;
    let mut chain = Chain {
        call: Call {
            route,
            req,
            stream,
            deadline: started + Duration::from_millis(cfg.total_timeout_ms()),
            ttft_limit: cfg.first_token_timeout_ms().map(Duration::from_millis),
            relayed: plan.relayed,
        },
        route,
        started,
        deadline: started + Duration::from_millis(cfg.total_timeout_ms()),
        tokens: estimate_tokens(req),
        attempts: Vec::new(),
        failures: Vec::new(),
        sent: 0,
        timed_out: false,
        refusal: None,
    };
    let order = order(plan.targets, cfg.balance);
    let mut tries = vec![plan.retries.saturating_add(1); order.len()];
    let mut waited = Duration::ZERO;
    // The first attempt may get a second one beside it: always after `hedge_after_ms` when the
    // route hedges, or, for a non-streamed request, once it is a straggler.
    let mut hedge = (plan.hedge || (cfg.hedge_stragglers && !stream)) && order.len() > 1;
    let mut at = 0;
    // Targets passed over in a row without a call, and the soonest any of them is back.
    let mut skipped_in_row = 0;
    let mut soonest: Option<Duration> = None;

    while let Some(level) = next_with_tries(&tries, at) {
        at = level;
        let target = order[level].clone();
        let now = Instant::now();
        if now >= chain.deadline {
            chain.timed_out = true;
            chain.failures.push(format!(
                "{}: route deadline of {} ms reached",
                target.name,
                cfg.total_timeout_ms()
            ));
            break;
        }
        let admission = match target.health.admit_shared(chain.tokens, now).await {
            Ok(a) => a,
            Err(skip) => {
                chain.skipped(&target, &skip, now);
                let back = skip.retry_in();
                soonest = Some(soonest.map_or(back, |s| s.min(back)));
                skipped_in_row += 1;
                at += 1;
                if skipped_in_row < tries.iter().filter(|&&t| t > 0).count() {
                    continue;
                }
                // Every target with tries left is unavailable right now: wait for the
                // soonest to come back if the deadline allows, else give up.
                let pause = soonest.take().unwrap_or_default();
                skipped_in_row = 0;
                if now.checked_add(pause).is_none_or(|t| t >= chain.deadline) {
                    break;
                }
                chain.waited(pause, now);
                tokio::time::sleep(pause).await;
                waited += pause;
                at = 0;
                continue;
            }
        };
        skipped_in_row = 0;
        soonest = None;
        tries[level] -= 1;
        let hedge_after = std::mem::take(&mut hedge)
            .then(|| hedge_delay(cfg, plan.hedge, &target))
            .flatten()
            .filter(|after| now + *after < chain.deadline);
        let outcome = if let Some(after) = hedge_after {
            chain
                .hedged(&target, level, admission, &order, &mut tries, after)
                .await
        } else {
            let tried = attempt(chain.call, &target, level, admission).await;
            chain.book(tried)
        };
        waited += now.elapsed();
        let error = match outcome {
            Ok(won) => {
                return Inference {
                    result: Ok(won.served),
                    attempts: chain.attempts,
                    level: won.level,
                    target: Some(won.target),
                    waited,
                    admission: Some(won.admission),
                };
            }
            Err(e) => e,
        };
        if error.is_client_error() {
            let status = match error {
                ProviderError::Status { status, .. } => status,
                _ => 400,
            };
            return Inference {
                result: Err(GatewayError::UpstreamRejected {
                    status,
                    message: format!("{} rejected the request: {error}", target.name),
                }),
                attempts: chain.attempts,
                level,
                target: Some(target.clone()),
                waited,
                admission: None,
            };
        }
        chain.timed_out = matches!(error, ProviderError::Timeout(_));
        let rate_limited = matches!(error, ProviderError::Status { status: 429, .. });
        let others = tries.iter().enumerate().any(|(i, &t)| i != level && t > 0);
        if !error.is_retryable() {
            tries[level] = 0;
        }
        // A 429 sends the request on to another target at once; so does a spent target.
        if tries[level] == 0 || (rate_limited && others) {
            at += 1;
            continue;
        }
        let done = plan.retries.saturating_add(1) - tries[level] - 1;
        let Some(pause) = backoff(&error, done, cfg.backoff_ms, cfg.backoff_max_ms) else {
            tries[level] = 0;
            at += 1;
            continue;
        };
        if Instant::now()
            .checked_add(pause)
            .is_none_or(|t| t >= chain.deadline)
        {
            tries[level] = 0;
            at += 1;
            continue;
        }
        tokio::time::sleep(pause).await;
        waited += pause;
    }
    let tried = chain.failures.join("; ");
    let result = if let (0, Some((target, message, param))) = (chain.sent, chain.refusal.take()) {
        // No target could take the request as written: the client's error, not an outage.
        Err(GatewayError::InvalidRequest {
            message: format!("{target} cannot take this request: {message}"),
            param,
            code: "unsupported_by_target",
        })
    } else if chain.sent == 0 && !chain.timed_out {
        Err(GatewayError::Unavailable(format!(
            "no target of route `{}` is available: {tried}",
            route.name
        )))
    } else {
        Err(GatewayError::UpstreamFailed {
            message: format!("every target of route `{}` failed: {tried}", route.name),
            timed_out: chain.timed_out,
        })
    };
    Inference {
        result,
        attempts: chain.attempts,
        level: 0,
        target: None,
        waited,
        admission: None,
    }
}

/// The first target from `at` on (wrapping round) that has tries left.
fn next_with_tries(tries: &[u32], at: usize) -> Option<usize> {
    let n = tries.len();
    (0..n).map(|k| (at + k) % n).find(|&i| tries[i] > 0)
}

/// How long the first attempt runs alone before a second joins it: for a hedging route,
/// `hedge_after_ms` or the target's latency p95; for a straggler, four times the p95 and at
/// least a quarter of the route's deadline (none while the target has no latency history).
fn hedge_delay(
    cfg: &trestle_core::config::RouteConfig,
    hedging: bool,
    first: &Target,
) -> Option<Duration> {
    let p95 = first
        .health
        .latency()
        .p95_ms()
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    if hedging {
        let after = cfg.hedge_after_ms.map(Duration::from_millis).or(p95);
        return Some(after.unwrap_or(DEFAULT_HEDGE_AFTER).max(MIN_HEDGE_AFTER));
    }
    let quarter = Duration::from_millis(cfg.total_timeout_ms() / 4);
    p95.map(|p| (p * STRAGGLER_FACTOR).max(quarter))
}

/// A non-streamed attempt slower than this many times its target's p95 is a straggler.
const STRAGGLER_FACTOR: u32 = 4;

/// This request's target order: `priority` keeps the listed order; `weighted` draws the
/// first target by weight; `least_latency` sorts by latency estimate × (requests in flight
/// + 1), targets without history first.
fn order(targets: &[Arc<Target>], balance: Balance) -> Cow<'_, [Arc<Target>]> {
    if balance == Balance::Priority || targets.len() < 2 {
        return Cow::Borrowed(targets);
    }
    let mut order = targets.to_vec();
    match balance {
        Balance::Priority => {}
        Balance::Weighted => {
            let total: u64 = order.iter().map(|t| u64::from(t.health.weight())).sum();
            if total > 0 {
                let mut pick = rand::rng().random_range(0..total);
                let first = order.iter().position(|t| {
                    let w = u64::from(t.health.weight());
                    if pick < w {
                        return true;
                    }
                    pick -= w;
                    false
                });
                if let Some(i) = first {
                    let t = order.remove(i);
                    order.insert(0, t);
                }
            }
        }
        Balance::LeastLatency => {
            let score = |t: &Arc<Target>| {
                let h = &t.health;
                h.latency().mean_ms().unwrap_or(0.0) * f64::from(h.in_flight() + 1)
            };
            order.sort_by(|a, b| score(a).total_cmp(&score(b)));
        }
    }
    Cow::Owned(order)
}

/// Prompt characters / 4 plus the output cap (256 when the request sets none): what a
/// `tokens_per_minute` limit reserves before the call.
fn estimate_tokens(req: &ChatRequest) -> u64 {
    let (input, output) = estimate_usage(req);
    input + output
}

/// A request's tokens before the call, input and output: prompt characters / 4, and the
/// output cap (256 when the request sets none).
pub(super) fn estimate_usage(req: &ChatRequest) -> (u64, u64) {
    let chars: usize = req
        .messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, Content::text_len))
        .sum();
    (
        (chars / 4) as u64,
        u64::from(req.output_cap().unwrap_or(256)),
    )
}

/// What a request may cost before the call: its [`estimate_usage`] at the dearest price of
/// the targets that may serve it (zero when none has a price). What a budget reserves.
pub(super) fn estimate_cost(req: &ChatRequest, chain: &[Arc<Target>]) -> f64 {
    let (input, output) = estimate_usage(req);
    let usage = trestle_core::openai::Usage::new(input, output, 0);
    chain
        .iter()
        .filter_map(|t| t.price.map(|p| p.cost(&usage)))
        .fold(0.0, f64::max)
}

/// What every attempt of one request sends, and within which limits.
#[derive(Clone, Copy)]
struct Call<'r> {
    route: &'r Route,
    req: &'r ChatRequest,
    stream: bool,
    deadline: Instant,
    ttft_limit: Option<Duration>,
    relayed: bool,
}

/// The chain's running state for one request.
struct Chain<'r> {
    call: Call<'r>,
    route: &'r Route,
    started: Instant,
    deadline: Instant,
    tokens: u64,
    attempts: Vec<Attempt>,
    failures: Vec<String>,
    /// Attempts that went out.
    sent: usize,
    timed_out: bool,
    /// The first target that could not take the request as written: (target, why, param).
    refusal: Option<(String, String, Option<String>)>,
}

/// One attempt, finished.
struct Tried {
    target: Arc<Target>,
    level: usize,
    admission: Admission,
    result: Result<Served, ProviderError>,
    at: Instant,
    latency: Duration,
    cold: bool,
}

/// The attempt that served.
struct Won {
    served: Served,
    target: Arc<Target>,
    level: usize,
    admission: Admission,
}

/// Sends one attempt within the route's deadline (and `attempt_timeout_ms`).
async fn attempt(
    call: Call<'_>,
    target: &Arc<Target>,
    level: usize,
    admission: Admission,
) -> Tried {
    let (req, stream, ttft_limit) = (call.req, call.stream, call.ttft_limit);
    let at = Instant::now();
    let remaining = call.deadline.saturating_duration_since(at);
    let remaining = call
        .route
        .config
        .attempt_timeout_ms
        .map_or(remaining, |a| Duration::from_millis(a).min(remaining));
    let cold = target.touch();
    let result = if stream {
        open_stream(target, req, remaining, ttft_limit, call.relayed)
            .await
            .map(|(first, rest)| Served::Stream { first, rest })
    } else {
        match tokio::time::timeout(remaining, target.provider.chat(&target.model, req)).await {
            Ok(r) => r.map(Served::Complete),
            Err(_) => Err(ProviderError::Timeout(
                "waiting for the response (route deadline)",
            )),
        }
    };
    Tried {
        target: target.clone(),
        level,
        admission,
        result,
        at,
        latency: at.elapsed(),
        cold,
    }
}

impl Chain<'_> {
    /// Books a finished attempt — metrics, breaker, cool-down, capability, trace row — and
    /// returns the served answer or the error.
    fn book(&mut self, tried: Tried) -> Result<Won, ProviderError> {
        let Tried {
            target,
            level,
            mut admission,
            result,
            at,
            latency,
            cold,
        } = tried;
        let now = Instant::now();
        if let Err(ProviderError::Refused { message, param }) = &result {
            // Nothing went out: no breaker, throttle or capability bookkeeping.
            let mut record = bare_record(&target, self.started, at, "refused");
            record.error = Some(message.clone());
            self.attempts.push(record);
            self.failures.push(format!(
                "{}: cannot take the request: {message}",
                target.name
            ));
            if self.refusal.is_none() {
                self.refusal = Some((target.name.clone(), message.clone(), param.clone()));
            }
            metrics::skipped(&self.route.name, &target.name, "refused");
            return Err(ProviderError::Refused {
                message: message.clone(),
                param: param.clone(),
            });
        }
        self.sent += 1;
        let status = match &result {
            Ok(_) => std::borrow::Cow::Borrowed("ok"),
            Err(e) => e.label().into(),
        };
        self.route
            .metrics
            .attempt(&target.name, &status, latency, cold);
        self.attempts.push(attempt_record(
            &target,
            &result,
            self.started,
            at,
            latency,
            cold,
        ));
        let (bad, rate_limited) = match &result {
            Ok(_) => (false, false),
            Err(e @ ProviderError::Status { status: 429, .. }) => {
                target.health.rate_limited(e.retry_after(), now);
                (false, true)
            }
            Err(e) => (e.is_retryable(), false),
        };
        if !rate_limited {
            target.health.accepted(now);
        }
        admission.report(bad, latency, now);
        if result.is_ok() {
            target.health.observe_latency(latency);
        }
        if let Some(cap) = &self.route.config.capability {
            let class = self.route.config.class;
            let budget = if self.call.stream {
                class.ttft_budget_ms().unwrap_or(class.total_budget_ms())
            } else {
                class.total_budget_ms()
            };
            let slow = latency > Duration::from_millis(budget);
            self.route
                .health
                .observe(cap, bad || rate_limited || slow, now);
        }
        match result {
            Ok(served) => Ok(Won {
                served,
                target,
                level,
                admission,
            }),
            Err(error) => {
                tracing::debug!(route = %self.route.name, target = %target.name, error = %error, "attempt failed");
                self.failures.push(format!("{}: {error}", target.name));
                Err(error)
            }
        }
    }

    /// Notes a target passed over without a call.
    fn skipped(&mut self, target: &Target, skip: &Skip, now: Instant) {
        metrics::skipped(&self.route.name, &target.name, skip.label());
        // An open breaker or a cool-down is the target failing; overflow past a full
        // target is capacity working as configured.
        let unhealthy = matches!(
            skip,
            Skip::CircuitOpen { .. } | Skip::ProbeInFlight | Skip::CoolingDown { .. }
        );
        if unhealthy && let Some(cap) = &self.route.config.capability {
            self.route.health.observe(cap, true, now);
        }
        self.failures
            .push(format!("{}: skipped, {skip}", target.name));
        let mut record = bare_record(target, self.started, now, "skipped");
        record.error = Some(skip.to_string());
        self.attempts.push(record);
    }

    /// Notes a wait for the soonest target to come back, on the trace.
    fn waited(&mut self, pause: Duration, now: Instant) {
        metrics::waited(&self.route.name, pause);
        let mut record = bare_record_at(self.started, now, "waited");
        record.latency_ms = pause.as_secs_f64() * 1000.0;
        record.error = Some(format!(
            "every target was unavailable; waited {} ms for the soonest to come back",
            pause.as_millis()
        ));
        self.attempts.push(record);
    }

    /// Sends `first`; if it has not answered after `delay`, sends the next available target
    /// (after `level`, with tries left) too and takes whichever answers well first,
    /// cancelling the other.
    async fn hedged(
        &mut self,
        first: &Arc<Target>,
        level: usize,
        admission: Admission,
        order: &[Arc<Target>],
        tries: &mut [u32],
        delay: Duration,
    ) -> Result<Won, ProviderError> {
        let first_at = Instant::now();
        let mut a = Box::pin(attempt(self.call, first, level, admission));
        tokio::select! {
            tried = &mut a => return self.book(tried),
            _ = tokio::time::sleep(delay) => {}
        }
        let now = Instant::now();
        let mut second = None;
        for lvl in (level + 1..order.len()).filter(|&i| tries[i] > 0) {
            if now >= self.deadline {
                break;
            }
            let t = order[lvl].clone();
            match t.health.admit_shared(self.tokens, now).await {
                Ok(adm) => {
                    tries[lvl] -= 1;
                    second = Some((t, lvl, adm));
                    break;
                }
                Err(skip) => self.skipped(&t, &skip, now),
            }
        }
        let Some((t2, lvl2, adm2)) = second else {
            let tried = a.await;
            return self.book(tried);
        };
        metrics::hedged(&self.route.name, &t2.name);
        let b = Box::pin(attempt(self.call, &t2, lvl2, adm2));
        let (done, rest, loser, loser_at) = match futures_util::future::select(a, b).await {
            Either::Left((tried, b)) => (tried, Either::Right(b), t2.clone(), now),
            Either::Right((tried, a)) => (tried, Either::Left(a), first.clone(), first_at),
        };
        let won = self.book(done);
        if won.is_ok() {
            drop(rest);
            let mut record = bare_record(&loser, self.started, loser_at, "cancelled");
            record.error = Some("hedge lost: another attempt answered first".into());
            record.latency_ms = loser_at.elapsed().as_secs_f64() * 1000.0;
            self.attempts.push(record);
            return won;
        }
        let tried = match rest {
            Either::Left(a) => a.await,
            Either::Right(b) => b.await,
        };
        self.book(tried)
    }
}

/// Opens a stream and waits for its first chunk within the first-token limit.
async fn open_stream(
    target: &Target,
    req: &ChatRequest,
    remaining: Duration,
    ttft_limit: Option<Duration>,
    relayed: bool,
) -> Result<(Chunk, ChunkStream), ProviderError> {
    let started = Instant::now();
    let first_deadline = started + ttft_limit.map_or(remaining, |t| t.min(remaining));
    let what = if ttft_limit.is_some_and(|t| t < remaining) {
        "waiting for the first token (ttft_timeout_ms)"
    } else {
        "waiting for the first token (route deadline)"
    };
    let call = if relayed {
        target.provider.chat_stream_relayed(&target.model, req)
    } else {
        target.provider.chat_stream(&target.model, req)
    };
    let mut stream = match tokio::time::timeout_at(first_deadline, call).await {
        Ok(r) => r?,
        Err(_) => return Err(ProviderError::Timeout(what)),
    };
    match tokio::time::timeout_at(first_deadline, stream.next()).await {
        Err(_) => Err(ProviderError::Timeout(what)),
        Ok(None) => Err(ProviderError::Stream(
            "the upstream ended the stream before any chunk".into(),
        )),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(first))) => Ok((first, stream)),
    }
}

/// The pause before the next try of the same target, or `None` to move to the next target
/// (the upstream asked for a longer wait than the route allows).
fn backoff(error: &ProviderError, try_index: u32, base_ms: u64, max_ms: u64) -> Option<Duration> {
    let max = Duration::from_millis(max_ms);
    if let Some(after) = error.retry_after() {
        return (after <= max).then_some(after);
    }
    let ceiling = base_ms
        .saturating_mul(1u64 << try_index.min(16))
        .min(max_ms);
    let jittered = rand::rng().random_range(0..=ceiling);
    Some(Duration::from_millis(jittered))
}

/// A trace row about `target` that is not an attempt of its own (a cascade step that
/// escalated).
pub fn note(started: Instant, status: &str, target: &Target) -> Attempt {
    bare_record(target, started, Instant::now(), status)
}

/// A trace row for a target that was not called (`skipped`, `refused`) or whose call was
/// abandoned (`cancelled`).
fn bare_record(target: &Target, started: Instant, at: Instant, status: &str) -> Attempt {
    Attempt {
        target: target.name.clone(),
        provider: target.provider_name.clone(),
        model: target.model.clone(),
        ..bare_record_at(started, at, status)
    }
}

/// A trace row with no target yet.
fn bare_record_at(started: Instant, at: Instant, status: &str) -> Attempt {
    Attempt {
        span_id: new_span_id(),
        target: String::new(),
        provider: String::new(),
        model: String::new(),
        offset_ms: at.duration_since(started).as_secs_f64() * 1000.0,
        latency_ms: 0.0,
        ttft_ms: None,
        status: status.to_string(),
        http_status: None,
        error: None,
        retryable: false,
        cold_start: false,
        tokens_in: 0,
        tokens_out: 0,
        tokens_cached: 0,
        cost_usd: 0.0,
    }
}

fn attempt_record(
    target: &Target,
    result: &Result<Served, ProviderError>,
    started: Instant,
    at: Instant,
    latency: Duration,
    cold: bool,
) -> Attempt {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut record = bare_record(
        target,
        started,
        at,
        if result.is_ok() { "ok" } else { "error" },
    );
    record.latency_ms = ms(latency);
    record.cold_start = cold;
    match result {
        Ok(Served::Stream { .. }) => record.ttft_ms = Some(ms(latency)),
        Ok(Served::Complete(c)) => {
            let usage = c.body.usage.unwrap_or_default();
            record.tokens_in = usage.prompt_tokens;
            record.tokens_out = usage.completion_tokens;
            record.tokens_cached = usage.cached_tokens();
            record.cost_usd = target.price.map(|p| p.cost(&usage)).unwrap_or(0.0);
        }
        Err(e) => {
            if let ProviderError::Status { status, .. } = e {
                record.http_status = Some(*status);
            }
            record.error = Some(e.to_string());
            record.retryable = e.is_retryable();
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let e = ProviderError::Status {
            status: 503,
            message: String::new(),
            retry_after: None,
        };
        for _ in 0..100 {
            assert!(backoff(&e, 0, 50, 2000).unwrap() <= Duration::from_millis(50));
            assert!(backoff(&e, 3, 50, 2000).unwrap() <= Duration::from_millis(400));
            assert!(backoff(&e, 10, 50, 2000).unwrap() <= Duration::from_millis(2000));
        }
        let e = ProviderError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(backoff(&e, 0, 50, 2000), Some(Duration::from_secs(1)));
        assert_eq!(backoff(&e, 0, 50, 500), None);
    }
}
