//! Guard: the route's input guardrails run on the request before the cache and inference
//! (user and tool messages; the app's own system prompt is left alone), its output guardrails
//! on the answer after it. Each runs in order with its action: `redact` rewrites the text,
//! `block` stops the request (the fallback hierarchy serves), `flag` records, `reask` (JSON
//! Schema) asks the model again. A guardrail that fails blocks unless `on_error = "allow"`.
//! Streams are guarded by [`crate::guard::stream`].

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;
use trestle_core::guard::{GuardAction, OnError};
use trestle_core::openai::{
    ChatCompletion, ChatRequest, Content, ContentPart, Message, ResponseFormat, Role,
};

use super::infer::{self, Plan, Served};
use super::record::TraceGuard;
use crate::error::GatewayError;
use crate::guard::stream::{self, Records};
use crate::guard::{Context, GuardRecord, Guardrail, by_entity};
use crate::metrics;
use crate::providers::ProviderError;
use crate::runtime::Route;

/// What an output check decided.
pub enum Output {
    Pass,
    Blocked(GatewayError),
    /// Ask the model again with these validation errors.
    Reask(String),
}

/// The context output guardrails judge an answer against, from the request.
pub fn context(req: &ChatRequest) -> Context {
    let mut system = String::new();
    let mut context = String::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                let t = m.text();
                system.push_str(&t);
                system.push('\n');
                context.push_str(&t);
                context.push('\n');
            }
            Role::Tool | Role::Function => {
                context.push_str(&m.text());
                context.push('\n');
            }
            Role::User => {
                // The question may carry the facts too ("my order 48213…").
                context.push_str(&m.text());
                context.push('\n');
            }
            Role::Assistant => {}
        }
    }
    let schema = match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => json_schema
            .schema
            .as_ref()
            .and_then(|s| trestle_guard::schema::compile(s).ok())
            .map(Arc::new),
        _ => None,
    };
    Context {
        system,
        context,
        schema,
    }
}

