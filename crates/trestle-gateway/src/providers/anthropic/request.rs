//! OpenAI chat request → Anthropic Messages request body.
//!
//! Choices worth knowing:
//! - `system` and `developer` messages, wherever they appear, are joined (blank line between)
//!   into the top-level `system` string.
//! - `tool` messages become `tool_result` blocks in a `user` turn, and consecutive turns of the
//!   same role are merged, since Anthropic requires user/assistant alternation. Messages that
//!   end up with no content at all are dropped (Anthropic rejects empty turns).
//! - Assistant tool-call `arguments` must be a JSON object for `tool_use.input`. Empty,
//!   invalid or non-object arguments are sent as `{}` rather than failing the whole request,
//!   so a conversation holding one bad call (e.g. a truncated one) can still be continued.
//! - `max_tokens` is required upstream: the client's cap, else [`DEFAULT_MAX_TOKENS`].
//! - `temperature` is clamped to Anthropic's range `0..=1` (OpenAI allows up to 2).
//! - `response_format` `json_object` / `json_schema` has no native counterpart: an instruction
//!   to answer with JSON only (quoting the schema, if given) is appended to `system`.
//! - Unknown OpenAI fields are not forwarded (Anthropic rejects unknown fields), except
//!   `top_k`; `parallel_tool_calls: false` becomes `disable_parallel_tool_use`.
//! - A message's own `cache_control` field (which the Anthropic front door sets for routes
//!   served only by Anthropic targets) is put on the last block that message produced, or on
//!   the system prompt as one text block.
//! - `thinking` (an extra field) is forwarded; an assistant message's `thinking_blocks` go
//!   back, signatures included, before its other blocks.
//! - Inputs Anthropic cannot take (audio, file ids, the legacy `function` role, non-base64
//!   `data:` URLs) fail with [`ProviderError::Refused`], naming the field.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use trestle_core::openai::{
    ChatRequest, Content, ContentPart, Message, ResponseFormat, Role, Tool, ToolChoice,
};

use crate::providers::ProviderError;

/// A message-level field (not OpenAI's) the Anthropic front door sets to carry a client's
/// prompt-cache breakpoint; it lands on the message's last block.
pub const CACHE_CONTROL: &str = "cache_control";

/// A message-level field holding an assistant turn's `thinking` / `redacted_thinking` blocks
/// as Anthropic sent them (signatures included); they go back first in the turn. Answers
/// carry it too (beside `reasoning_content`).
pub const THINKING_BLOCKS: &str = "thinking_blocks";

/// `max_tokens` when the client set no cap.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The encoded Messages body for `model` (the upstream's model name).
pub fn request_body(model: &str, req: &ChatRequest, stream: bool) -> Result<Bytes, ProviderError> {
    let body = build_request(model, req, stream)?;
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
}

/// Marks the end of the stable prefix (tools, then system) with `cache_control`, so Anthropic
/// caches it: the system prompt becomes one text block carrying the marker; without one, the
/// last tool carries it. Messages are left alone (they change every turn).
pub fn mark_cache_breakpoint(body: &mut Value) {
    let ephemeral = json!({"type": "ephemeral"});
    if let Some(system) = body.get_mut("system")
        && let Some(text) = system.as_str().map(str::to_string)
    {
        *system = json!([{"type": "text", "text": text, "cache_control": ephemeral}]);
        return;
    }
    if let Some(last) = body
        .get_mut("tools")
        .and_then(Value::as_array_mut)
        .and_then(|t| t.last_mut())
        .and_then(Value::as_object_mut)
    {
        last.insert("cache_control".into(), ephemeral);
    }
}

