//! A target's live health: its breaker, capacity (requests in flight, tokens and requests per
//! minute), 429 handling (the adaptive [`Throttle`], and a pause for a long `Retry-After`)
//! and latency estimate. An attempt first asks for an [`Admission`];
//! a refusal is a [`Skip`] and the request overflows to the next target without waiting.
//!
//! Rate limits are a sliding minute of 12 buckets rather than a GCRA limiter (governor): a
//! token reservation is an estimate made before the call and must be settled to the
//! provider's reported usage afterwards, which a GCRA cell cannot give back.
//!
//! With `[state] kind = "redis"` the minute and the pause are shared by every instance
//! ([`super::shared`], [`TargetHealth::admit_shared`]); this instance's minute still counts
//! what it sent, and decides with the limits divided by `[state] instances` while Redis does
//! not answer.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use trestle_core::config::ModelConfig;

use rand::Rng;

use super::breaker::{Breaker, BreakerState, Refusal};
use super::shared::{SharedTargets, Verdict};
use super::throttle::Throttle;
use super::window::Window;

const MINUTE: Duration = Duration::from_secs(60);
const DEFAULT_THROTTLE_K: f64 = 2.0;
const DEFAULT_THROTTLE_WINDOW_MS: u64 = 30_000;
const DEFAULT_RETRY_AFTER_PAUSE_MS: u64 = 5_000;

/// Why a target was passed over for this attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    CircuitOpen {
        retry_in: Duration,
    },
    ProbeInFlight,
    CoolingDown {
        remaining: Duration,
    },
    /// Refused locally by the adaptive throttle, with this probability.
    Throttled {
        p: f64,
    },
    AtConcurrency {
        limit: u32,
    },
    OverTokens {
        limit: u64,
    },
    OverRequests {
        limit: u64,
    },
}

impl Skip {
    /// A short label for metrics and traces.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::CircuitOpen { .. } | Skip::ProbeInFlight => "circuit_open",
            Skip::CoolingDown { .. } => "cooling_down",
            Skip::Throttled { .. } => "throttled",
            Skip::AtConcurrency { .. } => "at_capacity",
            Skip::OverTokens { .. } | Skip::OverRequests { .. } => "over_rate_limit",
        }
    }

    /// When the target may take a request again: exact for an open breaker or a pause, a
    /// short poll where the answer depends on other requests (a probe, a concurrency slot,
    /// the throttle's next draw, the rate window).
    pub fn retry_in(&self) -> Duration {
        let ms = Duration::from_millis;
        match self {
            Skip::CircuitOpen { retry_in } => *retry_in,
            Skip::CoolingDown { remaining } => *remaining,
            Skip::ProbeInFlight => ms(25),
            Skip::Throttled { .. } => ms(20),
            Skip::AtConcurrency { .. } => ms(10),
            Skip::OverTokens { .. } | Skip::OverRequests { .. } => ms(100),
        }
        .max(ms(1))
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::CircuitOpen { retry_in } => write!(
                f,
                "circuit open (next probe in {} ms)",
                retry_in.as_millis()
            ),
            Skip::ProbeInFlight => f.write_str("circuit half-open, probe in flight"),
            Skip::CoolingDown { remaining } => write!(
                f,
                "cooling down after 429 ({} ms left)",
                remaining.as_millis()
            ),
            Skip::Throttled { p } => write!(
                f,
                "throttled after 429s (shedding {:.0}% locally)",
                p * 100.0
            ),
            Skip::AtConcurrency { limit } => write!(f, "at max_concurrency ({limit} in flight)"),
            Skip::OverTokens { limit } => write!(f, "over tokens_per_minute ({limit})"),
            Skip::OverRequests { limit } => write!(f, "over requests_per_minute ({limit})"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    max_concurrency: Option<u32>,
    tokens_per_minute: Option<u64>,
    requests_per_minute: Option<u64>,
    /// Set: every 429 pauses the target (the old behaviour, `cooldown_ms`).
    cooldown: Option<Duration>,
    /// A `Retry-After` longer than this pauses the target.
    pause_over: Duration,
    throttle_k: f64,
    throttle_window: Duration,
    weight: u32,
}

impl Limits {
    fn from(cfg: &ModelConfig) -> Self {
        Limits {
            max_concurrency: cfg.max_concurrency,
            tokens_per_minute: cfg.tokens_per_minute,
            requests_per_minute: cfg.requests_per_minute,
            cooldown: cfg.cooldown_ms.map(Duration::from_millis),
            pause_over: Duration::from_millis(
                cfg.retry_after_pause_ms
                    .unwrap_or(DEFAULT_RETRY_AFTER_PAUSE_MS),
            ),
            throttle_k: cfg.throttle_k.unwrap_or(DEFAULT_THROTTLE_K),
            throttle_window: Duration::from_millis(
                cfg.throttle_window_ms
                    .unwrap_or(DEFAULT_THROTTLE_WINDOW_MS)
                    .max(1),
            ),
            weight: cfg.weight.unwrap_or(1),
        }
    }
}

/// Exponentially weighted latency mean and mean deviation (as TCP's RTT estimator).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ewma {
    mean_ms: f64,
    dev_ms: f64,
    samples: u64,
}

