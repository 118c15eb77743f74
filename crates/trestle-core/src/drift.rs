//! `[drift]` and `[alerts]` (docs/configuration.md, docs/observability.md "Drift and
//! alerts"): the windows a drift report compares, how often the gateway computes it, the
//! threshold of each signal, and where alerts go.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[drift]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// The current window: the last this long (default 7 days).
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// The reference window: this long, just before the current one (default 28 days).
    #[serde(deserialize_with = "duration")]
    pub reference: Duration,
    /// How often the gateway computes the report and updates alerts; off when unset or 0.
    #[serde(deserialize_with = "optional_duration")]
    pub interval: Option<Duration>,
    /// Fewer observations than this in either window give "not enough data", not a verdict.
    pub min_samples: usize,
    /// The most texts per window the language mix and topic drift read (evenly spaced).
    pub max_texts: usize,
    /// `[embedders.NAME]` for topic drift; TF-IDF features when unset.
    pub embedder: Option<String>,
    pub thresholds: DriftThresholds,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window: Duration::from_secs(7 * 86_400),
            reference: Duration::from_secs(28 * 86_400),
            interval: None,
            min_samples: 30,
            max_texts: 2000,
            embedder: None,
            thresholds: DriftThresholds::default(),
        }
    }
}

/// `[drift.thresholds]`: a signal drifts at or above its threshold. Names are the signals'
/// names in the report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftThresholds {
    /// PSI of the last user message's length in characters (0.1; 0.2 is a major shift).
    pub input_length_psi: f64,
    /// Normed Wasserstein distance of that length (in reference standard deviations).
    pub input_length_wasserstein: f64,
    /// PSI of prompt tokens.
    pub input_tokens_psi: f64,
    pub input_tokens_wasserstein: f64,
    /// Jensen-Shannon distance between the language mixes.
    pub language_js: f64,
    /// ROC AUC of the domain classifier (it must also beat the random-classifier
    /// percentile).
    pub topic_auc: f64,
    /// PSI and normed Wasserstein of completion tokens.
    pub output_length_psi: f64,
    pub output_length_wasserstein: f64,
    /// Rises in share (absolute: 0.05 = five points) that count, when significant.
    pub refusal_rate: f64,
    pub fallback_rate: f64,
    pub guardrail_rate: f64,
    /// Falls in share of non-negative feedback and of online evals passed.
    pub feedback_score: f64,
    pub online_eval_pass_rate: f64,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds {
            input_length_psi: 0.1,
            input_length_wasserstein: 0.1,
            input_tokens_psi: 0.1,
            input_tokens_wasserstein: 0.1,
            language_js: 0.1,
            topic_auc: 0.55,
            output_length_psi: 0.1,
            output_length_wasserstein: 0.1,
            refusal_rate: 0.05,
            fallback_rate: 0.05,
            guardrail_rate: 0.05,
            feedback_score: 0.1,
            online_eval_pass_rate: 0.1,
        }
    }
}

impl DriftThresholds {
    /// Every threshold by name.
    pub fn all(&self) -> [(&'static str, f64); 13] {
        [
            ("input_length_psi", self.input_length_psi),
            ("input_length_wasserstein", self.input_length_wasserstein),
            ("input_tokens_psi", self.input_tokens_psi),
            ("input_tokens_wasserstein", self.input_tokens_wasserstein),
            ("language_js", self.language_js),
            ("topic_auc", self.topic_auc),
            ("output_length_psi", self.output_length_psi),
            ("output_length_wasserstein", self.output_length_wasserstein),
            ("refusal_rate", self.refusal_rate),
            ("fallback_rate", self.fallback_rate),
            ("guardrail_rate", self.guardrail_rate),
            ("feedback_score", self.feedback_score),
            ("online_eval_pass_rate", self.online_eval_pass_rate),
        ]
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are POSTed as JSON when they fire and when they resolve.
    pub webhook: Option<String>,
    /// The base of the links alerts carry (`{ui_url}/ui/drift`); default the gateway's
    /// own `http://{server.listen}`.
    pub ui_url: Option<String>,
    /// Per delivery attempt.
    pub timeout_ms: u64,
    /// Extra attempts after a failed delivery (backoff 250 ms, doubling).
    pub retries: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: None,
            ui_url: None,
            timeout_ms: 5000,
            retries: 2,
        }
    }
}

