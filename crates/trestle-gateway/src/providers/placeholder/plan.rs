//! What the placeholder model answers to a request, decided up front: the text or tool call,
//! its tokens, the timings and the usage. Deterministic for a seed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use serde_json::{Map, Value, json};
use trestle_core::config::{Dist, DistSpec, PlaceholderConfig, TextMode};
use trestle_core::openai::{ChatRequest, ResponseFormat, Role, Usage};

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "voluptate",
];

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The reply split into tokens (each keeps its leading space).
    pub tokens: Vec<String>,
    /// A tool call instead of text: (function name, JSON arguments).
    pub tool_call: Option<(String, String)>,
    pub finish_reason: &'static str,
    pub ttft: Duration,
    /// Pause between tokens after the first.
    pub gap: Duration,
    pub usage: Usage,
    /// Each token's log probability, when the request asked for `logprobs`: ln 0.95, or
    /// ln X when the last user message says `[confidence:X]` (for tests of confidence and
    /// cascades).
    pub logprob: Option<f64>,
    /// The request's stop sequence that cut the reply, reported as vLLM does (the choice's
    /// `stop_reason`).
    pub stop_sequence: Option<String>,
}

impl Plan {
    pub fn text(&self) -> String {
        self.tokens.concat()
    }

    /// How long the whole answer takes.
    pub fn duration(&self) -> Duration {
        self.ttft + self.gap * (self.tokens.len().saturating_sub(1) as u32)
    }
}

/// The replies of `mode = "file"` (lines) and `mode = "script"` (rules).
#[derive(Debug, Default)]
pub struct Replies {
    lines: Vec<String>,
    rules: Vec<(regex::Regex, String)>,
}

impl Replies {
    /// Reads a replies file: for `file` one reply per non-empty line, for `script` one
    /// `{"match": REGEX, "reply": TEXT}` per line (errors name the line).
    pub fn parse(mode: TextMode, text: &str) -> Result<Replies, String> {
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        if mode != TextMode::Script {
            return Ok(Replies {
                lines: lines.map(|(_, l)| l.to_string()).collect(),
                rules: Vec::new(),
            });
        }
        let mut rules = Vec::new();
        for (i, line) in lines {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
            let (Some(pattern), Some(reply)) = (v["match"].as_str(), v["reply"].as_str()) else {
                return Err(format!(
                    "line {}: a rule is {{\"match\": REGEX, \"reply\": TEXT}}",
                    i + 1
                ));
            };
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("line {}: `match` is not a valid regex: {e}", i + 1))?;
            rules.push((re, reply.to_string()));
        }
        Ok(Replies {
            lines: Vec::new(),
            rules,
        })
    }
}

/// Makes plans; `replies` holds the replies of `mode = "file"` and `mode = "script"`.
pub fn plan(
    config: &PlaceholderConfig,
    replies: &Replies,
    model: &str,
    req: &ChatRequest,
    nonce: u64,
) -> Plan {
    let content_seed = {
        let mut h = DefaultHasher::new();
        config.seed.hash(&mut h);
        req.last_user_text().hash(&mut h);
        h.finish()
    };
    let mut text_rng = SmallRng::seed_from_u64(content_seed);
    let mut time_rng =
        SmallRng::seed_from_u64(config.seed ^ nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15));

    let cap = req
        .output_cap()
        .map(|c| c as usize)
        .unwrap_or(usize::MAX)
        .max(1);
    let tool_call = choose_tool(req).map(|(name, schema)| {
        let args = example(&schema, &mut text_rng, 0);
        (name, args.to_string())
    });
    let mut stop_sequence = None;
    let (tokens, finish_reason) = if let Some((_, args)) = &tool_call {
        (split_tokens(args), "tool_calls")
    } else {
        let text = match &req.response_format {
            Some(ResponseFormat::JsonObject) => {
                json!({ "reply": reply_text(config, replies, model, req, &mut text_rng) })
                    .to_string()
            }
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let schema = json_schema.schema.clone().unwrap_or(Value::Null);
                example(&schema, &mut text_rng, 0).to_string()
            }
            _ => reply_text(config, replies, model, req, &mut text_rng),
        };
        let (text, matched) = apply_stop(text, req);
        let mut tokens = split_tokens(&text);
        if tokens.len() > cap {
            tokens.truncate(cap);
            (tokens, "length")
        } else {
            stop_sequence = matched;
            (tokens, "stop")
        }
    };

    let ttft_ms = sample(&config.ttft_ms, &mut time_rng);
    let rate = sample(&config.tokens_per_sec, &mut time_rng);
    let gap = if rate > 0.0 {
        Duration::from_secs_f64(1.0 / rate)
    } else {
        Duration::ZERO
    };
    let prompt_tokens = prompt_tokens(req);
    Plan {
        usage: Usage::new(prompt_tokens, tokens.len() as u64, 0),
        tokens,
        tool_call,
        finish_reason,
        ttft: Duration::from_secs_f64(ttft_ms.max(0.0) / 1000.0),
        gap,
        logprob: (req.extra.get("logprobs") == Some(&Value::Bool(true))).then(|| {
            stated_confidence(&req.last_user_text())
                .unwrap_or(0.95)
                .ln()
        }),
        stop_sequence,
    }
}

/// `[confidence:0.4]` in a message: the probability every token of the answer gets.
fn stated_confidence(text: &str) -> Option<f64> {
    let start = text.find("[confidence:")? + "[confidence:".len();
    let end = start + text[start..].find(']')?;
    text[start..end]
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|p| *p > 0.0 && *p <= 1.0)
}

