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
}

impl Price {
    /// Cost in USD of one call's usage. Cached tokens are part of `prompt_tokens`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        let cached_price = self.cached_input.unwrap_or(self.input);
        (fresh as f64 * self.input
            + cached as f64 * cached_price
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
}
