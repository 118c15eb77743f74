//! Golden datasets: JSON Lines, one case per line, parsed with errors that name the line and
//! the field, written back in one canonical form whose hash is the dataset's version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::assertion::Assertion;

/// One case of a golden set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub category: String,
    pub messages: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, rename = "assert", skip_serializing_if = "Vec::is_empty")]
    pub asserts: Vec<Assertion>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The trace a mined case came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// A line as written: `input` may stand in for `messages`, and `category` may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    id: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    expected: Option<String>,
    #[serde(default, rename = "assert")]
    asserts: Vec<Assertion>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// The category of a case that names none.
pub const DEFAULT_CATEGORY: &str = "uncategorized";

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// A problem on one line of a dataset file.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// The field, as a path (`assert[0].value`), when the problem is in one.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field `{field}`: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Every problem found in a file (parsing goes on past the first).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct DatasetError(pub Vec<LineError>);

/// How many problems a file reports before it stops looking.
const MAX_ERRORS: usize = 50;

/// A parsed, valid dataset.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub cases: Vec<Case>,
}

impl Dataset {
    /// Parses JSON Lines (blank lines and lines starting with `//` are skipped). Every case is
    /// checked: its shape, its messages, each assertion (regexes and schemas compile), and
    /// that ids are unique.
    pub fn parse(text: &str) -> Result<Dataset, DatasetError> {
        let mut cases = Vec::new();
        let mut errors = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("//") {
                continue;
            }
            if errors.len() >= MAX_ERRORS {
                break;
            }
            match parse_line(trimmed, n) {
                Ok(case) => {
                    if let Some(first) = seen.insert(case.id.clone(), n) {
                        errors.push(LineError {
                            line: n,
                            field: Some("id".into()),
                            message: format!("`{}` is already the id of line {first}", case.id),
                        });
                    }
                    cases.push(case);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(Dataset { cases })
        } else {
            errors.truncate(MAX_ERRORS);
            Err(DatasetError(errors))
        }
    }

    /// The canonical JSON Lines text: one case per line, `messages` always spelled out.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for c in &self.cases {
            // A Case always serializes.
            out.push_str(&serde_json::to_string(c).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// The version: the first 16 hex digits of the SHA-256 of the canonical text, so the same
    /// cases give the same version wherever they were imported.
    pub fn version(&self) -> String {
        let digest = Sha256::digest(self.to_jsonl().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Cases per category, sorted by name.
    pub fn balance(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in &self.cases {
            *m.entry(c.category.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Pairs of cases whose inputs are the same once case, spacing and punctuation are
    /// ignored.
    pub fn exact_duplicates(&self) -> Vec<(String, String)> {
        let mut first: HashMap<String, &str> = HashMap::new();
        let mut out = Vec::new();
        for c in &self.cases {
            let key = normalize(&c.input_text());
            match first.get(&key) {
                Some(id) => out.push((id.to_string(), c.id.clone())),
                None => {
                    first.insert(key, &c.id);
                }
            }
        }
        out
    }
}

fn parse_line(line: &str, n: usize) -> Result<Case, Vec<LineError>> {
    let err = |field: Option<String>, message: String| {
        vec![LineError {
            line: n,
            field,
            message,
        }]
    };
    let value: Value =
        serde_json::from_str(line).map_err(|e| err(None, format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(err(None, "a case is a JSON object".into()));
    }
    let raw: RawCase = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        err(field, e.into_inner().to_string())
    })?;
    let mut errors = Vec::new();
    let mut problem = |field: &str, message: String| {
        errors.push(LineError {
            line: n,
            field: Some(field.to_string()),
            message,
        })
    };
    if raw.id.trim().is_empty() {
        problem("id", "must not be empty".into());
    }
    let messages = match (raw.messages, raw.input) {
        (Some(_), Some(_)) => {
            problem("input", "give `messages` or `input`, not both".into());
            Vec::new()
        }
        (None, None) => {
            problem("messages", "a case needs `messages` or `input`".into());
            Vec::new()
        }
        (None, Some(input)) => vec![serde_json::json!({"role": "user", "content": input})],
        (Some(messages), None) => {
            if messages.is_empty() {
                problem("messages", "must not be empty".into());
            }
            for (i, m) in messages.iter().enumerate() {
                if let Err(e) = check_message(m) {
                    problem(&format!("messages[{i}]"), e);
                }
            }
            messages
        }
    };
    for (i, a) in raw.asserts.iter().enumerate() {
        if let Err(e) = a.prepare(raw.expected.as_deref()) {
            problem(&format!("assert[{i}]"), e);
        }
    }
    let category = match raw.category {
        Some(c) if c.trim().is_empty() => {
            problem(
                "category",
                "must not be empty (leave it out instead)".into(),
            );
            c
        }
        Some(c) => c,
        None => DEFAULT_CATEGORY.to_string(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Case {
        id: raw.id,
        category,
        messages,
        expected: raw.expected,
        asserts: raw.asserts,
        metadata: raw.metadata,
        trace_id: raw.trace_id,
    })
}

fn check_message(m: &Value) -> Result<(), String> {
    let obj = m
        .as_object()
        .ok_or("a message is an object with `role` and `content`")?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or("`role` is missing or not a string")?;
    if !ROLES.contains(&role) {
        return Err(format!(
            "unknown role `{role}` (one of {})",
            ROLES.join(", ")
        ));
    }
    match obj.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        Some(Value::Null) | None if role == "assistant" => Ok(()),
        _ => Err("`content` must be a string or an array of parts".into()),
    }
}

impl Case {
    /// The text of the last user message (what duplicate checks and reports show).
    pub fn input_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .or(self.messages.last())
            .map(content_text)
            .unwrap_or_default()
    }
}

/// A message's text: its `content` string, or its text parts joined.
pub fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Lower case, letters and digits only, single spaces.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Word-set Jaccard similarity of two texts (the near-duplicate check with no embedder).
pub fn jaccard(a: &str, b: &str) -> f32 {
    let a: HashSet<&str> = a.split(' ').filter(|w| !w.is_empty()).collect();
    let b: HashSet<&str> = b.split(' ').filter(|w| !w.is_empty()).collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(&b).count();
    inter as f32 / (a.len() + b.len() - inter) as f32
}

/// Near-duplicate pairs by cosine similarity of unit vectors (`vectors[i]` belongs to
/// `ids[i]`), at or above `threshold`, excluding exact duplicates already reported.
pub fn near_duplicates(
    ids: &[&str],
    vectors: &[Vec<f32>],
    threshold: f32,
) -> Vec<(String, String, f32)> {
    let mut out = Vec::new();
    for i in 0..vectors.len() {
        for j in (i + 1)..vectors.len() {
            let sim: f32 = vectors[i].iter().zip(&vectors[j]).map(|(x, y)| x * y).sum();
            if sim >= threshold {
                out.push((ids[i].to_string(), ids[j].to_string(), sim));
            }
        }
    }
    out
}

/// What changed between two versions of a dataset, by case id.
#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

pub fn diff(old: &Dataset, new: &Dataset) -> Diff {
    let before: HashMap<&str, &Case> = old.cases.iter().map(|c| (c.id.as_str(), c)).collect();
    let after: HashSet<&str> = new.cases.iter().map(|c| c.id.as_str()).collect();
    let mut d = Diff::default();
    for c in &new.cases {
        match before.get(c.id.as_str()) {
            None => d.added.push(c.id.clone()),
            Some(b) if *b != c => d.changed.push(c.id.clone()),
            Some(_) => d.unchanged += 1,
        }
    }
    d.removed = old
        .cases
        .iter()
        .filter(|c| !after.contains(c.id.as_str()))
        .map(|c| c.id.clone())
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_stands_in_for_messages_and_category_defaults() {
        let d = Dataset::parse(
            r#"{"id": "a", "input": "hi", "assert": [{"type": "contains", "value": "hi"}]}"#,
        )
        .unwrap();
        assert_eq!(d.cases[0].messages[0]["role"], "user");
        assert_eq!(d.cases[0].category, DEFAULT_CATEGORY);
        assert_eq!(d.cases[0].input_text(), "hi");
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = "{\"id\": \"a\", \"input\": \"x\"}\n\n{\"id\": \"b\", \"input\": \"y\", \"assert\": [{\"type\": \"regex\", \"value\": \"(\"}]}\n{\"id\": \"a\", \"input\": \"z\"}\n{\"id\": \"c\", \"imput\": \"z\"}\nnot json\n{\"id\": \"d\", \"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}";
        let e = Dataset::parse(text).unwrap_err().0;
        let lines: Vec<(usize, Option<&str>)> =
            e.iter().map(|e| (e.line, e.field.as_deref())).collect();
        assert_eq!(
            lines,
            vec![
                (3, Some("assert[0]")),
                (4, Some("id")),
                (5, Some("imput")),
                (6, None),
                (7, Some("messages[0]")),
            ]
        );
        assert!(e[2].message.contains("imput"), "{}", e[2].message);
        assert!(e[1].message.contains("line 1"), "{}", e[1].message);
    }

    #[test]
    fn version_is_content_addressed() {
        let a = Dataset::parse(r#"{"id": "a", "input": "hi"}"#).unwrap();
        let b =
            Dataset::parse(r#"{"input": "hi",   "id": "a", "category": "uncategorized"}"#).unwrap();
        let c = Dataset::parse(r#"{"id": "a", "input": "hi!"}"#).unwrap();
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(a.version().len(), 16);
    }

    #[test]
    fn duplicates_and_diff() {
        let old = Dataset::parse(
            "{\"id\": \"a\", \"input\": \"Where is my order?\"}\n{\"id\": \"b\", \"input\": \"where is my ORDER\"}\n{\"id\": \"c\", \"input\": \"x\"}",
        )
        .unwrap();
        assert_eq!(old.exact_duplicates(), vec![("a".into(), "b".into())]);
        let new = Dataset::parse(
            "{\"id\": \"a\", \"input\": \"Where is my order?\"}\n{\"id\": \"b\", \"input\": \"changed\"}\n{\"id\": \"d\", \"input\": \"new\"}",
        )
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(
            (d.added, d.removed, d.changed, d.unchanged),
            (
                vec!["d".to_string()],
                vec!["c".to_string()],
                vec!["b".to_string()],
                1
            )
        );
        assert!(jaccard("a b c d", "a b c d") > 0.99);
        assert!((jaccard("a b c d", "a b c e") - 0.6).abs() < 1e-6);
    }
}
