//! The translation both ways, over bodies written from Anthropic's public Messages reference.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use trestle_core::openai::{ChatChunk, ChatCompletion, Content, ContentPart, Role, ToolChoice};

use super::request::{parse, restore_id, to_chat};
use super::response::{error_from_openai, message};
use super::stream::{Events, Frames};

fn translate(body: Value) -> super::request::Translated {
    to_chat(parse(body.to_string().as_bytes(), false).unwrap(), false).unwrap()
}

fn refused(body: Value) -> (String, Option<String>) {
    let e = parse(body.to_string().as_bytes(), false)
        .and_then(|r| to_chat(r, false))
        .unwrap_err();
    let b = e.body();
    assert_eq!(e.status(), 400);
    (b.error.message, b.error.param)
}

#[test]
fn a_full_request_maps_field_by_field() {
    let t = translate(json!({
        "model": "chat",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "be kind"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is in it?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny"},
                {"type": "text", "text": "and tomorrow?"}]}
        ],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": true
    }));
    let c = &t.chat;
    assert_eq!(c.model, "chat");
    assert_eq!(c.max_tokens, Some(256));
    assert_eq!(c.temperature, Some(0.5));
    assert_eq!(c.top_p, Some(0.9));
    assert_eq!(c.extra["top_k"], 40);
    assert_eq!(c.extra["parallel_tool_calls"], false);
    assert_eq!(c.user.as_deref(), Some("u-1"));
    assert!(c.is_stream() && c.wants_stream_usage());
    assert_eq!(c.stop.as_ref().unwrap().to_vec(), vec!["END"]);
    assert!(c.tool_choice.as_ref().unwrap().is_mode("required"));
    assert_eq!(c.tools.as_ref().unwrap()[0].function.name, "get_weather");
    let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::User
        ]
    );
    assert_eq!(c.messages[0].text(), "be brief\n\nbe kind");
    let Some(Content::Parts(parts)) = &c.messages[1].content else {
        panic!("parts expected")
    };
    assert!(
        matches!(&parts[1], ContentPart::ImageUrl { image_url } if image_url.url == "data:image/png;base64,AAAA")
    );
    assert!(
        matches!(&parts[2], ContentPart::ImageUrl { image_url } if image_url.url == "https://example.com/a.png")
    );
    let assistant = &c.messages[2];
    assert_eq!(assistant.text(), "let me look");
    let call = &assistant.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id.as_deref(), Some("toolu_01A"));
    assert_eq!(
        serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("toolu_01A"));
    assert_eq!(c.messages[3].text(), "sunny");
    assert_eq!(c.messages[4].text(), "and tomorrow?");
    assert_eq!(t.dropped, ["cache_control", "thinking"]);
    assert_eq!(t.stop_sequences, ["END"]);
}

#[test]
fn tool_choice_modes_and_errored_results() {
    let base = |choice: Value| {
        translate(json!({"model": "m", "max_tokens": 1, "tool_choice": choice,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "x"}]}))
        .chat
        .tool_choice
        .unwrap()
    };
    assert!(base(json!({"type": "auto"})).is_mode("auto"));
    assert!(base(json!({"type": "none"})).is_mode("none"));
    assert!(
        matches!(base(json!({"type": "tool", "name": "f"})), ToolChoice::Named(n) if n.function.name == "f")
    );
    let t = translate(json!({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
            "content": [{"type": "text", "text": "no such city"}]}]}]}));
    assert_eq!(t.chat.messages.len(), 1);
    assert_eq!(t.chat.messages[0].text(), "Error: no such city");
}

