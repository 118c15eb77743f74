//! The parameter table of docs/providers.md as a test harness: every OpenAI chat parameter is
//! a row, each adapter's tests list what its column says for every row ([`Case`]s), and
//! [`check`] runs them through the adapter's request mapping and its dropped list. A failure
//! names the adapter and the row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Map, Value, json};
use trestle_core::openai::ChatRequest;

use super::ProviderError;

/// The rows: every OpenAI chat parameter, and the non-standard ones adapters map.
pub const ROWS: &[&str] = &[
    "messages",
    "model",
    "temperature",
    "top_p",
    "top_k",
    "thinking",
    "n",
    "stream",
    "stream_options",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "metadata",
    "store",
    "service_tier",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
];

/// What the adapter's column says a parameter becomes.
pub enum Want {
    /// The upstream body has these values at these JSON pointers (`None`: nothing there), and
    /// nothing is reported dropped.
    Sent(Vec<(String, Option<Value>)>),
    /// Approximated: the check says how (an error when it is not), and nothing is reported
    /// dropped.
    Approximated(fn(&Value) -> Result<(), String>),
    /// Left out: the body is exactly the one sent without the parameter, and the parameter is
    /// named in the adapter's dropped list.
    Dropped,
    /// Not translatable: the mapping fails with a refusal naming this `param`.
    Refused(&'static str),
}

/// One case of a row: the request fields that set the parameter (merged over a one-message
/// request) and what must come of them.
pub struct Case {
    pub row: &'static str,
    /// Which variant of the row this is (`""` for the plain one).
    pub variant: &'static str,
    pub set: Value,
    pub want: Want,
}

impl Case {
    pub fn new(row: &'static str, set: Value, want: Want) -> Case {
        Case {
            row,
            variant: "",
            set,
            want,
        }
    }

    pub fn variant(mut self, variant: &'static str) -> Case {
        self.variant = variant;
        self
    }

    fn name(&self) -> String {
        if self.variant.is_empty() {
            format!("row `{}`", self.row)
        } else {
            format!("row `{}` ({})", self.row, self.variant)
        }
    }
}

/// Row `row` set to `value` is left out and named as dropped.
pub fn dropped(row: &'static str, value: Value) -> Case {
    Case::new(row, json!({ row: value }), Want::Dropped)
}

/// The rows only OpenAI's API has: every translating adapter (Anthropic, Gemini) drops them.
pub fn openai_only_dropped() -> Vec<Case> {
    vec![
        dropped("metadata", json!({"k": "v"})),
        dropped("store", json!(true)),
        dropped("service_tier", json!("auto")),
        dropped("reasoning_effort", json!("low")),
        dropped("modalities", json!(["text", "audio"])),
        dropped("audio", json!({"voice": "alloy", "format": "wav"})),
        dropped("prediction", json!({"type": "content", "content": "x = 1"})),
        dropped("web_search_options", json!({})),
    ]
}

/// `pointer` holds `value`.
pub fn at(pointer: &str, value: Value) -> (String, Option<Value>) {
    (pointer.to_string(), Some(value))
}

/// Nothing at `pointer`.
pub fn absent(pointer: &str) -> (String, Option<Value>) {
    (pointer.to_string(), None)
}

/// A function tool, the value of `tools` in the cases.
pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false}}}])
}

/// A JSON schema `response_format`.
pub fn schema_format() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}},
                   "required": ["a"]}}})
}

/// The request a case sends: one user message, with the case's fields over it.
pub fn request(set: &Value) -> ChatRequest {
    let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(base), Some(set)) = (body.as_object_mut(), set.as_object()) {
        base.extend(set.clone());
    }
    serde_json::from_value(body).unwrap()
}

/// The openai column: every parameter goes out as the client sent it (the other fixed ways
/// are cases of their own in the openai tests).
pub fn as_sent_cases() -> Vec<Case> {
    let samples: Vec<(&'static str, Value)> = vec![
        ("temperature", json!(1.5)),
        ("top_p", json!(0.9)),
        ("top_k", json!(40)),
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2048}),
        ),
        ("n", json!(2)),
        ("stop", json!(["END", "STOP"])),
        ("max_tokens", json!(100)),
        ("max_completion_tokens", json!(50)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-0.25)),
        ("logit_bias", json!({"50256": -100})),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("user", json!("u-1")),
        ("seed", json!(7)),
        ("tools", weather_tool()),
        ("parallel_tool_calls", json!(false)),
        ("metadata", json!({"k": "v"})),
        ("store", json!(true)),
        ("service_tier", json!("flex")),
        ("reasoning_effort", json!("low")),
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("prediction", json!({"type": "content", "content": "x = 1"})),
        ("web_search_options", json!({"search_context_size": "low"})),
    ];
    let mut cases: Vec<Case> = samples
        .into_iter()
        .map(|(row, value)| {
            let sent = at(&format!("/{row}"), value.clone());
            Case::new(row, json!({ row: value }), Want::Sent(vec![sent]))
        })
        .collect();
    cases.extend([
        Case::new(
            "messages",
            json!({"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hi"}]}),
            Want::Sent(vec![
                at("/messages/0/role", json!("system")),
                at("/messages/0/content", json!("Be brief.")),
                at("/messages/1/content", json!("hi")),
            ]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "required"}),
            Want::Sent(vec![at("/tool_choice", json!("required"))]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(),
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
            Want::Sent(vec![at(
                "/tool_choice",
                json!({"type": "function", "function": {"name": "get_weather"}}),
            )]),
        )
        .variant("named"),
        Case::new(
            "response_format",
            json!({"response_format": {"type": "json_object"}}),
            Want::Sent(vec![at("/response_format", json!({"type": "json_object"}))]),
        )
        .variant("json_object"),
        Case::new(
            "response_format",
            json!({"response_format": schema_format()}),
            Want::Sent(vec![at("/response_format", schema_format())]),
        )
        .variant("json_schema"),
    ]);
    cases
}

