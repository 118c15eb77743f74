//! Capability levels: 5 (full) … 1 (off) per route, moved by live health with hysteresis.
//!
//! The signal is the share of the route's upstream attempts in the window that failed or
//! were slower than the class budget. At or above `degrade_at` the route steps down one
//! level (at most once per `step_ms`, and each step needs fresh evidence: the window is
//! cleared). At or below `recover_at` for `recover_ms` it steps up one level; in between it
//! holds. A route with no traffic to its targets (levels that serve fallbacks only) counts
//! as healthy, so it climbs back and tries its targets again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use trestle_core::config::CapabilityConfig;

use super::window::Window;
use crate::metrics;

#[derive(Debug)]
struct State {
    window: Window,
    window_ms: u64,
    last_change: Instant,
    healthy_since: Option<Instant>,
}

/// One route's capability level; survives config reloads.
#[derive(Debug)]
pub struct RouteHealth {
    route: String,
    level: AtomicU8,
    state: Mutex<State>,
}

const BUCKETS: usize = 10;

impl RouteHealth {
    pub fn new(route: &str, now: Instant) -> Self {
        RouteHealth {
            route: route.to_string(),
            level: AtomicU8::new(5),
            state: Mutex::new(State {
                window: Window::new(Duration::from_secs(30), BUCKETS, now),
                window_ms: 30_000,
                last_change: now,
                healthy_since: Some(now),
            }),
        }
    }

    pub fn level(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    /// Records one upstream attempt and re-evaluates.
    pub fn observe(&self, cfg: &CapabilityConfig, bad: bool, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            if s.window_ms != cfg.window_ms {
                s.window = Window::new(Duration::from_millis(cfg.window_ms), BUCKETS, now);
                s.window_ms = cfg.window_ms;
            }
            s.window.add(now, 1, u64::from(bad));
            self.step(&mut s, cfg, now);
        }
    }

    /// Re-evaluates without a new sample (called as requests arrive, so a quiet route
    /// recovers); returns the level to serve at.
    pub fn evaluate(&self, cfg: &CapabilityConfig, now: Instant) -> u8 {
        if let Ok(mut s) = self.state.lock() {
            self.step(&mut s, cfg, now);
        }
        self.level()
    }

    fn step(&self, s: &mut State, cfg: &CapabilityConfig, now: Instant) {
        let level = self.level();
        let floor = cfg.min_level.clamp(1, 5);
        let [total, bad] = s.window.sum(now);
        let share =
            (total >= u64::from(cfg.min_requests).max(1)).then(|| bad as f64 / total as f64);
        let since_change = now.saturating_duration_since(s.last_change);
        let to = match share {
            Some(share) if share >= cfg.degrade_at => {
                s.healthy_since = None;
                (level > floor && since_change >= Duration::from_millis(cfg.step_ms))
                    .then(|| level - 1)
            }
            Some(share) if share > cfg.recover_at => {
                s.healthy_since = None;
                None
            }
            _ => {
                let since = *s.healthy_since.get_or_insert(now);
                let healthy_for = now.saturating_duration_since(since);
                (level < 5 && healthy_for >= Duration::from_millis(cfg.recover_ms))
                    .then(|| level + 1)
            }
        };
        // A level below a floor raised by a reload rises to it at once.
        let to = to.or_else(|| (level < floor).then_some(floor));
        if let Some(to) = to {
            self.level.store(to, Ordering::Relaxed);
            s.last_change = now;
            s.healthy_since = (to > level).then_some(now);
            s.window.clear();
            let share = share.map_or("none".to_string(), |v| format!("{v:.2}"));
            if to < level {
                tracing::warn!(route = %self.route, from = level, to, bad_share = %share, "capability level lowered");
            } else {
                tracing::info!(route = %self.route, from = level, to, "capability level raised");
            }
            metrics::capability_change(&self.route, level, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CapabilityConfig {
        CapabilityConfig {
            window_ms: 10_000,
            min_requests: 4,
            degrade_at: 0.5,
            recover_at: 0.2,
            step_ms: 1_000,
            recover_ms: 5_000,
            ..Default::default()
        }
    }

    fn feed(h: &RouteHealth, c: &CapabilityConfig, good: u32, bad: u32) {
        for _ in 0..good {
            h.observe(c, false, Instant::now());
        }
        for _ in 0..bad {
            h.observe(c, true, Instant::now());
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn steps_down_one_level_per_step_with_fresh_evidence() {
        let c = cfg();
        let h = RouteHealth::new("r", Instant::now());
        tokio::time::advance(S).await;
        feed(&h, &c, 2, 2);
        assert_eq!(h.level(), 4, "half bad reaches degrade_at");
        feed(&h, &c, 0, 4);
        assert_eq!(h.level(), 4, "no second step within step_ms");
        tokio::time::advance(S).await;
        feed(&h, &c, 0, 1);
        assert_eq!(h.level(), 3, "the evidence gathered meanwhile counts");
        tokio::time::advance(S).await;
        feed(&h, &c, 0, 3);
        assert_eq!(
            h.level(),
            3,
            "the window was cleared: three samples are not evidence"
        );
        feed(&h, &c, 0, 1);
        assert_eq!(h.level(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_in_the_band_and_recovers_after_sustained_health() {
        let c = cfg();
        let h = RouteHealth::new("r", Instant::now());
        tokio::time::advance(S).await;
        feed(&h, &c, 0, 4);
        assert_eq!(h.level(), 4);
        // 1 bad in 3 (0.33): between recover_at and degrade_at, so it holds.
        for _ in 0..6 {
            tokio::time::advance(S).await;
            feed(&h, &c, 2, 1);
        }
        assert_eq!(h.level(), 4);
        // Healthy traffic: up one level after recover_ms, not before.
        tokio::time::advance(Duration::from_secs(11)).await;
        feed(&h, &c, 10, 0);
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(h.evaluate(&c, Instant::now()), 4);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(h.evaluate(&c, Instant::now()), 5);
    }

    /// Requests keep arriving (each evaluates) but none reaches a target.
    async fn quiet_seconds(h: &RouteHealth, c: &CapabilityConfig, seconds: u32) -> Vec<u8> {
        let mut levels = Vec::new();
        for _ in 0..seconds {
            tokio::time::advance(S).await;
            levels.push(h.evaluate(c, Instant::now()));
        }
        levels
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_route_climbs_back_and_never_goes_below_min_level() {
        let mut c = cfg();
        c.min_level = 2;
        let h = RouteHealth::new("r", Instant::now());
        for _ in 0..5 {
            tokio::time::advance(S).await;
            feed(&h, &c, 0, 4);
        }
        assert_eq!(h.level(), 2, "floor");
        // The last bad samples (t=4 s, 5 s) leave the 10 s window at t=15 s; then 5 s of
        // health per step.
        let levels = quiet_seconds(&h, &c, 30).await;
        assert_eq!(levels[13], 2, "t=19 s");
        assert_eq!(levels[14], 3, "t=20 s");
        assert_eq!(levels[19], 4, "t=25 s");
        assert_eq!(levels[24], 5, "t=30 s");
        assert_eq!(levels[29], 5);
    }
}