/// The Messages body as JSON.
pub fn build_request(model: &str, req: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
    let mut system: Vec<String> = Vec::new();
    let mut system_cache: Option<&Value> = None;
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        let at = |e: ProviderError| e.within(&format!("messages[{i}]"));
        let turns_before = turns.iter().map(|(_, b)| b.len()).sum::<usize>();
        match message.role {
            Role::System | Role::Developer => {
                let text = message.text();
                if !text.trim().is_empty() {
                    system.push(text);
                    system_cache = message.extra.get(CACHE_CONTROL).or(system_cache);
                }
            }
            Role::User => push_turn(&mut turns, "user", user_blocks(message).map_err(at)?),
            Role::Assistant => push_turn(
                &mut turns,
                "assistant",
                assistant_blocks(message).map_err(at)?,
            ),
            Role::Tool => push_turn(&mut turns, "user", vec![tool_result(message).map_err(at)?]),
            Role::Function => {
                return Err(at(unsupported(
                    "the legacy `function` role cannot be sent to Anthropic; use tools",
                )
                .within("role")));
            }
        }
        // A message's `cache_control` (set by the Anthropic front door) marks its last block.
        let added = turns.iter().map(|(_, b)| b.len()).sum::<usize>() > turns_before;
        if let (true, Some(marker)) = (added, message.extra.get(CACHE_CONTROL))
            && let Some(obj) = turns
                .last_mut()
                .and_then(|(_, blocks)| blocks.last_mut())
                .and_then(Value::as_object_mut)
        {
            obj.insert(CACHE_CONTROL.into(), marker.clone());
        }
    }
    if let Some(instruction) = req.response_format.as_ref().and_then(json_instruction) {
        system.push(instruction);
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(req.output_cap().unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        let text = system.join("\n\n");
        let system = match system_cache {
            Some(marker) => json!([{"type": "text", "text": text, "cache_control": marker}]),
            None => json!(text),
        };
        body.insert("system".into(), system);
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.extra.get("top_k").filter(|k| k.is_u64()) {
        body.insert("top_k".into(), k.clone());
    }
    let stops = req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    if !stops.is_empty() {
        body.insert("stop_sequences".into(), json!(stops));
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        body.insert(
            "tools".into(),
            Value::Array(tools.iter().map(tool_def).collect()),
        );
        let parallel = req
            .extra
            .get("parallel_tool_calls")
            .and_then(Value::as_bool);
        if let Some(choice) =
            tool_choice(req.tool_choice.as_ref(), parallel).map_err(|e| e.within("tool_choice"))?
        {
            body.insert("tool_choice".into(), choice);
        }
    }
    if let Some(thinking) = req.extra.get("thinking").filter(|t| t.is_object()) {
        body.insert("thinking".into(), thinking.clone());
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(user) = req.user.as_ref().filter(|u| !u.is_empty()) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

/// A tool-call id in the form Anthropic accepts (`^[a-zA-Z0-9_-]+$`). Ids issued by other
/// providers (`functions.get_weather:0`) are encoded as `tid_` + the id's bytes in hex: the
/// mapping is one-to-one, so a `tool_use` and the `tool_result` answering it still pair up.
/// Anthropic names the calls it makes itself, so nothing comes back to decode.
pub fn safe_id(id: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(allowed) && !id.starts_with("tid_") {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(4 + 2 * id.len());
    out.push_str("tid_");
    for b in id.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    std::borrow::Cow::Owned(out)
}

fn unsupported(message: &str) -> ProviderError {
    ProviderError::refused(message.to_string())
}

/// Appends blocks to the last turn when it has the same role, else starts a new turn.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic rejects empty text blocks.
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn content_blocks(content: Option<&Content>) -> Result<Vec<Value>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                blocks.extend(part_block(part).map_err(|e| e.within(&format!("content[{j}]")))?);
            }
            Ok(blocks)
        }
    }
}

fn part_block(part: &ContentPart) -> Result<Option<Value>, ProviderError> {
    match part {
        ContentPart::Text { text } => Ok(text_block(text)),
        ContentPart::Refusal { refusal } => Ok(text_block(refusal)),
        ContentPart::ImageUrl { image_url } => image_block(&image_url.url).map(Some),
        ContentPart::File { file } => file_block(file).map(Some),
        ContentPart::InputAudio { .. } => Err(unsupported("Anthropic does not accept audio input")),
    }
}

/// Splits `data:<media type>[;params];base64,<data>`.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (header, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut params = header.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params.any(|p| p == "base64").then_some((media_type, data))
}

fn image_block(url: &str) -> Result<Value, ProviderError> {
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url)
            .ok_or_else(|| unsupported("image data URLs must be base64 with a media type"))?;
        Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(unsupported(
            "image URLs must be http(s) or base64 data URLs",
        ))
    }
}

