//! Limits every instance shares in one Redis.
//!
//! A decision is one script (EVALSHA, EVAL when Redis does not know it yet) that checks the
//! budget, then the minute's requests and tokens, and counts the request, atomically. The
//! minute is a hash of 5-second buckets (`r:<n>` requests, `t:<n>` tokens) that expires a
//! minute after its last write; the spend of a period is integer micro-USD in its own key,
//! kept a day past the period's end. Redis's clock decides the buckets, so instances with
//! skewed clocks still share one window.
//!
//! A decision waits at most `[state] timeout_ms` (the [`Link`]). On a timeout or an error the
//! instance falls back to [`Memory`] with the limits divided by `[state] instances` (its
//! share), counting `trestle_state_fallback_total{use="keys"}` for each decision made so,
//! until the link's probe gets an answer again. This process's [`Usage`] counts every
//! request either way, so a fallback starts from what this instance served.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use trestle_core::config::StateConfig;

use super::link::{self, Link};
use super::memory::Memory;
use super::{Decision, Limiter, Refusal, Settled, Status};
use crate::keys::{KeyRecord, Usage};

/// KEYS: spend, window. ARGV: budget (micro-USD, -1 for none), seed spend (micro-USD, used
/// when the period's key is new), spend key lifetime (s), rpm (-1 for none), tpm (-1).
/// Returns {0, requests} when admitted, {1, spent} for the budget, {2, requests} for rpm,
/// {3, tokens} for tpm.
const ADMIT: &str = r"
local t = redis.call('TIME')
local bucket = math.floor(tonumber(t[1]) / 5)
local budget = tonumber(ARGV[1])
if budget >= 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget then return {1, spent} end
end
local oldest = bucket - 11
local fields = redis.call('HGETALL', KEYS[2])
local requests, tokens = 0, 0
for i = 1, #fields, 2 do
  local n = tonumber(string.sub(fields[i], 3))
  if n == nil or n < oldest then
    redis.call('HDEL', KEYS[2], fields[i])
  elseif string.sub(fields[i], 1, 1) == 'r' then
    requests = requests + tonumber(fields[i + 1])
  else
    tokens = tokens + tonumber(fields[i + 1])
  end
end
local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
if rpm >= 0 and requests >= rpm then return {2, requests} end
if tpm >= 0 and tokens >= tpm then return {3, tokens} end
redis.call('HINCRBY', KEYS[2], 'r:' .. bucket, 1)
redis.call('EXPIRE', KEYS[2], 61)
return {0, requests + 1}
";

/// KEYS: spend. ARGV: budget (micro-USD), seed spend, spend key lifetime (s), estimate
/// (micro-USD). Returns {0, spent} with the estimate added, {1, spent} when the budget is
/// spent or the estimate would pass it.
const RESERVE: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
local spent = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), 0)
local budget = tonumber(ARGV[1])
if spent >= budget or spent + tonumber(ARGV[4]) > budget then return {1, spent} end
return {0, redis.call('INCRBY', KEYS[1], ARGV[4])}
";

/// KEYS: spend, window. ARGV: cost less the reservation (micro-USD, may be negative),
/// tokens, spend key lifetime (s), seed spend (micro-USD, -1 when the key has no budget).
const SETTLE: &str = r"
if tonumber(ARGV[4]) >= 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3])
  local spent = redis.call('INCRBY', KEYS[1], ARGV[1])
  if spent < 0 then redis.call('INCRBY', KEYS[1], -spent) end
end
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[2], 't:' .. math.floor(tonumber(t[1]) / 5), ARGV[2])
  redis.call('EXPIRE', KEYS[2], 61)
end
return 0
";

pub struct RedisLimiter {
    link: Arc<Link>,
    admit: redis::Script,
    reserve: redis::Script,
    settle: redis::Script,
    /// Decisions while Redis does not answer.
    fallback: Memory,
}

impl RedisLimiter {
    /// A limiter on its own link to the Redis at `url`, connecting in the background
    /// (decisions fall back until it answers). Needs a tokio runtime.
    pub fn start(url: &str, config: &StateConfig) -> anyhow::Result<Arc<dyn Limiter>> {
        Ok(RedisLimiter::on(Link::start(url, config)?))
    }

    /// A limiter on a gateway's link.
    pub fn on(link: Arc<Link>) -> Arc<dyn Limiter> {
        Arc::new(RedisLimiter {
            admit: redis::Script::new(ADMIT),
            reserve: redis::Script::new(RESERVE),
            settle: redis::Script::new(SETTLE),
            fallback: Memory::new(link.instances),
            link,
        })
    }

    fn keys(&self, key: &KeyRecord, now_ms: i64) -> (String, String, i64) {
        let (start, end) = key.budget.map_or((0, now_ms), |b| b.period.bounds(now_ms));
        let prefix = &self.link.prefix;
        let spend = format!("{prefix}spend:{}:{start}", key.id);
        let window = format!("{prefix}win:{}", key.id);
        // Kept a day past the period's end.
        let ttl_s = ((end - now_ms) / 1000).max(1) + 86_400;
        (spend, window, ttl_s)
    }

