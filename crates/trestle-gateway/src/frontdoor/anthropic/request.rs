//! Anthropic Messages request → the gateway's OpenAI-shaped [`ChatRequest`].
//!
//! - `system` (a string or text blocks) becomes one leading `system` message.
//! - `user` content blocks: `text` → text parts, `image` (base64 or url) → `image_url` parts
//!   (base64 as a `data:` URL), `document` (base64) → a `file` part, a plain-text document →
//!   a text part. `tool_result` blocks become `tool` messages placed before the rest of the
//!   turn (OpenAI wants them right after the assistant's calls); `is_error` prefixes the
//!   result with `Error: `; images inside a result follow in the user turn.
//! - `assistant` content: `text` → content, `tool_use` → `tool_calls` (the `input` object as
//!   JSON arguments, the id kept); `thinking` and `redacted_thinking` are left out, except
//!   towards Anthropic targets (below).
//! - `tools` (client tools) → functions; `tool_choice` auto/any/tool/none → auto/required/
//!   named/none; `disable_parallel_tool_use` → `parallel_tool_calls: false`.
//! - `max_tokens`, `temperature`, `top_p`, `stop_sequences` (→ `stop`), `top_k` (kept as an
//!   extra field, as OpenAI-compatible servers that know it read it), `metadata.user_id`
//!   (→ `user`), `stream` (with usage asked for, to report it).
//! - `cache_control` markers on system, message and `tool_result` blocks ride on their
//!   message, and those on tools on their tool, when every target of the route is Anthropic
//!   (the adapter puts each back on the last block of its message, or on the tool);
//!   otherwise they are dropped. The same goes
//!   for `thinking` (the parameter, forwarded) and assistant thinking blocks (kept whole on
//!   the message, signatures included). Top-level fields with no counterpart
//!   (`service_tier`, …) are dropped. Whatever is dropped is
//!   named in `x-trestle-dropped-params`.
//! - Server tools, Files API ids, document URLs and unknown block types are refused with a
//!   400 naming the field.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use trestle_core::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, FunctionName, ImageUrl, Message,
    NamedToolChoice, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice,
};

use crate::error::GatewayError;
use crate::providers::anthropic::request::{CACHE_CONTROL, THINKING_BLOCKS};

/// A `POST /v1/messages` body. Content, `system`, tools and `tool_choice` are kept as JSON
/// and read by hand, so an error can name the exact block and say what to send instead.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Fields with no counterpart in the pipeline's request (dropped, and said so).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The pipeline's request, and what of the Anthropic request it could not carry.
#[derive(Debug, Clone)]
pub struct Translated {
    pub chat: ChatRequest,
    /// Dropped fields, sorted and unique (`cache_control`, `thinking`, …).
    pub dropped: Vec<String>,
    /// The request's `stop_sequences`, to name the one that ended an answer.
    pub stop_sequences: Vec<String>,
}

/// Parses and checks a Messages body. `max_tokens` is required unless `counting` (the
/// `count_tokens` endpoint takes the same body without it).
pub fn parse(body: &[u8], counting: bool) -> Result<MessagesRequest, GatewayError> {
    let req: MessagesRequest = crate::pipeline::ingress::parse_json(body)?;
    if req.model.trim().is_empty() {
        return Err(invalid(
            "`model` is empty; name a route or provider/model",
            "model",
        ));
    }
    if req.messages.is_empty() {
        return Err(invalid(
            "`messages` is empty; send at least one message",
            "messages",
        ));
    }
    if !counting {
        match req.max_tokens {
            None => {
                return Err(invalid(
                    "`max_tokens` is required by the Messages API: the most tokens the answer \
                     may have, e.g. \"max_tokens\": 1024",
                    "max_tokens",
                ));
            }
            Some(0) => return Err(invalid("`max_tokens` must be at least 1", "max_tokens")),
            Some(_) => {}
        }
    }
    if let Some(t) = req.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(invalid(
            format!("`temperature` is {t}; it must be between 0 and 1"),
            "temperature",
        ));
    }
    if let Some(p) = req.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(invalid(
            format!("`top_p` is {p}; it must be between 0 and 1"),
            "top_p",
        ));
    }
    Ok(req)
}

