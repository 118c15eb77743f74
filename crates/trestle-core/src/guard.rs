//! Guardrail settings (DESIGN.md §5; docs/guardrails.md): named components in
//! `[guardrails.NAME]`, attached per route to inputs and outputs, run in order. Plain data
//! and its checks; the gateway's `guard` module runs them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a guardrail looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardKind {
    /// Personal data: e-mails, phones, cards, IBANs, SSNs, IPs, names, places.
    Pii,
    /// The answer must parse and validate against a JSON Schema.
    JsonSchema,
    /// Any of `patterns` (regular expressions).
    Regex,
    /// Any of `terms`, case- and accent-insensitive, on word boundaries.
    DenyTerms,
    /// Longer than `max_chars`.
    MaxLength,
    /// An OpenAI-compatible `/v1/moderations` target flags it.
    Moderation,
    /// Known prompt-injection patterns in an input.
    PromptInjection,
    /// The answer quotes the system prompt.
    SystemPromptLeak,
    /// Numbers, names and quotes in the answer found nowhere in the request's context.
    Grounding,
}

impl GuardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardKind::Pii => "pii",
            GuardKind::JsonSchema => "json_schema",
            GuardKind::Regex => "regex",
            GuardKind::DenyTerms => "deny_terms",
            GuardKind::MaxLength => "max_length",
            GuardKind::Moderation => "moderation",
            GuardKind::PromptInjection => "prompt_injection",
            GuardKind::SystemPromptLeak => "system_prompt_leak",
            GuardKind::Grounding => "grounding",
        }
    }

    /// What the kind does when no `action` is set.
    pub fn default_action(self) -> GuardAction {
        match self {
            GuardKind::Pii => GuardAction::Redact,
            GuardKind::Grounding => GuardAction::Flag,
            _ => GuardAction::Block,
        }
    }

    /// The actions that make sense for the kind.
    pub fn allows(self, action: GuardAction) -> bool {
        match action {
            GuardAction::Block | GuardAction::Flag => true,
            GuardAction::Redact => matches!(
                self,
                GuardKind::Pii | GuardKind::Regex | GuardKind::DenyTerms
            ),
            GuardAction::Reask => self == GuardKind::JsonSchema,
        }
    }
}

/// What happens when a guardrail finds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Replace each finding with `<ENTITY>` and go on.
    Redact,
    /// Refuse: the fallback hierarchy serves (a stream already started ends with an error).
    Block,
    /// Record only.
    Flag,
    /// Send the validation errors back to the model (`json_schema` only), then fall back.
    Reask,
}

impl GuardAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardAction::Redact => "redact",
            GuardAction::Block => "block",
            GuardAction::Flag => "flag",
            GuardAction::Reask => "reask",
        }
    }
}

/// What happens when a guardrail itself fails (times out, errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail closed: treat the text as blocked.
    #[default]
    Block,
    /// Fail open: let it through, counted and traced.
    Allow,
}

/// One `[guardrails.NAME]` table. Keys beyond `kind`, `action` and `on_error` belong to
/// particular kinds; `trestle config check` says when one is set on the wrong kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    pub kind: GuardKind,
    /// Default: `redact` for `pii`, `flag` for `grounding`, else `block`.
    pub action: Option<GuardAction>,
    #[serde(default)]
    pub on_error: OnError,
    /// `pii`: the entities to find (all when empty).
    #[serde(default)]
    pub entities: Vec<String>,
    /// `pii`: the least score a finding needs (default 0.5); `prompt_injection`: the score
    /// that counts as an attack (default 0.7); `system_prompt_leak`: the share of the system
    /// prompt quoted (default: any quote of 8 words or more).
    pub threshold: Option<f64>,
    /// `regex`: the patterns.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// `regex`: the entity name its findings carry (default `REGEX`).
    pub entity: Option<String>,
    /// `deny_terms`: the terms.
    #[serde(default)]
    pub terms: Vec<String>,
    /// `max_length`: the most characters.
    pub max_chars: Option<usize>,
    /// `json_schema`: the schema; without one, the request's `response_format` schema.
    pub schema: Option<serde_json::Value>,
    /// `json_schema` with `reask`: how many times the model is asked again (default 1).
    pub reasks: Option<u32>,
    /// `moderation`: the `provider/model` that answers `/v1/moderations`.
    pub target: Option<String>,
    /// `moderation`: category → score at or above which it counts (default: the target's
    /// own `flagged`).
    #[serde(default)]
    pub categories: BTreeMap<String, f64>,
    /// `moderation`: how long the call may take (default 2000 ms).
    pub timeout_ms: Option<u64>,
}