    async fn decide(
        &self,
        conn: &mut MultiplexedConnection,
        key: &KeyRecord,
        usage: &Usage,
    ) -> redis::RedisResult<Result<(), Refusal>> {
        let now = crate::store::now_ms();
        let (spend, window, ttl_s) = self.keys(key, now);
        let (budget, seed) = match key.budget {
            Some(b) => (micro(b.usd), micro(usage.spent_usd(&b, now))),
            None => (-1, 0),
        };
        let limit = |l: Option<u64>| l.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let (code, value): (i64, i64) = self
            .admit
            .key(spend)
            .key(window)
            .arg(budget)
            .arg(seed)
            .arg(ttl_s)
            .arg(limit(key.rpm))
            .arg(limit(key.tpm))
            .invoke_async(conn)
            .await?;
        Ok(match code {
            0 => Ok(()),
            1 => Err(Refusal::Budget {
                spent_usd: value as f64 / 1e6,
                limit_usd: key.budget.map_or(0.0, |b| b.usd),
                estimate_usd: 0.0,
            }),
            2 => Err(Refusal::Requests {
                limit: key.rpm.unwrap_or(0),
            }),
            _ => Err(Refusal::Tokens {
                limit: key.tpm.unwrap_or(0),
            }),
        })
    }

    async fn hold(
        &self,
        conn: &mut MultiplexedConnection,
        key: &KeyRecord,
        usage: &Usage,
        estimate_usd: f64,
    ) -> redis::RedisResult<Result<(), Refusal>> {
        let Some(budget) = key.budget else {
            return Ok(Ok(()));
        };
        let now = crate::store::now_ms();
        let (spend, _, ttl_s) = self.keys(key, now);
        let (code, spent): (i64, i64) = self
            .reserve
            .key(spend)
            .arg(micro(budget.usd))
            .arg(micro(usage.spent_usd(&budget, now)))
            .arg(ttl_s)
            .arg(micro(estimate_usd))
            .invoke_async(conn)
            .await?;
        Ok(match code {
            0 => Ok(()),
            _ => Err(Refusal::Budget {
                spent_usd: spent as f64 / 1e6,
                limit_usd: budget.usd,
                estimate_usd,
            }),
        })
    }

    async fn add(
        &self,
        conn: &mut MultiplexedConnection,
        key: &KeyRecord,
        usage: &Usage,
        delta_micro: i64,
        tokens: u64,
    ) -> redis::RedisResult<()> {
        let now = crate::store::now_ms();
        let (spend, window, ttl_s) = self.keys(key, now);
        // The seed is what this process knew before this request's settlement.
        let seed = key.budget.map_or(-1, |b| {
            (micro(usage.spent_usd(&b, now)) - delta_micro).max(0)
        });
        self.settle
            .key(spend)
            .key(window)
            .arg(delta_micro)
            .arg(tokens)
            .arg(ttl_s)
            .arg(seed)
            .invoke_async::<i64>(conn)
            .await
            .map(drop)
    }
}

impl Limiter for RedisLimiter {
    fn admit<'a>(&'a self, key: &'a KeyRecord, usage: &'a Usage) -> Decision<'a> {
        Box::pin(async move {
            let decided = self
                .link
                .run(|mut conn| async move { self.decide(&mut conn, key, usage).await })
                .await;
            match decided {
                Some(decision) => {
                    if decision.is_ok() {
                        // Counted here too, for a fallback to start from.
                        usage.count_request();
                    }
                    decision
                }
                None => {
                    link::fell_back("keys");
                    self.fallback.decide(key, usage)
                }
            }
        })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a KeyRecord,
        usage: &'a Usage,
        estimate_usd: f64,
    ) -> Decision<'a> {
        Box::pin(async move {
            let decided = self
                .link
                .run(|mut conn| async move { self.hold(&mut conn, key, usage, estimate_usd).await })
                .await;
            match decided {
                Some(decision) => {
                    if decision.is_ok() {
                        // Mirrored here, for a fallback to start from.
                        usage.settle_reserved(estimate_usd, 0.0, 0);
                    }
                    decision
                }
                None => {
                    link::fell_back("keys");
                    self.fallback.hold(key, usage, estimate_usd)
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        key: &'a KeyRecord,
        usage: &'a Usage,
        cost_usd: f64,
        reserved_usd: f64,
        tokens: u64,
    ) -> Settled<'a> {
        usage.settle_reserved(cost_usd, reserved_usd, tokens);
        let delta_micro = micro(cost_usd) - micro(reserved_usd);
        Box::pin(async move {
            let add = |mut conn: MultiplexedConnection| async move {
                self.add(&mut conn, key, usage, delta_micro, tokens).await
            };
            self.link.run(add).await;
        })
    }

    fn status(&self) -> Status {
        self.link.status()
    }
}

fn micro(usd: f64) -> i64 {
    (usd.max(0.0) * 1e6).round() as i64
}