#[test]
fn bad_requests_say_what_to_fix() {
    let (m, p) = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    assert!(m.contains("`max_tokens` is required"), "{m}");
    assert_eq!(p.as_deref(), Some("max_tokens"));
    // count_tokens takes the body without max_tokens.
    assert!(
        parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            true
        )
        .is_ok()
    );
    let (m, p) = refused(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "video", "url": "x"}]}]}));
    assert!(m.contains("`video` block"), "{m}");
    assert_eq!(p.as_deref(), Some("messages[0].content[0].type"));
    let (m, p) = refused(json!({"model": "m", "max_tokens": 5,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": "x"}]}));
    assert!(m.contains("server tools"), "{m}");
    assert_eq!(p.as_deref(), Some("tools[0]"));
    let (_, p) = refused(json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "system", "content": "x"}]}));
    assert_eq!(p.as_deref(), Some("messages[0].role"));
    let (m, _) = refused(json!({"model": "m", "max_tokens": 5, "temperature": 1.5,
        "messages": [{"role": "user", "content": "x"}]}));
    assert!(m.contains("between 0 and 1"), "{m}");
}

#[test]
fn foreign_tool_ids_round_trip() {
    let id = "functions.get_weather:0";
    let safe = crate::providers::anthropic::request::safe_id(id);
    assert!(safe.starts_with("tid_"));
    assert_eq!(restore_id(&safe), id);
    assert_eq!(restore_id("toolu_01A"), "toolu_01A");
    assert_eq!(restore_id("tid_zz"), "tid_zz");
}

fn completion(body: Value) -> ChatCompletion {
    serde_json::from_value(body).unwrap()
}

#[test]
fn a_completion_becomes_a_message() {
    let c = completion(
        json!({"id": "chatcmpl-abc", "model": "m1", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hello", "reasoning_content": "think"},
        "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4}}}),
    );
    let m = message(&c, "chat", &[]);
    assert_eq!(m["id"], "msg_abc");
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "m1");
    assert_eq!(m["content"][0]["type"], "thinking");
    assert_eq!(m["content"][1], json!({"type": "text", "text": "hello"}));
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 6, "output_tokens": 2, "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 0})
    );
}

#[test]
fn tool_calls_and_stop_reasons_map() {
    let c = completion(
        json!({"id": "x", "choices": [{"message": {"role": "assistant",
        "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "functions.f:1", "type": "function", "function": {"name": "f", "arguments": "oops"}}]},
        "finish_reason": "tool_calls"}]}),
    );
    let m = message(&c, "chat", &[]);
    assert_eq!(m["model"], "chat");
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
    );
    assert_eq!(m["content"][1]["input"], json!({}));
    assert_eq!(
        restore_id(m["content"][1]["id"].as_str().unwrap()),
        "functions.f:1"
    );
    let reason = |finish: &str, extra: Value| {
        let mut choice = json!({"message": {"content": "x"}, "finish_reason": finish});
        for (k, v) in extra.as_object().unwrap() {
            choice[k] = v.clone();
        }
        let c = completion(json!({"id": "x", "choices": [choice]}));
        let m = message(&c, "chat", &["END".to_string()]);
        (m["stop_reason"].clone(), m["stop_sequence"].clone())
    };
    assert_eq!(reason("length", json!({})).0, "max_tokens");
    assert_eq!(reason("content_filter", json!({})).0, "refusal");
    assert_eq!(
        reason("stop", json!({"stop_reason": "END"})),
        (json!("stop_sequence"), json!("END"))
    );
    assert_eq!(reason("stop", json!({"stop_reason": 7})).0, "end_turn");
}

