//! Per-key limit decisions: requests and tokens a minute, and the budget of the period
//! (docs/configuration.md, "Shared state").
//!
//! A [`Limiter`] decides whether a key may make one more request (and counts it), and
//! settles what a finished request cost. Two backends implement it: [`memory::Memory`]
//! (each instance counts alone) and [`redis::RedisLimiter`] (every instance counts in one
//! Redis, one script per decision, falling back to the memory limits divided by
//! `[state] instances` while Redis does not answer). [`link::Link`] is the gateway's one
//! connection to that Redis, which per-target limits and pauses and the caches use too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use trestle_core::config::StateConfig;

use crate::keys::{KeyRecord, Usage};

pub mod link;
pub mod memory;
pub mod redis;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

/// Why a key may not make a request now.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The period's budget is spent (`spent_usd` of `limit_usd`), or what is left of it is
    /// less than the request's estimated cost (`estimate_usd`, zero when not estimated).
    Budget {
        spent_usd: f64,
        limit_usd: f64,
        estimate_usd: f64,
    },
    /// `limit` requests in the last minute.
    Requests { limit: u64 },
    /// `limit` tokens in the last minute.
    Tokens { limit: u64 },
}

/// Seconds until a minute limit has room again (the window moves in 5 s buckets).
pub const RETRY_AFTER_S: u64 = 5;

pub type Decision<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;
pub type Settled<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where per-key limits are decided.
pub trait Limiter: Send + Sync {
    /// Whether `key` may make one more request now; if so, the request is counted.
    /// `usage` is the key's state in this process (the memory backend's counters, the Redis
    /// backend's fallback and seed).
    fn admit<'a>(&'a self, key: &'a KeyRecord, usage: &'a Usage) -> Decision<'a>;

    /// Reserves a request's estimated cost on `key`'s budget before the call: refused when
    /// the period's spend and the estimate would pass the budget. Only for a key with one.
    fn reserve<'a>(
        &'a self,
        key: &'a KeyRecord,
        usage: &'a Usage,
        estimate_usd: f64,
    ) -> Decision<'a>;

    /// Adds a finished request's cost (less the `reserved_usd` its [`Limiter::reserve`]
    /// added) and tokens.
    fn settle<'a>(
        &'a self,
        key: &'a KeyRecord,
        usage: &'a Usage,
        cost_usd: f64,
        reserved_usd: f64,
        tokens: u64,
    ) -> Settled<'a>;

    /// What `GET /ready` says about the backend.
    fn status(&self) -> Status;
}

/// The backend's health, for `GET /ready`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub kind: &'static str,
    pub healthy: bool,
    /// Since when (Unix ms) the backend has been in this health.
    pub since_ms: i64,
}

/// The limiter `[state]` asks for. A Redis that does not answer at start is not an error:
/// decisions fall back to local limits until it does.
pub fn from_config(config: &StateConfig) -> anyhow::Result<Arc<dyn Limiter>> {
    Ok(on(link::Link::from_config(config)?))
}

/// The limiter on a gateway's link to the shared state (memory without one).
pub fn on(link: Option<Arc<link::Link>>) -> Arc<dyn Limiter> {
    match link {
        Some(link) => redis::RedisLimiter::on(link),
        None => Arc::new(memory::Memory::new(1)),
    }
}