fn record(
    guard: &Guardrail,
    stage: &'static str,
    outcome: &str,
    verdict: Option<&crate::guard::Verdict>,
    detail: Option<String>,
    started: Instant,
) -> GuardRecord {
    metrics::guardrail(&guard.name, stage, guard.action.as_str(), outcome);
    GuardRecord {
        guardrail: guard.name.clone(),
        kind: guard.kind.as_str().into(),
        stage: stage.into(),
        action: guard.action.as_str().into(),
        outcome: outcome.into(),
        entities: verdict.map(|v| by_entity(&v.findings)).unwrap_or_default(),
        detail: detail.or_else(|| verdict.and_then(|v| v.detail.clone())),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Runs `guards` on each text; `redact` rewrites it in place. Returns the blocking error, if
/// one blocked.
async fn run(
    guards: &[Arc<Guardrail>],
    stage: &'static str,
    texts: &mut [&mut String],
    ctx: &Context,
    records: &mut Vec<GuardRecord>,
) -> Result<Option<String>, GatewayError> {
    for guard in guards {
        let started = Instant::now();
        let mut violated: Option<crate::guard::Verdict> = None;
        let mut failure = None;
        for text in texts.iter_mut() {
            match guard.check(text, ctx).await {
                Ok(v) if v.violated => {
                    if guard.action == GuardAction::Redact {
                        **text = trestle_guard::redact(text, &v.findings);
                    }
                    match violated.as_mut() {
                        Some(all) => {
                            all.findings.extend(v.findings);
                            if all.detail.is_none() {
                                all.detail = v.detail;
                            }
                        }
                        None => violated = Some(v),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            let why = format!("guardrail `{}` failed: {e}", guard.name);
            if guard.on_error == OnError::Allow {
                tracing::warn!(guardrail = %guard.name, error = %e, "guardrail failed; allowed (on_error = allow)");
                records.push(record(
                    guard,
                    stage,
                    "error_allowed",
                    None,
                    Some(why),
                    started,
                ));
                continue;
            }
            records.push(record(
                guard,
                stage,
                "error_blocked",
                None,
                Some(why.clone()),
                started,
            ));
            return Err(blocked(guard, stage, &why));
        }
        let Some(v) = violated else {
            records.push(record(guard, stage, "pass", None, None, started));
            continue;
        };
        match guard.action {
            GuardAction::Redact => {
                records.push(record(guard, stage, "redacted", Some(&v), None, started))
            }
            GuardAction::Flag => {
                records.push(record(guard, stage, "flagged", Some(&v), None, started))
            }
            GuardAction::Reask => {
                records.push(record(guard, stage, "reasked", Some(&v), None, started));
                return Ok(Some(v.detail.unwrap_or_default()));
            }
            GuardAction::Block => {
                let why = v.detail.clone().unwrap_or_else(|| {
                    let found: Vec<String> = by_entity(&v.findings)
                        .into_iter()
                        .map(|(e, n)| format!("{e} ×{n}"))
                        .collect();
                    format!("found {}", found.join(", "))
                });
                records.push(record(guard, stage, "blocked", Some(&v), None, started));
                return Err(blocked(guard, stage, &why));
            }
        }
    }
    Ok(None)
}

fn blocked(guard: &Guardrail, stage: &'static str, why: &str) -> GatewayError {
    GatewayError::Blocked {
        guardrail: guard.name.clone(),
        input: stage == "input",
        message: format!(
            "the {} was blocked by guardrail `{}`: {why}",
            if stage == "input" {
                "request"
            } else {
                "answer"
            },
            guard.name
        ),
    }
}

/// The route's input guardrails over the request's user and tool messages.
pub async fn input(
    guards: &[Arc<Guardrail>],
    req: &mut ChatRequest,
    records: &mut Vec<GuardRecord>,
) -> Result<(), GatewayError> {
    if guards.is_empty() {
        return Ok(());
    }
    let ctx = Context::default();
    let mut texts: Vec<&mut String> = Vec::new();
    for m in &mut req.messages {
        if !matches!(m.role, Role::User | Role::Tool | Role::Function) {
            continue;
        }
        match &mut m.content {
            Some(Content::Text(t)) => texts.push(t),
            Some(Content::Parts(parts)) => texts.extend(parts.iter_mut().filter_map(|p| match p {
                ContentPart::Text { text } => Some(text),
                _ => None,
            })),
            None => {}
        }
    }
    // `reask` means nothing on a request.
    run(guards, "input", &mut texts, &ctx, records)
        .await
        .map(|_| ())
}

/// The route's output guardrails over a whole answer's text.
pub async fn output(
    guards: &[Arc<Guardrail>],
    ctx: &Context,
    completion: &mut ChatCompletion,
    records: &mut Vec<GuardRecord>,
) -> Output {
    let mut texts: Vec<&mut String> = completion
        .choices
        .iter_mut()
        .filter_map(|c| c.message.content.as_mut())
        .collect();
    match run(guards, "output", &mut texts, ctx, records).await {
        Ok(None) => Output::Pass,
        Ok(Some(errors)) => Output::Reask(errors),
        Err(e) => Output::Blocked(e),
    }
}

/// The output guardrails over what inference served. A whole answer is checked, and asked
/// for again while a `reask` guardrail allows; a stream is wrapped so its text is checked as
/// it goes (a block in the first chunk, before anything was sent, still falls back). A block
/// is an error the fallback hierarchy answers.
pub async fn answer(
    route: &Route,
    plan: &Plan<'_>,
    req: &ChatRequest,
    served: Served,
    started: Instant,
    trace: &mut TraceGuard,
) -> Result<Served, GatewayError> {
    let ctx = context(req);
    let mut completion = match served {
        Served::Stream { first, rest } => {
            let records = Records::default();
            trace.stream_guardrails(records.clone());
            let guards = route.output_guards.clone();
            let mut guarded = stream::guarded(first, rest, guards, Arc::new(ctx), records);
            // Nothing is sent until some text is released: a block before that still falls
            // back, as a failure before the first chunk does.
            let mut before = Vec::new();
            let outcome = loop {
                match guarded.next().await {
                    Some(Ok(chunk)) => {
                        let says = chunk.chunk.choices.iter().any(|c| {
                            c.delta.content.as_ref().is_some_and(|t| !t.is_empty())
                                || c.delta.tool_calls.is_some()
                                || c.finish_reason.is_some()
                        });
                        before.push(chunk);
                        if says {
                            break None;
                        }
                    }
                    other => break other,
                }
            };
            return match outcome {
                None | Some(Ok(_)) if !before.is_empty() => {
                    let first = before.remove(0);
                    let rest = futures_util::stream::iter(before.into_iter().map(Ok))
                        .chain(guarded)
                        .boxed();
                    Ok(Served::Stream { first, rest })
                }
                Some(Ok(first)) => Ok(Served::Stream {
                    first,
                    rest: guarded,
                }),
                Some(Err(ProviderError::Blocked { guardrail, message })) => {
                    Err(GatewayError::Blocked {
                        guardrail,
                        input: false,
                        message,
                    })
                }
                Some(Err(e)) => Err(GatewayError::UpstreamFailed {
                    message: e.to_string(),
                    timed_out: false,
                }),
                None => Err(GatewayError::UpstreamFailed {
                    message: "the stream ended before any chunk".into(),
                    timed_out: false,
                }),
            };
        }
        Served::Complete(c) => c,
    };
    let mut asks = route
        .output_guards
        .iter()
        .filter(|g| g.action == GuardAction::Reask)
        .map(|g| g.reasks)
        .max()
        .unwrap_or(0);
    let mut conversation: Option<ChatRequest> = None;
    loop {
        let mut records = Vec::new();
        let verdict = output(
            &route.output_guards,
            &ctx,
            &mut completion.body,
            &mut records,
        )
        .await;
        let redacted = records.iter().any(|r| r.outcome == "redacted");
        trace.guardrails(records);
        let errors = match verdict {
            Output::Pass => {
                if redacted {
                    // The upstream's bytes no longer say what is served.
                    completion.raw = None;
                }
                return Ok(Served::Complete(completion));
            }
            Output::Blocked(e) => return Err(e),
            Output::Reask(errors) => errors,
        };
        if asks == 0 {
            return Err(GatewayError::Blocked {
                guardrail: "json_schema".into(),
                input: false,
                message: format!("the answer did not validate after asking again: {errors}"),
            });
        }
        asks -= 1;
        let mut again = conversation.take().unwrap_or_else(|| req.clone());
        let said = completion
            .body
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        again.messages.push(Message::new(Role::Assistant, said));
        again.messages.push(Message::new(
            Role::User,
            format!(
                "Your answer does not match the required JSON schema: {errors}. \
                 Reply again with only the corrected JSON."
            ),
        ));
        let mut inference = infer::run(route, plan, &again, false, started).await;
        trace.inference(&mut inference);
        completion = match inference.result {
            Ok(Served::Complete(c)) => c,
            Ok(Served::Stream { .. }) => {
                return Err(GatewayError::Internal(
                    "a reask answered with a stream".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        conversation = Some(again);
    }
}

/// Whether an answer would pass the output guardrails as they are: nothing that blocks or
/// asks again (redactions and flags pass). Used by the cascade to judge a cheap answer.
pub async fn passes(guards: &[Arc<Guardrail>], req: &ChatRequest, answer: &ChatCompletion) -> bool {
    if guards.is_empty() {
        return true;
    }
    let ctx = context(req);
    for guard in guards {
        if matches!(guard.action, GuardAction::Redact | GuardAction::Flag) {
            continue;
        }
        for choice in &answer.choices {
            let text = choice.message.content.as_deref().unwrap_or("");
            match guard.check(text, &ctx).await {
                Ok(v) if !v.violated => {}
                Err(_) if guard.on_error == OnError::Allow => {}
                _ => return false,
            }
        }
    }
    true
}
