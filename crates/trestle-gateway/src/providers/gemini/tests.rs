//! The Gemini wire mapping, over fixtures written from the public API reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use trestle_core::openai::{ChatChunk, ChatRequest, EmbeddingsRequest};

use super::*;
use crate::providers::http;

fn body(req: Value) -> Value {
    let req: ChatRequest = serde_json::from_value(req).unwrap();
    request::request_body(&req).unwrap()
}

fn sse_payloads(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

fn run_stream(fixture: &str) -> Result<Vec<ChatChunk>, ProviderError> {
    let mut state = StreamState::new("gemini-requested");
    let mut out = Vec::new();
    for payload in sse_payloads(fixture) {
        out.extend(state.on_data(payload)?);
    }
    out.extend(state.finish());
    Ok(out)
}

fn streamed_text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

// ---- request ----

#[test]
fn system_and_developer_messages_become_the_system_instruction() {
    let b = body(json!({"model":"m","messages":[
        {"role":"system","content":"Be brief."},
        {"role":"user","content":"Hi"},
        {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
        {"role":"assistant","content":"Bonjour"},
        {"role":"user","content":"Ça va ?"}
    ]}));
    assert_eq!(
        b["systemInstruction"],
        json!({"parts":[{"text":"Be brief."},{"text":"Answer in French."}]})
    );
    assert_eq!(
        b["contents"],
        json!([
            {"role":"user","parts":[{"text":"Hi"}]},
            {"role":"model","parts":[{"text":"Bonjour"}]},
            {"role":"user","parts":[{"text":"Ça va ?"}]}
        ])
    );
    // Nothing else: no tools, no config.
    assert_eq!(b.as_object().unwrap().len(), 2);
}

#[test]
fn images_go_inline_or_by_uri() {
    let b = body(json!({"model":"m","messages":[{"role":"user","content":[
        {"type":"text","text":"Compare these"},
        {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
        {"type":"image_url","image_url":{"url":"https://example.com/cat.webp?size=large","detail":"high"}},
        {"type":"image_url","image_url":{"url":"https://example.com/photo"}}
    ]}]}));
    assert_eq!(
        b["contents"][0]["parts"],
        json!([
            {"text":"Compare these"},
            {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},
            {"fileData":{"mimeType":"image/webp","fileUri":"https://example.com/cat.webp?size=large"}},
            {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/photo"}}
        ])
    );
    let req: ChatRequest =
        serde_json::from_value(json!({"model":"m","messages":[{"role":"user","content":[
        {"type":"image_url","image_url":{"url":"data:image/svg+xml,%3Csvg%3E"}}]}]}))
        .unwrap();
    assert!(matches!(
        request::request_body(&req),
        Err(ProviderError::Refused { param: Some(ref p), .. }) if p == "messages[0].content[0]"
    ));
}

#[test]
fn tools_are_declared_with_clean_schemas() {
    let b = body(
        json!({"model":"m","messages":[{"role":"user","content":"weather?"}],
        "tools":[
            {"type":"function","function":{"name":"get_weather","description":"Current weather",
                "strict":true,
                "parameters":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
                    "additionalProperties":false,
                    "properties":{
                        "city":{"type":"string","description":"City name","format":"uri"},
                        "kind":{"type":"string","const":"current"},
                        "when":{"type":"string","format":"date-time"},
                        "count":{"type":"integer","format":"int32","exclusiveMinimum":0},
                        "unit":{"type":["string","null"],"enum":["celsius","fahrenheit"]},
                        "additionalProperties":{"type":"boolean"},
                        "days":{"type":"array","items":{"type":"object","additionalProperties":false,
                            "properties":{"day":{"type":"integer"}}}}
                    },
                    "required":["city"]}}},
            {"type":"function","function":{"name":"ping","parameters":{"type":"object","properties":{}}}}
        ],
        "tool_choice":"required"}),
    );
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations":[
            {"name":"get_weather","description":"Current weather","parameters":{"type":"object",
                "properties":{
                    "city":{"type":"string","description":"City name"},
                    "kind":{"type":"string","enum":["current"]},
                    "when":{"type":"string","format":"date-time"},
                    "count":{"type":"integer","format":"int32"},
                    "unit":{"type":"string","nullable":true,"enum":["celsius","fahrenheit"]},
                    // A property that happens to be named like the keyword survives.
                    "additionalProperties":{"type":"boolean"},
                    "days":{"type":"array","items":{"type":"object","properties":{"day":{"type":"integer"}}}}
                },
                "required":["city"]}},
            // No arguments: no parameters (Gemini rejects an object without properties).
            {"name":"ping"}
        ]}])
    );
    assert_eq!(
        b["toolConfig"],
        json!({"functionCallingConfig":{"mode":"ANY"}})
    );
}

