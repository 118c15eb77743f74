//! The Anthropic Messages mapping, over fixtures written from the public API reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use trestle_core::openai::{ChatRequest, Usage};

use super::*;

fn request(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

fn build(body: Value) -> Value {
    build_request("claude-x", &request(body), false).unwrap()
}

/// `(event, data)` pairs of an SSE fixture.
fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut event = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut event), data.to_string()));
        }
    }
    out
}

fn run_stream(text: &str) -> (Vec<ChatChunk>, Option<ProviderError>, StreamState) {
    let mut state = StreamState::new();
    let mut chunks = Vec::new();
    for (event, data) in sse_events(text) {
        match state.on_event(&event, &data) {
            Ok(more) => chunks.extend(more),
            Err(e) => return (chunks, Some(e), state),
        }
    }
    (chunks, None, state)
}

// --- request -----------------------------------------------------------------------------

#[test]
fn system_messages_go_to_the_top_level_and_max_tokens_defaults() {
    let body = build(json!({"model": "chat", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Speak French."}]},
        {"role": "user", "content": "hi"}],
        "temperature": 1.7, "top_p": 0.9, "stop": "END", "user": "u-42",
        "seed": 7, "logprobs": true}));
    assert_eq!(body["model"], "claude-x");
    assert_eq!(body["system"], "Be brief.\n\nSpeak French.");
    assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
    assert_eq!(body["temperature"], 1.0);
    assert_eq!(body["top_p"], 0.9);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["metadata"], json!({"user_id": "u-42"}));
    // OpenAI-only fields are not forwarded; no stream flag on a plain call.
    assert!(body.get("seed").is_none() && body.get("logprobs").is_none());
    assert!(body.get("stream").is_none());
}

#[test]
fn the_client_cap_becomes_max_tokens_and_streams_ask_for_events() {
    let req = request(
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100, "max_completion_tokens": 50}),
    );
    let body: Value = serde_json::from_slice(&request_body("m", &req, true).unwrap()).unwrap();
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["stream"], true);
    assert!(body.get("system").is_none());
}

#[test]
fn parts_with_images_become_blocks() {
    let body = build(
        json!({"model": "chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
        {"type": "text", "text": ""}]}]}),
    );
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ])
    );
}

#[test]
fn inputs_anthropic_cannot_take_are_refused() {
    let refused = |message: Value| {
        let req = request(json!({"model": "chat", "messages": [message]}));
        matches!(
            build_request("m", &req, false),
            Err(ProviderError::Refused { param: Some(p), .. }) if p.starts_with("messages[0]")
        )
    };
    assert!(refused(json!({"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]})));
    assert!(refused(json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]})));
    assert!(refused(
        json!({"role": "function", "name": "f", "content": "1"})
    ));
    assert!(refused(json!({"role": "tool", "content": "no id"})));
}

#[test]
fn tools_and_tool_choice_translate() {
    let with_choice = |choice: Value| {
        build(
            json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object",
                        "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": choice}),
        )
    };
    let body = with_choice(json!("auto"));
    assert_eq!(
        body["tools"],
        json!([
            {"name": "get_weather", "description": "Weather for a city",
             "input_schema": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        with_choice(json!("required"))["tool_choice"],
        json!({"type": "any"})
    );
    assert_eq!(
        with_choice(json!("none"))["tool_choice"],
        json!({"type": "none"})
    );
    assert_eq!(
        with_choice(json!({"type": "function", "function": {"name": "get_time"}}))["tool_choice"],
        json!({"type": "tool", "name": "get_time"})
    );

    let body = build(
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "parallel_tool_calls": false}),
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // No tools: no tool_choice either.
    let body = build(
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": "auto"}),
    );
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
}

#[test]
fn tool_calls_and_results_alternate_roles() {
    let body = build(json!({"model": "chat", "messages": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": ""}},
            {"id": "call_3", "type": "function",
             "function": {"name": "broken", "arguments": "{\"city\":"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "tool", "tool_call_id": "call_3", "content": ""},
        {"role": "user", "content": "Thanks, and tomorrow?"}]}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                    "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                {"type": "tool_use", "id": "call_3", "name": "broken", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "14:05"}]},
                {"type": "tool_result", "tool_use_id": "call_3"},
                {"type": "text", "text": "Thanks, and tomorrow?"}]}
        ])
    );
}

