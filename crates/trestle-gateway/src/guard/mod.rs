//! Guardrails (docs/guardrails.md): the configured `[guardrails.NAME]`, built once per config
//! from the detectors in `trestle-guard`, and what the pipeline asks of them — a verdict on
//! a text. The stages that run them live in `pipeline/guard.rs`; streams are checked by
//! [`stream::StreamGuard`] on a sliding window.

pub mod moderation;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;
use trestle_core::guard::{GuardAction, GuardKind, GuardrailConfig, OnError};
use trestle_guard::Finding;
use trestle_guard::deny::DenyTerms;
use trestle_guard::pii::Pii;
use trestle_guard::schema::Validator;

use crate::runtime::Target;

/// One configured guardrail.
pub struct Guardrail {
    pub name: String,
    pub kind: GuardKind,
    pub action: GuardAction,
    pub on_error: OnError,
    /// `json_schema` with `reask`: how many times the model is asked again.
    pub reasks: u32,
    detector: Detector,
}

enum Detector {
    Pii(Pii),
    Regex(Vec<Regex>, String),
    Deny(DenyTerms),
    MaxLength(usize),
    /// The configured schema; `None` takes the request's `response_format` schema.
    Schema(Option<Arc<Validator>>),
    Moderation(moderation::Moderation),
    Injection(f64),
    Leak(Option<f64>),
    Grounding,
}

/// What a request offers a guardrail besides the text: the system prompt (leaks), the
/// context the answer should rest on (grounding), the schema asked for (json_schema).
#[derive(Default)]
pub struct Context {
    pub system: String,
    pub context: String,
    pub schema: Option<Arc<Validator>>,
}

/// A guardrail's judgement of one text.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    /// Whether the text breaks the rule (a finding, or a failed validation).
    pub violated: bool,
    /// Why, in words (validation errors, moderation categories, a score).
    pub detail: Option<String>,
}

impl Verdict {
    fn findings(findings: Vec<Finding>) -> Self {
        Verdict {
            violated: !findings.is_empty(),
            findings,
            detail: None,
        }
    }
}

/// One guardrail's outcome on a request, as the trace keeps it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct GuardRecord {
    pub guardrail: String,
    pub kind: String,
    /// `input` or `output`.
    pub stage: String,
    pub action: String,
    /// `pass`, `redacted`, `blocked`, `flagged`, `reasked`, or on a failure of the guardrail
    /// itself `error_blocked` / `error_allowed`.
    pub outcome: String,
    /// Findings by entity.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub entities: std::collections::BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub latency_ms: f64,
}

impl Guardrail {
    /// Builds `[guardrails.NAME]`; `target` resolves a moderation guardrail's target.
    pub fn build(
        name: &str,
        cfg: &GuardrailConfig,
        target: impl Fn(&str) -> anyhow::Result<Arc<Target>>,
    ) -> anyhow::Result<Self> {
        let bad = |e: String| anyhow::anyhow!("guardrails.{name}: {e}");
        let detector = match cfg.kind {
            GuardKind::Pii => Detector::Pii(
                Pii::new(&cfg.entities, cfg.threshold).map_err(|e| bad(e.to_string()))?,
            ),
            GuardKind::Regex => Detector::Regex(
                cfg.patterns
                    .iter()
                    .map(|p| Regex::new(p).map_err(|e| bad(e.to_string())))
                    .collect::<anyhow::Result<_>>()?,
                cfg.entity.clone().unwrap_or_else(|| "REGEX".into()),
            ),
            GuardKind::DenyTerms => Detector::Deny(DenyTerms::new(&cfg.terms)),
            GuardKind::MaxLength => Detector::MaxLength(cfg.max_chars.unwrap_or(usize::MAX)),
            GuardKind::JsonSchema => Detector::Schema(match &cfg.schema {
                Some(s) => Some(Arc::new(trestle_guard::schema::compile(s).map_err(bad)?)),
                None => None,
            }),
            GuardKind::Moderation => {
                let t = cfg
                    .target
                    .as_deref()
                    .ok_or_else(|| bad("a moderation guardrail needs a target".into()))?;
                Detector::Moderation(moderation::Moderation::new(
                    target(t)?,
                    cfg.categories.clone(),
                    Duration::from_millis(cfg.timeout_ms.unwrap_or(2_000)),
                ))
            }
            GuardKind::PromptInjection => Detector::Injection(cfg.threshold.unwrap_or(0.7)),
            GuardKind::SystemPromptLeak => Detector::Leak(cfg.threshold),
            GuardKind::Grounding => Detector::Grounding,
        };
        Ok(Guardrail {
            name: name.to_string(),
            kind: cfg.kind,
            action: cfg.action(),
            on_error: cfg.on_error,
            reasks: cfg.reasks.unwrap_or(1),
            detector,
        })
    }

