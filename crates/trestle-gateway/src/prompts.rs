//! Prompts as code (docs/prompts.md): one TOML file per prompt in `[prompts] dir`, with
//! declared variables and numbered, immutable versions of minijinja templates. Files are read
//! and every template compiled when the config is built, so a bad prompt fails `trestle config
//! check` (and a reload) with its file and line, never a request. Labels (`production`,
//! `canary`, …) point at versions: the file sets them, and [`PromptLabels`] (`labels`) moves
//! them by API with every move recorded in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use trestle_core::experiment::PromptRef;
use trestle_core::openai::{ChatRequest, Content, Message, Role};

use crate::error::GatewayError;

pub mod labels;
pub use labels::{LabelMove, PromptLabels};

/// A declared variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarSpec {
    #[serde(rename = "type", default)]
    pub kind: VarType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    #[default]
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
    Any,
}

impl VarType {
    fn accepts(self, v: &Value) -> bool {
        match self {
            VarType::String => v.is_string(),
            VarType::Number => v.is_number(),
            VarType::Integer => v.is_i64() || v.is_u64(),
            VarType::Boolean => v.is_boolean(),
            VarType::Array => v.is_array(),
            VarType::Object => v.is_object(),
            VarType::Any => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            VarType::String => "a string",
            VarType::Number => "a number",
            VarType::Integer => "an integer",
            VarType::Boolean => "a boolean",
            VarType::Array => "an array",
            VarType::Object => "an object",
            VarType::Any => "any value",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    variables: BTreeMap<String, VarSpec>,
    /// The model parameters the prompt was written for (every version, unless it sets its own).
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    versions: Vec<VersionFile>,
    #[serde(default)]
    labels: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    #[serde(default)]
    system: Option<String>,
    /// Messages placed after the system message and before the request's own.
    #[serde(default)]
    messages: Vec<TemplateMessage>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

/// One immutable version.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub number: u32,
    /// The first 12 hex digits of the SHA-256 of its templates and parameters.
    pub hash: String,
    pub system: Option<String>,
    pub messages: Vec<TemplateMessage>,
    pub params: Map<String, Value>,
    pub description: Option<String>,
}

/// A prompt, every template compiled.
pub struct Prompt {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub variables: BTreeMap<String, VarSpec>,
    pub versions: BTreeMap<u32, Version>,
    /// Labels as the file sets them.
    pub labels: BTreeMap<String, u32>,
    env: Environment<'static>,
}

/// What a request gets from a prompt version.
#[derive(Debug)]
pub struct Rendered {
    /// `name@N`.
    pub id: String,
    pub messages: Vec<Message>,
    pub params: Map<String, Value>,
}

fn role_of(role: &str) -> Option<Role> {
    serde_json::from_value(json!(role)).ok()
}

/// The 1-based line of `needle` in `text`, or of the start.
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map_or(1, |at| text[..at].matches('\n').count() + 1)
}

impl Prompt {
    /// Reads and checks one prompt file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Prompt, String> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let at = |line: usize, msg: String| format!("{}:{line}: {msg}", path.display());
        let file: PromptFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(1, |s| text[..s.start].matches('\n').count() + 1);
            at(line, e.message().trim().to_string())
        })?;
        if file.versions.is_empty() {
            return Err(at(1, "a prompt has at least one [[versions]]".into()));
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let declared: HashSet<&str> = file.variables.keys().map(String::as_str).collect();
        let mut versions = BTreeMap::new();
        let mut by_hash: HashMap<String, u32> = HashMap::new();
        for v in file.versions {
            let line = line_of(&text, &format!("version = {}", v.version));
            if versions.contains_key(&v.version) {
                return Err(at(line, format!("version {} is defined twice", v.version)));
            }
            let params = v.params.unwrap_or_else(|| file.params.clone());
            let mut sources: Vec<(String, &str)> = Vec::new();
            if let Some(s) = &v.system {
                sources.push((format!("v{}/system", v.version), s));
            }
            for (i, m) in v.messages.iter().enumerate() {
                if role_of(&m.role).is_none() {
                    return Err(at(
                        line,
                        format!(
                            "version {}: messages[{i}].role `{}` is not a chat role",
                            v.version, m.role
                        ),
                    ));
                }
                sources.push((format!("v{}/m{i}", v.version), &m.content));
            }
            if sources.is_empty() {
                return Err(at(
                    line,
                    format!("version {} has no `system` and no `messages`", v.version),
                ));
            }
            for (tname, source) in &sources {
                env.add_template_owned(tname.clone(), source.to_string())
                    .map_err(|e| {
                        at(
                            line,
                            format!("version {}: the template does not compile: {e}", v.version),
                        )
                    })?;
                let tmpl = env
                    .get_template(tname)
                    .map_err(|e| at(line, e.to_string()))?;
                let mut used: Vec<String> = tmpl
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|u| !declared.contains(u.as_str()))
                    .collect();
                used.sort();
                if !used.is_empty() {
                    return Err(at(
                        line,
                        format!(
                            "version {} uses undeclared variable(s) {}; declare them under `variables`",
                            v.version,
                            used.join(", ")
                        ),
                    ));
                }
            }
            let hash = {
                let canon = json!({"system": v.system, "messages": v.messages, "params": params});
                let d = Sha256::digest(canon.to_string().as_bytes());
                d[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            if let Some(first) = by_hash.insert(hash.clone(), v.version) {
                return Err(at(
                    line,
                    format!(
                        "version {} has the same content as version {first}; a new version must change something",
                        v.version
                    ),
                ));
            }
            versions.insert(
                v.version,
                Version {
                    number: v.version,
                    hash,
                    system: v.system,
                    messages: v.messages,
                    params,
                    description: v.description,
                },
            );
        }
        for (label, n) in &file.labels {
            if !versions.contains_key(n) {
                return Err(at(
                    line_of(&text, "[labels]"),
                    format!("label `{label}` points at version {n}, which does not exist"),
                ));
            }
        }
        for (var, spec) in &file.variables {
            if let Some(d) = &spec.default
                && !spec.kind.accepts(d)
            {
                return Err(at(
                    line_of(&text, var),
                    format!("variable `{var}`: the default is not {}", spec.kind.name()),
                ));
            }
        }
        Ok(Prompt {
            name,
            path: path.to_path_buf(),
            description: file.description,
            variables: file.variables,
            versions,
            labels: file.labels,
            env,
        })
    }

    /// Checks the request's variables and renders a version into messages.
    pub fn render(
        &self,
        number: u32,
        given: Option<&Map<String, Value>>,
    ) -> Result<Rendered, GatewayError> {
        let version = self.versions.get(&number).ok_or_else(|| {
            GatewayError::Internal(format!("prompt {}@{number} is gone", self.name))
        })?;
        let empty = Map::new();
        let given = given.unwrap_or(&empty);
        let bad = |var: &str, msg: String| {
            GatewayError::invalid(msg, Some(&format!("prompt_variables.{var}")))
        };
        for k in given.keys() {
            if !self.variables.contains_key(k) {
                let known: Vec<&str> = self.variables.keys().map(String::as_str).collect();
                return Err(bad(
                    k,
                    format!(
                        "prompt {} has no variable `{k}` (it declares: {})",
                        self.name,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let mut vars = Map::new();
        for (k, spec) in &self.variables {
            match given.get(k).or(spec.default.as_ref()) {
                Some(v) if spec.kind.accepts(v) => {
                    vars.insert(k.clone(), v.clone());
                }
                Some(v) => {
                    return Err(bad(
                        k,
                        format!(
                            "prompt variable `{k}` must be {}, not {v}",
                            spec.kind.name()
                        ),
                    ));
                }
                None if spec.required => {
                    return Err(bad(
                        k,
                        format!(
                            "prompt {} needs the variable `{k}` in `prompt_variables`",
                            self.name
                        ),
                    ));
                }
                None => {}
            }
        }
        let ctx = minijinja::Value::from_serialize(&vars);
        let render = |tname: String| -> Result<String, GatewayError> {
            let t = self
                .env
                .get_template(&tname)
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            t.render(&ctx).map_err(|e| {
                GatewayError::invalid(
                    format!("prompt {}@{number} could not be rendered: {e}", self.name),
                    Some("prompt_variables"),
                )
            })
        };
        let mut messages = Vec::with_capacity(1 + version.messages.len());
        if version.system.is_some() {
            messages.push(text_message(
                Role::System,
                render(format!("v{number}/system"))?,
            ));
        }
        for (i, m) in version.messages.iter().enumerate() {
            let role = role_of(&m.role).unwrap_or(Role::User);
            messages.push(text_message(role, render(format!("v{number}/m{i}"))?));
        }
        Ok(Rendered {
            id: format!("{}@{number}", self.name),
            messages,
            params: version.params.clone(),
        })
    }
}

fn text_message(role: Role, text: String) -> Message {
    Message {
        role,
        content: Some(Content::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

/// Applies a rendered prompt to a request: its messages go first, its parameters fill what
/// the request left unset, and `prompt_variables` is taken out (upstreams never see it).
pub fn apply(req: &mut ChatRequest, rendered: Rendered) {
    let mut messages = rendered.messages;
    messages.append(&mut req.messages);
    req.messages = messages;
    for (k, v) in rendered.params {
        match k.as_str() {
            "temperature" if req.temperature.is_none() => req.temperature = v.as_f64(),
            "max_tokens" if req.max_tokens.is_none() && req.max_completion_tokens.is_none() => {
                req.max_tokens = v.as_u64().map(|n| n as u32)
            }
            "top_p" if req.top_p.is_none() => req.top_p = v.as_f64(),
            "temperature" | "max_tokens" | "top_p" => {}
            _ => {
                req.extra.entry(k).or_insert(v);
            }
        }
    }
}

/// Every prompt of `[prompts] dir`.
#[derive(Default)]
pub struct Prompts {
    pub by_name: BTreeMap<String, Prompt>,
}

impl Prompts {
    /// Reads every `*.toml` in `dir` (none when the folder does not exist).
    pub fn load(dir: &Path) -> Result<Prompts, String> {
        let mut by_name = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Prompts::default()),
            Err(e) => return Err(format!("prompts: cannot read {}: {e}", dir.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let prompt = Prompt::load(&p)?;
            by_name.insert(prompt.name.clone(), prompt);
        }
        Ok(Prompts { by_name })
    }

    /// Checks that a reference names a prompt and, for a version, that it exists.
    pub fn check(&self, r: &PromptRef) -> Result<(), String> {
        let p = self.by_name.get(r.name()).ok_or_else(|| {
            format!(
                "no prompt `{}` in the prompts folder (found: {})",
                r.name(),
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if let PromptRef::Version(_, n) = r
            && !p.versions.contains_key(n)
        {
            return Err(format!("prompt {} has no version {n}", r.name()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(super) fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("trestle-prompts-{name}-{}", std::process::id()))
    }

    pub(super) const SUPPORT: &str = "description = \"Answers support questions\"\nvariables = { shop = { type = \"string\", required = true }, tier = { type = \"integer\", default = 1 } }\n[[versions]]\nversion = 1\nsystem = \"You are a helpful support agent for {{ shop }}.\"\n[[versions]]\nversion = 2\nsystem = \"You are a concise support agent for {{ shop }} (tier {{ tier }}). Answer in one sentence.\"\nparams = { temperature = 0.2, max_tokens = 120 }\n[labels]\nproduction = 1\n";

    #[test]
    fn renders_with_declared_variables_and_names_bad_ones() {
        let dir = tmp("render");
        let p = Prompt::load(&write(&dir, "support-answer", SUPPORT)).unwrap();
        let vars: Map<String, Value> = serde_json::from_str(r#"{"shop": "Acme"}"#).unwrap();
        let r = p.render(2, Some(&vars)).unwrap();
        assert_eq!(r.id, "support-answer@2");
        assert_eq!(
            r.messages[0].text(),
            "You are a concise support agent for Acme (tier 1). Answer in one sentence."
        );
        assert_eq!(r.params["max_tokens"], 120);
        let missing = p.render(1, None).unwrap_err();
        assert!(
            missing.to_string().contains("needs the variable `shop`"),
            "{missing}"
        );
        let typed: Map<String, Value> = serde_json::from_str(r#"{"shop": 7}"#).unwrap();
        assert!(
            p.render(1, Some(&typed))
                .unwrap_err()
                .to_string()
                .contains("must be a string")
        );
        let extra: Map<String, Value> =
            serde_json::from_str(r#"{"shop": "A", "shp": "B"}"#).unwrap();
        assert!(
            p.render(1, Some(&extra))
                .unwrap_err()
                .to_string()
                .contains("no variable `shp`")
        );
        assert_ne!(p.versions[&1].hash, p.versions[&2].hash);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_prompt_files_name_their_line() {
        let dir = tmp("bad");
        let cases = [
            (
                "undeclared",
                "[[versions]]\nversion = 1\nsystem = \"Hi {{ name }}\"\n",
                ":2: version 1 uses undeclared variable(s) name",
            ),
            (
                "syntax",
                "[[versions]]\nversion = 1\nsystem = \"Hi {{ name \"\n",
                "does not compile",
            ),
            (
                "dup",
                "[[versions]]\nversion = 1\nsystem = \"Hi\"\n[[versions]]\nversion = 2\nsystem = \"Hi\"\n",
                ":5: version 2 has the same content as version 1",
            ),
            (
                "label",
                "[[versions]]\nversion = 1\nsystem = \"Hi\"\n[labels]\nproduction = 3\n",
                ":4: label `production` points at version 3",
            ),
            ("typo", "[[versions]]\nversion = 1\nsytem = \"Hi\"\n", ":3:"),
        ];
        for (name, text, want) in cases {
            let e = Prompt::load(&write(&dir, name, text)).err().unwrap();
            assert!(e.contains(want), "{name}: {e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