/// Runs every case through `map` (the adapter's request mapping) and `dropped` (its dropped
/// list), and checks that every row has a case. `allowed` lists the only top-level fields the
/// upstream takes (unknown ones are rejected there), when it is that strict. Panics with every
/// row that broke.
pub fn check(
    adapter: &str,
    cases: &[Case],
    map: impl Fn(&ChatRequest) -> Result<Value, ProviderError>,
    dropped: impl Fn(&ChatRequest) -> Vec<String>,
    allowed: Option<&[&str]>,
) {
    let mut failures = Vec::new();
    for row in ROWS {
        if !cases.iter().any(|c| c.row == *row) {
            failures.push(format!("row `{row}` has no case"));
        }
    }
    for case in cases {
        if let Err(e) = check_case(case, &map, &dropped, allowed) {
            failures.push(format!("{}: {e}", case.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "{adapter} breaks its column of the parameter table:\n  {}",
        failures.join("\n  ")
    );
}

fn check_case(
    case: &Case,
    map: &impl Fn(&ChatRequest) -> Result<Value, ProviderError>,
    dropped: &impl Fn(&ChatRequest) -> Vec<String>,
    allowed: Option<&[&str]>,
) -> Result<(), String> {
    let req = request(&case.set);
    let body = match (map(&req), &case.want) {
        (Err(ProviderError::Refused { param, .. }), Want::Refused(want)) => {
            return match param.as_deref() == Some(*want) {
                true => Ok(()),
                false => Err(format!("refused naming {param:?}, not `{want}`")),
            };
        }
        (Ok(body), Want::Refused(want)) => {
            return Err(format!("sent {body}, not refused naming `{want}`"));
        }
        (Err(e), _) => return Err(format!("mapping failed: {e}")),
        (Ok(body), _) => body,
    };
    if let (Some(allowed), Some(fields)) = (allowed, body.as_object()) {
        let unknown: Vec<&String> = fields
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(format!("fields the upstream does not take: {unknown:?}"));
        }
    }
    let named = dropped(&req);
    match &case.want {
        Want::Sent(expected) => {
            for (pointer, value) in expected {
                let got = body.pointer(pointer);
                if got != value.as_ref() {
                    return Err(format!(
                        "{pointer} is {got:?}, want {value:?} (body {body})"
                    ));
                }
            }
            no_drops(&named)
        }
        Want::Approximated(how) => {
            how(&body)?;
            no_drops(&named)
        }
        Want::Dropped => {
            let without = map(&request(&without_row(&case.set, case.row)))
                .map_err(|e| format!("mapping without the parameter failed: {e}"))?;
            if body != without {
                return Err(format!("changed the body: {body}, without it {without}"));
            }
            match named.iter().any(|p| p == case.row) {
                true => Ok(()),
                false => Err(format!("left out but not named (dropped: {named:?})")),
            }
        }
        Want::Refused(_) => Ok(()),
    }
}

fn no_drops(named: &[String]) -> Result<(), String> {
    match named.is_empty() {
        true => Ok(()),
        false => Err(format!("named as dropped: {named:?}")),
    }
}

fn without_row(set: &Value, row: &str) -> Value {
    let mut rest: Map<String, Value> = set.as_object().cloned().unwrap_or_default();
    rest.remove(row);
    Value::Object(rest)
}

/// The table in docs/providers.md has a line for every row and a column for every adapter.
#[test]
fn the_documented_table_has_every_row_and_adapter() {
    let doc = include_str!("../../../../docs/providers.md");
    let table: Vec<&str> = doc
        .split("## Parameters, provider by provider")
        .nth(1)
        .expect("the parameter table section")
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let header: Vec<&str> = table[0].split('|').map(str::trim).collect();
    for adapter in ["openai", "azure_openai", "anthropic", "gemini", "vertex"] {
        assert!(
            header.contains(&adapter),
            "no `{adapter}` column: {header:?}"
        );
    }
    for row in ROWS {
        let documented = table.iter().skip(2).any(|line| {
            let first = line.split('|').nth(1).unwrap_or("");
            first.contains(&format!("`{row}`"))
        });
        assert!(documented, "docs/providers.md has no line for `{row}`");
    }
}