    /// Whether the guardrail needs the whole answer (it cannot judge a stream piece by piece):
    /// on a stream it runs when the stream ends.
    pub fn needs_whole_text(&self) -> bool {
        matches!(
            self.detector,
            Detector::Schema(_) | Detector::Moderation(_) | Detector::Grounding
        )
    }

    /// Judges `text`. Only `moderation` waits on anything (an HTTP call); an error is the
    /// guardrail failing, which `on_error` decides.
    pub async fn check(&self, text: &str, ctx: &Context) -> Result<Verdict, String> {
        match &self.detector {
            Detector::Moderation(m) => m.check(text).await,
            _ => self.check_now(text, ctx),
        }
    }

    /// Judges `text` without waiting; `moderation` answers an error here.
    pub fn check_now(&self, text: &str, ctx: &Context) -> Result<Verdict, String> {
        Ok(match &self.detector {
            Detector::Pii(pii) => Verdict::findings(pii.find(text)),
            Detector::Regex(patterns, entity) => {
                let index = trestle_guard::CharIndex::new(text);
                let mut found: Vec<Finding> = patterns
                    .iter()
                    .flat_map(|re| re.find_iter(text))
                    .map(|m| {
                        Finding::new(
                            entity.clone(),
                            index.char_at(m.start()),
                            index.char_at(m.end()),
                            1.0,
                        )
                    })
                    .collect();
                found.sort_by_key(|f| f.start);
                Verdict::findings(found)
            }
            Detector::Deny(deny) => Verdict::findings(deny.find(text)),
            Detector::MaxLength(max) => {
                let n = text.chars().count();
                Verdict {
                    violated: n > *max,
                    findings: Vec::new(),
                    detail: (n > *max).then(|| format!("{n} characters, over max_chars ({max})")),
                }
            }
            Detector::Schema(own) => {
                let Some(validator) = own.as_ref().or(ctx.schema.as_ref()) else {
                    // No schema to hold the answer to: nothing to check.
                    return Ok(Verdict::default());
                };
                match trestle_guard::schema::check(validator, text) {
                    Ok(()) => Verdict::default(),
                    Err(errors) => Verdict {
                        violated: true,
                        findings: Vec::new(),
                        detail: Some(errors.join("; ")),
                    },
                }
            }
            Detector::Moderation(_) => {
                return Err("moderation needs the whole text and a call".into());
            }
            Detector::Injection(threshold) => {
                let (findings, score) = trestle_guard::injection::scan(text);
                Verdict {
                    violated: score >= *threshold,
                    detail: (!findings.is_empty()).then(|| format!("score {score:.2}")),
                    findings,
                }
            }
            Detector::Leak(threshold) => {
                let (findings, share) = trestle_guard::leak::scan(&ctx.system, text);
                let violated = match threshold {
                    Some(t) => !findings.is_empty() && share >= *t,
                    None => !findings.is_empty(),
                };
                Verdict {
                    violated,
                    detail: (!findings.is_empty())
                        .then(|| format!("{:.0}% of the system prompt quoted", share * 100.0)),
                    findings,
                }
            }
            Detector::Grounding => {
                if ctx.context.trim().is_empty() {
                    Verdict::default()
                } else {
                    Verdict::findings(trestle_guard::grounding::scan(&ctx.context, text))
                }
            }
        })
    }
}

/// Counts findings by entity, for the trace.
pub fn by_entity(findings: &[Finding]) -> std::collections::BTreeMap<String, u32> {
    let mut out = std::collections::BTreeMap::new();
    for f in findings {
        *out.entry(f.entity.clone()).or_insert(0) += 1;
    }
    out
}
