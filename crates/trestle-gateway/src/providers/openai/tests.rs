//! The OpenAI wire format, over fixtures written from the public API reference.

use super::*;

fn sse_payloads(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[test]
fn a_completion_relays_raw_bytes_and_reads_usage() {
    let raw = include_str!("fixtures/completion.json");
    let c = parse_completion(Bytes::from_static(raw.as_bytes())).unwrap();
    assert_eq!(c.raw.as_deref(), Some(raw.as_bytes()));
    assert_eq!(
        c.body.choices[0].message.content.as_deref(),
        Some("Hello! How can I assist you today?")
    );
    assert_eq!(c.body.usage.unwrap().total_tokens, 29);
    // Fields Trestle does not model survive in `extra`.
    assert_eq!(c.body.extra["service_tier"], "default");
    assert!(c.body.choices[0].message.extra.contains_key("refusal"));
}

#[test]
fn a_tool_call_parses_with_cached_tokens() {
    let c = parse_completion(Bytes::from_static(include_bytes!(
        "fixtures/tool_call.json"
    )))
    .unwrap();
    let call = &c.body.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.name, "get_current_weather");
    assert_eq!(
        c.body.choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
    assert_eq!(c.body.usage.unwrap().cached_tokens(), 64);
}

#[test]
fn a_stream_parses_until_done() {
    let payloads = sse_payloads(include_str!("fixtures/stream.sse"));
    let mut text = String::new();
    let mut usage = None;
    let mut done = false;
    for p in payloads {
        match parse_chunk(p).unwrap() {
            None => done = true,
            Some(c) => {
                assert_eq!(c.raw.as_deref(), Some(p.as_bytes()));
                for choice in &c.chunk.choices {
                    text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                }
                usage = usage.or(c.chunk.usage);
            }
        }
    }
    assert!(done);
    assert_eq!(text, "Hello there");
    assert_eq!(usage.unwrap().completion_tokens, 2);
}

#[test]
fn a_streamed_tool_call_assembles() {
    let mut args = String::new();
    let mut name = None;
    for p in sse_payloads(include_str!("fixtures/tool_stream.sse")) {
        let Some(c) = parse_chunk(p).unwrap() else {
            continue;
        };
        for choice in c.chunk.choices {
            for call in choice.delta.tool_calls.unwrap_or_default() {
                let f = call.function.unwrap_or_default();
                name = name.or(f.name);
                args.push_str(f.arguments.as_deref().unwrap_or(""));
            }
        }
    }
    assert_eq!(name.as_deref(), Some("get_weather"));
    assert_eq!(args, r#"{"city":"Paris"}"#);
}

#[test]
fn errors_and_garbage_are_told_apart() {
    let msg = http::error_message(include_bytes!("fixtures/error.json"));
    assert!(msg.starts_with("Rate limit reached"));
    let err = parse_chunk(r#"{"error":{"message":"overloaded"}}"#).unwrap_err();
    assert!(matches!(err, ProviderError::Stream(ref m) if m == "overloaded"));
    assert!(matches!(
        parse_chunk("{not json").unwrap_err(),
        ProviderError::Malformed(_)
    ));
}

#[test]
fn the_request_keeps_unknown_fields_and_asks_for_usage() {
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"seed":3,"logit_bias":{"1":2}}"#,
    )
    .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&request_body("m1", &req, true).unwrap()).unwrap();
    assert_eq!(body["model"], "m1");
    assert_eq!(body["seed"], 3);
    assert_eq!(body["logit_bias"]["1"], 2);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let body: serde_json::Value =
        serde_json::from_slice(&request_body("m1", &req, false).unwrap()).unwrap();
    assert!(body.get("stream").is_none());
}

// --- the parameter table ------------------------------------------------------------------

/// The `openai` column: every parameter as sent, with the upstream's model name, and streams
/// asking for usage (which the gateway strips again when the client did not ask).
pub(crate) fn table_cases() -> Vec<crate::providers::param_table::Case> {
    use crate::providers::param_table::{Case, Want, absent, as_sent_cases, at};
    use serde_json::json;
    let mut cases = as_sent_cases();
    cases.extend([
        Case::new(
            "model",
            json!({"model": "chat"}),
            Want::Sent(vec![at("/model", json!("up-model"))]),
        ),
        Case::new(
            "stream",
            json!({"stream": true}),
            Want::Sent(vec![
                at("/stream", json!(true)),
                at("/stream_options", json!({"include_usage": true})),
            ]),
        ),
        Case::new(
            "stream_options",
            json!({"stream": true, "stream_options": {"include_usage": false, "x": 1}}),
            Want::Sent(vec![at(
                "/stream_options",
                json!({"include_usage": true, "x": 1}),
            )]),
        ),
        Case::new(
            "stream_options",
            json!({"stream_options": {"include_usage": true}}),
            // OpenAI refuses `stream_options` on a call that does not stream.
            Want::Sent(vec![absent("/stream_options"), absent("/stream")]),
        )
        .variant("without stream: not sent"),
    ]);
    cases
}

#[test]
fn every_row_of_the_parameter_table() {
    let provider = OpenAi::new(&Default::default()).unwrap();
    crate::providers::param_table::check(
        "openai",
        &table_cases(),
        |req| {
            let body = request_body("up-model", req, req.is_stream())?;
            Ok(serde_json::from_slice(&body).unwrap())
        },
        |req| provider.dropped(req),
        None,
    );
}
