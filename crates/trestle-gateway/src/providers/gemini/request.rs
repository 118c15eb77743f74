//! OpenAI chat request → Gemini `GenerateContentRequest` (the body of `generateContent` and
//! `streamGenerateContent`).
//!
//! Only fields Gemini knows are written: it answers 400 to unknown ones. `seed`,
//! `presence_penalty`, `frequency_penalty` and `top_k` go into `generationConfig`; OpenAI
//! fields without a Gemini counterpart (`n`, `logprobs`, `user`, `metadata`,
//! `reasoning_effort`, …) are dropped and named by [`super::dropped`]. The parameter table in
//! docs/providers.md is checked row by row in `param_tests.rs`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use trestle_core::openai::{
    ChatRequest, Content, ContentPart, Message, ResponseFormat, Role, Tool, ToolChoice,
};

use super::{ids, schema};
use crate::providers::ProviderError;

/// The body for `models/{model}:generateContent` (the streamed call takes the same body).
pub fn request_body(req: &ChatRequest) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    let (system, contents) = contents(&req.messages)?;
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    body.insert("contents".into(), Value::Array(contents));
    if let Some(tools) = req.tools.as_deref().and_then(tools) {
        body.insert("tools".into(), tools);
    }
    if let Some(choice) = &req.tool_choice {
        body.insert(
            "toolConfig".into(),
            tool_config(choice).map_err(|e| e.within("tool_choice"))?,
        );
    }
    let config = generation_config(req);
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

fn unsupported(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::refused(format!("cannot send to Gemini: {what}"))
}

/// Consecutive turns of one role, merged (Gemini wants user and model turns to alternate).
#[derive(Default)]
struct Turns(Vec<(&'static str, Vec<Value>)>);

impl Turns {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.0.push((role, parts)),
        }
    }

    fn into_values(self) -> Vec<Value> {
        self.0
            .into_iter()
            .map(|(role, parts)| json!({ "role": role, "parts": parts }))
            .collect()
    }
}

/// The system parts (every system or developer message, wherever it stands) and the turns.
fn contents(messages: &[Message]) -> Result<(Vec<Value>, Vec<Value>), ProviderError> {
    let mut system = Vec::new();
    let mut turns = Turns::default();
    // tool_call_id → function name, from the assistant turns seen so far (a later call with
    // the same id wins, as the tool result answers the latest one).
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |e: ProviderError| e.within(&format!("messages[{i}]"));
        match message.role {
            Role::System | Role::Developer => {
                let text = message.text();
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            Role::User => turns.push("user", content_parts(message.content.as_ref()).map_err(at)?),
            Role::Assistant => {
                let mut parts = content_parts(message.content.as_ref()).map_err(at)?;
                for (n, call) in message.tool_calls.iter().flatten().enumerate() {
                    if let Some(id) = call.id.as_deref() {
                        names.insert(id, &call.function.name);
                    }
                    let part = function_call_part(call, n == 0).map_err(|e| {
                        at(e.within(&format!("tool_calls[{n}].function.arguments")))
                    })?;
                    parts.push(part);
                }
                turns.push("model", parts);
            }
            Role::Tool => {
                let name = message
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| names.get(id).copied())
                    .or(message.name.as_deref())
                    .ok_or_else(|| {
                        at(unsupported(format!(
                            "message {i} answers tool call {:?}, which no earlier assistant message made",
                            message.tool_call_id.as_deref().unwrap_or("")
                        ))
                        .within("tool_call_id"))
                    })?;
                turns.push("user", vec![function_response_part(name, message)]);
            }
            Role::Function => {
                let name = message.name.as_deref().ok_or_else(|| {
                    at(unsupported(format!("function message {i} has no name")).within("name"))
                })?;
                turns.push("user", vec![function_response_part(name, message)]);
            }
        }
    }
    Ok((system, turns.into_values()))
}

fn content_parts(content: Option<&Content>) -> Result<Vec<Value>, ProviderError> {
    let text_part = |text: &str| (!text.is_empty()).then(|| json!({ "text": text }));
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(text_part(text).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let at = |e: ProviderError| e.within(&format!("content[{j}]"));
                let value = match part {
                    ContentPart::Text { text } => text_part(text),
                    ContentPart::Refusal { refusal } => text_part(refusal),
                    ContentPart::ImageUrl { image_url } => {
                        Some(image_part(&image_url.url).map_err(at)?)
                    }
                    ContentPart::InputAudio { input_audio } => {
                        Some(audio_part(input_audio).map_err(at)?)
                    }
                    ContentPart::File { file } => Some(file_part(file).map_err(at)?),
                };
                out.extend(value);
            }
            Ok(out)
        }
    }
}

/// `data:` URLs go inline; any other URL is referenced as `fileData` (its MIME type guessed from
/// the extension, `image/jpeg` when there is none to go by).
fn image_part(url: &str) -> Result<Value, ProviderError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url)?;
        let mime = if mime.is_empty() { "image/jpeg" } else { mime };
        return Ok(inline(mime, data));
    }
    Ok(json!({ "fileData": { "mimeType": guess_mime(url, "image/jpeg"), "fileUri": url } }))
}

/// `input_audio: {data, format}` (base64 `wav` or `mp3`).
fn audio_part(input: &Value) -> Result<Value, ProviderError> {
    let data = input
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported("input_audio without data"))?;
    let format = input.get("format").and_then(Value::as_str).unwrap_or("wav");
    Ok(inline(&format!("audio/{format}"), data))
}