#[test]
fn consecutive_same_role_messages_merge_and_empty_ones_drop() {
    let body = build(json!({"model": "chat", "messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": ""},
        {"role": "system", "content": "mid-conversation system"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]}));
    assert_eq!(body["system"], "mid-conversation system");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                {"type": "text", "text": "three"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ])
    );
}

#[test]
fn json_modes_add_a_system_instruction() {
    let body = build(json!({"model": "chat", "messages": [
        {"role": "system", "content": "You extract data."},
        {"role": "user", "content": "Alice is 30."}],
        "response_format": {"type": "json_object"}}));
    let system = body["system"].as_str().unwrap();
    assert!(system.starts_with("You extract data.\n\n"));
    assert!(system.contains("single valid JSON value") && system.contains("JSON object"));

    let body = build(
        json!({"model": "chat", "messages": [{"role": "user", "content": "Alice is 30."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person",
            "schema": {"type": "object", "properties": {"age": {"type": "integer"}}}}}}),
    );
    let system = body["system"].as_str().unwrap();
    assert!(system.contains("`person`"));
    assert!(system.contains(r#"{"type":"object","properties":{"age":{"type":"integer"}}}"#));

    let body = build(
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "text"}}),
    );
    assert!(body.get("system").is_none());
}

// --- non-streamed responses ---------------------------------------------------------------

#[test]
fn a_text_message_becomes_a_completion() {
    let c = parse_completion(include_bytes!("fixtures/message.json")).unwrap();
    assert!(c.raw.is_none());
    let body = c.body;
    assert_eq!(body.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(body.model, "claude-sonnet-4-20250514");
    assert_eq!(body.object, "chat.completion");
    assert!(body.created > 0);
    let choice = &body.choices[0];
    assert_eq!(choice.message.role, "assistant");
    assert_eq!(
        choice.message.content.as_deref(),
        Some("Hi! My name is Claude. How can I help?")
    );
    assert!(choice.message.tool_calls.is_none());
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    assert_eq!(body.usage, Some(Usage::new(12, 14, 0)));
    assert_eq!(body.extra[response::USAGE_KEY]["service_tier"], "standard");
}

#[test]
fn tool_use_blocks_become_tool_calls() {
    let c = parse_completion(include_bytes!("fixtures/tool_use.json")).unwrap();
    let choice = &c.body.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        choice.message.content.as_deref(),
        Some("I'll check the weather in Paris.")
    );
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].id.as_deref(),
        Some("toolu_01A09q90qw90lq917835lq9")
    );
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "Paris, France", "unit": "celsius"})
    );
    assert_eq!(calls[1].function.arguments, "{}");
    assert_eq!(c.body.usage, Some(Usage::new(384, 92, 0)));
}

#[test]
fn only_tool_calls_means_null_content() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m",
        "content":[{"type":"thinking","thinking":"hmm","signature":"x"},
                   {"type":"tool_use","id":"t1","name":"f","input":{"a":1}}],
        "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let c = parse_completion(body).unwrap();
    assert!(c.body.choices[0].message.content.is_none());
    assert_eq!(
        c.body.choices[0].message.tool_calls.as_ref().unwrap()[0]
            .function
            .arguments,
        r#"{"a":1}"#
    );
}

#[test]
fn cache_tokens_count_as_prompt_and_cache_writes_stay_visible() {
    let c = parse_completion(include_bytes!("fixtures/cached.json")).unwrap();
    let usage = c.body.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 21 + 1800 + 188);
    assert_eq!(usage.cached_tokens(), 1800);
    assert_eq!(usage.completion_tokens, 9);
    assert_eq!(usage.total_tokens, 2009 + 9);
    assert_eq!(c.body.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(
        c.body.extra["anthropic_usage"]["cache_creation_input_tokens"],
        188
    );
}

