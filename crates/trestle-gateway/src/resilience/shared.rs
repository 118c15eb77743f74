//! A target's minute (`requests_per_minute`, `tokens_per_minute`) and its 429 pause, shared
//! by every instance in one Redis (`[state] kind = "redis"`).
//!
//! An attempt asks [`SharedTargets::admit`]: one script that refuses while the target is
//! paused (`<prefix>target:<name>:pause`, its PTTL the time left), then checks the minute
//! (`<prefix>target:<name>:win`, a hash of 5-second buckets `r:<n>` requests and `t:<n>`
//! tokens, on Redis's clock, expiring a minute after its last write) and counts the attempt
//! with its token estimate, atomically. A pause one instance takes after a 429 is written
//! with [`SharedTargets::pause`] (only ever lengthened), and the settlement of the estimate
//! to the reported usage with [`SharedTargets::settle`]; both are spawned, off the request
//! path. `None` from `admit` means Redis did not answer within `[state] timeout_ms`: the
//! caller decides on its own minute with the limits divided by `[state] instances`.
//!
//! `max_concurrency`, the breaker and the adaptive throttle stay each instance's own.

use std::sync::Arc;
use std::time::Duration;

use crate::limiter::link::Link;

/// KEYS: window, pause. ARGV: rpm (-1 for none), tpm (-1), the attempt's token estimate.
/// Returns {0, bucket} when admitted (bucket -1: nothing counted, the target has no
/// minute limits), {1, ms left} while paused, {2, requests} over rpm, {3, tokens} over tpm.
const ADMIT: &str = r"
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {1, left} end
local rpm, tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm < 0 and tpm < 0 then return {0, -1} end
local t = redis.call('TIME')
local bucket = math.floor(tonumber(t[1]) / 5)
local oldest = bucket - 11
local fields = redis.call('HGETALL', KEYS[1])
local requests, tokens = 0, 0
for i = 1, #fields, 2 do
  local n = tonumber(string.sub(fields[i], 3))
  if n == nil or n < oldest then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif string.sub(fields[i], 1, 1) == 'r' then
    requests = requests + tonumber(fields[i + 1])
  else
    tokens = tokens + tonumber(fields[i + 1])
  end
end
if rpm >= 0 and requests + 1 > rpm then return {2, requests} end
if tpm >= 0 and tokens > 0 and tokens + want > tpm then return {3, tokens} end
redis.call('HINCRBY', KEYS[1], 'r:' .. bucket, 1)
if want > 0 then redis.call('HINCRBY', KEYS[1], 't:' .. bucket, want) end
redis.call('EXPIRE', KEYS[1], 61)
return {0, bucket}
";

/// KEYS: window. ARGV: the admitted bucket, tokens to add now (usage over the estimate),
/// tokens and requests to give back to the admitted bucket (usage under the estimate; an
/// attempt that never went out). A bucket already gone is not given back to.
const SETTLE: &str = r"
local add, back, requests = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if add > 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[1], 't:' .. math.floor(tonumber(t[1]) / 5), add)
  redis.call('EXPIRE', KEYS[1], 61)
end
if back > 0 and redis.call('HEXISTS', KEYS[1], 't:' .. ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[1], -back)
end
if requests > 0 and redis.call('HEXISTS', KEYS[1], 'r:' .. ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'r:' .. ARGV[1], -requests)
end
return 0
";

/// KEYS: pause. ARGV: ms. A pause is only ever lengthened.
const PAUSE: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

/// What Redis said about one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Counted in this 5-second bucket (`None`: the target has no minute limits).
    Admitted {
        bucket: Option<i64>,
    },
    /// Paused by an instance, for this long still.
    Paused(Duration),
    OverRequests,
    OverTokens,
}

/// The targets' shared minute and pauses, on a gateway's link.
pub struct SharedTargets {
    link: Arc<Link>,
    admit: redis::Script,
    settle: redis::Script,
    pause: redis::Script,
}

impl std::fmt::Debug for SharedTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTargets")
            .field("prefix", &self.link.prefix)
            .field("up", &self.up())
            .finish()
    }
}

impl SharedTargets {
    pub fn new(link: Arc<Link>) -> Self {
        SharedTargets {
            link,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            pause: redis::Script::new(PAUSE),
        }
    }