#[test]
fn an_anthropic_targets_own_usage_wins() {
    let c = completion(
        json!({"id": "msg_1", "choices": [{"message": {"content": "x"},
        "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 110, "completion_tokens": 5, "total_tokens": 115,
            "prompt_tokens_details": {"cached_tokens": 100}},
        "anthropic_usage": {"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}}),
    );
    let m = message(&c, "chat", &[]);
    assert_eq!(m["id"], "msg_1");
    assert_eq!(m["usage"]["input_tokens"], 10);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 100);
}

#[test]
fn errors_are_anthropic_shaped() {
    let body = json!({"error": {"message": "no route `x`", "type": "not_found_error",
        "code": "route_not_found", "param": "model"}});
    assert_eq!(
        error_from_openai(404, &body),
        json!({"type": "error", "error": {"type": "not_found_error",
            "message": "no route `x` (at `model`)"}})
    );
    assert_eq!(
        error_from_openai(503, &body)["error"]["type"],
        "overloaded_error"
    );
    assert_eq!(
        error_from_openai(429, &json!({}))["error"]["type"],
        "rate_limit_error"
    );
}

/// Runs SSE bytes through [`Frames`] and [`Events`]; returns (event name, data) pairs.
fn run_stream(frames: &[&str]) -> Vec<(String, Value)> {
    let mut splitter = Frames::default();
    let mut events = Events::new("chat", vec!["END".into()]);
    let mut out = BytesMut::new();
    // Split mid-frame to check reassembly.
    let all: String = frames.iter().map(|f| format!("data: {f}\n\n")).collect();
    let (a, b) = all.split_at(all.len() / 2);
    for piece in [a, b] {
        for data in splitter.push(&Bytes::from(piece.to_string())) {
            events.on_data(&data, &mut out);
        }
    }
    let text = String::from_utf8(out.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut lines = f.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name);
            (name.to_string(), data)
        })
        .collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

#[test]
fn a_text_stream_has_anthropics_event_sequence() {
    let usage = json!({"id": "chatcmpl-1", "model": "m1", "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
    .to_string();
    let events = run_stream(&[
        &chunk(json!({"role": "assistant", "content": ""}), None),
        &chunk(json!({"reasoning_content": "hm"}), None),
        &chunk(json!({"content": "hello"}), None),
        &chunk(json!({"content": " world"}), None),
        &chunk(json!({}), Some("stop")),
        &usage,
        "[DONE]",
    ]);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["id"], "msg_1");
    assert_eq!(events[0].1["message"]["model"], "m1");
    assert_eq!(events[2].1["content_block"]["type"], "thinking");
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "thinking_delta", "thinking": "hm"})
    );
    assert_eq!(events[5].1["index"], 1);
    assert_eq!(
        events[6].1["delta"],
        json!({"type": "text_delta", "text": "hello"})
    );
    let delta = &events[9].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(delta["usage"]["input_tokens"], 9);
}

#[test]
fn a_tool_stream_streams_input_json() {
    let events = run_stream(&[
        &chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_9",
            "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        &chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_10",
            "function": {"name": "f", "arguments": "{}"}}]}),
            None,
        ),
        &chunk(json!({}), Some("tool_calls")),
        "[DONE]",
    ]);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        starts[0]["content_block"],
        json!({"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {}})
    );
    assert_eq!(starts[1]["index"], 1);
    let json: String = events
        .iter()
        .filter(|(_, d)| d["index"] == 0 && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(json, "{\"city\":\"Paris\"}");
    let stops = events
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .count();
    assert_eq!(stops, 2);
    let (name, delta) = &events[events.len() - 2];
    assert_eq!(name, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[test]
fn a_stream_failure_ends_with_an_error_event() {
    let failure = json!({"error": {"message": "the upstream failed mid-stream: reset",
        "type": "upstream_error", "code": "stream_interrupted", "param": null}})
    .to_string();
    let events = run_stream(&[&chunk(json!({"content": "par"}), None), &failure, "[DONE]"]);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(events.iter().all(|(n, _)| n != "message_stop"));
    // A stop sequence the upstream names is reported.
    let events = run_stream(&[
        &chunk(json!({"content": "x"}), None),
        &json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
            "stop_reason": "END"}]})
        .to_string(),
        "[DONE]",
    ]);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], "END");
    let _ = ChatChunk::default();
}