/// Translates a parsed request (see the module notes). With `anthropic_target` (a route
/// served only by Anthropic targets), a message's `cache_control` marker rides on the
/// message (the Anthropic adapter puts it back on the message's last block), assistant
/// thinking blocks ride on theirs (`thinking_blocks`), and `thinking` is forwarded;
/// otherwise they are dropped.
pub fn to_chat(req: MessagesRequest, anthropic_target: bool) -> Result<Translated, GatewayError> {
    let mut extra = Map::new();
    let mut names: Vec<String> = req.extra.keys().cloned().collect();
    // Extended thinking can be asked of an Anthropic target only.
    if let (true, Some(thinking)) = (anthropic_target, req.extra.get("thinking")) {
        names.retain(|n| n != "thinking");
        extra.insert("thinking".into(), thinking.clone());
    }
    let mut dropped = Dropped {
        names,
        anthropic_target,
    };
    let dropped = &mut dropped;
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        let (text, marker) = system_text(system, dropped)?;
        if !text.is_empty() {
            let mut m = Message::new(Role::System, text);
            mark(&mut m, marker);
            messages.push(m);
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match m.role.as_str() {
            "user" => user_turn(&m.content, &at, &mut messages, dropped)?,
            "assistant" => messages.push(assistant_turn(&m.content, &at, dropped)?),
            other => {
                return Err(invalid(
                    format!(
                        "`{at}.role` is `{other}`; it must be `user` or `assistant` (a system prompt goes in the top-level `system`)"
                    ),
                    &format!("{at}.role"),
                ));
            }
        }
    }
    let tools = match &req.tools {
        None => None,
        Some(tools) => Some(
            tools
                .iter()
                .enumerate()
                .map(|(k, t)| tool(t, k, dropped))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(choice) => tool_choice(choice, &mut extra)?,
    };
    if let Some(k) = req.top_k {
        extra.insert("top_k".into(), json!(k));
    }
    let stream = req.stream.unwrap_or(false);
    let stop_sequences = req.stop_sequences.clone().unwrap_or_default();
    let mut dropped = std::mem::take(&mut dropped.names);
    dropped.sort();
    dropped.dedup();
    let chat = ChatRequest {
        model: req.model,
        messages,
        stream: stream.then_some(true),
        // Usage is always asked for: message_delta reports it.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_tokens,
        max_completion_tokens: None,
        stop: (!stop_sequences.is_empty()).then(|| Stop::Many(stop_sequences.clone())),
        tools,
        tool_choice,
        response_format: None,
        user: req
            .metadata
            .and_then(|m| m.user_id)
            .filter(|u| !u.is_empty()),
        metadata: None,
        extra,
    };
    Ok(Translated {
        chat,
        dropped,
        stop_sequences,
    })
}

/// A tool id as the pipeline should see it: ids the front door encoded on the way out
/// (`tid_` + hex, see [`crate::providers::anthropic::request::safe_id`]) are decoded back to
/// the upstream's own; every other id is kept as it is.
pub fn restore_id(id: &str) -> String {
    let decoded = id
        .strip_prefix("tid_")
        .filter(|hex| hex.len() % 2 == 0 && !hex.is_empty())
        .and_then(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    decoded.unwrap_or_else(|| id.to_string())
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

fn block_type<'a>(block: &'a Value, at: &str) -> Result<&'a str, GatewayError> {
    block.get("type").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("`{at}` has no `type`; content blocks are objects like {{\"type\": \"text\", \"text\": \"…\"}}"),
            &format!("{at}.type"),
        )
    })
}

fn string_field<'a>(block: &'a Value, name: &str, at: &str) -> Result<&'a str, GatewayError> {
    block.get(name).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("`{at}.{name}` is missing or not a string"),
            &format!("{at}.{name}"),
        )
    })
}

/// The blocks of a content value: a string is one text block.
fn blocks<'a>(content: &'a Value, at: &str) -> Result<std::borrow::Cow<'a, [Value]>, GatewayError> {
    match content {
        Value::String(s) => Ok(std::borrow::Cow::Owned(vec![
            json!({"type": "text", "text": s}),
        ])),
        Value::Array(items) => Ok(std::borrow::Cow::Borrowed(items)),
        _ => Err(invalid(
            format!("`{at}.content` must be a string or a list of content blocks"),
            &format!("{at}.content"),
        )),
    }
}

/// What the translation leaves out, and whether Anthropic-only content (`cache_control`
/// markers, thinking blocks) is carried for an Anthropic target.
struct Dropped {
    names: Vec<String>,
    anthropic_target: bool,
}

