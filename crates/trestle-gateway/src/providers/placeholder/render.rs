//! Turns a [`Plan`] into OpenAI responses: a completion, or chunks paced in time.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;
use rand::Rng;
use serde_json::Map;
use trestle_core::openai::{
    ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, FunctionCall, FunctionCallDelta,
    ResponseMessage, ToolCall, ToolCallDelta, unix_now,
};

use super::Plan;

/// A fresh `chatcmpl-…` id.
pub fn new_id() -> String {
    format!("chatcmpl-{:024x}", rand::rng().random::<u128>() >> 32)
}

fn call_id(id: &str) -> String {
    format!(
        "call_{}",
        id.trim_start_matches("chatcmpl-").get(..16).unwrap_or("0")
    )
}

/// OpenAI's `logprobs.content` for every token, when the plan has them.
fn logprobs(plan: &Plan) -> Map<String, serde_json::Value> {
    let mut extra = Map::new();
    if let Some(lp) = plan.logprob {
        let content: Vec<serde_json::Value> = plan
            .tokens
            .iter()
            .map(|t| serde_json::json!({"token": t, "logprob": lp, "bytes": null, "top_logprobs": []}))
            .collect();
        extra.insert("logprobs".into(), serde_json::json!({"content": content}));
    }
    extra
}

/// The stop sequence that cut the reply, as vLLM reports it (`stop_reason` on the choice).
fn stop_reason(
    plan: &Plan,
    mut extra: Map<String, serde_json::Value>,
) -> Map<String, serde_json::Value> {
    if let Some(s) = &plan.stop_sequence {
        extra.insert("stop_reason".into(), serde_json::json!(s));
    }
    extra
}

/// The plan as a non-streamed completion.
pub fn completion(plan: &Plan, id: &str, model: &str) -> ChatCompletion {
    let (content, tool_calls) = match &plan.tool_call {
        Some((name, args)) => (
            None,
            Some(vec![ToolCall {
                id: Some(call_id(id)),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: args.clone(),
                },
            }]),
        ),
        None => (Some(plan.text()), None),
    };
    ChatCompletion {
        id: id.to_string(),
        object: "chat.completion".into(),
        created: unix_now(),
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content,
                tool_calls,
                extra: Map::new(),
            },
            finish_reason: Some(plan.finish_reason.to_string()),
            extra: stop_reason(plan, logprobs(plan)),
        }],
        usage: Some(plan.usage),
        extra: Map::new(),
    }
}

/// The plan as stream chunks: a role chunk, one chunk per token (or tool-call pieces), a
/// finish chunk and, when asked, a usage chunk with no choices.
pub fn chunks(plan: &Plan, id: &str, model: &str, include_usage: bool) -> Vec<ChatChunk> {
    let created = unix_now();
    let mut out = Vec::with_capacity(plan.tokens.len() + 3);
    let mut first = ChatChunk::delta(
        id,
        created,
        model,
        Delta {
            role: Some("assistant".into()),
            content: plan.tool_call.is_none().then(String::new),
            ..Default::default()
        },
    );
    if let Some((name, _)) = &plan.tool_call {
        first.choices[0].delta.tool_calls = Some(vec![ToolCallDelta {
            index: 0,
            id: Some(call_id(id)),
            kind: Some("function".into()),
            function: Some(FunctionCallDelta {
                name: Some(name.clone()),
                arguments: Some(String::new()),
            }),
        }]);
    }
    out.push(first);
    for token in &plan.tokens {
        let delta = if plan.tool_call.is_some() {
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: 0,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(token.clone()),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }
        } else {
            Delta {
                content: Some(token.clone()),
                ..Default::default()
            }
        };
        out.push(ChatChunk::delta(id, created, model, delta));
    }
    let mut finish = ChatChunk::delta(id, created, model, Delta::default());
    finish.choices[0].finish_reason = Some(plan.finish_reason.to_string());
    finish.choices[0].extra = stop_reason(plan, Map::new());
    out.push(finish);
    if include_usage {
        let mut usage = ChatChunk::delta(id, created, model, Delta::default());
        usage.choices = Vec::<ChunkChoice>::new();
        usage.usage = Some(plan.usage);
        out.push(usage);
    }
    out
}

/// Yields items with `ttft` before the second item (the first token; the role chunk goes out
/// with it) and `gap` between later tokens.
pub fn paced<T: Send + 'static>(
    items: Vec<T>,
    ttft: Duration,
    gap: Duration,
) -> impl Stream<Item = T> + Send {
    let total = items.len();
    stream::unfold(
        (items.into_iter(), 0usize),
        move |(mut iter, i)| async move {
            let item = iter.next()?;
            let wait = match i {
                0 => ttft,
                // The finish and usage chunks follow the last token at once.
                n if n + 2 >= total => Duration::ZERO,
                1 => Duration::ZERO,
                _ => gap,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some((item, (iter, i + 1)))
        },
    )
}

/// A deterministic unit vector derived from the text's words: stable, cheap, and *not*
/// semantic — texts sharing words land closer, nothing more. For tests and benchmarks.
pub fn pseudo_embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for word in text.split_whitespace() {
        let mut h = DefaultHasher::new();
        word.to_lowercase().hash(&mut h);
        let x = h.finish();
        let i = (x % dims as u64) as usize;
        v[i] += if (x >> 63) == 0 { 1.0 } else { -1.0 };
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}
