//! Resilience settings: per-target breakers and capacity, per-route balancing, hedging, the
//! fallback hierarchy and capability levels (DESIGN.md §2). Plain data; the gateway's
//! `resilience` module runs them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A target's circuit breaker. It opens on `consecutive_failures` in a row, or when the
/// share of failed (or slower than `slow_ms`) attempts in the last `window_ms` reaches
/// `error_rate` over at least `min_requests`; it stays open `open_ms`, then lets
/// `half_open_probes` attempts through: all good closes it, one bad opens it again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub error_rate: f64,
    pub min_requests: u32,
    pub window_ms: u64,
    /// An attempt slower than this counts as a failure (none: only errors count).
    pub slow_ms: Option<u64>,
    pub open_ms: u64,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 10,
            error_rate: 0.5,
            min_requests: 20,
            window_ms: 10_000,
            slow_ms: None,
            open_ms: 5_000,
            half_open_probes: 1,
        }
    }
}

/// How the first target of a request is chosen among the route's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In the listed order: the first available target serves.
    #[default]
    Priority,
    /// At random in proportion to each target's `weight`; the rest follow in order.
    Weighted,
    /// The target with the lowest latency estimate (EWMA × requests in flight) first.
    LeastLatency,
}

/// The levels below `model` in the fallback hierarchy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Serve the last good answer to the same normalized request when every target failed.
    pub cache: bool,
    /// Oldest answer the `cache` level may serve (stale answers are marked as such).
    pub cache_max_age_s: u64,
    /// Let the `cache` level serve a semantic neighbour's answer (the route needs
    /// `cache.semantic`), above `cache_semantic_threshold` and only when the guard agrees.
    pub cache_semantic: bool,
    /// The similarity a semantic neighbour needs at the `cache` level: at least the route's
    /// `cache.semantic.threshold`.
    pub cache_semantic_threshold: f32,
    /// A prewritten answer (minijinja; variables: `route`, `model`, `last_user_message`,
    /// `user_id`, `conversation_id`, `metadata`, `error`).
    pub template: Option<String>,
    /// End with a structured `feature_unavailable` error instead of the upstream error.
    pub omitted: bool,
    /// HTTP status of the `omitted` answer.
    pub omitted_status: u16,
    /// Message of the `omitted` answer.
    pub omitted_message: Option<String>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            cache: true,
            cache_max_age_s: 86_400,
            cache_semantic: false,
            cache_semantic_threshold: 0.95,
            template: None,
            omitted: false,
            omitted_status: 503,
            omitted_message: None,
        }
    }
}

/// What a capability level does instead of the full behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Targets used at this level (e.g. a faster model).
    pub targets: Option<Vec<Spanned<String>>>,
    /// A lower output cap.
    pub max_tokens: Option<u32>,
    /// Fewer retries.
    pub retries: Option<u32>,
    /// Turn hedging on or off.
    pub hedge: Option<bool>,
    /// `normal` (call the targets), `fallback` (serve cache or template only), `omitted`.
    pub serve: Option<ServeMode>,
}

impl LevelConfig {
    pub fn serve(&self) -> ServeMode {
        self.serve.unwrap_or_default()
    }