/// A `file` part with inline `file_data` (e.g. a PDF) → a `document` block.
fn file_block(file: &Value) -> Result<Value, ProviderError> {
    let (media_type, data) = file
        .get("file_data")
        .and_then(Value::as_str)
        .and_then(parse_data_url)
        .ok_or_else(|| {
            unsupported("only inline base64 `file_data` files can be sent to Anthropic")
        })?;
    Ok(json!({"type": "document", "source": {
        "type": "base64", "media_type": media_type, "data": data}}))
}

fn user_blocks(message: &Message) -> Result<Vec<Value>, ProviderError> {
    content_blocks(message.content.as_ref())
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, ProviderError> {
    // Thinking blocks (with their signatures) go back first, as Anthropic requires.
    let mut blocks: Vec<Value> = message
        .extra
        .get(THINKING_BLOCKS)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| {
            matches!(
                b.get("type").and_then(Value::as_str),
                Some("thinking" | "redacted_thinking")
            )
        })
        .cloned()
        .collect();
    blocks.extend(content_blocks(message.content.as_ref())?);
    for (n, call) in message.tool_calls.iter().flatten().enumerate() {
        let id = call.id.as_deref().ok_or_else(|| {
            unsupported("an assistant tool call has no `id`").within(&format!("tool_calls[{n}].id"))
        })?;
        blocks.push(json!({
            "type": "tool_use",
            "id": safe_id(id),
            "name": call.function.name,
            "input": tool_input(&call.function.arguments),
        }));
    }
    Ok(blocks)
}

/// The arguments as a JSON object; anything else becomes `{}` (see the module notes).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            if !arguments.trim().is_empty() {
                tracing::debug!("tool call arguments are not a JSON object; sending {{}}");
            }
            json!({})
        }
    }
}

fn tool_result(message: &Message) -> Result<Value, ProviderError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        unsupported("a `tool` message has no `tool_call_id`").within("tool_call_id")
    })?;
    let mut block = json!({"type": "tool_result", "tool_use_id": safe_id(id)});
    let content = match message.content.as_ref() {
        Some(Content::Text(text)) if !text.is_empty() => Some(json!(text)),
        Some(parts @ Content::Parts(_)) => {
            let blocks = content_blocks(Some(parts))?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
        _ => None,
    };
    if let (Some(content), Some(obj)) = (content, block.as_object_mut()) {
        obj.insert("content".into(), content);
    }
    Ok(block)
}

fn tool_def(tool: &Tool) -> Value {
    let mut def = Map::new();
    def.insert("name".into(), json!(tool.function.name));
    if let Some(description) = &tool.function.description {
        def.insert("description".into(), json!(description));
    }
    let schema = tool
        .function
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    def.insert("input_schema".into(), schema);
    if let Some(marker) = &tool.cache_control {
        def.insert(CACHE_CONTROL.into(), marker.clone());
    }
    Value::Object(def)
}

/// OpenAI `tool_choice` (+ `parallel_tool_calls`) → Anthropic `tool_choice`.
fn tool_choice(
    choice: Option<&ToolChoice>,
    parallel: Option<bool>,
) -> Result<Option<Value>, ProviderError> {
    let mut out = match choice {
        None if parallel == Some(false) => json!({"type": "auto"}),
        None => return Ok(None),
        Some(ToolChoice::Named(named)) => json!({"type": "tool", "name": named.function.name}),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            other => {
                return Err(ProviderError::refused(format!(
                    "unknown tool_choice `{other}`"
                )));
            }
        },
    };
    if let (Some(false), Some(obj)) = (parallel, out.as_object_mut()) {
        obj.insert("disable_parallel_tool_use".into(), json!(true));
    }
    Ok(Some(out))
}

/// The system-prompt instruction standing in for OpenAI's JSON modes.
fn json_instruction(format: &ResponseFormat) -> Option<String> {
    const BASE: &str = "Respond with a single valid JSON value and nothing else: no prose \
        before or after it, no Markdown code fences.";
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(format!("{BASE} The value must be a JSON object.")),
        ResponseFormat::JsonSchema { json_schema } => {
            let mut text = format!(
                "{BASE} It must conform to the JSON Schema named `{}`",
                json_schema.name
            );
            if let Some(description) = &json_schema.description {
                text.push_str(&format!(" ({description})"));
            }
            match &json_schema.schema {
                Some(schema) => {
                    text.push_str(":\n");
                    text.push_str(&schema.to_string());
                }
                None => text.push('.'),
            }
            Some(text)
        }
    }
}