impl DriftConfig {
    /// Problems, as (key, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, d) in [("window", self.window), ("reference", self.reference)] {
            if d.is_zero() {
                out.push((key.to_string(), "must be longer than 0".to_string()));
            }
        }
        if self.min_samples == 0 {
            out.push(("min_samples".into(), "must be at least 1".into()));
        }
        if self.max_texts < 8 {
            out.push(("max_texts".into(), "must be at least 8".into()));
        }
        for (name, t) in self.thresholds.all() {
            if !t.is_finite() || t < 0.0 {
                out.push((
                    format!("thresholds.{name}"),
                    format!("{t} is not a threshold (0 or more)"),
                ));
            }
        }
        if !(0.5..=1.0).contains(&self.thresholds.topic_auc) {
            out.push((
                "thresholds.topic_auc".into(),
                "is a ROC AUC between 0.5 (no signal) and 1".into(),
            ));
        }
        out
    }
}

impl AlertsConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, url) in [("webhook", &self.webhook), ("ui_url", &self.ui_url)] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                out.push((
                    key.to_string(),
                    format!("`{u}` is not an http:// or https:// URL"),
                ));
            }
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms".into(), "must be above 0".into()));
        }
        out
    }
}

pub use crate::window::parse_duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    let value = parse_duration(&text).map_err(serde::de::Error::custom)?;
    Ok((!value.is_zero()).then_some(value))
}

/// Whether a model name is an alias that can move under the same name (`gpt-4o`,
/// `claude-3-5-sonnet-latest`, `gemini-1.5-pro`) rather than a pinned snapshot.
///
/// The rule: the part after the last `/` is pinned when it ends in a date (`-2024-08-06`)
/// or in a revision of three or more digits after `-`, `@` or `_` (`-20241022`,
/// `@20240620`, `-001`, `-0613`, `-2407`), ignoring a Bedrock id's own `-v1:0`. Anything
/// else (`-latest`, `-preview`, `-mini`, no suffix, local names like `llama3`) is an alias.
pub fn is_unpinned_alias(model: &str) -> bool {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    // Bedrock ids carry a revision of the id itself after the date: `…-20240307-v1:0`.
    let name = match name.rsplit_once("-v") {
        Some((head, rev))
            if rev
                .split_once(':')
                .is_some_and(|(a, b)| all_digits(a) && all_digits(b)) =>
        {
            head.to_string()
        }
        _ => name,
    };
    if ends_with_date(&name) {
        return false;
    }
    match name.rsplit_once(['-', '@', '_']) {
        Some((_, revision)) => !(revision.len() >= 3 && all_digits(revision)),
        None => true,
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `…-2024-08-06` (or with underscores).
fn ends_with_date(name: &str) -> bool {
    let b = name.as_bytes();
    if b.len() < 11 {
        return false;
    }
    let t = &b[b.len() - 11..];
    matches!(t[0], b'-' | b'_' | b'@')
        && t[1..5].iter().all(u8::is_ascii_digit)
        && matches!(t[5], b'-' | b'_')
        && t[6..8].iter().all(u8::is_ascii_digit)
        && t[8] == t[5]
        && t[9..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("seven days").is_err());
        assert!(parse_duration("3y").is_err());
    }

    #[test]
    fn config_reads_and_checks() {
        let c: DriftConfig = toml::from_str(
            "window = \"1d\"\nreference = \"7d\"\ninterval = \"0\"\n[thresholds]\ninput_length_psi = 0.2\n",
        )
        .unwrap();
        assert_eq!(c.window, Duration::from_secs(86_400));
        assert_eq!(c.interval, None);
        assert_eq!(c.thresholds.input_length_psi, 0.2);
        assert_eq!(c.thresholds.topic_auc, 0.55);
        assert!(c.check().is_empty());
        assert!(toml::from_str::<DriftConfig>("windw = \"1d\"").is_err());
        assert!(toml::from_str::<DriftConfig>("window = \"1 fortnight\"").is_err());
        let bad: DriftConfig = toml::from_str("[thresholds]\ntopic_auc = 0.3\n").unwrap();
        assert_eq!(bad.check()[0].0, "thresholds.topic_auc");
        let a: AlertsConfig = toml::from_str("webhook = \"ftp://x\"").unwrap();
        assert_eq!(a.check()[0].0, "webhook");
    }

    #[test]
    fn aliases_and_pinned_versions() {
        for alias in [
            "gpt-4o",
            "gpt-4o-mini",
            "claude-3-5-sonnet-latest",
            "gemini-1.5-pro",
            "gemini-2.0-flash",
            "chatgpt-4o-latest",
            "o1",
            "llama3",
            "m1",
        ] {
            assert!(is_unpinned_alias(alias), "{alias} should be an alias");
        }
        for pinned in [
            "gpt-4o-2024-08-06",
            "gpt-4-0613",
            "claude-3-5-sonnet-20241022",
            "claude-3-5-sonnet@20240620",
            "gemini-1.5-pro-001",
            "gemini-1.5-flash-002",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "openai/gpt-4o-2024-05-13",
        ] {
            assert!(!is_unpinned_alias(pinned), "{pinned} should be pinned");
        }
    }
}
