//! Assertions: what a case's answer must satisfy. Most are checked here on the text; three
//! need a service the runner provides (`similar` an embedder, `guardrail` a guardrail,
//! `judge` a judge route) and are checked by [`crate::judge`] and the runner.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One assertion, as written in a case (`{"type": "contains", "value": "30 days"}`) or in a
/// suite's `[[assert]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Assertion {
    /// The whole answer, trimmed, is `value`.
    Equals {
        value: String,
        #[serde(default, skip_serializing_if = "is_false")]
        ignore_case: bool,
    },
    Contains {
        value: String,
        #[serde(default, skip_serializing_if = "is_false")]
        ignore_case: bool,
    },
    NotContains {
        value: String,
        #[serde(default, skip_serializing_if = "is_false")]
        ignore_case: bool,
    },
    /// The answer matches the regular expression (Rust `regex` syntax) somewhere.
    Regex {
        value: String,
    },
    /// The answer is JSON (a fenced code block is unwrapped) valid under the schema.
    JsonSchema {
        value: Value,
    },
    /// Embedding cosine similarity to `value`, or to the case's `expected`, at least
    /// `threshold`.
    Similar {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default = "default_similarity")]
        threshold: f32,
    },
    MaxLatencyMs {
        value: u64,
    },
    MaxCostUsd {
        value: f64,
    },
    /// The named guardrail finds nothing in the answer.
    Guardrail {
        value: String,
    },
    /// The judge route scores the answer on the rubric's criteria (all of the suite's when
    /// `criteria` is empty); each must reach `min_score` (default: the criterion's own).
    Judge {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        criteria: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_score: Option<f64>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_similarity() -> f32 {
    0.8
}

/// An assertion ready to check: regexes and schemas compiled.
pub enum Prepared {
    Text(TextCheck),
    Regex(regex::Regex),
    JsonSchema(Box<jsonschema::Validator>),
    Similar {
        reference: String,
        threshold: f32,
    },
    MaxLatencyMs(u64),
    MaxCostUsd(f64),
    Guardrail(String),
    Judge {
        criteria: Vec<String>,
        min_score: Option<f64>,
    },
}

pub struct TextCheck {
    kind: TextKind,
    value: String,
    ignore_case: bool,
}

#[derive(Clone, Copy)]
enum TextKind {
    Equals,
    Contains,
    NotContains,
}

impl Assertion {
    /// Its `type`, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Assertion::Equals { .. } => "equals",
            Assertion::Contains { .. } => "contains",
            Assertion::NotContains { .. } => "not_contains",
            Assertion::Regex { .. } => "regex",
            Assertion::JsonSchema { .. } => "json_schema",
            Assertion::Similar { .. } => "similar",
            Assertion::MaxLatencyMs { .. } => "max_latency_ms",
            Assertion::MaxCostUsd { .. } => "max_cost_usd",
            Assertion::Guardrail { .. } => "guardrail",
            Assertion::Judge { .. } => "judge",
        }
    }

    /// Compiles it; an error says what to fix.
    pub fn prepare(&self, expected: Option<&str>) -> Result<Prepared, String> {
        let text = |kind, value: &String, ignore_case: bool| {
            if value.is_empty() {
                return Err("`value` must not be empty".to_string());
            }
            Ok(Prepared::Text(TextCheck {
                kind,
                value: if ignore_case {
                    value.to_lowercase()
                } else {
                    value.clone()
                },
                ignore_case,
            }))
        };
        match self {
            Assertion::Equals { value, ignore_case } => Ok(Prepared::Text(TextCheck {
                kind: TextKind::Equals,
                value: if *ignore_case {
                    value.trim().to_lowercase()
                } else {
                    value.trim().to_string()
                },
                ignore_case: *ignore_case,
            })),
            Assertion::Contains { value, ignore_case } => {
                text(TextKind::Contains, value, *ignore_case)
            }
            Assertion::NotContains { value, ignore_case } => {
                text(TextKind::NotContains, value, *ignore_case)
            }
            Assertion::Regex { value } => regex::Regex::new(value)
                .map(Prepared::Regex)
                .map_err(|e| format!("`value` is not a valid regex: {e}")),
            Assertion::JsonSchema { value } => jsonschema::validator_for(value)
                .map(|v| Prepared::JsonSchema(Box::new(v)))
                .map_err(|e| format!("`value` is not a valid JSON Schema: {e}")),
            Assertion::Similar { value, threshold } => {
                if !(-1.0..=1.0).contains(threshold) {
                    return Err(format!(
                        "`threshold` {threshold} is not a cosine similarity (-1 to 1)"
                    ));
                }
                let reference = value
                    .as_deref()
                    .or(expected)
                    .ok_or("`similar` compares with `value` or the case's `expected`; give one")?;
                Ok(Prepared::Similar {
                    reference: reference.to_string(),
                    threshold: *threshold,
                })
            }
            Assertion::MaxLatencyMs { value } => Ok(Prepared::MaxLatencyMs(*value)),
            Assertion::MaxCostUsd { value } if *value >= 0.0 => Ok(Prepared::MaxCostUsd(*value)),
            Assertion::MaxCostUsd { value } => Err(format!("`value` {value} is negative")),
            Assertion::Guardrail { value } if value.is_empty() => {
                Err("`value` names a guardrail".into())
            }
            Assertion::Guardrail { value } => Ok(Prepared::Guardrail(value.clone())),
            Assertion::Judge {
                criteria,
                min_score,
            } => Ok(Prepared::Judge {
                criteria: criteria.clone(),
                min_score: *min_score,
            }),
        }
    }
}