#[test]
fn error_bodies_and_garbage() {
    let body = include_bytes!("fixtures/error.json");
    assert_eq!(super::super::http::error_message(body), "Overloaded");
    // 529 (overloaded) is a 5xx, so another try may succeed.
    let err = ProviderError::Status {
        status: 529,
        message: "Overloaded".into(),
        retry_after: None,
    };
    assert!(err.is_retryable());
    assert!(matches!(
        parse_completion(body),
        Err(ProviderError::Malformed(_))
    ));
    assert!(matches!(
        parse_completion(b"{not json"),
        Err(ProviderError::Malformed(_))
    ));
    assert!(matches!(
        parse_completion(br#"{"content":[]}"#),
        Err(ProviderError::Malformed(_))
    ));
}

// --- streams ------------------------------------------------------------------------------

#[test]
fn a_streamed_text_answer_translates() {
    let (chunks, error, state) = run_stream(include_str!("fixtures/stream.sse"));
    assert!(error.is_none());
    assert!(state.is_done());
    assert!(
        chunks
            .iter()
            .all(|c| c.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY")
    );
    assert!(chunks.iter().all(|c| c.model == "claude-sonnet-4-20250514"));
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

    let text: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.as_deref())
        .collect();
    assert_eq!(text, "Hello!");
    let finishes: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    assert_eq!(finishes, ["stop"]);

    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage, Some(Usage::new(25, 15, 0)));
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
    // Nothing after message_stop.
    assert!(StreamState::new().on_event("ping", "").unwrap().is_empty());
    let mut done = state;
    assert!(
        done.on_event("message_stop", r#"{"type":"message_stop"}"#)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_streamed_tool_call_assembles_to_valid_json() {
    let (chunks, error, _) = run_stream(include_str!("fixtures/tool_stream.sse"));
    assert!(error.is_none());
    let mut calls: Vec<(Option<String>, Option<String>, String)> = Vec::new();
    let mut text = String::new();
    for choice in chunks.iter().flat_map(|c| &c.choices) {
        text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        for call in choice.delta.tool_calls.iter().flatten() {
            let i = call.index as usize;
            if i == calls.len() {
                assert_eq!(call.kind.as_deref(), Some("function"));
                calls.push((call.id.clone(), None, String::new()));
            }
            let f = call.function.clone().unwrap_or_default();
            if f.name.is_some() {
                calls[i].1 = f.name;
            }
            calls[i].2.push_str(f.arguments.as_deref().unwrap_or(""));
        }
    }
    assert_eq!(text, "Okay, let me check the weather.");
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].0.as_deref(),
        Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    );
    assert_eq!(calls[0].1.as_deref(), Some("get_weather"));
    let args: Value = serde_json::from_str(&calls[0].2).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    // A parameterless tool streams no input; it still gets valid JSON arguments.
    assert_eq!(calls[1].1.as_deref(), Some("get_time"));
    assert_eq!(calls[1].2, "{}");

    let finish = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let last = chunks.last().unwrap();
    let usage = last.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 472 + 100 + 2000);
    assert_eq!(usage.cached_tokens(), 2000);
    assert_eq!(usage.completion_tokens, 89);
    assert_eq!(
        last.extra["anthropic_usage"]["cache_creation_input_tokens"],
        100
    );
}

#[test]
fn an_error_event_breaks_the_stream() {
    let (chunks, error, state) = run_stream(include_str!("fixtures/error_stream.sse"));
    assert_eq!(
        chunks.len(),
        2,
        "role chunk and one text chunk before the error"
    );
    assert!(!state.is_done());
    let error = error.unwrap();
    assert!(matches!(&error, ProviderError::Stream(m) if m == "overloaded_error: Overloaded"));
    assert!(error.is_retryable());
    let mut state = StreamState::new();
    assert!(matches!(
        state.on_event("message_start", "{oops"),
        Err(ProviderError::Malformed(_))
    ));
}

#[test]
fn unnamed_events_use_the_payload_type() {
    let mut state = StreamState::new();
    let out = state
        .on_event(
            "message",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
        )
        .unwrap();
    assert_eq!(out[0].choices[0].delta.content.as_deref(), Some("x"));
    assert!(
        state
            .on_event("some_future_event", "{}")
            .unwrap()
            .is_empty()
    );
}

fn events(text: &str) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
    let items: Vec<_> = sse_events(text)
        .into_iter()
        .map(|(event, data)| Ok(SseEvent { event, data }))
        .collect();
    futures_util::stream::iter(items).boxed()
}

