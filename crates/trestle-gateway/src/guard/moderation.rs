//! `moderation`: asks an OpenAI-compatible `/v1/moderations` target about a text, within a
//! timeout. Without configured `categories` the target's own `flagged` decides; with them,
//! a category's score at or above its threshold does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use trestle_guard::Finding;

use super::Verdict;
use crate::runtime::Target;

pub struct Moderation {
    target: Arc<Target>,
    categories: BTreeMap<String, f64>,
    timeout: Duration,
}

impl Moderation {
    pub fn new(target: Arc<Target>, categories: BTreeMap<String, f64>, timeout: Duration) -> Self {
        Moderation {
            target,
            categories,
            timeout,
        }
    }

    pub async fn check(&self, text: &str) -> Result<Verdict, String> {
        let call = self.target.provider.moderate(&self.target.model, text);
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                format!(
                    "{} did not answer within {} ms",
                    self.target.name,
                    self.timeout.as_millis()
                )
            })?
            .map_err(|e| format!("{}: {e}", self.target.name))?;
        let result = answer
            .get("results")
            .and_then(|r| r.get(0))
            .ok_or_else(|| {
                format!(
                    "{}: no `results` in the moderation answer",
                    self.target.name
                )
            })?;
        let scores = result.get("category_scores");
        let score = |cat: &str| scores.and_then(|s| s.get(cat)).and_then(|v| v.as_f64());
        let hits: Vec<(String, f64)> = if self.categories.is_empty() {
            let flagged = result
                .get("flagged")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if !flagged {
                Vec::new()
            } else {
                let cats: Vec<(String, f64)> = result
                    .get("categories")
                    .and_then(|c| c.as_object())
                    .map(|c| {
                        c.iter()
                            .filter(|(_, v)| v.as_bool() == Some(true))
                            .map(|(k, _)| (k.clone(), score(k).unwrap_or(1.0)))
                            .collect()
                    })
                    .unwrap_or_default();
                if cats.is_empty() {
                    vec![("flagged".into(), 1.0)]
                } else {
                    cats
                }
            }
        } else {
            self.categories
                .iter()
                .filter_map(|(cat, threshold)| {
                    score(cat)
                        .filter(|s| s >= threshold)
                        .map(|s| (cat.clone(), s))
                })
                .collect()
        };
        let len = text.chars().count();
        Ok(Verdict {
            violated: !hits.is_empty(),
            detail: (!hits.is_empty()).then(|| {
                hits.iter()
                    .map(|(c, s)| format!("{c} {s:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            findings: hits
                .into_iter()
                .map(|(c, s)| {
                    let entity =
                        format!("MODERATION_{}", c.to_uppercase().replace(['/', '-'], "_"));
                    Finding::new(entity, 0, len, s)
                })
                .collect(),
        })
    }
}
