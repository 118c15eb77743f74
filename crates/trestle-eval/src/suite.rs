//! A suite: which dataset runs against which route, with what assertions for every case,
//! which judge, and the gates that decide whether the change ships.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::assertion::Assertion;
use crate::judge::{self, Criterion, Judge};
use crate::stats::Gate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The suite's name, which runs are filed under (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// A JSON Lines file (relative to the suite), or `NAME` / `NAME@VERSION` of an imported
    /// dataset.
    pub dataset: String,
    /// The route (or `provider/model`) every case is sent to.
    pub route: String,
    /// A prompt version to run instead of the route's (`name@N` or `name:label`): a
    /// candidate is evaluated before any label points at it. Each case's
    /// `metadata.prompt_variables` fills it.
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Fields added to every request body (`temperature`, `max_tokens`, ...).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// How long one case may take, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Assertions every case gets, on top of its own.
    #[serde(default, rename = "assert")]
    pub asserts: Vec<Assertion>,
    /// Gates per category; `default` for the others, `all` for the whole run.
    #[serde(default)]
    pub gates: BTreeMap<String, Gate>,
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
    /// The `[embedders.NAME]` of the gateway config that `similar` uses (default: the
    /// in-process MiniLM).
    #[serde(default)]
    pub embedder: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// The route the judge runs on.
    pub route: String,
    /// A prompt file (relative to the suite) with `{{criteria}}`, `{{question}}`,
    /// `{{answer}}` and `{{expected}}`; the built-in prompt when left out.
    #[serde(default)]
    pub prompt: Option<PathBuf>,
    /// The rubric; the built-in five criteria when left out.
    #[serde(default)]
    pub criteria: BTreeMap<String, Criterion>,
}

fn default_concurrency() -> usize {
    8
}

fn default_timeout() -> u64 {
    120_000
}

/// Where a suite's dataset comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetRef {
    File(PathBuf),
    Stored {
        name: String,
        version: Option<String>,
    },
}

impl Suite {
    /// Reads and checks a suite file; every problem is named with its key.
    pub fn load(path: &Path) -> Result<(Suite, PathBuf), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let suite: Suite = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        suite
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((suite, dir))
    }

    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.route.is_empty() {
            problems.push("`route` must name a route".to_string());
        }
        if !(1..=1024).contains(&self.concurrency) {
            problems.push(format!(
                "`concurrency` {} is not between 1 and 1024",
                self.concurrency
            ));
        }
        for (name, g) in &self.gates {
            for (key, v) in [("min_pass_rate", g.min_pass_rate), ("max_drop", g.max_drop)] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    problems.push(format!("gates.{name}.{key} = {v} is not between 0 and 1"));
                }
            }
        }
        for (i, a) in self.asserts.iter().enumerate() {
            // A suite-wide `similar` needs a `value`: there is no one expected answer.
            if let Err(e) = a.prepare(None) {
                problems.push(format!("assert[{i}]: {e}"));
            }
        }
        if let Some(j) = &self.judge {
            for (name, c) in &j.criteria {
                let [lo, hi] = c.scale;
                if lo >= hi {
                    problems.push(format!("judge.criteria.{name}.scale = [{lo}, {hi}]: the low end must be below the high"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Where the dataset comes from: an existing file, else a stored name.
    pub fn dataset_ref(&self, dir: &Path) -> DatasetRef {
        let path = dir.join(&self.dataset);
        if path.exists() || self.dataset.ends_with(".jsonl") || self.dataset.contains('/') {
            return DatasetRef::File(path);
        }
        match self.dataset.split_once('@') {
            Some((name, version)) => DatasetRef::Stored {
                name: name.into(),
                version: Some(version.into()),
            },
            None => DatasetRef::Stored {
                name: self.dataset.clone(),
                version: None,
            },
        }
    }

    /// The judge, with its prompt read, if the suite has one.
    pub fn judge(&self, dir: &Path) -> Result<Option<Judge>, String> {
        let Some(j) = &self.judge else {
            return Ok(None);
        };
        let prompt = match &j.prompt {
            None => judge::DEFAULT_PROMPT.to_string(),
            Some(p) => {
                let path = dir.join(p);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("judge.prompt: cannot read {}: {e}", path.display()))?
            }
        };
        if !prompt.contains("{{answer}}") {
            return Err(
                "judge.prompt has no {{answer}}: the judge would never see the answer".into(),
            );
        }
        let criteria = if j.criteria.is_empty() {
            judge::default_criteria()
        } else {
            j.criteria.clone()
        };
        Ok(Some(Judge {
            route: j.route.clone(),
            prompt,
            criteria,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_suite_parses() {
        let s: Suite = toml::from_str(
            "dataset = \"golden.jsonl\"\nroute = \"chat\"\nconcurrency = 8\n[gates]\ndefault = { min_pass_rate = 0.90 }\nreturns = { min_pass_rate = 0.95, max_drop = 0.02 }",
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.gates["returns"].max_drop, Some(0.02));
        assert_eq!(
            s.dataset_ref(Path::new("/nowhere")),
            DatasetRef::File("/nowhere/golden.jsonl".into())
        );
        let stored: Suite =
            toml::from_str("dataset = \"support@0123abcd\"\nroute = \"chat\"").unwrap();
        assert_eq!(
            stored.dataset_ref(Path::new("/nowhere")),
            DatasetRef::Stored {
                name: "support".into(),
                version: Some("0123abcd".into())
            }
        );
    }

    #[test]
    fn bad_suites_say_what_to_fix() {
        let typo =
            toml::from_str::<Suite>("dataset = \"g.jsonl\"\nroute = \"chat\"\nconcurency = 8");
        assert!(typo.unwrap_err().to_string().contains("concurency"));
        let s: Suite = toml::from_str("dataset = \"g.jsonl\"\nroute = \"chat\"\nconcurrency = 0\n[gates]\nx = { min_pass_rate = 95 }").unwrap();
        let e = s.check().unwrap_err();
        assert!(
            e.contains("concurrency") && e.contains("gates.x.min_pass_rate = 95"),
            "{e}"
        );
    }
}