impl GuardrailConfig {
    pub fn action(&self) -> GuardAction {
        self.action.unwrap_or(self.kind.default_action())
    }

    /// Problems with the settings, as (key, message).
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let kind = self.kind;
        let action = self.action();
        if !kind.allows(action) {
            out.push((
                "action",
                format!(
                    "`{}` cannot {}: use block or flag{}",
                    kind.as_str(),
                    action.as_str(),
                    if kind.allows(GuardAction::Redact) {
                        ", or redact"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let only = |set: bool, key: &'static str, kinds: &[GuardKind], out: &mut Vec<_>| {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                out.push((key, format!("only for kind {}", names.join(" or "))));
            }
        };
        only(
            !self.entities.is_empty(),
            "entities",
            &[GuardKind::Pii],
            &mut out,
        );
        only(
            !self.patterns.is_empty() || self.entity.is_some(),
            "patterns",
            &[GuardKind::Regex],
            &mut out,
        );
        only(
            !self.terms.is_empty(),
            "terms",
            &[GuardKind::DenyTerms],
            &mut out,
        );
        only(
            self.max_chars.is_some(),
            "max_chars",
            &[GuardKind::MaxLength],
            &mut out,
        );
        only(
            self.schema.is_some() || self.reasks.is_some(),
            "schema",
            &[GuardKind::JsonSchema],
            &mut out,
        );
        only(
            self.target.is_some() || !self.categories.is_empty() || self.timeout_ms.is_some(),
            "target",
            &[GuardKind::Moderation],
            &mut out,
        );
        only(
            self.threshold.is_some(),
            "threshold",
            &[
                GuardKind::Pii,
                GuardKind::PromptInjection,
                GuardKind::SystemPromptLeak,
            ],
            &mut out,
        );
        match kind {
            GuardKind::Pii => {
                for e in &self.entities {
                    if let Err(err) = trestle_guard::pii::Entity::parse(e) {
                        out.push(("entities", err.to_string()));
                    }
                }
            }
            GuardKind::Regex => {
                if self.patterns.is_empty() {
                    out.push((
                        "patterns",
                        "a regex guardrail needs at least one pattern".into(),
                    ));
                }
                for p in &self.patterns {
                    if let Err(e) = regex::Regex::new(p) {
                        out.push(("patterns", format!("`{p}` does not compile: {e}")));
                    }
                }
            }
            GuardKind::DenyTerms if self.terms.iter().all(|t| t.trim().is_empty()) => {
                out.push((
                    "terms",
                    "a deny_terms guardrail needs at least one term".into(),
                ));
            }
            GuardKind::MaxLength if self.max_chars.is_none_or(|m| m == 0) => {
                out.push((
                    "max_chars",
                    "a max_length guardrail needs max_chars above 0".into(),
                ));
            }
            GuardKind::JsonSchema => {
                if let Some(schema) = &self.schema
                    && let Err(e) = trestle_guard::schema::compile(schema)
                {
                    out.push(("schema", format!("the schema does not compile: {e}")));
                }
            }
            GuardKind::Moderation if self.target.is_none() => {
                out.push((
                    "target",
                    "a moderation guardrail needs a target (`provider/model`)".into(),
                ));
            }
            _ => {}
        }
        if let Some(t) = self.threshold
            && !(0.0..=1.0).contains(&t)
        {
            out.push(("threshold", format!("must be between 0 and 1, not {t}")));
        }
        out
    }
}

/// A route's guardrails, by name, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteGuardrails {
    #[serde(default)]
    pub input: Vec<String>,
    #[serde(default)]
    pub output: Vec<String>,
}

impl RouteGuardrails {
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }
}

/// `[routes.NAME.cascade]`: the route's targets are tried cheapest first, and a step's answer
/// is kept when its confidence (mean token probability, from logprobs) is at least
/// `threshold` and every output guardrail passes; otherwise the next target answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    #[serde(default = "default_cascade_threshold")]
    pub threshold: f64,
}

fn default_cascade_threshold() -> f64 {
    0.8
}