    /// This level's settings over `above`'s.
    fn over(&self, above: LevelConfig) -> LevelConfig {
        LevelConfig {
            targets: self.targets.clone().or(above.targets),
            max_tokens: self.max_tokens.or(above.max_tokens),
            retries: self.retries.or(above.retries),
            hedge: self.hedge.or(above.hedge),
            serve: self.serve.or(above.serve),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServeMode {
    #[default]
    Normal,
    Fallback,
    Omitted,
}

/// Capability levels 5 (full) … 1 (off), moved by live health with hysteresis. The health
/// signal is the share of the route's upstream attempts in the last `window_ms` that failed
/// or were slower than the class budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilityConfig {
    pub window_ms: u64,
    /// Fewer attempts than this in the window say nothing about health.
    pub min_requests: u32,
    /// Step down one level when the bad share reaches this.
    pub degrade_at: f64,
    /// Count as healthy while the bad share is at most this.
    pub recover_at: f64,
    /// Least time between two steps down.
    pub step_ms: u64,
    /// Healthy for this long before one step up.
    pub recover_ms: u64,
    /// The lowest level health may push the route to.
    pub min_level: u8,
    /// Behaviour per level, keyed "4" … "1". A level keeps what the levels above it set and
    /// changes what it sets itself; `serve` defaults to `"fallback"` at 2 and `"omitted"` at 1.
    pub levels: BTreeMap<String, LevelConfig>,
}

impl Default for CapabilityConfig {
    fn default() -> Self {
        CapabilityConfig {
            window_ms: 30_000,
            min_requests: 10,
            degrade_at: 0.5,
            recover_at: 0.2,
            step_ms: 10_000,
            recover_ms: 30_000,
            min_level: 1,
            levels: BTreeMap::new(),
        }
    }
}

impl CapabilityConfig {
    /// The behaviour of `level` (1..=4; 5 is the route itself): the levels from 4 down to
    /// it, each over the one above.
    pub fn behaviour(&self, level: u8) -> LevelConfig {
        let mut out = LevelConfig::default();
        for l in (level..=4).rev() {
            let default = LevelConfig {
                serve: match l {
                    1 => Some(ServeMode::Omitted),
                    2 => Some(ServeMode::Fallback),
                    _ => None,
                },
                ..LevelConfig::default()
            };
            let own = self.levels.get(&l.to_string()).unwrap_or(&default);
            let own = LevelConfig {
                serve: own.serve.or(default.serve),
                ..own.clone()
            };
            out = own.over(out);
        }
        out
    }

    /// Problems with the settings, as (key suffix, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in self.levels.keys() {
            if !matches!(key.as_str(), "1" | "2" | "3" | "4") {
                out.push((
                    format!("capability.levels.{key}"),
                    "levels are \"4\", \"3\", \"2\" and \"1\" (5 is the route itself)".into(),
                ));
            }
        }
        let rate = |v: f64| (0.0..=1.0).contains(&v);
        if !rate(self.degrade_at) || !rate(self.recover_at) || self.recover_at >= self.degrade_at {
            out.push((
                "capability".into(),
                "need 0 <= recover_at < degrade_at <= 1 (shares of bad attempts)".into(),
            ));
        }
        if !(1..=5).contains(&self.min_level) {
            out.push(("capability.min_level".into(), "must be 1 to 5".into()));
        }
        if self.window_ms == 0 {
            out.push(("capability.window_ms".into(), "must be above 0".into()));
        }
        out
    }
}

impl BreakerConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.error_rate) || self.error_rate == 0.0 {
            out.push((
                "breaker.error_rate".into(),
                "must be above 0 and at most 1".into(),
            ));
        }
        if self.consecutive_failures == 0 {
            out.push((
                "breaker.consecutive_failures".into(),
                "must be at least 1".into(),
            ));
        }
        if self.half_open_probes == 0 {
            out.push((
                "breaker.half_open_probes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.window_ms == 0 {
            out.push(("breaker.window_ms".into(), "must be above 0".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_inherit_from_above_with_defaults_at_two_and_one() {
        let mut c = CapabilityConfig::default();
        assert_eq!(c.behaviour(4).serve(), ServeMode::Normal);
        assert_eq!(c.behaviour(2).serve(), ServeMode::Fallback);
        assert_eq!(c.behaviour(1).serve(), ServeMode::Omitted);
        c.levels.insert(
            "4".into(),
            LevelConfig {
                max_tokens: Some(50),
                retries: Some(1),
                ..Default::default()
            },
        );
        c.levels.insert(
            "3".into(),
            LevelConfig {
                retries: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(c.behaviour(3).max_tokens, Some(50), "kept from level 4");
        assert_eq!(c.behaviour(3).retries, Some(0), "its own");
        assert_eq!(c.behaviour(2).max_tokens, Some(50));
        assert_eq!(c.behaviour(2).serve(), ServeMode::Fallback);
        c.levels.insert(
            "2".into(),
            LevelConfig {
                serve: Some(ServeMode::Normal),
                ..Default::default()
            },
        );
        assert_eq!(c.behaviour(2).serve(), ServeMode::Normal);
        assert_eq!(c.behaviour(1).serve(), ServeMode::Omitted);
        assert!(c.check().is_empty());
        c.levels.insert("5".into(), LevelConfig::default());
        c.recover_at = 0.9;
        assert_eq!(c.check().len(), 2);
    }
}
