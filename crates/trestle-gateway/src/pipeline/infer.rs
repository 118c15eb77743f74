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

    pub fn fallback_level(&self) -> &'static str {
        if self.level == 0 { "primary" } else { "model" }
    }
}

/// Used when a route hedges and the target has no latency history yet.
const DEFAULT_HEDGE_AFTER: Duration = Duration::from_millis(200);
const MIN_HEDGE_AFTER: Duration = Duration::from_millis(5);

/// Runs the chain for one request. `started` is when the request arrived.
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
        },
        route,
        started,
        deadline: started + Duration::from_millis(cfg.total_timeout_ms()),
        tokens: estimate_tokens(req),
        attempts: Vec::new(),
        failures: Vec::new(),
        sent: 0,
        timed_out: false,
    };
    let order = order(plan.targets, cfg.balance);
    let mut waited = Duration::ZERO;
    let mut hedge = plan.hedge && order.len() > 1;
    let mut next = 0;

    'targets: while next < order.len() {
        let (level, target) = (next, order[next].clone());
        next += 1;
        for try_index in 0..=plan.retries {
            let now = Instant::now();
            if now >= chain.deadline {
                chain.timed_out = true;
                chain.failures.push(format!(
                    "{}: route deadline of {} ms reached",
                    target.name,
                    cfg.total_timeout_ms()
                ));
                break 'targets;
            }
            let admission = match target.health.admit(chain.tokens, now) {
                Ok(a) => a,
                Err(skip) => {
                    chain.skipped(&target, &skip, now);
                    continue 'targets;
                }
            };
            let outcome = if std::mem::take(&mut hedge) {
                chain
                    .hedged(&target, level, admission, &order, &mut next)
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
            // A 429 cooled the target down: another target serves at once if there is one.
            if !error.is_retryable()
                || try_index == plan.retries
                || (rate_limited && next < order.len())
            {
                continue 'targets;
            }
            let Some(pause) = backoff(&error, try_index, cfg.backoff_ms, cfg.backoff_max_ms) else {
                continue 'targets;
            };
            if Instant::now()
                .checked_add(pause)
                .is_none_or(|t| t >= chain.deadline)
            {
                continue 'targets;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
        }
    }
    let tried = chain.failures.join("; ");
    let result = if chain.sent == 0 && !chain.timed_out {
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
    let chars: usize = req
        .messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, Content::text_len))
        .sum();
    (chars / 4) as u64 + u64::from(req.output_cap().unwrap_or(256))
}

/// What every attempt of one request sends, and within which limits.
#[derive(Clone, Copy)]
struct Call<'r> {
    route: &'r Route,
    req: &'r ChatRequest,
    stream: bool,
    deadline: Instant,
    ttft_limit: Option<Duration>,
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
        open_stream(target, req, remaining, ttft_limit)
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
                target.health.cool_down(e.retry_after(), now);
                (false, true)
            }
            Err(e) => (e.is_retryable(), false),
        };
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

    /// Sends `first`; if it has not answered after the hedge delay, sends the next available
    /// target too and takes whichever answers well first, cancelling the other.
    async fn hedged(
        &mut self,
        first: &Arc<Target>,
        level: usize,
        admission: Admission,
        order: &[Arc<Target>],
        next: &mut usize,
    ) -> Result<Won, ProviderError> {
        let delay = self
            .route
            .config
            .hedge_after_ms
            .map(Duration::from_millis)
            .or_else(|| {
                first
                    .health
                    .latency()
                    .p95_ms()
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            })
            .unwrap_or(DEFAULT_HEDGE_AFTER)
            .max(MIN_HEDGE_AFTER);
        let first_at = Instant::now();
        let mut a = Box::pin(attempt(self.call, first, level, admission));
        tokio::select! {
            tried = &mut a => return self.book(tried),
            _ = tokio::time::sleep(delay) => {}
        }
        let now = Instant::now();
        let mut second = None;
        while *next < order.len() && now < self.deadline {
            let (lvl, t) = (*next, order[*next].clone());
            *next += 1;
            match t.health.admit(self.tokens, now) {
                Ok(adm) => {
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
) -> Result<(Chunk, ChunkStream), ProviderError> {
    let started = Instant::now();
    let first_deadline = started + ttft_limit.map_or(remaining, |t| t.min(remaining));
    let what = if ttft_limit.is_some_and(|t| t < remaining) {
        "waiting for the first token (ttft_timeout_ms)"
    } else {
        "waiting for the first token (route deadline)"
    };
    let mut stream = match tokio::time::timeout_at(
        first_deadline,
        target.provider.chat_stream(&target.model, req),
    )
    .await
    {
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

/// A trace row for a target that was not called (`skipped`) or whose call was abandoned
/// (`cancelled`).
fn bare_record(target: &Target, started: Instant, at: Instant, status: &str) -> Attempt {
    Attempt {
        span_id: new_span_id(),
        target: target.name.clone(),
        provider: target.provider_name.clone(),
        model: target.model.clone(),
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