impl Ewma {
    const ALPHA: f64 = 0.2;
    const BETA: f64 = 0.25;

    pub fn observe(&mut self, ms: f64) {
        if self.samples == 0 {
            self.mean_ms = ms;
            self.dev_ms = ms / 2.0;
        } else {
            self.dev_ms = (1.0 - Self::BETA) * self.dev_ms + Self::BETA * (ms - self.mean_ms).abs();
            self.mean_ms = (1.0 - Self::ALPHA) * self.mean_ms + Self::ALPHA * ms;
        }
        self.samples += 1;
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.mean_ms)
    }

    /// A p95 estimate: mean plus two mean deviations.
    pub fn p95_ms(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.mean_ms + 2.0 * self.dev_ms)
    }
}

/// The shared, reload-surviving health of one `provider/model`.
#[derive(Debug)]
pub struct TargetHealth {
    pub name: String,
    pub breaker: Breaker,
    limits: Mutex<Limits>,
    in_flight: AtomicU32,
    /// [tokens, requests] in the last minute.
    rate: Mutex<Window>,
    cooldown_until: Mutex<Option<Instant>>,
    throttle: Mutex<Throttle>,
    latency: Mutex<Ewma>,
    /// The minute and pause every instance shares, with `[state] kind = "redis"`.
    shared: Option<Arc<SharedTargets>>,
}

/// How an admission uses this instance's minute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Minute {
    /// Checks it against the limits divided by this (1: the whole limits), and counts.
    Share(u64),
    /// Only counts (the shared minute decides).
    Count,
}

impl TargetHealth {
    pub fn new(name: &str, cfg: &ModelConfig, now: Instant) -> Self {
        TargetHealth {
            name: name.to_string(),
            breaker: Breaker::new(name, cfg.breaker.clone(), now),
            throttle: Mutex::new(Throttle::new(
                Limits::from(cfg).throttle_k,
                Limits::from(cfg).throttle_window,
                now,
            )),
            limits: Mutex::new(Limits::from(cfg)),
            in_flight: AtomicU32::new(0),
            rate: Mutex::new(Window::new(MINUTE, 12, now)),
            cooldown_until: Mutex::new(None),
            latency: Mutex::new(Ewma::default()),
            shared: None,
        }
    }

    /// Shares the minute and the pause through `shared` (the gateway's Redis).
    pub fn with_shared(mut self, shared: Option<Arc<SharedTargets>>) -> Self {
        self.shared = shared;
        self
    }

    pub fn reconfigure(&self, cfg: &ModelConfig, now: Instant) {
        self.breaker.reconfigure(&cfg.breaker, now);
        let new = Limits::from(cfg);
        if let Ok(mut l) = self.limits.lock() {
            if (l.throttle_k, l.throttle_window) != (new.throttle_k, new.throttle_window)
                && let Ok(mut t) = self.throttle.lock()
            {
                *t = Throttle::new(new.throttle_k, new.throttle_window, now);
            }
            *l = new;
        }
    }

    fn limits(&self) -> Limits {
        self.limits.lock().map(|l| *l).unwrap_or_default()
    }