    /// The instances sharing the limits: each one's share while Redis does not answer.
    pub fn instances(&self) -> u32 {
        self.link.instances
    }

    /// Whether Redis answers (else the caller decides locally at once).
    pub fn up(&self) -> bool {
        self.link.healthy()
    }

    fn key(&self, target: &str, what: &str) -> String {
        format!("{}target:{target}:{what}", self.link.prefix)
    }

    /// Asks for one attempt of about `tokens` tokens, counting it when admitted. `None`
    /// when Redis did not answer.
    pub async fn admit(
        &self,
        target: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Option<Verdict> {
        let limit = |l: Option<u64>| l.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(self.key(target, "win"))
            .key(self.key(target, "pause"))
            .arg(limit(rpm))
            .arg(limit(tpm))
            .arg(tokens);
        let (code, value): (i64, i64) = self
            .link
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Some(match code {
            0 => Verdict::Admitted {
                bucket: (value >= 0).then_some(value),
            },
            1 => Verdict::Paused(Duration::from_millis(value.max(1).unsigned_abs())),
            2 => Verdict::OverRequests,
            _ => Verdict::OverTokens,
        })
    }

    /// Settles an admitted attempt (spawned): `add` tokens over its estimate, or `back`
    /// tokens under it, and `requests` given back when it never went out.
    pub fn settle(self: &Arc<Self>, target: &str, bucket: i64, add: u64, back: u64, requests: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.up() || (add, back, requests) == (0, 0, 0) {
            return;
        }
        let (this, key) = (self.clone(), self.key(target, "win"));
        rt.spawn(async move {
            let mut invocation = this.settle.prepare_invoke();
            invocation
                .key(key)
                .arg(bucket)
                .arg(add)
                .arg(back)
                .arg(requests);
            this.link
                .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
                .await;
        });
    }

    /// Pauses the target for every instance (spawned), unless it is paused longer already.
    pub fn pause(self: &Arc<Self>, target: &str, pause: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.up() {
            return;
        }
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(1);
        let (this, key) = (self.clone(), self.key(target, "pause"));
        rt.spawn(async move {
            let mut invocation = this.pause.prepare_invoke();
            invocation.key(key).arg(ms);
            this.link
                .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    //! One suite on both backends (a target's own minute and pause, and the same through a
    //! real `redis-server`), then what only Redis does: two instances sharing one minute and
    //! one pause, and each instance's share while Redis is down. Real time throughout: a
    //! paused clock would fire the Redis timeout while the reply is on the wire.

    use std::future::Future;
    use std::time::Instant as StdInstant;

    use tokio::time::Instant;
    use trestle_core::config::{ModelConfig, StateConfig};

    use super::*;
    use crate::limiter::testing::{self, RedisServer};
    use crate::resilience::health::{Skip, TargetHealth};

    fn target(cfg: ModelConfig, shared: Option<Arc<SharedTargets>>) -> Arc<TargetHealth> {
        Arc::new(TargetHealth::new("up/m1", &cfg, Instant::now()).with_shared(shared))
    }

    fn limits(rpm: Option<u64>, tpm: Option<u64>) -> ModelConfig {
        ModelConfig {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            ..Default::default()
        }
    }

    /// One instance of the target: `None` is memory, else one more link to `state`'s Redis.
    async fn instance(state: Option<&StateConfig>, cfg: ModelConfig) -> Arc<TargetHealth> {
        let shared = match state {
            Some(s) => Some(Arc::new(SharedTargets::new(testing::link(s).await))),
            None => None,
        };
        target(cfg, shared)
    }

    /// Sends one attempt: admitted, reported as gone out, released.
    async fn send(h: &Arc<TargetHealth>, tokens: u64) -> Result<(), Skip> {
        let mut a = h.admit_shared(tokens, Instant::now()).await?;
        a.report(false, Duration::from_millis(5), Instant::now());
        Ok(())
    }

    /// Retries `f` for up to 5 s until it gives `Some` (a spawned write has to land).
    async fn eventually<T, Fut: Future<Output = Option<T>>>(mut f: impl FnMut() -> Fut) -> T {
        let deadline = StdInstant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(StdInstant::now() < deadline, "never happened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The suite.

    async fn requests_per_minute_hold(state: Option<&StateConfig>) {
        let h = instance(state, limits(Some(2), None)).await;
        send(&h, 1).await.unwrap();
        // An attempt that never went out gives its place back.
        drop(h.admit_shared(1, Instant::now()).await.unwrap());
        eventually(|| async { send(&h, 1).await.ok() }).await;
        assert_eq!(send(&h, 1).await, Err(Skip::OverRequests { limit: 2 }));
    }

    async fn tokens_settle_to_the_reported_usage(state: Option<&StateConfig>) {
        let h = instance(state, limits(None, Some(1_000))).await;
        let mut a = h.admit_shared(600, Instant::now()).await.unwrap();
        assert_eq!(
            h.admit_shared(600, Instant::now()).await.unwrap_err(),
            Skip::OverTokens { limit: 1_000 }
        );
        a.report(false, Duration::from_millis(5), Instant::now());
        a.settle_tokens(100, Instant::now());
        drop(a);
        let _b = eventually(|| async { h.admit_shared(600, Instant::now()).await.ok() }).await;
    }

    async fn a_long_retry_after_pauses(state: Option<&StateConfig>) {
        let h = instance(state, ModelConfig::default()).await;
        send(&h, 1).await.unwrap();
        assert!(h.rate_limited(Some(Duration::from_secs(8)), Instant::now()));
        assert!(matches!(
            send(&h, 1).await,
            Err(Skip::CoolingDown { remaining }) if remaining > Duration::from_secs(7)
        ));
    }

    async fn suite(state: Option<&StateConfig>) {
        requests_per_minute_hold(state).await;
        tokens_settle_to_the_reported_usage(state).await;
        a_long_retry_after_pauses(state).await;
    }

    #[tokio::test]
    async fn memory_backend() {
        suite(None).await;
    }

    #[tokio::test]
    async fn redis_backend() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        suite(Some(&testing::state(&server.url(), 1))).await;
    }

    // Redis only.

    #[tokio::test]
    async fn instances_share_one_minute_and_one_pause() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let state = testing::state(&server.url(), 2);
        let a = instance(Some(&state), limits(Some(4), None)).await;
        let b = instance(Some(&state), limits(Some(4), None)).await;
        for _ in 0..2 {
            send(&a, 1).await.unwrap();
            send(&b, 1).await.unwrap();
        }
        assert_eq!(send(&a, 1).await, Err(Skip::OverRequests { limit: 4 }));
        assert_eq!(send(&b, 1).await, Err(Skip::OverRequests { limit: 4 }));

        // A 429 with a long Retry-After on one instance pauses the target on the other.
        let a = instance(Some(&state), ModelConfig::default()).await;
        let b = instance(Some(&state), ModelConfig::default()).await;
        send(&b, 1).await.unwrap();
        assert!(a.rate_limited(Some(Duration::from_secs(30)), Instant::now()));
        let remaining = eventually(|| async {
            match send(&b, 1).await {
                Err(Skip::CoolingDown { remaining }) => Some(remaining),
                _ => None,
            }
        })
        .await;
        assert!(remaining > Duration::from_secs(25), "{remaining:?}");
        // B knows it now: it skips without asking, also once Redis is gone.
        drop(server);
        assert!(matches!(send(&b, 1).await, Err(Skip::CoolingDown { .. })));
    }

    #[tokio::test]
    async fn redis_down_leaves_each_instance_its_share() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let state = testing::state(&server.url(), 2);
        let h = instance(Some(&state), limits(Some(4), None)).await;
        send(&h, 1).await.unwrap();
        server.stop();
        // On this instance's share (4 / 2), which the attempt sent through Redis already
        // counts toward.
        assert_eq!(send(&h, 1).await, Ok(()));
        assert_eq!(send(&h, 1).await, Err(Skip::OverRequests { limit: 2 }));
        // Pauses are this instance's own meanwhile.
        assert!(h.rate_limited(Some(Duration::from_secs(8)), Instant::now()));
        assert!(matches!(send(&h, 1).await, Err(Skip::CoolingDown { .. })));
    }
}