#[test]
fn tool_choice_maps_to_function_calling_modes() {
    let config = |choice: Value| {
        body(json!({"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":choice}))
            ["toolConfig"]["functionCallingConfig"]
            .clone()
    };
    assert_eq!(config(json!("auto")), json!({"mode":"AUTO"}));
    assert_eq!(config(json!("none")), json!({"mode":"NONE"}));
    assert_eq!(config(json!("required")), json!({"mode":"ANY"}));
    assert_eq!(
        config(json!({"type":"function","function":{"name":"get_weather"}})),
        json!({"mode":"ANY","allowedFunctionNames":["get_weather"]})
    );
}

#[test]
fn tool_calls_and_results_round_trip_with_names_and_signatures() {
    let signed = ids::tool_call_id(Some("call_a"), Some("CiQB+/x="));
    let b = body(json!({"model":"m","messages":[
        {"role":"user","content":"Weather and time in Paris?"},
        {"role":"assistant","content":null,"tool_calls":[
            {"id":signed,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
            {"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}
        ]},
        {"role":"tool","tool_call_id":signed,"content":"{\"temp_c\":21,\"sky\":\"clear\"}"},
        {"role":"tool","tool_call_id":"call_b","content":"14:05"},
        {"role":"user","content":"Thanks. And tomorrow?"},
        {"role":"assistant","tool_calls":[
            {"id":"call_c","type":"function","function":{"name":"get_forecast","arguments":"{}"}}
        ]},
        {"role":"tool","tool_call_id":"call_c","content":[{"type":"text","text":"[1,2]"}]}
    ]}));
    assert_eq!(
        b["contents"],
        json!([
            {"role":"user","parts":[{"text":"Weather and time in Paris?"}]},
            {"role":"model","parts":[
                {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"CiQB+/x="},
                {"functionCall":{"name":"get_time","args":{}}}
            ]},
            // Both results and the next user message merge into one user turn.
            {"role":"user","parts":[
                {"functionResponse":{"name":"get_weather","response":{"temp_c":21,"sky":"clear"}}},
                {"functionResponse":{"name":"get_time","response":{"content":"14:05"}}},
                {"text":"Thanks. And tomorrow?"}
            ]},
            // A call Gemini did not sign gets the documented placeholder on its first call.
            {"role":"model","parts":[
                {"functionCall":{"name":"get_forecast","args":{}},"thoughtSignature":"skip_thought_signature_validator"}
            ]},
            {"role":"user","parts":[
                {"functionResponse":{"name":"get_forecast","response":{"content":"[1,2]"}}}
            ]}
        ])
    );
}

#[test]
fn a_tool_result_without_its_call_is_refused() {
    let req: ChatRequest = serde_json::from_value(json!({"model":"m","messages":[
        {"role":"user","content":"x"},
        {"role":"tool","tool_call_id":"call_missing","content":"42"}]}))
    .unwrap();
    let err = request::request_body(&req).unwrap_err();
    assert!(
        matches!(err, ProviderError::Refused { ref message, param: Some(ref p) }
            if message.contains("call_missing") && p == "messages[1].tool_call_id")
    );
    let req: ChatRequest = serde_json::from_value(json!({"model":"m","messages":[
        {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"not json"}}]}]}))
    .unwrap();
    assert!(matches!(
        request::request_body(&req),
        Err(ProviderError::Refused { param: Some(ref p), .. })
            if p == "messages[0].tool_calls[0].function.arguments"
    ));
}

