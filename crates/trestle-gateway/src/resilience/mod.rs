//! Resilience (DESIGN.md §2): separate pieces, each tested alone, that the inference stage
//! composes — a sliding [`window`], per-target [`breaker`] and [`health`] (capacity,
//! 429 throttle and pause, latency), the adaptive [`throttle`], per-route [`capability`] levels, and the fallback levels below
//! `model`: the exact cache (`cache`, in [`crate::cache`]) and [`fallback`] (`template`,
//! `omitted`).
//!
//! Health lives in a [`Registry`] that outlives config reloads, so a reload never resets a
//! breaker that is open or a level that is lowered. With `[state] kind = "redis"` a target's
//! minute and 429 pause are shared by every instance ([`shared`]).

pub mod breaker;
pub mod capability;
pub mod fallback;
pub mod health;
pub mod served;
pub mod shared;
pub mod throttle;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use trestle_core::config::ModelConfig;

use crate::cache::Caches;
use crate::limiter::link::Link;
use capability::RouteHealth;
use health::TargetHealth;
use shared::SharedTargets;
use trestle_core::config::CacheConfig;

/// Health state by target and route name, shared by every runtime built from a config.
pub struct Registry {
    /// By target name: the health and the fingerprint of the provider settings it was
    /// measured against.
    targets: Mutex<HashMap<String, (u64, Arc<TargetHealth>)>>,
    routes: Mutex<HashMap<String, Arc<RouteHealth>>>,
    /// What served each route's requests lately (`GET /v1/stats`).
    served: Mutex<HashMap<String, Arc<served::Served>>>,
    /// The response and tool caches (the `cache` fallback level reads the exact one).
    pub caches: Caches,
    /// The targets' shared minute and pauses (`[state] kind = "redis"`).
    shared: Option<Arc<SharedTargets>>,
}

impl Registry {
    /// Health and caches in this process only.
    pub fn new(cache: &CacheConfig) -> Self {
        Registry::with_link(cache, None)
    }

    /// Health and caches that share the targets' minute and pauses, and the exact and tool
    /// caches, through `link` (the gateway's Redis) when there is one.
    pub fn with_link(cache: &CacheConfig, link: Option<Arc<Link>>) -> Self {
        Registry {
            targets: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            caches: Caches::with_link(cache, link.clone()),
            shared: link.map(|l| Arc::new(SharedTargets::new(l))),
        }
    }

    fn new_target(&self, name: &str, cfg: &ModelConfig, now: Instant) -> Arc<TargetHealth> {
        Arc::new(TargetHealth::new(name, cfg, now).with_shared(self.shared.clone()))
    }

    /// The target's health, made on first use; its limits follow `cfg`. `provider` is a
    /// fingerprint of the provider's settings: when a reload points the provider elsewhere
    /// (another `base_url`, key or headers), the target's health starts afresh.
    pub fn target(&self, name: &str, cfg: &ModelConfig, provider: u64) -> Arc<TargetHealth> {
        let now = Instant::now();
        let Ok(mut map) = self.targets.lock() else {
            return self.new_target(name, cfg, now);
        };
        match map.get(name) {
            Some((fingerprint, h)) if *fingerprint == provider => {
                h.reconfigure(cfg, now);
                h.clone()
            }
            _ => {
                let h = self.new_target(name, cfg, now);
                map.insert(name.to_string(), (provider, h.clone()));
                h
            }
        }
    }

    pub fn route(&self, name: &str) -> Arc<RouteHealth> {
        let Ok(mut map) = self.routes.lock() else {
            return Arc::new(RouteHealth::new(name, Instant::now()));
        };
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteHealth::new(name, Instant::now())))
            .clone()
    }

    /// The served-share counters of a route, made on first use.
    pub fn served(&self, route: &str) -> Arc<served::Served> {
        let Ok(mut map) = self.served.lock() else {
            return Arc::new(served::Served::new(Instant::now()));
        };
        map.entry(route.to_string())
            .or_insert_with(|| Arc::new(served::Served::new(Instant::now())))
            .clone()
    }

    /// Every route's shares over `window`, by route name.
    pub fn served_shares(
        &self,
        window: std::time::Duration,
    ) -> std::collections::BTreeMap<String, served::Shares> {
        let now = Instant::now();
        self.served
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(name, s)| (name.clone(), s.shares(window, now)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