/// What a case's request produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observed {
    pub text: String,
    pub latency_ms: u64,
    pub cost_usd: Option<f64>,
}

/// One assertion's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(rename = "type")]
    pub kind: String,
    pub pass: bool,
    /// A measured figure where there is one (similarity, latency, a judge score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Why it failed, or what the judge said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The judge's score per criterion.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scores: std::collections::BTreeMap<String, f64>,
}

impl Outcome {
    pub fn new(kind: &str, pass: bool, score: Option<f64>, reason: impl Into<String>) -> Self {
        Outcome {
            kind: kind.to_string(),
            pass,
            score,
            reason: reason.into(),
            scores: Default::default(),
        }
    }
}

impl Prepared {
    /// Checks what can be checked on the answer alone; `None` for the assertions that need a
    /// service (similar, guardrail, judge).
    pub fn check(&self, seen: &Observed) -> Option<Outcome> {
        Some(match self {
            Prepared::Text(t) => t.check(&seen.text),
            Prepared::Regex(re) => {
                let pass = re.is_match(&seen.text);
                Outcome::new(
                    "regex",
                    pass,
                    None,
                    if pass {
                        String::new()
                    } else {
                        format!("no match for /{}/", re.as_str())
                    },
                )
            }
            Prepared::JsonSchema(v) => json_schema(v, &seen.text),
            Prepared::MaxLatencyMs(max) => Outcome::new(
                "max_latency_ms",
                seen.latency_ms <= *max,
                Some(seen.latency_ms as f64),
                if seen.latency_ms <= *max {
                    String::new()
                } else {
                    format!("took {} ms, over {max} ms", seen.latency_ms)
                },
            ),
            Prepared::MaxCostUsd(max) => match seen.cost_usd {
                Some(c) => Outcome::new(
                    "max_cost_usd",
                    c <= *max,
                    Some(c),
                    if c <= *max {
                        String::new()
                    } else {
                        format!("cost ${c:.6}, over ${max}")
                    },
                ),
                None => Outcome::new(
                    "max_cost_usd",
                    false,
                    None,
                    "the gateway reported no cost (x-trestle-cost-usd)",
                ),
            },
            Prepared::Similar { .. } | Prepared::Guardrail(_) | Prepared::Judge { .. } => {
                return None;
            }
        })
    }
}

