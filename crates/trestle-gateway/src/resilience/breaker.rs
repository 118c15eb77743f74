//! A circuit breaker for one target: closed (traffic flows), open (the target is skipped
//! until `open_ms` passes), half-open (a few probes decide). See `BreakerConfig`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use trestle_core::config::BreakerConfig;

use super::window::Window;
use crate::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, passed: u32 },
}

#[derive(Debug)]
struct Inner {
    cfg: BreakerConfig,
    state: State,
    consecutive: u32,
    window: Window,
}

/// Why the breaker refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    Open { retry_in: Duration },
    ProbeInFlight,
}

#[derive(Debug)]
pub struct Breaker {
    target: String,
    inner: Mutex<Inner>,
}

const BUCKETS: usize = 10;

impl Breaker {
    pub fn new(target: &str, cfg: BreakerConfig, now: Instant) -> Self {
        let window = Window::new(Duration::from_millis(cfg.window_ms), BUCKETS, now);
        Breaker {
            target: target.to_string(),
            inner: Mutex::new(Inner {
                cfg,
                state: State::Closed,
                consecutive: 0,
                window,
            }),
        }
    }

    /// Applies new settings (on reload); the state carries over.
    pub fn reconfigure(&self, cfg: &BreakerConfig, now: Instant) {
        if let Ok(mut inner) = self.inner.lock()
            && inner.cfg != *cfg
        {
            inner.window = Window::new(Duration::from_millis(cfg.window_ms), BUCKETS, now);
            inner.cfg = cfg.clone();
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.inner.lock().map(|i| match i.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }) {
            Ok(s) => s,
            Err(_) => BreakerState::Closed,
        }
    }

    /// May an attempt go out now? `Ok(true)` means it is a half-open probe, whose result
    /// must be reported with [`Breaker::record`] or given back with [`Breaker::release`].
    pub fn try_acquire(&self, now: Instant) -> Result<bool, Refusal> {
        let Ok(mut inner) = self.inner.lock() else {
            return Ok(false);
        };
        if !inner.cfg.enabled {
            return Ok(false);
        }
        let probes = inner.cfg.half_open_probes;
        match &mut inner.state {
            State::Closed => Ok(false),
            State::Open { until } if now < *until => Err(Refusal::Open {
                retry_in: *until - now,
            }),
            State::Open { .. } => {
                inner.state = State::HalfOpen {
                    in_flight: 1,
                    passed: 0,
                };
                self.changed(BreakerState::HalfOpen);
                Ok(true)
            }
            State::HalfOpen { in_flight, .. } if *in_flight < probes => {
                *in_flight += 1;
                Ok(true)
            }
            State::HalfOpen { .. } => Err(Refusal::ProbeInFlight),
        }
    }

    /// Gives back a probe that never went out.
    pub fn release(&self) {
        if let Ok(mut inner) = self.inner.lock()
            && let State::HalfOpen { in_flight, .. } = &mut inner.state
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Reports an attempt's outcome. `bad` is a failure of the target (not of the request);
    /// an attempt slower than `slow_ms` counts as bad too.
    pub fn record(&self, probe: bool, bad: bool, latency: Duration, now: Instant) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if !inner.cfg.enabled {
            return;
        }
        let bad = bad
            || inner
                .cfg
                .slow_ms
                .is_some_and(|s| latency > Duration::from_millis(s));
        // At most a day, so `now + open_for` cannot overflow.
        let open_for = Duration::from_millis(inner.cfg.open_ms.min(86_400_000));
        let probes = inner.cfg.half_open_probes;
        match &mut inner.state {
            State::HalfOpen { in_flight, passed } if probe => {
                *in_flight = in_flight.saturating_sub(1);
                if bad {
                    inner.state = State::Open {
                        until: now + open_for,
                    };
                    self.changed(BreakerState::Open);
                } else {
                    *passed += 1;
                    if *passed >= probes {
                        inner.state = State::Closed;
                        inner.consecutive = 0;
                        inner.window.clear();
                        self.changed(BreakerState::Closed);
                    }
                }
            }
            State::Closed => {
                inner.window.add(now, 1, u64::from(bad));
                inner.consecutive = if bad { inner.consecutive + 1 } else { 0 };
                let [total, failed] = inner.window.sum(now);
                let rate_tripped = total >= u64::from(inner.cfg.min_requests)
                    && failed as f64 >= inner.cfg.error_rate * total as f64;
                if inner.consecutive >= inner.cfg.consecutive_failures || rate_tripped {
                    inner.state = State::Open {
                        until: now + open_for,
                    };
                    self.changed(BreakerState::Open);
                }
            }
            // Late results of attempts that started before the breaker opened.
            _ => {}
        }
    }

    fn changed(&self, to: BreakerState) {
        match to {
            BreakerState::Closed => tracing::info!(target_name = %self.target, "circuit closed"),
            _ => tracing::warn!(target_name = %self.target, state = to.as_str(), "circuit breaker"),
        }
        metrics::breaker(&self.target, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            min_requests: 10,
            error_rate: 0.5,
            open_ms: 1_000,
            ..Default::default()
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_then_probes_and_closes() {
        let b = Breaker::new("t", cfg(), Instant::now());
        for _ in 0..2 {
            assert_eq!(b.try_acquire(Instant::now()), Ok(false));
            b.record(false, true, MS, Instant::now());
        }
        b.record(false, false, MS, Instant::now());
        assert_eq!(b.state(), BreakerState::Closed, "a success resets the run");
        for _ in 0..3 {
            b.record(false, true, MS, Instant::now());
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(
            b.try_acquire(Instant::now()),
            Err(Refusal::Open { .. })
        ));
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert_eq!(b.try_acquire(Instant::now()), Ok(true), "one probe");
        assert_eq!(b.try_acquire(Instant::now()), Err(Refusal::ProbeInFlight));
        b.record(true, false, MS, Instant::now());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.try_acquire(Instant::now()), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_released_probe_frees_the_slot() {
        let b = Breaker::new("t", cfg(), Instant::now());
        for _ in 0..3 {
            b.record(false, true, MS, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.try_acquire(Instant::now()), Ok(true));
        b.release();
        assert_eq!(b.try_acquire(Instant::now()), Ok(true));
        b.record(true, true, MS, Instant::now());
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(b.try_acquire(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_error_rate_and_counts_slow_calls() {
        let mut c = cfg();
        c.consecutive_failures = 100;
        c.slow_ms = Some(200);
        let b = Breaker::new("t", c, Instant::now());
        for i in 0..10 {
            // Alternating: fast-ok, slow-ok (bad): 5 of 10 bad reaches 0.5.
            let latency = if i % 2 == 0 { MS } else { 300 * MS };
            b.record(false, false, latency, Instant::now());
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let mut c = cfg();
        c.consecutive_failures = 100;
        let b = Breaker::new("t", c, Instant::now());
        for _ in 0..9 {
            b.record(false, true, MS, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..10 {
            b.record(false, false, MS, Instant::now());
        }
        b.record(false, true, MS, Instant::now());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_never_opens() {
        let mut c = cfg();
        c.enabled = false;
        let b = Breaker::new("t", c, Instant::now());
        for _ in 0..50 {
            b.record(false, true, MS, Instant::now());
        }
        assert_eq!(b.try_acquire(Instant::now()), Ok(false));
    }
}