#[tokio::test]
async fn the_chunk_stream_ends_at_message_stop_and_flags_cut_offs() {
    let whole = include_str!("fixtures/stream.sse");
    let trailing = format!(
        "{whole}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"late\"}}}}\n\n"
    );
    let items: Vec<_> = chunk_stream(events(&trailing)).collect().await;
    assert!(items.iter().all(|i| i.is_ok()));
    let last = items.last().unwrap().as_ref().unwrap();
    assert!(last.raw.is_none() && last.chunk.usage.is_some());

    let cut = whole.split("event: message_delta").next().unwrap();
    let items: Vec<_> = chunk_stream(events(cut)).collect().await;
    assert!(matches!(items.last(), Some(Err(ProviderError::Stream(_)))));

    let items: Vec<_> = chunk_stream(events(include_str!("fixtures/error_stream.sse")))
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert!(matches!(items.last(), Some(Err(ProviderError::Stream(_)))));
}

#[test]
fn prompt_cache_marks_the_system_prompt_or_else_the_last_tool() {
    let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]}))
    .unwrap();
    let mut body = build_request("m", &req, false).unwrap();
    request::mark_cache_breakpoint(&mut body);
    assert_eq!(body["system"][0]["text"], "You are terse.");
    assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
    // The same request marks the same bytes: the prefix stays byte-identical.
    let mut again = build_request("m", &req, false).unwrap();
    request::mark_cache_breakpoint(&mut again);
    assert_eq!(body.to_string(), again.to_string());

    let no_system: ChatRequest = serde_json::from_value(json!({"model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]}))
    .unwrap();
    let mut body = build_request("m", &no_system, false).unwrap();
    request::mark_cache_breakpoint(&mut body);
    assert!(body["tools"][0].get("cache_control").is_none());
    assert_eq!(body["tools"][1]["cache_control"]["type"], "ephemeral");
}

#[test]
fn cache_writes_reach_usage_for_pricing() {
    let u = response::AnthropicUsage {
        input_tokens: Some(10),
        output_tokens: Some(5),
        cache_creation_input_tokens: Some(1000),
        cache_read_input_tokens: Some(200),
    }
    .to_openai();
    assert_eq!(u.prompt_tokens, 1210);
    assert_eq!(u.cached_tokens(), 200);
    assert_eq!(u.cache_write_tokens(), 1000);
}

#[test]
fn refusals_name_the_field_at_fault() {
    let req = request(json!({"model": "chat", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "x"},
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]},
        {"role": "function", "name": "f", "content": "1"}]}));
    let Err(ProviderError::Refused { param, .. }) = build_request("m", &req, false) else {
        panic!("audio must be refused");
    };
    assert_eq!(param.as_deref(), Some("messages[1].content[1]"));
    let req = request(json!({"model": "chat", "messages": [
        {"role": "function", "name": "f", "content": "1"}]}));
    let Err(ProviderError::Refused { param, .. }) = build_request("m", &req, false) else {
        panic!("the function role must be refused");
    };
    assert_eq!(param.as_deref(), Some("messages[0].role"));
}

#[test]
fn foreign_tool_call_ids_are_made_safe_and_still_pair() {
    let req = request(json!({"model": "chat", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [
            {"id": "functions.get_weather:0", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}},
            {"id": "call_ok-1", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_ok-1", "content": "noon"}]}));
    let body = build_request("m", &req, false).unwrap();
    let uses = &body["messages"][1]["content"];
    let results = &body["messages"][2]["content"];
    let safe = uses[0]["id"].as_str().unwrap();
    assert!(
        safe.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    assert_eq!(results[0]["tool_use_id"], safe);
    assert_eq!(uses[1]["id"], "call_ok-1", "valid ids pass unchanged");
    assert_eq!(results[1]["tool_use_id"], "call_ok-1");
    assert_ne!(
        super::request::safe_id("a.b"),
        super::request::safe_id("a:b"),
        "the mapping is one-to-one"
    );
}

#[test]
fn parameters_without_an_anthropic_counterpart_are_reported() {
    let req = request(
        json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
        "seed": 1, "presence_penalty": 0.2, "logit_bias": {}, "n": 1, "top_k": 5,
        "parallel_tool_calls": false, "user": "u", "metadata": {"k": "v"}}),
    );
    let provider = Anthropic::new(&Default::default()).unwrap();
    assert_eq!(
        provider.dropped(&req),
        ["logit_bias", "metadata", "n", "presence_penalty", "seed"]
    );
}
