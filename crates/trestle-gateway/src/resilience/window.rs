//! A sliding window of counters in fixed time buckets: what happened in the last `span`.
//! Used by breakers and capability levels (attempts, bad attempts) and by rate limits
//! (tokens, requests). Time is tokio's, so tests can pause it.

use std::time::Duration;

use tokio::time::Instant;

/// Two counters summed over the last `span`, kept in `buckets` slots.
#[derive(Debug)]
pub struct Window {
    origin: Instant,
    bucket: Duration,
    /// (bucket number, counters); a slot whose number is stale counts as empty.
    slots: Vec<(u64, [u64; 2])>,
}

impl Window {
    pub fn new(span: Duration, buckets: usize, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let bucket = (span / buckets as u32).max(Duration::from_millis(1));
        Window {
            origin: now,
            bucket,
            slots: vec![(u64::MAX, [0, 0]); buckets],
        }
    }

    /// The bucket number `now` falls in.
    pub fn bucket_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.bucket.as_nanos()) as u64
    }

    fn live(&self, number: u64, current: u64) -> bool {
        number != u64::MAX && number <= current && current - number < self.slots.len() as u64
    }

    /// Adds to the current bucket; returns its number (to take the amounts back later).
    pub fn add(&mut self, now: Instant, a: u64, b: u64) -> u64 {
        let n = self.bucket_of(now);
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(n % len) as usize];
        if slot.0 != n {
            *slot = (n, [0, 0]);
        }
        slot.1[0] += a;
        slot.1[1] += b;
        n
    }

    /// Takes amounts back from bucket `number`, if it is still in the window.
    pub fn sub(&mut self, now: Instant, number: u64, a: u64, b: u64) {
        let current = self.bucket_of(now);
        if !self.live(number, current) {
            return;
        }
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(number % len) as usize];
        if slot.0 == number {
            slot.1[0] = slot.1[0].saturating_sub(a);
            slot.1[1] = slot.1[1].saturating_sub(b);
        }
    }

    /// Both counters over the window ending at `now`.
    pub fn sum(&self, now: Instant) -> [u64; 2] {
        let current = self.bucket_of(now);
        self.slots
            .iter()
            .filter(|(n, _)| self.live(*n, current))
            .fold([0, 0], |acc, (_, c)| [acc[0] + c[0], acc[1] + c[1]])
    }

    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = (u64::MAX, [0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_buckets_fall_out() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), 10, start);
        w.add(start, 3, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        let b = w.add(Instant::now(), 2, 2);
        assert_eq!(w.sum(Instant::now()), [5, 3]);
        w.sub(Instant::now(), b, 1, 1);
        assert_eq!(w.sum(Instant::now()), [4, 2]);
        tokio::time::advance(Duration::from_millis(5_500)).await;
        assert_eq!(w.sum(Instant::now()), [1, 1]);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.sum(Instant::now()), [0, 0]);
        // A stale bucket is never taken from.
        w.sub(Instant::now(), b, 9, 9);
        w.add(Instant::now(), 1, 0);
        assert_eq!(w.sum(Instant::now()), [1, 0]);
    }
}