impl TextCheck {
    fn check(&self, answer: &str) -> Outcome {
        let lowered;
        let text = if self.ignore_case {
            lowered = answer.to_lowercase();
            lowered.as_str()
        } else {
            answer
        };
        let (name, pass, why) = match self.kind {
            TextKind::Equals => (
                "equals",
                text.trim() == self.value,
                "the answer is something else",
            ),
            TextKind::Contains => ("contains", text.contains(&self.value), "not found"),
            TextKind::NotContains => ("not_contains", !text.contains(&self.value), "found"),
        };
        let reason = if pass {
            String::new()
        } else {
            format!("{why}: {:?}", self.value)
        };
        Outcome::new(name, pass, None, reason)
    }
}

fn json_schema(v: &jsonschema::Validator, answer: &str) -> Outcome {
    let body = unfence(answer);
    match serde_json::from_str::<Value>(body) {
        Err(e) => Outcome::new("json_schema", false, None, format!("not JSON: {e}")),
        Ok(doc) => {
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .take(3)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            Outcome::new("json_schema", errors.is_empty(), None, errors.join("; "))
        }
    }
}

/// The inside of a ```json fenced block when the answer is one, else the answer.
pub fn unfence(answer: &str) -> &str {
    let t = answer.trim();
    if let Some(rest) = t.strip_prefix("```")
        && let Some(body) = rest.strip_suffix("```")
    {
        return body.split_once('\n').map_or(body, |(_, b)| b).trim();
    }
    t
}

/// Cosine similarity of two vectors (unit vectors give the dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, answer: &str) -> Outcome {
        let a: Assertion = serde_json::from_str(json).unwrap();
        let seen = Observed {
            text: answer.into(),
            latency_ms: 120,
            cost_usd: Some(0.002),
        };
        a.prepare(Some("the expected"))
            .unwrap()
            .check(&seen)
            .unwrap()
    }

    #[test]
    fn text_assertions() {
        assert!(
            check(
                r#"{"type": "contains", "value": "30 days"}"#,
                "within 30 days."
            )
            .pass
        );
        assert!(
            !check(
                r#"{"type": "contains", "value": "30 Days"}"#,
                "within 30 days."
            )
            .pass
        );
        assert!(
            check(
                r#"{"type": "contains", "value": "30 Days", "ignore_case": true}"#,
                "within 30 DAYS"
            )
            .pass
        );
        assert!(!check(r#"{"type": "not_contains", "value": "sorry"}"#, "sorry, no").pass);
        assert!(check(r#"{"type": "equals", "value": "Paris"}"#, " Paris\n").pass);
        assert!(!check(r#"{"type": "equals", "value": "Paris"}"#, "Paris, France").pass);
        assert!(check(r#"{"type": "regex", "value": "^\\d{3}$"}"#, "123").pass);
    }

    #[test]
    fn schema_latency_cost() {
        let schema = r#"{"type": "json_schema", "value": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}}"#;
        assert!(check(schema, "```json\n{\"ok\": true}\n```").pass);
        let bad = check(schema, "{\"ok\": 1}");
        assert!(!bad.pass && bad.reason.contains("/ok"), "{}", bad.reason);
        assert!(!check(schema, "sure! {").pass);
        assert!(check(r#"{"type": "max_latency_ms", "value": 200}"#, "").pass);
        assert!(!check(r#"{"type": "max_latency_ms", "value": 100}"#, "").pass);
        assert!(!check(r#"{"type": "max_cost_usd", "value": 0.001}"#, "").pass);
    }

    #[test]
    fn bad_assertions_say_what_to_fix() {
        let unknown: Result<Assertion, _> =
            serde_json::from_str(r#"{"type": "containz", "value": "x"}"#);
        assert!(unknown.unwrap_err().to_string().contains("containz"));
        let extra: Result<Assertion, _> =
            serde_json::from_str(r#"{"type": "contains", "valu": "x"}"#);
        assert!(extra.is_err());
        let similar: Assertion = serde_json::from_str(r#"{"type": "similar"}"#).unwrap();
        assert!(similar.prepare(None).is_err());
        assert!(similar.prepare(Some("ref")).is_ok());
    }
}