impl Dropped {
    fn push(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    /// A block's `cache_control` marker, when it is kept; otherwise noted as dropped.
    fn marker(&mut self, block: &Value) -> Option<Value> {
        let marker = block.get(CACHE_CONTROL)?;
        if self.anthropic_target {
            Some(marker.clone())
        } else {
            self.push(CACHE_CONTROL);
            None
        }
    }
}

/// Puts a kept `cache_control` marker on a message.
fn mark(message: &mut Message, marker: Option<Value>) {
    if let Some(m) = marker {
        message.extra.insert(CACHE_CONTROL.into(), m);
    }
}

fn system_text(
    system: &Value,
    dropped: &mut Dropped,
) -> Result<(String, Option<Value>), GatewayError> {
    match system {
        Value::String(s) => Ok((s.clone(), None)),
        Value::Array(items) => {
            let mut texts = Vec::with_capacity(items.len());
            let mut marker = None;
            for (j, block) in items.iter().enumerate() {
                let at = format!("system[{j}]");
                match block_type(block, &at)? {
                    "text" => texts.push(string_field(block, "text", &at)?.to_string()),
                    other => {
                        return Err(invalid(
                            format!("`{at}` is a `{other}` block; `system` takes text blocks only"),
                            &at,
                        ));
                    }
                }
                marker = dropped.marker(block).or(marker);
            }
            Ok((texts.join("\n\n"), marker))
        }
        _ => Err(invalid(
            "`system` must be a string or a list of text blocks",
            "system",
        )),
    }
}

/// An `image` block's source as an OpenAI image URL.
fn image_url(block: &Value, at: &str) -> Result<String, GatewayError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid(format!("`{at}.source` is missing"), &format!("{at}.source")))?;
    let at = format!("{at}.source");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(format!(
            "data:{};base64,{}",
            string_field(source, "media_type", &at)?,
            string_field(source, "data", &at)?
        )),
        Some("url") => Ok(string_field(source, "url", &at)?.to_string()),
        other => Err(invalid(
            format!(
                "`{at}.type` is {}; images must be `base64` or `url` sources (Files API ids cannot be translated)",
                other.map_or("missing".to_string(), |o| format!("`{o}`"))
            ),
            &format!("{at}.type"),
        )),
    }
}

/// A `document` block: base64 (a PDF) → a `file` part; plain text → a text part.
fn document(block: &Value, at: &str) -> Result<ContentPart, GatewayError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let src_at = format!("{at}.source");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mut file = Map::new();
            file.insert(
                "file_data".into(),
                json!(format!(
                    "data:{};base64,{}",
                    string_field(source, "media_type", &src_at)?,
                    string_field(source, "data", &src_at)?
                )),
            );
            if let Some(title) = block.get("title").and_then(Value::as_str) {
                file.insert("filename".into(), json!(title));
            }
            Ok(ContentPart::File {
                file: Value::Object(file),
            })
        }
        Some("text") => Ok(ContentPart::Text {
            text: string_field(source, "data", &src_at)?.to_string(),
        }),
        other => Err(invalid(
            format!(
                "`{src_at}.type` is {}; documents must be `base64` or `text` sources",
                other.map_or("missing".to_string(), |o| format!("`{o}`"))
            ),
            &format!("{src_at}.type"),
        )),
    }
}

fn parts_content(parts: Vec<ContentPart>) -> Content {
    match parts.as_slice() {
        [ContentPart::Text { text }] => Content::Text(text.clone()),
        _ => Content::Parts(parts),
    }
}

/// A user turn: its `tool_result`s as `tool` messages, then the rest as one user message.
fn user_turn(
    content: &Value,
    at: &str,
    out: &mut Vec<Message>,
    dropped: &mut Dropped,
) -> Result<(), GatewayError> {
    let mut parts = Vec::new();
    let mut marker = None;
    for (j, block) in blocks(content, at)?.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let block_marker = dropped.marker(block);
        match block_type(block, &at)? {
            "text" => parts.push(ContentPart::Text {
                text: string_field(block, "text", &at)?.to_string(),
            }),
            "image" => parts.push(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: image_url(block, &at)?,
                    detail: None,
                },
            }),
            "document" => parts.push(document(block, &at)?),
            "tool_result" => {
                let mut result = tool_result(block, &at, &mut parts, dropped)?;
                mark(&mut result, block_marker);
                out.push(result);
                continue;
            }
            "thinking" | "redacted_thinking" => dropped.push("thinking"),
            other => return Err(unsupported_block(other, &at)),
        }
        marker = block_marker.or(marker);
    }
    if !parts.is_empty() {
        let mut m = Message {
            role: Role::User,
            content: Some(parts_content(parts)),
            ..Default::default()
        };
        mark(&mut m, marker);
        out.push(m);
    }
    Ok(())
}