#[test]
fn sampling_controls_reach_generation_config() {
    let req: ChatRequest = serde_json::from_value(json!({"model":"m",
        "messages":[{"role":"user","content":"x"}],
        "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.25, "top_k": 40,
        "n": 2}))
    .unwrap();
    let body = request::request_body(&req).unwrap();
    let config = &body["generationConfig"];
    assert_eq!(config["seed"], 7);
    assert_eq!(config["presencePenalty"], 0.5);
    assert_eq!(config["frequencyPenalty"], -0.25);
    assert_eq!(config["topK"], 40);
    assert!(config.get("candidateCount").is_none(), "n is not mapped");
}

#[test]
fn generation_config_and_json_modes() {
    let b = body(
        json!({"model":"m","messages":[{"role":"user","content":"x"}],
        "temperature":0.2,"top_p":0.9,"max_tokens":100,"max_completion_tokens":50,"stop":"END",
        "seed":7,"presence_penalty":0.5,"logprobs":true,"n":1,"user":"u1",
        "response_format":{"type":"json_schema","json_schema":{"name":"answer","strict":true,
            "schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}}}),
    );
    assert_eq!(
        b["generationConfig"],
        json!({"temperature":0.2,"topP":0.9,"maxOutputTokens":50,"seed":7,"presencePenalty":0.5,
            "stopSequences":["END"],"responseMimeType":"application/json",
            "responseJsonSchema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}})
    );
    // Fields Gemini does not know are not sent.
    let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["contents", "generationConfig"]);

    let b = body(
        json!({"model":"m","messages":[{"role":"user","content":"x"}],
        "stop":["a","b"],"response_format":{"type":"json_object"}}),
    );
    assert_eq!(
        b["generationConfig"],
        json!({"stopSequences":["a","b"],"responseMimeType":"application/json"})
    );
}

#[test]
fn signatures_survive_the_tool_call_id() {
    let sig = "CiQB0e2Kb+7/aQ9VtqsV3y1Z2pYm4Q==";
    let id = ids::tool_call_id(None, Some(sig));
    assert!(id.starts_with("call_"));
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{id}"
    );
    assert_eq!(ids::split_call_id(&id).1.as_deref(), Some(sig));
    assert_eq!(ids::split_call_id("call_plain"), ("call_plain", None));
    assert_eq!(ids::tool_call_id(Some("fc-1"), None), "fc-1");
}

// ---- non-streamed responses ----

#[test]
fn a_text_response_skips_thoughts_and_counts_them() {
    let c =
        response::parse_completion(include_bytes!("fixtures/text.json"), "gemini-flash").unwrap();
    assert!(c.raw.is_none());
    let b = c.body;
    assert_eq!(b.id, "x3RZaJ2vLKyVkdUPw9KG4Ac");
    assert_eq!(b.object, "chat.completion");
    assert_eq!(b.model, "gemini-2.5-flash");
    assert!(b.created > 0);
    let choice = &b.choices[0];
    assert_eq!(choice.message.role, "assistant");
    assert_eq!(
        choice.message.content.as_deref(),
        Some("Hello! How can I help you today?")
    );
    assert!(choice.message.tool_calls.is_none());
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    let usage = b.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (8, 23, 31)
    );
    assert_eq!(usage.cached_tokens(), 0);
}

#[test]
fn a_function_call_response_becomes_tool_calls() {
    let c = response::parse_completion(include_bytes!("fixtures/function_call.json"), "g").unwrap();
    let choice = &c.body.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert!(choice.message.content.is_none());
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"city":"Paris","unit":"celsius"}));
    assert_eq!(
        calls[1].function.arguments,
        r#"{"timezone":"Europe/Paris"}"#
    );
    let (id0, id1) = (
        calls[0].id.as_deref().unwrap(),
        calls[1].id.as_deref().unwrap(),
    );
    assert!(id0.starts_with("call_") && id1.starts_with("call_") && id0 != id1);
    assert_eq!(
        ids::split_call_id(id0).1.as_deref(),
        Some("CiQB0e2Kb+7/aQ9VtqsV3y1Z2pYm4Q==")
    );
    assert_eq!(ids::split_call_id(id1).1, None);
    assert_eq!(c.body.usage.unwrap().total_tokens, 143);
}

