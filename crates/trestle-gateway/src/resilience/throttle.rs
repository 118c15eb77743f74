//! Client-side adaptive throttling after 429s, as in the Google SRE book ("Handling
//! Overload"): over a sliding window the client counts the requests it tried (including the
//! ones it refused itself) and the requests the upstream accepted (anything but a 429), and
//! refuses a new request locally with probability
//!
//! ```text
//! p = max(0, (requests − K·accepts) / (requests + 1))
//! ```
//!
//! A 429 is a signal about rate, not proof that the target is down: at a few percent of 429s
//! `p` stays 0 and nothing is shed; as the upstream refuses more, the client sheds in
//! proportion, and traffic overflows to the next target instead of all of it stopping at once.
//! A refused request goes to the next target (the inference stage treats it as a skip).

use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;

const BUCKETS: usize = 10;
/// Below this many requests in the window nothing is shed: one 429 on a quiet target is
/// retried, not throttled.
const MIN_REQUESTS: u64 = 10;

/// The throttle's counters for one target.
#[derive(Debug)]
pub struct Throttle {
    /// [requests, accepts].
    window: Window,
    k: f64,
}

impl Throttle {
    /// `k = 0` turns the throttle off.
    pub fn new(k: f64, window: Duration, now: Instant) -> Self {
        Throttle {
            window: Window::new(window, BUCKETS, now),
            k,
        }
    }

    /// The probability of refusing the next request locally.
    pub fn reject_probability(&self, now: Instant) -> f64 {
        if self.k <= 0.0 {
            return 0.0;
        }
        let [requests, accepts] = self.window.sum(now);
        if requests < MIN_REQUESTS {
            return 0.0;
        }
        let requests = requests as f64;
        ((requests - self.k * accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// Draws whether to refuse the next request (`roll` uniform in 0..1); a refusal counts as
    /// a request that was not accepted.
    pub fn refuse(&mut self, roll: f64, now: Instant) -> Option<f64> {
        let p = self.reject_probability(now);
        if p > 0.0 && roll < p {
            self.window.add(now, 1, 0);
            return Some(p);
        }
        None
    }

    /// Books an attempt that went out: `accepted` is false for a 429.
    pub fn record(&mut self, accepted: bool, now: Instant) {
        self.window.add(now, 1, u64::from(accepted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share_refused(t: &mut Throttle, n: usize) -> f64 {
        let mut refused = 0;
        for i in 0..n {
            // A deterministic spread of rolls over 0..1.
            let roll = (i as f64 + 0.5) / n as f64;
            if t.refuse(roll, Instant::now()).is_some() {
                refused += 1;
            }
        }
        refused as f64 / n as f64
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_429s_shed_nothing() {
        let mut t = Throttle::new(2.0, Duration::from_secs(30), Instant::now());
        // 6% of attempts rate-limited, as a provider under light pressure answers.
        for i in 0..1_000 {
            t.record(i % 100 >= 6, Instant::now());
        }
        assert_eq!(t.reject_probability(Instant::now()), 0.0);
        assert_eq!(share_refused(&mut t, 100), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_grows_with_the_refusals_and_stays_partial() {
        let mut t = Throttle::new(2.0, Duration::from_secs(30), Instant::now());
        // The upstream accepts only a quarter: the client sheds about half
        // ((1 − 2·0.25) / 1), so the upstream still sees traffic and recovery shows.
        for i in 0..400 {
            t.record(i % 4 == 0, Instant::now());
        }
        let p = t.reject_probability(Instant::now());
        assert!((0.45..0.55).contains(&p), "{p}");
        // Each local refusal counts as a request the upstream did not accept, so the share
        // climbs while the upstream sees no new accepts; it stays well short of all.
        let shed = share_refused(&mut t, 200);
        assert!((0.4..0.8).contains(&shed), "{shed}");
        // Everything refused upstream: nearly everything shed.
        let mut t = Throttle::new(2.0, Duration::from_secs(30), Instant::now());
        for _ in 0..100 {
            t.record(false, Instant::now());
        }
        assert!(t.reject_probability(Instant::now()) > 0.95);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_and_k_zero_is_off() {
        let mut t = Throttle::new(2.0, Duration::from_secs(30), Instant::now());
        for _ in 0..100 {
            t.record(false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(t.reject_probability(Instant::now()), 0.0);
        let mut off = Throttle::new(0.0, Duration::from_secs(30), Instant::now());
        for _ in 0..100 {
            off.record(false, Instant::now());
        }
        assert_eq!(off.reject_probability(Instant::now()), 0.0);
        // Few requests: a single 429 on a quiet target is not throttled.
        let mut quiet = Throttle::new(2.0, Duration::from_secs(30), Instant::now());
        quiet.record(false, Instant::now());
        assert_eq!(quiet.reject_probability(Instant::now()), 0.0);
    }
}
