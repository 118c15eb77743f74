//! `[prompts]`, `[feedback.NAME]` and `[experiments.NAME]` (docs/prompts.md,
//! docs/experiments.md). Plain data and the checks that need only the config; prompt files are
//! read and compiled by the gateway.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[prompts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// The folder of prompt files, relative to the config file (default `prompts`). The
    /// folder is read when it is set here or when a route or experiment names a prompt.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `[feedback.NAME]`: a kind of feedback the API takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    #[serde(rename = "type")]
    pub kind: FeedbackKind,
    /// `number`: the lowest and highest value; below the middle counts as negative.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// `category`: the values taken.
    #[serde(default)]
    pub categories: Vec<String>,
    /// `category`: the values that count as negative (for mining and readouts).
    #[serde(default)]
    pub negative: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    Boolean,
    Number,
    Category,
}

/// A variant: a prompt version (`"support-answer@2"`), or a table of what it changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VariantConfig {
    Prompt(String),
    Table(VariantTable),
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantTable {
    /// A prompt version (`name@N`) or label (`name:label`).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Targets that serve this variant instead of the route's.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Request parameters set for this variant (`max_tokens`, `temperature`, ...).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl VariantConfig {
    pub fn table(&self) -> VariantTable {
        match self {
            VariantConfig::Prompt(p) => VariantTable {
                prompt: Some(p.clone()),
                ..Default::default()
            },
            VariantConfig::Table(t) => t.clone(),
        }
    }
}

/// What a request is assigned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[default]
    User,
    Conversation,
    Request,
}

/// `[experiments.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub route: String,
    #[serde(default)]
    pub unit: Unit,
    pub variants: BTreeMap<String, VariantConfig>,
    /// Shares of traffic per variant (any scale; default equal).
    #[serde(default)]
    pub traffic: BTreeMap<String, u32>,
    /// The variant the others are compared with (default `control`, else the first).
    #[serde(default)]
    pub control: Option<String>,
    /// `[feedback]` names, and the built-in metrics: `error`, `fallback`, `guardrail`,
    /// `latency_ms`, `cost_usd`, `regenerated`, `online_eval`.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// No decision before this many hours (default 72).
    #[serde(default = "default_min_duration_h")]
    pub min_duration_h: f64,
    /// The decision rule.
    #[serde(default)]
    pub decision: DecisionConfig,
    /// Guard metrics that stop a variant at once when it is worse than control.
    #[serde(default)]
    pub guards: GuardsConfig,
    /// `false` sends everything to control (the experiment is paused).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_min_duration_h() -> f64 {
    72.0
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Ship a variant when its probability of being best is at least this...
    pub prob_best: f64,
    /// ...and the expected loss of choosing it is under this (in the metric's units).
    pub max_expected_loss: f64,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            prob_best: 0.95,
            max_expected_loss: 0.01,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardsConfig {
    /// `error`, `fallback`, `guardrail`, `latency_p99`.
    pub metrics: Vec<String>,
    /// Stop when the variant is worse than control by more than `margin` (a rate difference,
    /// 0.02 = 2 points) with at least this probability.
    pub prob_worse: f64,
    pub margin: f64,
    /// Requests each side needs before a guard can act.
    pub min_requests: u64,
}

impl Default for GuardsConfig {
    fn default() -> Self {
        GuardsConfig {
            metrics: vec![
                "error".into(),
                "fallback".into(),
                "guardrail".into(),
                "latency_p99".into(),
            ],
            prob_worse: 0.95,
            margin: 0.02,
            min_requests: 30,
        }
    }
}

/// A prompt reference: `name`, `name@VERSION` or `name:LABEL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PromptRef {
    Version(String, u32),
    Label(String, String),
}

impl PromptRef {
    pub fn parse(s: &str) -> Result<PromptRef, String> {
        if let Some((name, v)) = s.split_once('@') {
            let n = v
                .parse()
                .map_err(|_| format!("`{s}`: the version after @ is a number"))?;
            return Ok(PromptRef::Version(name.to_string(), n));
        }
        if let Some((name, label)) = s.split_once(':') {
            return Ok(PromptRef::Label(name.to_string(), label.to_string()));
        }
        if s.is_empty() {
            return Err("a prompt name is empty".into());
        }
        Ok(PromptRef::Label(s.to_string(), "production".to_string()))
    }

    pub fn name(&self) -> &str {
        match self {
            PromptRef::Version(n, _) | PromptRef::Label(n, _) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_refs() {
        assert_eq!(
            PromptRef::parse("a@2").unwrap(),
            PromptRef::Version("a".into(), 2)
        );
        assert_eq!(
            PromptRef::parse("a:canary").unwrap(),
            PromptRef::Label("a".into(), "canary".into())
        );
        assert_eq!(
            PromptRef::parse("a").unwrap(),
            PromptRef::Label("a".into(), "production".into())
        );
        assert!(PromptRef::parse("a@x").is_err());
    }

    #[test]
    fn the_issue_s_experiment_parses() {
        let e: ExperimentConfig = toml::from_str(
            "route = \"chat\"\nunit = \"user\"\nvariants = { control = \"support-answer@1\", concise = \"support-answer@2\" }\ntraffic = { control = 50, concise = 50 }\nmetrics = [\"thumbs\"]\nmin_duration_h = 0",
        )
        .unwrap();
        assert_eq!(
            e.variants["concise"].table().prompt.as_deref(),
            Some("support-answer@2")
        );
        let t: ExperimentConfig = toml::from_str(
            "route = \"chat\"\n[variants.control]\nprompt = \"p@1\"\n[variants.fast]\ntargets = [\"up/small\"]\nparams = { max_tokens = 100 }",
        )
        .unwrap();
        assert_eq!(
            t.variants["fast"].table().targets,
            vec!["up/small".to_string()]
        );
    }
}