#[test]
fn cached_tokens_are_reported() {
    let c = response::parse_completion(include_bytes!("fixtures/cached.json"), "g").unwrap();
    let usage = c.body.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 4210);
    assert_eq!(usage.completion_tokens, 8);
    assert_eq!(usage.cached_tokens(), 4096);
    // No responseId: a generated one.
    assert!(c.body.id.starts_with("chatcmpl-"));
}

#[test]
fn safety_stops_and_blocked_prompts_are_content_filtered() {
    let c = response::parse_completion(include_bytes!("fixtures/safety.json"), "g").unwrap();
    assert_eq!(
        c.body.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
    assert_eq!(c.body.choices[0].message.content.as_deref(), Some(""));

    let c =
        response::parse_completion(include_bytes!("fixtures/blocked.json"), "asked-model").unwrap();
    assert_eq!(
        c.body.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
    assert_eq!(c.body.choices[0].message.content.as_deref(), Some(""));
    assert_eq!(c.body.usage.unwrap().prompt_tokens, 21);

    assert_eq!(response::finish_reason("MAX_TOKENS", false), "length");
    assert_eq!(
        response::finish_reason("RECITATION", true),
        "content_filter"
    );
    assert_eq!(
        response::finish_reason("MALFORMED_FUNCTION_CALL", false),
        "stop"
    );
}

#[test]
fn error_and_malformed_bodies() {
    let msg = http::error_message(include_bytes!("fixtures/error.json"));
    assert!(msg.starts_with("You exceeded your current quota"), "{msg}");
    let err = response::parse_completion(b"<html>oops</html>", "g").unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)) && err.is_retryable());
    let err = response::parse_completion(b"{}", "g").unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)));
}

// ---- streams ----

#[test]
fn a_streamed_text_response() {
    let chunks = run_stream(include_str!("fixtures/stream.sse")).unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c.id == "c5BaaKzNB9-bkdUPlPj7yAY" && c.model == "gemini-2.5-flash")
    );
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert!(
        chunks[1..]
            .iter()
            .flat_map(|c| &c.choices)
            .all(|c| c.delta.role.is_none())
    );
    assert_eq!(
        streamed_text(&chunks),
        "Once upon a time, a small robot learned to paint."
    );
    let finishes: Vec<&str> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    assert_eq!(finishes, ["stop"]);
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (6, 32));
    // Usage appears only in the last chunk.
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
}

#[test]
fn a_streamed_function_call() {
    let chunks = run_stream(include_str!("fixtures/tool_stream.sse")).unwrap();
    // The thought is not relayed.
    assert_eq!(streamed_text(&chunks), "");
    let calls: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.clone().unwrap_or_default())
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].index, 0);
    assert_eq!(calls[0].kind.as_deref(), Some("function"));
    let f = calls[0].function.as_ref().unwrap();
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    assert_eq!(f.arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
    let id = calls[0].id.as_deref().unwrap();
    assert_eq!(
        ids::split_call_id(id).1.as_deref(),
        Some("CiIBVKhc7pZtS3k/Xw+ZJ0Q=")
    );
    let finish = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .find_map(|c| c.finish_reason.as_deref());
    assert_eq!(finish, Some("tool_calls"));
    assert_eq!(chunks.last().unwrap().usage.unwrap().completion_tokens, 59);
}

