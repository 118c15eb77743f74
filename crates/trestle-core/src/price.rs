//! Prices and cost: USD per million tokens, with a cheaper rate for cached input.

use serde::{Deserialize, Serialize};

use crate::openai::Usage;

/// A model's price in USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Price of prompt tokens read from the provider's cache; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Price of prompt tokens written to the provider's cache (Anthropic charges 1.25× input
    /// for 5-minute entries); defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    /// Cost in USD of one call's usage. Cached tokens are part of `prompt_tokens`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let written = usage.cache_write_tokens().min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let cached_price = self.cached_input.unwrap_or(self.input);
        let write_price = self.cache_write.unwrap_or(self.input);
        (fresh as f64 * self.input
            + cached as f64 * cached_price
            + written as f64 * write_price
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_priced_apart() {
        let p = Price {
            input: 0.15,
            output: 0.60,
            cached_input: Some(0.075),
            cache_write: None,
        };
        let u = Usage::new(1_000_000, 1_000_000, 400_000);
        let expected = 0.6 * 0.15 + 0.4 * 0.075 + 0.60;
        assert!((p.cost(&u) - expected).abs() < 1e-12);
        let no_cache = Price {
            cached_input: None,
            ..p
        };
        assert!((no_cache.cost(&u) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn cache_writes_are_priced_apart() {
        // 1M prompt tokens: 200k read from the cache, 300k written to it, 500k fresh.
        let p = Price {
            input: 3.0,
            output: 15.0,
            cached_input: Some(0.30),
            cache_write: Some(3.75),
        };
        let u = Usage::new(1_000_000, 0, 200_000).with_cache_writes(300_000);
        let expected = 0.5 * 3.0 + 0.2 * 0.30 + 0.3 * 3.75;
        assert!((p.cost(&u) - expected).abs() < 1e-12, "{}", p.cost(&u));
    }
}
