//! The `anthropic` column of the parameter table (docs/providers.md), row by row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::*;
use crate::providers::param_table::{
    Case, Want, absent, at, check, dropped, openai_only_dropped, schema_format, weather_tool,
};

/// The only top-level fields the Messages API takes from the gateway.
const MESSAGES_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
    "stream",
    "metadata",
];

fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "messages",
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"}]}),
            Want::Sent(vec![
                at("/system", json!("Be brief.")),
                at(
                    "/messages/0",
                    json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
                ),
                at("/messages/1/role", json!("assistant")),
                at("/messages/2/content/0/text", json!("again")),
            ]),
        ),
        Case::new(
            "model",
            json!({"model": "chat"}),
            Want::Sent(vec![at("/model", json!("claude-x"))]),
        ),
        Case::new(
            "temperature",
            json!({"temperature": 0.7}),
            Want::Sent(vec![at("/temperature", json!(0.7))]),
        ),
        Case::new(
            "temperature",
            json!({"temperature": 1.5}),
            Want::Sent(vec![at("/temperature", json!(1.0))]),
        )
        .variant("over 1: clamped"),
        Case::new(
            "top_p",
            json!({"top_p": 0.9}),
            Want::Sent(vec![at("/top_p", json!(0.9))]),
        ),
        Case::new(
            "top_k",
            json!({"top_k": 40}),
            Want::Sent(vec![at("/top_k", json!(40))]),
        ),
        dropped("top_k", json!(0.5)).variant("not a whole number"),
        Case::new(
            "thinking",
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}),
            Want::Sent(vec![at(
                "/thinking",
                json!({"type": "enabled", "budget_tokens": 2048}),
            )]),
        ),
        dropped("thinking", json!(true)).variant("not an object"),
        dropped("n", json!(2)),
        Case::new(
            "stream",
            json!({"stream": true}),
            Want::Sent(vec![at("/stream", json!(true))]),
        ),
        Case::new(
            "stream_options",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            // Usage comes from the events (`message_start`, `message_delta`).
            Want::Sent(vec![at("/stream", json!(true)), absent("/stream_options")]),
        ),
        Case::new(
            "stop",
            json!({"stop": "END"}),
            Want::Sent(vec![at("/stop_sequences", json!(["END"]))]),
        ),
        Case::new(
            "stop",
            json!({"stop": ["END", "STOP"]}),
            Want::Sent(vec![at("/stop_sequences", json!(["END", "STOP"]))]),
        )
        .variant("a list"),
        Case::new(
            "max_tokens",
            json!({"max_tokens": 100}),
            Want::Sent(vec![at("/max_tokens", json!(100))]),
        ),
        Case::new(
            "max_tokens",
            json!({}),
            Want::Sent(vec![at("/max_tokens", json!(DEFAULT_MAX_TOKENS))]),
        )
        .variant("unset: required upstream"),
        Case::new(
            "max_completion_tokens",
            json!({"max_tokens": 100, "max_completion_tokens": 50}),
            Want::Sent(vec![at("/max_tokens", json!(50))]),
        ),
        dropped("presence_penalty", json!(0.5)),
        dropped("frequency_penalty", json!(0.5)),
        dropped("logit_bias", json!({"50256": -100})),
        dropped("logprobs", json!(true)),
        dropped("top_logprobs", json!(3)),
        Case::new(
            "user",
            json!({"user": "u-1"}),
            Want::Sent(vec![at("/metadata", json!({"user_id": "u-1"}))]),
        ),
        dropped("seed", json!(7)),
        Case::new(
            "tools",
            json!({"tools": weather_tool()}),
            Want::Sent(vec![at(
                "/tools",
                json!([{"name": "get_weather", "description": "The weather in a city",
                    "input_schema": {"type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false}}]),
            )]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "required"}),
            Want::Sent(vec![at("/tool_choice", json!({"type": "any"}))]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "auto"}),
            Want::Sent(vec![at("/tool_choice", json!({"type": "auto"}))]),
        )
        .variant("auto"),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "none"}),
            Want::Sent(vec![at("/tool_choice", json!({"type": "none"}))]),
        )
        .variant("none"),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(),
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
            Want::Sent(vec![at(
                "/tool_choice",
                json!({"type": "tool", "name": "get_weather"}),
            )]),
        )
        .variant("named"),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "sometimes"}),
            Want::Refused("tool_choice"),
        )
        .variant("unknown mode"),
        Case::new(
            "parallel_tool_calls",
            json!({"tools": weather_tool(), "parallel_tool_calls": false}),
            Want::Sent(vec![at(
                "/tool_choice",
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            )]),
        ),
        Case::new(
            "parallel_tool_calls",
            json!({"tools": weather_tool(), "parallel_tool_calls": true}),
            // Parallel calls are Anthropic's default.
            Want::Sent(vec![absent("/tool_choice")]),
        )
        .variant("true: the default"),
        Case::new(
            "response_format",
            json!({"response_format": {"type": "json_object"}}),
            Want::Approximated(|body| {
                let system = body["system"].as_str().unwrap_or("");
                match system.contains("Respond with a single valid JSON value")
                    && system.contains("JSON object")
                {
                    true => Ok(()),
                    false => Err(format!("no JSON instruction in `system`: {system:?}")),
                }
            }),
        )
        .variant("json_object"),
        Case::new(
            "response_format",
            json!({"response_format": schema_format()}),
            Want::Approximated(|body| {
                let system = body["system"].as_str().unwrap_or("");
                let schema = schema_format()["json_schema"]["schema"].to_string();
                match system.contains("named `answer`") && system.contains(&schema) {
                    true => Ok(()),
                    false => Err(format!("no schema instruction in `system`: {system:?}")),
                }
            }),
        )
        .variant("json_schema"),
        Case::new(
            "response_format",
            json!({"response_format": {"type": "text"}}),
            Want::Sent(vec![absent("/system")]),
        )
        .variant("text: the default"),
    ]
    .into_iter()
    .chain(openai_only_dropped())
    .collect()
}

#[test]
fn every_row_of_the_parameter_table() {
    let provider = Anthropic::new(&Default::default()).unwrap();
    check(
        "anthropic",
        &cases(),
        |req| build_request("claude-x", req, req.is_stream()),
        |req| provider.dropped(req),
        Some(MESSAGES_FIELDS),
    );
}