/// `file: {file_data, filename}` with inline data; uploaded `file_id`s mean nothing to Gemini.
fn file_part(file: &Value) -> Result<Value, ProviderError> {
    let Some(data) = file.get("file_data").and_then(Value::as_str) else {
        return Err(unsupported(
            "file parts must carry file_data (file_id is OpenAI-only)",
        ));
    };
    if data.starts_with("data:") {
        let (mime, data) = parse_data_url(data)?;
        return Ok(inline(
            if mime.is_empty() {
                "application/pdf"
            } else {
                mime
            },
            data,
        ));
    }
    let filename = file.get("filename").and_then(Value::as_str).unwrap_or("");
    Ok(inline(guess_mime(filename, "application/pdf"), data))
}

fn inline(mime: &str, data: &str) -> Value {
    json!({ "inlineData": { "mimeType": mime, "data": data } })
}

/// `data:<mime>;base64,<data>` → (mime, data). Gemini takes base64 only.
fn parse_data_url(url: &str) -> Result<(&str, &str), ProviderError> {
    let rest = url.strip_prefix("data:").unwrap_or(url);
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| unsupported("a data: URL without a comma"))?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or_else(|| unsupported("a data: URL that is not base64"))?;
    // Parameters such as `;charset=…` are not part of the MIME type Gemini expects.
    Ok((mime.split(';').next().unwrap_or(""), data))
}

/// The MIME type implied by a URL's or file name's extension.
fn guess_mime<'a>(name: &str, fallback: &'a str) -> &'a str {
    let path = name.split(['?', '#']).next().unwrap_or("");
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "mp4" => "video/mp4",
        _ => fallback,
    }
}

/// An assistant tool call as a `functionCall` part. The thought signature Gemini gave the call
/// travels inside its id (see [`ids`]); the first call of a turn that has none gets the
/// documented placeholder so Gemini 3 accepts history it did not write.
fn function_call_part(
    call: &trestle_core::openai::ToolCall,
    first: bool,
) -> Result<Value, ProviderError> {
    let args = call.function.arguments.trim();
    let args: Value = if args.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(args).map_err(|e| {
            unsupported(format!(
                "arguments of tool call `{}` are not JSON: {e}",
                call.function.name
            ))
        })?
    };
    if !args.is_object() {
        return Err(unsupported(format!(
            "arguments of tool call `{}` are not a JSON object",
            call.function.name
        )));
    }
    let mut part = Map::new();
    part.insert(
        "functionCall".into(),
        json!({ "name": call.function.name, "args": args }),
    );
    let signature = call.id.as_deref().and_then(|id| ids::split_call_id(id).1);
    match signature {
        Some(sig) => {
            part.insert("thoughtSignature".into(), Value::String(sig));
        }
        None if first => {
            part.insert(
                "thoughtSignature".into(),
                Value::String(ids::SKIP_SIGNATURE.into()),
            );
        }
        None => {}
    }
    Ok(Value::Object(part))
}

/// A tool result: a JSON object is sent as the response itself, anything else as
/// `{"content": text}` (Gemini wants an object).
fn function_response_part(name: &str, message: &Message) -> Value {
    let text = message.text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => json!({ "content": text }),
    };
    json!({ "functionResponse": { "name": name, "response": response } })
}

/// `tools` → one `Tool` holding every function declaration; non-function tools are skipped.
fn tools(tools: &[Tool]) -> Option<Value> {
    let declarations: Vec<Value> = tools
        .iter()
        .filter(|t| t.kind == "function")
        .map(|t| {
            let mut decl = Map::new();
            decl.insert("name".into(), Value::String(t.function.name.clone()));
            if let Some(d) = &t.function.description {
                decl.insert("description".into(), Value::String(d.clone()));
            }
            if let Some(params) = t.function.parameters.as_ref().and_then(schema::parameters) {
                decl.insert("parameters".into(), params);
            }
            Value::Object(decl)
        })
        .collect();
    (!declarations.is_empty()).then(|| json!([{ "functionDeclarations": declarations }]))
}

/// `tool_choice` → `toolConfig.functionCallingConfig`; a mode OpenAI does not define is
/// refused rather than left out.
fn tool_config(choice: &ToolChoice) -> Result<Value, ProviderError> {
    let config = match choice {
        ToolChoice::Named(named) => json!({
            "mode": "ANY",
            "allowedFunctionNames": [named.function.name],
        }),
        ToolChoice::Mode(mode) => {
            let mode = match mode.as_str() {
                "auto" => "AUTO",
                "required" => "ANY",
                "none" => "NONE",
                other => return Err(unsupported(format!("unknown tool_choice `{other}`"))),
            };
            json!({ "mode": mode })
        }
    };
    Ok(json!({ "functionCallingConfig": config }))
}

fn generation_config(req: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(cap) = req.output_cap() {
        config.insert("maxOutputTokens".into(), json!(cap));
    }
    // Sampling controls Gemini names differently; only well-typed values are forwarded.
    for (openai, gemini) in [
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("top_k", "topK"),
    ] {
        if let Some(v) = req.extra.get(openai).filter(|v| v.is_number()) {
            config.insert(gemini.into(), v.clone());
        }
    }
    if let Some(stop) = &req.stop {
        let stops: Vec<String> = stop
            .to_vec()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if !stops.is_empty() {
            config.insert("stopSequences".into(), json!(stops));
        }
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            // `responseJsonSchema` takes JSON Schema as is (unlike `parameters`).
            if let Some(schema) = &json_schema.schema {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
    }
    config
}
