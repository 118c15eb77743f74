//! Confidence and the model cascade. A route with `confidence = true` (or a cascade) asks
//! OpenAI-compatible upstreams for logprobs and scores an answer by its mean token
//! probability (and notes the least one); the client sees the logprobs only if it asked.
//! A cascade tries the route's targets cheapest first and keeps a step's answer when its
//! confidence reaches the threshold and every output guardrail passes; otherwise the next
//! target answers. Streamed requests get the cheap steps whole (replayed as a stream when
//! kept) and the last step streamed.

use trestle_core::openai::{ChatCompletion, ChatRequest};

use super::infer::{self, Inference, Plan, Served};
use super::record::TraceGuard;
use crate::metrics;
use crate::runtime::Route;

/// (mean, least) token probability of the first choice, when it carries logprobs.
pub fn confidence(c: &ChatCompletion) -> Option<(f64, f64)> {
    let content = c
        .choices
        .first()?
        .extra
        .get("logprobs")?
        .get("content")?
        .as_array()?;
    let probs: Vec<f64> = content
        .iter()
        .filter_map(|t| t.get("logprob")?.as_f64())
        .map(f64::exp)
        .collect();
    if probs.is_empty() {
        return None;
    }
    let mean = probs.iter().sum::<f64>() / probs.len() as f64;
    let least = probs.iter().copied().fold(1.0, f64::min);
    Some((mean, least))
}

/// Takes the logprobs out of an answer whose client did not ask for them.
pub fn strip_logprobs(c: &mut ChatCompletion) {
    for choice in &mut c.choices {
        choice.extra.remove("logprobs");
    }
}

/// Asks for logprobs; returns whether the client had asked itself. `top_logprobs: 1` goes
/// with them: llama.cpp's server returns no logprobs for a chat completion without it.
pub fn ask_logprobs(req: &mut ChatRequest) -> bool {
    let asked = req.extra.get("logprobs") == Some(&serde_json::Value::Bool(true));
    if !asked {
        req.extra
            .insert("logprobs".into(), serde_json::Value::Bool(true));
        req.extra
            .entry("top_logprobs")
            .or_insert(serde_json::Value::from(1));
    }
    asked
}

/// Runs the cascade over the plan's targets. The steps that escalated are on the trace.
pub async fn run(
    route: &Route,
    plan: &Plan<'_>,
    req: &ChatRequest,
    stream: bool,
    started: tokio::time::Instant,
    threshold: f64,
    trace: &mut TraceGuard,
) -> Inference {
    let n = plan.targets.len();
    let last_price = plan.targets.last().and_then(|t| t.price);
    for (i, target) in plan.targets.iter().enumerate() {
        let last = i + 1 == n;
        let step = Plan {
            targets: std::slice::from_ref(target),
            retries: plan.retries,
            hedge: false,
            relayed: false,
        };
        let mut inference = infer::run(route, &step, req, stream && last, started).await;
        inference.level = i;
        if last {
            if inference.result.is_ok() {
                metrics::cascade(&route.name, i, 0.0);
            }
            return inference;
        }
        let why = match &inference.result {
            Ok(Served::Complete(c)) => {
                let conf = confidence(&c.body);
                let guards_pass = super::guard::passes(&route.output_guards, req, &c.body).await;
                match conf {
                    Some((mean, _)) if mean >= threshold && guards_pass => {
                        let usage = c.body.usage.unwrap_or_default();
                        let saved = match (last_price, target.price) {
                            (Some(strong), Some(cheap)) => {
                                (strong.cost(&usage) - cheap.cost(&usage)).max(0.0)
                            }
                            (Some(strong), None) => strong.cost(&usage),
                            _ => 0.0,
                        };
                        metrics::cascade(&route.name, i, saved);
                        if stream {
                            inference.result = inference.result.map(into_stream);
                        }
                        return inference;
                    }
                    Some((mean, _)) if mean < threshold => {
                        format!("confidence {mean:.3} below the cascade threshold {threshold}")
                    }
                    Some(_) => "an output guardrail did not pass".to_string(),
                    None => "no logprobs to judge confidence by".to_string(),
                }
            }
            Ok(Served::Stream { .. }) => "a stream cannot be judged".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        trace.inference(&mut inference);
        let mut row = infer::note(started, "escalated", target);
        row.error = Some(format!("cascade step {}: {why}", i + 1));
        trace.note(row);
    }
    Inference::not_run("the cascade has no steps".into())
}

/// A whole answer as a stream of chunks.
fn into_stream(served: Served) -> Served {
    match served {
        Served::Complete(c) => {
            let mut chunks = crate::resilience::fallback::chunks(&c.body)
                .into_iter()
                .map(crate::providers::Chunk::from);
            match chunks.next() {
                Some(first) => Served::Stream {
                    first,
                    rest: futures_util::StreamExt::boxed(futures_util::stream::iter(
                        chunks.map(Ok),
                    )),
                },
                None => Served::Complete(c),
            }
        }
        s => s,
    }
}
