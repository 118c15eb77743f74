//! The `gemini` column of the parameter table (docs/providers.md), row by row. `vertex` sends
//! the same body, so its tests run these cases too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::providers::param_table::{
    Case, Want, absent, at, check, dropped, openai_only_dropped, schema_format, weather_tool,
};

/// The only top-level fields of a `GenerateContentRequest` the gateway writes.
pub(crate) const GENERATE_FIELDS: &[&str] = &[
    "systemInstruction",
    "contents",
    "tools",
    "toolConfig",
    "generationConfig",
];

/// `generationConfig.<field>` holds `value` for `row` set to `value`.
fn config(row: &'static str, field: &str, value: Value) -> Case {
    Case::new(
        row,
        json!({ row: value.clone() }),
        Want::Sent(vec![at(field, value)]),
    )
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "messages",
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"}]}),
            Want::Sent(vec![
                at(
                    "/systemInstruction",
                    json!({"parts": [{"text": "Be brief."}]}),
                ),
                at(
                    "/contents/0",
                    json!({"role": "user", "parts": [{"text": "hi"}]}),
                ),
                at(
                    "/contents/1",
                    json!({"role": "model", "parts": [{"text": "hello"}]}),
                ),
                at("/contents/2/parts/0/text", json!("again")),
            ]),
        ),
        // The model is in the URL (`models/{model}:generateContent`), not the body.
        Case::new(
            "model",
            json!({"model": "chat"}),
            Want::Sent(vec![absent("/model")]),
        ),
        config("temperature", "/generationConfig/temperature", json!(1.5)),
        config("top_p", "/generationConfig/topP", json!(0.9)),
        config("top_k", "/generationConfig/topK", json!(40)),
        dropped("top_k", json!("forty")).variant("not a number"),
        dropped(
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2048}),
        ),
        dropped("n", json!(2)),
        // Streaming is the URL (`streamGenerateContent?alt=sse`); usage comes in each event.
        Case::new(
            "stream",
            json!({"stream": true}),
            Want::Sent(vec![absent("/stream"), absent("/generationConfig")]),
        ),
        Case::new(
            "stream_options",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            Want::Sent(vec![absent("/stream_options"), absent("/generationConfig")]),
        ),
        Case::new(
            "stop",
            json!({"stop": "END"}),
            Want::Sent(vec![at("/generationConfig/stopSequences", json!(["END"]))]),
        ),
        Case::new(
            "stop",
            json!({"stop": ["END", ""]}),
            Want::Sent(vec![at("/generationConfig/stopSequences", json!(["END"]))]),
        )
        .variant("empty sequences left out"),
        config(
            "max_tokens",
            "/generationConfig/maxOutputTokens",
            json!(100),
        ),
        Case::new(
            "max_completion_tokens",
            json!({"max_tokens": 100, "max_completion_tokens": 50}),
            Want::Sent(vec![at("/generationConfig/maxOutputTokens", json!(50))]),
        ),
        config(
            "presence_penalty",
            "/generationConfig/presencePenalty",
            json!(0.5),
        ),
        config(
            "frequency_penalty",
            "/generationConfig/frequencyPenalty",
            json!(-0.25),
        ),
        dropped("logit_bias", json!({"50256": -100})),
        dropped("logprobs", json!(true)),
        dropped("top_logprobs", json!(3)),
        dropped("user", json!("u-1")),
        config("seed", "/generationConfig/seed", json!(7)),
        Case::new(
            "tools",
            json!({"tools": weather_tool()}),
            // Cleaned of the keywords Gemini rejects (`additionalProperties`).
            Want::Sent(vec![at(
                "/tools",
                json!([{"functionDeclarations": [{"name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {"type": "object",
                        "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]),
            )]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "required"}),
            Want::Sent(vec![at(
                "/toolConfig",
                json!({"functionCallingConfig": {"mode": "ANY"}}),
            )]),
        ),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "auto"}),
            Want::Sent(vec![at(
                "/toolConfig",
                json!({"functionCallingConfig": {"mode": "AUTO"}}),
            )]),
        )
        .variant("auto"),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(), "tool_choice": "none"}),
            Want::Sent(vec![at(
                "/toolConfig",
                json!({"functionCallingConfig": {"mode": "NONE"}}),
            )]),
        )
        .variant("none"),
        Case::new(
            "tool_choice",
            json!({"tools": weather_tool(),
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
            Want::Sent(vec![at(
                "/toolConfig",
                json!({"functionCallingConfig":
                    {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
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
            Want::Dropped,
        ),
        Case::new(
            "response_format",
            json!({"response_format": {"type": "json_object"}}),
            Want::Sent(vec![
                at(
                    "/generationConfig/responseMimeType",
                    json!("application/json"),
                ),
                absent("/generationConfig/responseJsonSchema"),
            ]),
        )
        .variant("json_object"),
        Case::new(
            "response_format",
            json!({"response_format": schema_format()}),
            Want::Sent(vec![
                at(
                    "/generationConfig/responseMimeType",
                    json!("application/json"),
                ),
                at(
                    "/generationConfig/responseJsonSchema",
                    schema_format()["json_schema"]["schema"].clone(),
                ),
            ]),
        )
        .variant("json_schema"),
        Case::new(
            "response_format",
            json!({"response_format": {"type": "text"}}),
            Want::Sent(vec![absent("/generationConfig")]),
        )
        .variant("text: the default"),
    ]
    .into_iter()
    .chain(openai_only_dropped())
    .collect()
}

#[test]
fn every_row_of_the_parameter_table() {
    let provider = Gemini::new(&Default::default()).unwrap();
    check(
        "gemini",
        &cases(),
        request::request_body,
        |req| provider.dropped(req),
        Some(GENERATE_FIELDS),
    );
    // The rows that live in the URL.
    assert_eq!(
        model_path("gemini-2.0-flash", "generateContent"),
        "/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        model_path("gemini-2.0-flash", "streamGenerateContent?alt=sse"),
        "/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
}
