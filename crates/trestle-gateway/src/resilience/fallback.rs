//! The answers the gateway makes itself when no model can serve: the route's `template`
//! (minijinja, rendered with the request's variables) and the structured `omitted` answer;
//! and any completion replayed as a stream, for clients that asked for one.

use serde_json::{Map, Value, json};
use trestle_core::config::FallbackConfig;
use trestle_core::openai::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, FunctionCallDelta,
    ResponseMessage, ToolCallDelta, Usage, unix_now,
};

use crate::providers::placeholder::new_id;

/// A route's prewritten answer, checked when the config is loaded.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
}

/// What a template may use.
pub struct TemplateVars<'a> {
    pub route: &'a str,
    pub req: &'a ChatRequest,
    pub user_id: Option<&'a str>,
    pub conversation_id: Option<&'a str>,
    pub error: &'a str,
}

impl Template {
    /// Compiles the source once to report syntax errors with their line.
    pub fn new(source: &str) -> Result<Self, String> {
        let env = minijinja::Environment::new();
        env.template_from_str(source)
            .map_err(|e| format!("fallback.template does not compile: {e}"))?;
        Ok(Template {
            source: source.to_string(),
        })
    }

    pub fn render(&self, vars: &TemplateVars<'_>) -> Result<String, String> {
        let env = minijinja::Environment::new();
        let tpl = env
            .template_from_str(&self.source)
            .map_err(|e| e.to_string())?;
        let metadata = vars
            .req
            .metadata
            .as_ref()
            .map(|m| Value::Object(m.clone()))
            .unwrap_or(Value::Null);
        tpl.render(minijinja::context! {
            route => vars.route,
            model => vars.req.model,
            last_user_message => vars.req.last_user_text(),
            user_id => vars.user_id,
            conversation_id => vars.conversation_id,
            metadata => minijinja::Value::from_serialize(&metadata),
            error => vars.error,
        })
        .map_err(|e| format!("fallback.template failed to render: {e}"))
    }
}

/// A completion with `text` as the assistant's answer, from the gateway itself.
pub fn completion(route: &str, text: String) -> ChatCompletion {
    ChatCompletion {
        id: new_id(),
        object: "chat.completion".into(),
        created: unix_now(),
        model: route.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some(text),
                tool_calls: None,
                extra: Map::new(),
            },
            finish_reason: Some("stop".into()),
            extra: Map::new(),
        }],
        usage: Some(Usage::default()),
        extra: Map::new(),
    }
}

/// The `omitted` answer's body: an OpenAI-shaped error the app can key on to hide the feature.
pub fn omitted_body(cfg: &FallbackConfig, route: &str, error: &str) -> Value {
    let message = cfg.omitted_message.clone().unwrap_or_else(|| {
        format!("the AI feature behind route `{route}` is unavailable right now: {error}")
    });
    json!({"error": {"message": message, "type": "feature_unavailable",
        "code": "feature_unavailable", "param": null}})
}

/// A completion replayed as stream chunks: role and content, tool calls, finish, and a usage
/// chunk (the relay drops it unless the client asked for usage).
pub fn chunks(c: &ChatCompletion) -> Vec<ChatChunk> {
    let mut out = Vec::with_capacity(4);
    let model = c.model.as_str();
    for choice in &c.choices {
        let tool_calls = choice.message.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| ToolCallDelta {
                    index: i as u32,
                    id: call.id.clone(),
                    kind: Some(call.kind.clone()),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name.clone()),
                        arguments: Some(call.function.arguments.clone()),
                    }),
                })
                .collect()
        });
        let mut chunk = ChatChunk::delta(
            &c.id,
            c.created,
            model,
            Delta {
                role: Some("assistant".into()),
                content: choice.message.content.clone(),
                tool_calls,
                ..Default::default()
            },
        );
        chunk.choices[0].index = choice.index;
        out.push(chunk);
        let mut finish = ChatChunk::delta(&c.id, c.created, model, Delta::default());
        finish.choices[0].index = choice.index;
        finish.choices[0].finish_reason = choice.finish_reason.clone();
        out.push(finish);
    }
    let mut usage = ChatChunk::delta(&c.id, c.created, model, Delta::default());
    usage.choices = Vec::<ChunkChoice>::new();
    usage.usage = Some(c.usage.unwrap_or_default());
    out.push(usage);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_request_variables_and_reject_bad_syntax() {
        let t = Template::new(
            "Sorry {{ user_id or 'friend' }}, `{{ route }}` is busy. You asked: {{ last_user_message | upper }}",
        )
        .unwrap();
        let req: ChatRequest = serde_json::from_value(json!({"model": "support",
            "messages": [{"role": "user", "content": "where is my order"}]}))
        .unwrap();
        let text = t
            .render(&TemplateVars {
                route: "support",
                req: &req,
                user_id: Some("ada"),
                conversation_id: None,
                error: "x",
            })
            .unwrap();
        assert_eq!(
            text,
            "Sorry ada, `support` is busy. You asked: WHERE IS MY ORDER"
        );
        assert!(Template::new("{{ unclosed").is_err());
    }

    #[test]
    fn a_completion_replays_as_chunks() {
        let c = completion("r", "hello".into());
        let chunks = chunks(&c);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].choices[0].delta.content.as_deref(), Some("hello"));
        assert_eq!(chunks[1].choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(chunks[2].choices.is_empty() && chunks[2].usage.is_some());
    }
}