/// A `tool_result` → a `tool` message; its images join `images` (the user turn after it).
fn tool_result(
    block: &Value,
    at: &str,
    images: &mut Vec<ContentPart>,
    dropped: &mut Dropped,
) -> Result<Message, GatewayError> {
    let id = string_field(block, "tool_use_id", at)?;
    let mut texts = Vec::new();
    match block.get("content") {
        None | Some(Value::Null) => {}
        Some(content) => {
            for (k, inner) in blocks(content, at)?.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                if inner.get(CACHE_CONTROL).is_some() {
                    dropped.push(CACHE_CONTROL);
                }
                match block_type(inner, &at)? {
                    "text" => texts.push(string_field(inner, "text", &at)?.to_string()),
                    "image" => images.push(ContentPart::ImageUrl {
                        image_url: ImageUrl {
                            url: image_url(inner, &at)?,
                            detail: None,
                        },
                    }),
                    "document" => match document(inner, &at)? {
                        ContentPart::Text { text } => texts.push(text),
                        file => images.push(file),
                    },
                    other => return Err(unsupported_block(other, &at)),
                }
            }
        }
    }
    let mut text = texts.join("\n");
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(Message {
        role: Role::Tool,
        content: Some(Content::Text(text)),
        tool_call_id: Some(restore_id(id)),
        ..Default::default()
    })
}

fn assistant_turn(
    content: &Value,
    at: &str,
    dropped: &mut Dropped,
) -> Result<Message, GatewayError> {
    let mut texts: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    let mut marker = None;
    for (j, block) in blocks(content, at)?.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        marker = dropped.marker(block).or(marker);
        match block_type(block, &at)? {
            "text" => texts.push(string_field(block, "text", &at)?.to_string()),
            "tool_use" => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id: Some(restore_id(string_field(block, "id", &at)?)),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: string_field(block, "name", &at)?.to_string(),
                        arguments: input.to_string(),
                    },
                });
            }
            "thinking" | "redacted_thinking" if dropped.anthropic_target => {
                thinking.push(block.clone());
            }
            "thinking" | "redacted_thinking" => dropped.push("thinking"),
            other => return Err(unsupported_block(other, &at)),
        }
    }
    let text = texts.concat();
    let mut m = Message {
        role: Role::Assistant,
        // OpenAI wants `content: null` beside tool calls when there is no text.
        content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Default::default()
    };
    mark(&mut m, marker);
    if !thinking.is_empty() {
        m.extra
            .insert(THINKING_BLOCKS.into(), Value::Array(thinking));
    }
    Ok(m)
}

fn unsupported_block(kind: &str, at: &str) -> GatewayError {
    invalid(
        format!(
            "`{at}` is a `{kind}` block, which the gateway cannot translate; send text, image, \
             document, tool_use or tool_result blocks"
        ),
        &format!("{at}.type"),
    )
}

/// A client tool → an OpenAI function. Server tools (`web_search_…`, `bash_…`) are refused.
fn tool(def: &Value, k: usize, dropped: &mut Dropped) -> Result<Tool, GatewayError> {
    let at = format!("tools[{k}]");
    let kind = def.get("type").and_then(Value::as_str).unwrap_or("custom");
    if kind != "custom" || def.get("input_schema").is_none() {
        return Err(invalid(
            format!(
                "`{at}` ({}) is not a client tool with an `input_schema`; the gateway translates \
                 client tools only (name, description, input_schema), not Anthropic server tools",
                if kind == "custom" { "custom" } else { kind }
            ),
            &at,
        ));
    }
    let cache_control = dropped.marker(def);
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: string_field(def, "name", &at)?.to_string(),
            description: def
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: def.get("input_schema").cloned(),
            strict: None,
        },
        cache_control,
    })
}

/// `tool_choice` → OpenAI's; `disable_parallel_tool_use` → `parallel_tool_calls: false`.
fn tool_choice(
    choice: &Value,
    extra: &mut Map<String, Value>,
) -> Result<Option<ToolChoice>, GatewayError> {
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        extra.insert("parallel_tool_calls".into(), json!(false));
    }
    let mode = |m: &str| Ok(Some(ToolChoice::Mode(m.to_string())));
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => mode("auto"),
        Some("any") => mode("required"),
        Some("none") => mode("none"),
        Some("tool") => Ok(Some(ToolChoice::Named(NamedToolChoice {
            kind: "function".into(),
            function: FunctionName {
                name: string_field(choice, "name", "tool_choice")?.to_string(),
            },
        }))),
        other => Err(invalid(
            format!(
                "`tool_choice.type` is {}; it must be `auto`, `any`, `tool` (with `name`) or `none`",
                other.map_or("missing".to_string(), |o| format!("`{o}`"))
            ),
            "tool_choice.type",
        )),
    }
}