    pub fn weight(&self) -> u32 {
        self.limits().weight
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> Ewma {
        self.latency.lock().map(|l| *l).unwrap_or_default()
    }

    pub fn observe_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            l.observe(latency.as_secs_f64() * 1000.0);
        }
    }

    /// Books a 429: it feeds the throttle, and pauses the target for everyone only when its
    /// `Retry-After` is long (over `retry_after_pause_ms`) or when `cooldown_ms` asks for the
    /// old behaviour. Returns whether the target was paused.
    pub fn rate_limited(&self, retry_after: Option<Duration>, now: Instant) -> bool {
        if let Ok(mut t) = self.throttle.lock() {
            t.record(false, now);
        }
        let limits = self.limits();
        let pause = match (limits.cooldown, retry_after) {
            (Some(cooldown), after) => after.unwrap_or(cooldown),
            (None, Some(after)) if after > limits.pause_over => after,
            (None, _) => return false,
        };
        self.pause(pause, now);
        if let Some(shared) = &self.shared {
            shared.pause(&self.name, pause);
        }
        true
    }

    /// Books an attempt the upstream accepted (any answer but a 429).
    pub fn accepted(&self, now: Instant) {
        if let Ok(mut t) = self.throttle.lock() {
            t.record(true, now);
        }
    }

    /// Takes the target out of rotation for `pause`.
    pub fn pause(&self, pause: Duration, now: Instant) {
        if let Ok(mut c) = self.cooldown_until.lock()
            && let Some(until) = now.checked_add(pause)
            && c.is_none_or(|old| old < until)
        {
            *c = Some(until);
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Asks to send one attempt of about `tokens` tokens, on this instance's state alone.
    /// Checks run cheapest first, and whatever was taken is given back when a later check
    /// refuses.
    pub fn admit(self: &Arc<Self>, tokens: u64, now: Instant) -> Result<Admission, Skip> {
        self.admit_local(tokens, now, Minute::Share(1))
    }

    /// [`admit`](Self::admit), with the minute and the pause shared by every instance when
    /// the target has shared state: the local checks first (a pause already known, the
    /// throttle, `max_concurrency`, the breaker), then one script on Redis that may refuse
    /// for a pause another instance took or for the shared minute. While Redis does not
    /// answer, this instance's minute decides with the limits divided by `[state]
    /// instances`.
    pub async fn admit_shared(
        self: &Arc<Self>,
        tokens: u64,
        now: Instant,
    ) -> Result<Admission, Skip> {
        let Some(shared) = &self.shared else {
            return self.admit(tokens, now);
        };
        let share = Minute::Share(u64::from(shared.instances()));
        if !shared.up() {
            crate::limiter::link::fell_back("targets");
            return self.admit_local(tokens, now, share);
        }
        let mut admission = self.admit_local(tokens, now, Minute::Count)?;
        let limits = self.limits();
        let (rpm, tpm) = (limits.requests_per_minute, limits.tokens_per_minute);
        match shared.admit(&self.name, rpm, tpm, tokens).await {
            Some(Verdict::Admitted { bucket }) => {
                admission.shared = bucket.map(|b| (b, tokens));
                Ok(admission)
            }
            Some(Verdict::Paused(remaining)) => {
                // Known here too: the next attempts skip without asking.
                self.pause(remaining, now);
                Err(Skip::CoolingDown { remaining })
            }
            Some(Verdict::OverRequests) => Err(Skip::OverRequests {
                limit: rpm.unwrap_or(0),
            }),
            Some(Verdict::OverTokens) => Err(Skip::OverTokens {
                limit: tpm.unwrap_or(0),
            }),
            None => {
                // Redis stopped answering: decide again on this instance's share.
                drop(admission);
                crate::limiter::link::fell_back("targets");
                self.admit_local(tokens, now, share)
            }
        }
    }

    fn admit_local(
        self: &Arc<Self>,
        tokens: u64,
        now: Instant,
        minute: Minute,
    ) -> Result<Admission, Skip> {
        if let Ok(c) = self.cooldown_until.lock()
            && let Some(until) = *c
            && now < until
        {
            return Err(Skip::CoolingDown {
                remaining: until - now,
            });
        }
        if let Ok(mut t) = self.throttle.lock()
            && let Some(p) = t.refuse(rand::rng().random::<f64>(), now)
        {
            return Err(Skip::Throttled { p });
        }
        let limits = self.limits();
        let mut admission = Admission {
            health: self.clone(),
            counted: false,
            reservation: None,
            shared: None,
            probe: false,
            reported: false,
        };
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        admission.counted = true;
        if let Some(limit) = limits.max_concurrency
            && n >= limit
        {
            return Err(Skip::AtConcurrency { limit });
        }
        if limits.tokens_per_minute.is_some() || limits.requests_per_minute.is_some() {
            let Ok(mut rate) = self.rate.lock() else {
                return Ok(admission);
            };
            let [used_tokens, used_requests] = rate.sum(now);
            // This instance's share of a limit; none when the shared minute decides.
            let part = |limit: Option<u64>| match minute {
                Minute::Share(1) => limit,
                Minute::Share(n) => limit.map(|l| (l / n.max(1)).max(1)),
                Minute::Count => None,
            };
            if let Some(limit) = part(limits.requests_per_minute)
                && used_requests + 1 > limit
            {
                return Err(Skip::OverRequests { limit });
            }
            // One request larger than the whole budget still goes when the minute is empty.
            if let Some(limit) = part(limits.tokens_per_minute)
                && used_tokens > 0
                && used_tokens + tokens > limit
            {
                return Err(Skip::OverTokens { limit });
            }
            let bucket = rate.add(now, tokens, 1);
            admission.reservation = Some((bucket, tokens));
        }
        match self.breaker.try_acquire(now) {
            Ok(probe) => admission.probe = probe,
            Err(Refusal::Open { retry_in }) => return Err(Skip::CircuitOpen { retry_in }),
            Err(Refusal::ProbeInFlight) => return Err(Skip::ProbeInFlight),
        }
        Ok(admission)
    }
}

/// Permission for one attempt: holds a place in `max_concurrency` until dropped (a stream
/// keeps it until it ends), and reports the outcome to the breaker once.
#[derive(Debug)]
pub struct Admission {
    health: Arc<TargetHealth>,
    counted: bool,
    /// (bucket, tokens) taken from the rate window.
    reservation: Option<(u64, u64)>,
    /// (bucket, tokens) taken from the shared minute in Redis.
    shared: Option<(i64, u64)>,
    probe: bool,
    reported: bool,
}

impl Admission {
    pub fn health(&self) -> &Arc<TargetHealth> {
        &self.health
    }

    /// Reports the attempt's outcome to the breaker: `bad` is a failure of the target itself.
    pub fn report(&mut self, bad: bool, latency: Duration, now: Instant) {
        if self.reported {
            return;
        }
        self.reported = true;
        self.health.breaker.record(self.probe, bad, latency, now);
    }

    /// A stream that broke after it started: one more failure for the breaker.
    pub fn report_broken_stream(&self, now: Instant) {
        self.health.breaker.record(false, true, Duration::ZERO, now);
    }

    /// Replaces the token estimate with the provider's reported usage.
    pub fn settle_tokens(&mut self, actual: u64, now: Instant) {
        if let Some((bucket, estimate)) = self.shared.take()
            && let Some(shared) = &self.health.shared
        {
            let (add, back) = (
                actual.saturating_sub(estimate),
                estimate.saturating_sub(actual),
            );
            shared.settle(&self.health.name, bucket, add, back, 0);
        }
        let Some((bucket, estimate)) = self.reservation.take() else {
            return;
        };
        if let Ok(mut rate) = self.health.rate.lock() {
            if actual >= estimate {
                rate.add(now, actual - estimate, 0);
            } else {
                rate.sub(now, bucket, estimate - actual, 0);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.counted {
            self.health.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if self.probe && !self.reported {
            self.health.breaker.release();
        }
        // Unsettled tokens were never used (the attempt failed or never went out); the
        // request counts only if it went out.
        if let Some((bucket, tokens)) = self.reservation.take()
            && let Ok(mut rate) = self.health.rate.lock()
        {
            rate.sub(Instant::now(), bucket, tokens, u64::from(!self.reported));
        }
        if let Some((bucket, tokens)) = self.shared.take()
            && let Some(shared) = &self.health.shared
        {
            shared.settle(
                &self.health.name,
                bucket,
                0,
                tokens,
                u64::from(!self.reported),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(cfg: ModelConfig) -> Arc<TargetHealth> {
        Arc::new(TargetHealth::new("p/m", &cfg, Instant::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_overflows_and_frees_on_drop() {
        let h = health(ModelConfig {
            max_concurrency: Some(2),
            ..Default::default()
        });
        let a = h.admit(10, Instant::now()).unwrap();
        let b = h.admit(10, Instant::now()).unwrap();
        assert_eq!(
            h.admit(10, Instant::now()).unwrap_err(),
            Skip::AtConcurrency { limit: 2 }
        );
        assert_eq!(h.in_flight(), 2, "a refused admission gives its place back");
        drop(a);
        let _c = h.admit(10, Instant::now()).unwrap();
        drop(b);
        assert_eq!(h.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_settles_to_actual_usage_and_rolls_over() {
        let h = health(ModelConfig {
            tokens_per_minute: Some(1_000),
            ..Default::default()
        });
        let mut a = h.admit(600, Instant::now()).unwrap();
        assert!(matches!(
            h.admit(600, Instant::now()),
            Err(Skip::OverTokens { .. })
        ));
        a.settle_tokens(100, Instant::now());
        drop(a);
        let _b = h.admit(600, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let _c = h.admit(900, Instant::now()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute() {
        let h = health(ModelConfig {
            requests_per_minute: Some(2),
            ..Default::default()
        });
        for _ in 0..2 {
            let mut sent = h.admit(1, Instant::now()).unwrap();
            sent.report(false, Duration::from_millis(5), Instant::now());
        }
        // An admission that never went out does not count.
        drop(h.admit(1, Instant::now()));
        assert!(matches!(
            h.admit(1, Instant::now()),
            Err(Skip::OverRequests { limit: 2 })
        ));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(h.admit(1, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn with_cooldown_ms_a_429_pauses_the_target_for_retry_after_or_the_setting() {
        let h = health(ModelConfig {
            cooldown_ms: Some(1_000),
            ..Default::default()
        });
        assert!(h.rate_limited(Some(Duration::from_millis(300)), Instant::now()));
        assert!(matches!(
            h.admit(1, Instant::now()),
            Err(Skip::CoolingDown { .. })
        ));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(h.admit(1, Instant::now()).is_ok());
        h.rate_limited(None, Instant::now());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(h.admit(1, Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(h.admit(1, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn by_default_only_a_long_retry_after_pauses_and_short_ones_throttle() {
        let h = health(ModelConfig::default());
        // A short Retry-After (or none) leaves the target in rotation.
        assert!(!h.rate_limited(Some(Duration::from_secs(1)), Instant::now()));
        assert!(!h.rate_limited(None, Instant::now()));
        assert!(h.admit(1, Instant::now()).is_ok());
        // A long one is a real pause.
        assert!(h.rate_limited(Some(Duration::from_secs(8)), Instant::now()));
        assert!(matches!(
            h.admit(1, Instant::now()),
            Err(Skip::CoolingDown { .. })
        ));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(h.admit(1, Instant::now()).is_ok());
        // Nothing but 429s for a while: most requests are shed locally, not all.
        let h = health(ModelConfig::default());
        for _ in 0..50 {
            h.rate_limited(Some(Duration::from_secs(1)), Instant::now());
        }
        let refused = (0..200)
            .filter(|_| matches!(h.admit(1, Instant::now()), Err(Skip::Throttled { .. })))
            .count();
        assert!(refused >= 150, "{refused}");
        // Accepts bring it back.
        for _ in 0..300 {
            h.accepted(Instant::now());
        }
        assert!(h.admit(1, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_probe_is_given_back() {
        let mut cfg = ModelConfig::default();
        cfg.breaker.consecutive_failures = 1;
        cfg.breaker.open_ms = 100;
        let h = health(cfg);
        let mut a = h.admit(1, Instant::now()).unwrap();
        a.report(true, Duration::ZERO, Instant::now());
        drop(a);
        tokio::time::advance(Duration::from_millis(100)).await;
        let probe = h.admit(1, Instant::now()).unwrap();
        assert_eq!(h.admit(1, Instant::now()).unwrap_err(), Skip::ProbeInFlight);
        drop(probe);
        let mut probe = h.admit(1, Instant::now()).unwrap();
        probe.report(false, Duration::from_millis(5), Instant::now());
        assert_eq!(h.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn ewma_tracks_latency() {
        let mut e = Ewma::default();
        assert_eq!(e.p95_ms(), None);
        for _ in 0..50 {
            e.observe(100.0);
        }
        assert!((e.mean_ms().unwrap() - 100.0).abs() < 1e-6);
        assert!(e.p95_ms().unwrap() < 101.0);
        e.observe(1_000.0);
        assert!(e.mean_ms().unwrap() > 250.0);
    }
}
