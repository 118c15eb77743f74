//! The semantic cache's judge: for a candidate the similarity alone would not serve (and,
//! with `judge_all`, for every candidate), a cheap model is asked whether the cached question
//! and the new one ask for the same answer. `yes` serves the cached answer; `no`, an answer
//! that is neither, an error or no answer within `judge_timeout_ms` is a miss, never an
//! error. Verdicts are remembered per (judge, cached question, query) for a day, so a
//! repeated question costs no second call.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use trestle_core::openai::ChatRequest;

use crate::runtime::Target;

/// Verdicts remembered, all routes together.
const MAX_VERDICTS: u64 = 50_000;
/// How long a verdict is remembered.
const VERDICT_FOR: Duration = Duration::from_secs(24 * 3600);

/// What the judge is told.
pub const INSTRUCTIONS: &str = "You check a cache of answers. Given two questions a user \
could ask a support assistant, say whether one answer would correctly and fully answer both. \
Questions that differ in a number, a date, a name, a product, a place, a unit, a negation, a \
comparison or who it is for need different answers. Reply with one word: yes or no.";

/// The messages put to the judge about `cached` (the question the cached answer was made
/// for) and `query`: temperature 0, at most three tokens.
pub fn request(model: &str, cached: &str, query: &str) -> Result<ChatRequest, String> {
    serde_json::from_value(json!({
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": format!(
                "Question 1: {cached}\nQuestion 2: {query}\nDo they ask for the same answer? yes or no")},
        ],
        "temperature": 0,
        "max_tokens": 3,
    }))
    .map_err(|e| e.to_string())
}

/// Reads a judge's reply: `Some(true)` for yes, `Some(false)` for no, `None` when it is
/// neither. Case, punctuation, quotes, markdown and a trailing explanation are ignored;
/// only the first word counts.
pub fn parse(reply: &str) -> Option<bool> {
    let first = reply
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())?
        .to_lowercase();
    match first.as_str() {
        "yes" | "y" | "same" | "true" | "oui" | "ja" | "si" => Some(true),
        "no" | "n" | "not" | "different" | "false" | "non" | "nein" => Some(false),
        _ => None,
    }
}

/// The judge's verdict on one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Different,
    /// An answer that is neither yes nor no.
    Unclear,
    Timeout,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Different => "different",
            Verdict::Unclear => "unclear",
            Verdict::Timeout => "timeout",
            Verdict::Error => "error",
        }
    }
}

/// One question put to the judge.
#[derive(Debug, Clone)]
pub struct Asked {
    pub verdict: Verdict,
    /// The call's time; none when the verdict was remembered.
    pub took: Option<Duration>,
    /// Why a call failed.
    pub error: Option<String>,
}

impl Asked {
    /// No verdict: the call (or the lookup of what to call) failed with `error`.
    pub fn failed(error: String, took: Option<Duration>) -> Self {
        Asked {
            verdict: Verdict::Error,
            took,
            error: Some(error),
        }
    }
}

/// Verdicts remembered, keyed by the judge and the two questions.
pub struct Verdicts {
    cache: moka::sync::Cache<u64, bool>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts::new()
    }
}

fn pair_key(judge: &str, cached: &str, query: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    judge.hash(&mut h);
    cached.hash(&mut h);
    query.hash(&mut h);
    h.finish()
}

impl Verdicts {
    pub fn new() -> Self {
        Verdicts {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_VERDICTS)
                .time_to_live(VERDICT_FOR)
                .build(),
        }
    }

    /// Asks `target` whether `cached` and `query` ask for the same answer, unless the verdict
    /// is remembered. Only a yes or a no is remembered.
    pub async fn ask(
        &self,
        target: &Arc<Target>,
        cached: &str,
        query: &str,
        timeout: Duration,
    ) -> Asked {
        let key = pair_key(&target.name, cached, query);
        if let Some(same) = self.cache.get(&key) {
            return Asked {
                verdict: if same {
                    Verdict::Same
                } else {
                    Verdict::Different
                },
                took: None,
                error: None,
            };
        }
        let started = Instant::now();
        let req = match request(&target.model, cached, query) {
            Ok(req) => req,
            Err(e) => return Asked::failed(e, Some(started.elapsed())),
        };
        let call = target.provider.chat(&target.model, &req);
        let (verdict, error) = match tokio::time::timeout(timeout, call).await {
            Err(_) => (Verdict::Timeout, None),
            Ok(Err(e)) => (Verdict::Error, Some(e.to_string())),
            Ok(Ok(answer)) => {
                let reply = answer
                    .body
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.message.content)
                    .unwrap_or_default();
                match parse(&reply) {
                    Some(same) => {
                        self.cache.insert(key, same);
                        let v = if same {
                            Verdict::Same
                        } else {
                            Verdict::Different
                        };
                        (v, None)
                    }
                    None => (
                        Verdict::Unclear,
                        Some(format!(
                            "neither yes nor no: {:?}",
                            reply.chars().take(40).collect::<String>()
                        )),
                    ),
                }
            }
        };
        Asked {
            verdict,
            took: Some(started.elapsed()),
            error,
        }
    }
}

#[cfg(test)]
mod tests;