#[test]
fn an_error_mid_stream_breaks_it() {
    let payloads = sse_payloads(include_str!("fixtures/error_stream.sse"));
    let mut state = StreamState::new("gemini-2.5-pro");
    let first = state.on_data(payloads[0]).unwrap();
    assert_eq!(streamed_text(&first), "The first");
    let err = state.on_data(payloads[1]).unwrap_err();
    assert!(
        matches!(err, ProviderError::Stream(ref m) if m == "The model is overloaded. Please try again later.")
    );
    assert!(matches!(
        state.on_data("{not json").unwrap_err(),
        ProviderError::Malformed(_)
    ));
}

#[test]
fn a_stream_without_finish_reason_still_closes() {
    let mut state = StreamState::new("asked");
    let mut chunks = state
        .on_data(r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]}"#)
        .unwrap();
    chunks.extend(state.finish());
    assert_eq!(chunks[0].model, "asked");
    assert_eq!(streamed_text(&chunks), "Hi");
    let finish = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .find_map(|c| c.finish_reason.as_deref());
    assert_eq!(finish, Some("stop"));
    // No usage reported, no usage chunk.
    assert!(chunks.last().unwrap().choices.len() == 1);
}

#[tokio::test]
async fn the_provider_stream_pumps_events_and_closes() {
    let events: Vec<Result<http::SseEvent, ProviderError>> =
        sse_payloads(include_str!("fixtures/stream.sse"))
            .into_iter()
            .map(|data| {
                Ok(http::SseEvent {
                    event: "message".into(),
                    data: data.into(),
                })
            })
            .collect();
    let stream = chunks(
        futures_util::stream::iter(events).boxed(),
        StreamState::new("m"),
    );
    let out: Vec<_> = stream.collect().await;
    let out: Vec<ChatChunk> = out.into_iter().map(|c| c.unwrap().chunk).collect();
    assert_eq!(
        streamed_text(&out),
        "Once upon a time, a small robot learned to paint."
    );
    assert!(out.last().unwrap().usage.is_some());

    let broken = vec![
        Ok(http::SseEvent {
            event: "message".into(),
            data: r#"{"error":{"code":500,"message":"internal"}}"#.into(),
        }),
        Ok(http::SseEvent {
            event: "message".into(),
            data: r#"{"candidates":[]}"#.into(),
        }),
    ];
    let out: Vec<_> = chunks(
        futures_util::stream::iter(broken).boxed(),
        StreamState::new("m"),
    )
    .collect()
    .await;
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], Err(ProviderError::Stream(ref m)) if m == "internal"));
}

// ---- embeddings ----

#[test]
fn embeddings_translate_both_ways() {
    let req: EmbeddingsRequest = serde_json::from_value(json!({
        "model":"embed","input":["first text","second text"],"dimensions":768,"encoding_format":"float"}))
    .unwrap();
    assert_eq!(
        response::embed_body("gemini-embedding-001", &req),
        json!({"requests":[
            {"model":"models/gemini-embedding-001","content":{"parts":[{"text":"first text"}]},"outputDimensionality":768},
            {"model":"models/gemini-embedding-001","content":{"parts":[{"text":"second text"}]},"outputDimensionality":768}
        ]})
    );
    let out = response::parse_embeddings(
        include_bytes!("fixtures/embeddings.json"),
        "gemini-embedding-001",
    )
    .unwrap();
    assert_eq!(out.object, "list");
    assert_eq!(out.model, "gemini-embedding-001");
    assert_eq!(out.data.len(), 2);
    assert_eq!(
        (out.data[1].index, out.data[1].object.as_str()),
        (1, "embedding")
    );
    assert_eq!(out.data[0].embedding.len(), 4);
    assert!((out.data[0].embedding[0] - 0.013_168_523).abs() < 1e-9);
    assert_eq!(out.usage.total_tokens, 0);
    assert!(matches!(
        response::parse_embeddings(b"{\"embedding\":{}}", "g"),
        Err(ProviderError::Malformed(_))
    ));
}

#[test]
fn model_paths() {
    assert_eq!(
        model_path("gemini-2.5-flash", "generateContent"),
        "/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        model_path("models/gemini-2.5-flash", "streamGenerateContent?alt=sse"),
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}