#[test]
fn cache_control_and_tool_ids_reach_an_anthropic_target() {
    let req = parse(
        json!({"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "f", "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "doc"},
                    {"type": "text", "text": "question", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01X", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01X",
                    "content": "42", "cache_control": {"type": "ephemeral"}}]}]})
        .to_string()
        .as_bytes(),
        false,
    )
    .unwrap();
    let kept = to_chat(req.clone(), true).unwrap();
    assert!(kept.dropped.is_empty(), "{:?}", kept.dropped);
    let body =
        crate::providers::anthropic::request::build_request("claude", &kept.chat, false).unwrap();
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}}])
    );
    let user = &body["messages"][0]["content"];
    assert!(user[0].get("cache_control").is_none());
    assert_eq!(
        user[1]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert_eq!(body["messages"][1]["content"][0]["id"], "toolu_01X");
    let result = &body["messages"][2]["content"][0];
    assert_eq!(result["tool_use_id"], "toolu_01X");
    assert_eq!(result["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(
        body["tools"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    // Towards other targets the markers are dropped, and said so.
    let dropped = to_chat(req, false).unwrap();
    assert_eq!(dropped.dropped, ["cache_control"]);
    assert!(dropped.chat.messages.iter().all(|m| m.extra.is_empty()));
    let tools = dropped.chat.tools.as_deref().unwrap_or_default();
    assert!(tools.iter().all(|t| t.cache_control.is_none()));
}

#[test]
fn thinking_reaches_an_anthropic_target_and_comes_back() {
    let req = parse(
        json!({"model": "m", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "let me see", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "toolu_01", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"}]}]})
        .to_string()
        .as_bytes(),
        false,
    )
    .unwrap();
    let kept = to_chat(req.clone(), true).unwrap();
    assert!(kept.dropped.is_empty(), "{:?}", kept.dropped);
    let body =
        crate::providers::anthropic::request::build_request("claude", &kept.chat, false).unwrap();
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    let assistant = &body["messages"][1]["content"];
    assert_eq!(
        assistant[0],
        json!({"type": "thinking", "thinking": "let me see", "signature": "sig-1"})
    );
    assert_eq!(
        assistant[1],
        json!({"type": "redacted_thinking", "data": "opaque"})
    );
    assert_eq!(assistant[2]["type"], "tool_use");
    assert_eq!(to_chat(req, false).unwrap().dropped, ["thinking"]);

    // The answer: the adapter keeps the blocks, the front door returns them as they came.
    let answer = crate::providers::anthropic::parse_completion(
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig-2"},
                        {"type": "redacted_thinking", "data": "opaque-2"},
                        {"type": "text", "text": "done"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let m = message(&answer.body, "chat", &[]);
    assert_eq!(
        m["content"],
        json!([{"type": "thinking", "thinking": "hmm", "signature": "sig-2"},
               {"type": "redacted_thinking", "data": "opaque-2"},
               {"type": "text", "text": "done"}])
    );
}

#[test]
fn a_thinking_stream_from_an_anthropic_target_keeps_signatures() {
    let mut state = crate::providers::anthropic::StreamState::new();
    let upstream = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_2", "model": "claude",
            "usage": {"input_tokens": 5, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "step"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig-3"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "opaque"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "text_delta", "text": "answer"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 6}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let mut frames = Vec::new();
    for (name, data) in upstream {
        for chunk in state.on_event(name, &data.to_string()).unwrap() {
            frames.push(serde_json::to_string(&chunk).unwrap());
        }
    }
    frames.push("[DONE]".into());
    let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
    let events = run_stream(&refs);
    let blocks: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["content_block"].clone())
        .collect();
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(
        blocks[1],
        json!({"type": "redacted_thinking", "data": "opaque"})
    );
    assert_eq!(blocks[2]["type"], "text");
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| &d["delta"])
        .collect();
    assert_eq!(
        deltas[0],
        &json!({"type": "thinking_delta", "thinking": "step"})
    );
    assert_eq!(
        deltas[1],
        &json!({"type": "signature_delta", "signature": "sig-3"})
    );
    assert_eq!(deltas[2], &json!({"type": "text_delta", "text": "answer"}));
    let usage = &events[events.len() - 2].1["usage"];
    assert_eq!(usage["input_tokens"], 5);
    assert_eq!(usage["output_tokens"], 6);
}
