//! What served each route's requests over the last minutes: a model (`primary`, `model`),
//! a fallback level (`cache`, `template`, `omitted`) or nothing (`error`). Users judge a
//! gateway by how rarely it degrades; `GET /v1/stats` reads these shares.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The outcomes counted, in order.
pub const LEVELS: [&str; 6] = ["primary", "model", "cache", "template", "omitted", "error"];
const BUCKET: Duration = Duration::from_secs(10);
/// The longest window one can ask about: 15 minutes of 10 s buckets.
const SLOTS: usize = 90;

/// One route's counts by outcome in 10-second buckets.
#[derive(Debug)]
pub struct Served {
    origin: Instant,
    /// (bucket number, counts by [`LEVELS`]); a stale number counts as empty.
    slots: Mutex<Vec<(u64, [u64; LEVELS.len()])>>,
}

/// The shares over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Shares {
    pub window_s: u64,
    pub requests: u64,
    /// Requests answered by a model (`primary` + `model`).
    pub model_served: u64,
    /// `model_served / requests` (1 when there were none).
    pub model_served_share: f64,
    /// Count per outcome, every outcome present.
    pub levels: std::collections::BTreeMap<&'static str, u64>,
}

impl Served {
    pub fn new(now: Instant) -> Self {
        Served {
            origin: now,
            slots: Mutex::new(vec![(u64::MAX, [0; LEVELS.len()]); SLOTS]),
        }
    }

    fn bucket_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() / BUCKET.as_millis()) as u64
    }

    /// Counts one request by what served it (`fallback_level`, or `error` when it failed).
    pub fn count(&self, level: &str, now: Instant) {
        let Some(i) = LEVELS.iter().position(|l| *l == level) else {
            return;
        };
        let n = self.bucket_of(now);
        if let Ok(mut slots) = self.slots.lock() {
            let slot = &mut slots[(n % SLOTS as u64) as usize];
            if slot.0 != n {
                *slot = (n, [0; LEVELS.len()]);
            }
            slot.1[i] += 1;
        }
    }

    /// The shares over the last `window` (at most 15 minutes).
    pub fn shares(&self, window: Duration, now: Instant) -> Shares {
        let buckets =
            (window.as_millis().div_ceil(BUCKET.as_millis()) as u64).clamp(1, SLOTS as u64);
        let current = self.bucket_of(now);
        let mut totals = [0u64; LEVELS.len()];
        if let Ok(slots) = self.slots.lock() {
            for (n, counts) in slots.iter() {
                if *n != u64::MAX && *n <= current && current - n < buckets {
                    for (t, c) in totals.iter_mut().zip(counts) {
                        *t += c;
                    }
                }
            }
        }
        let requests: u64 = totals.iter().sum();
        let model_served = totals[0] + totals[1];
        Shares {
            window_s: buckets * BUCKET.as_secs(),
            requests,
            model_served,
            model_served_share: if requests == 0 {
                1.0
            } else {
                model_served as f64 / requests as f64
            },
            levels: LEVELS.iter().copied().zip(totals).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shares_over_a_window_and_old_buckets_fall_out() {
        let s = Served::new(Instant::now());
        for _ in 0..90 {
            s.count("primary", Instant::now());
        }
        for _ in 0..5 {
            s.count("model", Instant::now());
        }
        for _ in 0..5 {
            s.count("template", Instant::now());
        }
        s.count("not-a-level", Instant::now());
        let now = s.shares(Duration::from_secs(60), Instant::now());
        assert_eq!(now.requests, 100);
        assert_eq!(now.model_served, 95);
        assert!((now.model_served_share - 0.95).abs() < 1e-9);
        assert_eq!(now.levels["template"], 5);
        assert_eq!(now.levels["omitted"], 0);
        tokio::time::advance(Duration::from_secs(70)).await;
        s.count("error", Instant::now());
        let later = s.shares(Duration::from_secs(60), Instant::now());
        assert_eq!(later.requests, 1);
        assert_eq!(later.model_served_share, 0.0);
        assert_eq!(
            s.shares(Duration::from_secs(300), Instant::now()).requests,
            101
        );
    }
}
