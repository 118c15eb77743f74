//! Scoring one case: its assertions checked on the answer, with the services some of them
//! need (an embedder, a guardrail, the judge) provided by whoever runs the suite.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::assertion::{Assertion, Observed, Outcome, Prepared, cosine};
use crate::dataset::Case;
use crate::judge::{Judge, parse_verdict};
use crate::stats::Scored;

/// One case's result, as stored and reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub category: String,
    pub pass: bool,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    pub answer: String,
    /// The request failed: the gateway's error message (the case fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_level: Option<String>,
    pub outcomes: Vec<Outcome>,
}

impl CaseResult {
    pub fn scored(&self) -> Scored {
        Scored {
            id: self.id.clone(),
            category: self.category.clone(),
            pass: self.pass,
            errored: self.error.is_some(),
            latency_ms: self.latency_ms,
            cost_usd: self.cost_usd.unwrap_or(0.0),
        }
    }

    /// The judge's scores per criterion, if a judge scored this case.
    pub fn judge_scores(&self) -> BTreeMap<String, f64> {
        self.outcomes
            .iter()
            .filter(|o| o.kind == "judge")
            .flat_map(|o| o.scores.clone())
            .collect()
    }
}

/// What the assertions that are not plain text checks need.
pub trait Services: Sync {
    /// Unit-length (or any) embedding vectors of the texts, in order.
    fn embed(
        &self,
        texts: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Vec<f32>>, String>> + Send;
    /// What the named guardrail finds in the text (entity names; empty when it passes).
    fn guardrail(
        &self,
        name: &str,
        text: &str,
    ) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    /// A chat completion's text from a route.
    fn complete(
        &self,
        route: &str,
        messages: Vec<Value>,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// A case's assertions (its own and the suite's), compiled.
pub struct Checks {
    pub list: Vec<Prepared>,
}

impl Checks {
    pub fn new(case: &Case, suite: &[Assertion]) -> Result<Checks, String> {
        let list = case
            .asserts
            .iter()
            .chain(suite)
            .map(|a| a.prepare(case.expected.as_deref()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("case {}: {e}", case.id))?;
        Ok(Checks { list })
    }

    pub fn needs_embedder(&self) -> bool {
        self.list
            .iter()
            .any(|p| matches!(p, Prepared::Similar { .. }))
    }

    pub fn needs_judge(&self) -> bool {
        self.list
            .iter()
            .any(|p| matches!(p, Prepared::Judge { .. }))
    }
}

/// Scores an answer. A case with no assertions passes when it got an answer.
pub async fn score<S: Services>(
    services: &S,
    judge: Option<&Judge>,
    case: &Case,
    checks: &Checks,
    seen: &Observed,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(checks.list.len());
    for check in &checks.list {
        if let Some(o) = check.check(seen) {
            out.push(o);
            continue;
        }
        let o = match check {
            Prepared::Similar {
                reference,
                threshold,
            } => {
                match services
                    .embed(vec![seen.text.clone(), reference.clone()])
                    .await
                {
                    Ok(v) if v.len() == 2 => {
                        let sim = cosine(&v[0], &v[1]);
                        let pass = sim >= *threshold;
                        let why = if pass {
                            String::new()
                        } else {
                            format!("similarity {sim:.3} < {threshold}")
                        };
                        Outcome::new("similar", pass, Some(f64::from(sim)), why)
                    }
                    Ok(_) => Outcome::new(
                        "similar",
                        false,
                        None,
                        "the embedder returned the wrong number of vectors",
                    ),
                    Err(e) => Outcome::new("similar", false, None, format!("embedder error: {e}")),
                }
            }
            Prepared::Guardrail(name) => match services.guardrail(name, &seen.text).await {
                Ok(found) if found.is_empty() => Outcome::new("guardrail", true, None, ""),
                Ok(found) => Outcome::new(
                    "guardrail",
                    false,
                    None,
                    format!("{name} found {}", found.join(", ")),
                ),
                Err(e) => Outcome::new("guardrail", false, None, format!("guardrail {name}: {e}")),
            },
            Prepared::Judge {
                criteria,
                min_score,
            } => match judge {
                None => Outcome::new("judge", false, None, "the suite has no [judge]"),
                Some(j) => {
                    let messages = j.messages(
                        criteria,
                        &case.input_text(),
                        &seen.text,
                        case.expected.as_deref(),
                    );
                    match services.complete(&j.route, messages).await {
                        Err(e) => Outcome::new(
                            "judge",
                            false,
                            None,
                            format!("judge route {}: {e}", j.route),
                        ),
                        Ok(reply) => match parse_verdict(&reply) {
                            Err(e) => Outcome::new(
                                "judge",
                                false,
                                None,
                                format!("{e}: {}", clip(&reply, 200)),
                            ),
                            Ok(v) => {
                                let (pass, lowest, reason) = j.grade(&v, criteria, *min_score);
                                let mut o = Outcome::new("judge", pass, lowest, reason);
                                o.scores = v.scores;
                                o
                            }
                        },
                    }
                }
            },
            _ => continue,
        };
        out.push(o);
    }
    out
}

/// At most `max` characters of a text, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!("{}…", &text[..i]),
    }
}