/// Draws one value from a configured distribution.
pub fn sample(dist: &Dist, rng: &mut SmallRng) -> f64 {
    let v = match *dist {
        Dist::Fixed(v) | Dist::Spec(DistSpec::Fixed { value: v }) => v,
        Dist::Spec(DistSpec::Uniform { min, max }) if max > min => rng.random_range(min..max),
        Dist::Spec(DistSpec::Uniform { min, .. }) => min,
        Dist::Spec(DistSpec::Normal { mean, std }) => Normal::new(mean, std)
            .map(|d| d.sample(rng))
            .unwrap_or(mean),
        Dist::Spec(DistSpec::Lognormal { median, sigma }) => LogNormal::new(median.ln(), sigma)
            .map(|d| d.sample(rng))
            .unwrap_or(median),
    };
    v.max(0.0)
}

/// An estimate of prompt tokens: about four characters a token, as for English text.
fn prompt_tokens(req: &ChatRequest) -> u64 {
    let chars: usize = req
        .messages
        .iter()
        .map(|m| m.text().len() + 4)
        .sum::<usize>()
        + req.tools.as_ref().map(|t| t.len() * 40).unwrap_or(0);
    (chars as u64).div_ceil(4).max(1)
}

fn reply_text(
    config: &PlaceholderConfig,
    replies: &Replies,
    model: &str,
    req: &ChatRequest,
    rng: &mut SmallRng,
) -> String {
    // `transcript`: every message as `role: text`, one per line (what a prompt rendered).
    if model == "transcript" {
        return req
            .messages
            .iter()
            .map(|m| format!("{}: {}", m.role.as_str(), m.text()))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let mode = match model {
        "echo" => TextMode::Echo,
        "lorem" => TextMode::Lorem,
        _ => config.mode,
    };
    match mode {
        TextMode::Echo => {
            let text = req.last_user_text();
            if text.trim().is_empty() {
                "(no user message to echo)".to_string()
            } else {
                text
            }
        }
        TextMode::Lorem => {
            let words: Vec<&str> = (0..config.lorem_words.max(1))
                .map(|_| LOREM[rng.random_range(0..LOREM.len())])
                .collect();
            let mut s = words.join(" ");
            if let Some(first) = s.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            s.push('.');
            s
        }
        TextMode::Fixed => config.text.clone().unwrap_or_default(),
        TextMode::File => {
            if replies.lines.is_empty() {
                String::new()
            } else {
                replies.lines[rng.random_range(0..replies.lines.len())].clone()
            }
        }
        TextMode::Script => {
            let question = req.last_user_text();
            match replies.rules.iter().find(|(re, _)| re.is_match(&question)) {
                Some((_, reply)) => reply.clone(),
                None => config.text.clone().unwrap_or(question),
            }
        }
    }
}

/// The tool to call: with tools offered, no `tool_choice: "none"`, and no tool result yet
/// after the last user message, the placeholder calls the named tool or the first one.
fn choose_tool(req: &ChatRequest) -> Option<(String, Value)> {
    let tools = req.tools.as_ref().filter(|t| !t.is_empty())?;
    let choice = req.tool_choice.as_ref();
    if choice.is_some_and(|c| c.is_mode("none")) {
        return None;
    }
    if req.messages.last().is_some_and(|m| m.role == Role::Tool) {
        return None;
    }
    let tool = match choice.and_then(|c| c.named()) {
        Some(name) => tools.iter().find(|t| t.function.name == name)?,
        None => &tools[0],
    };
    Some((
        tool.function.name.clone(),
        tool.function.parameters.clone().unwrap_or(Value::Null),
    ))
}

/// A value that satisfies the common parts of a JSON Schema.
pub fn example(schema: &Value, rng: &mut SmallRng, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return json!({});
    };
    if let Some(v) = obj.get("const").or_else(|| obj.get("default")) {
        return v.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(|e| e.as_array())
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
        {
            return example(first, rng, depth + 1);
        }
    }
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ => "object",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    out.insert(name.clone(), example(sub, rng, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = obj.get("items").cloned().unwrap_or(Value::Null);
            let min = obj
                .get("minItems")
                .and_then(|m| m.as_u64())
                .unwrap_or(1)
                .max(1);
            Value::Array(
                (0..min.min(4))
                    .map(|_| example(&item, rng, depth + 1))
                    .collect(),
            )
        }
        "string" => Value::String(LOREM[rng.random_range(0..LOREM.len())].to_string()),
        "integer" => json!(rng.random_range(1..100)),
        "number" => json!(f64::from(rng.random_range(1..1000)) / 10.0),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// Cuts the text at the first stop sequence, and says which one cut it.
fn apply_stop(mut text: String, req: &ChatRequest) -> (String, Option<String>) {
    let Some(stop) = &req.stop else {
        return (text, None);
    };
    let cut = stop
        .to_vec()
        .into_iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    if let Some((at, _)) = &cut {
        text.truncate(*at);
    }
    (text, cut.map(|(_, s)| s))
}

/// Splits text into word-like tokens, each keeping the whitespace before it.
pub fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for ch in text.chars() {
        let space = ch.is_whitespace();
        if space && in_word {
            tokens.push(std::mem::take(&mut current));
        }
        in_word = !space;
        current.push(ch);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}
