//! A trace: one request's whole story — who asked, what was tried, what was served.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use trestle_core::openai::{ChatCompletion, Usage};

/// A request or response body as kept on a trace; turned into text by the writer thread.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes as they crossed the wire (JSON).
    Raw(Bytes),
    /// A response assembled by the gateway (a stream, or a translated provider answer).
    Completion(Box<ChatCompletion>),
    /// A pass-through stream's SSE frames as relayed: assembled into a completion when the
    /// body is written, off the request path.
    Frames(Vec<Bytes>),
}

impl Body {
    /// The body as JSON text; borrowed when the wire bytes are valid UTF-8 (they almost
    /// always are: they were parsed as JSON).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy` walks byte by byte
            // and was 6% of the trace writer's CPU.
            Body::Raw(b) => match std::str::from_utf8(b) {
                Ok(text) => text.into(),
                Err(_) => String::from_utf8_lossy(b),
            },
            Body::Completion(c) => serde_json::to_string(c).unwrap_or_default().into(),
            Body::Frames(f) => serde_json::to_string(&crate::pipeline::assemble_frames(f))
                .unwrap_or_default()
                .into(),
        }
    }
}

/// One request through the gateway.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    /// The gateway's span for this request.
    pub span_id: String,
    /// The caller's span, from an incoming `traceparent`.
    pub parent_span_id: Option<String>,
    /// Unix time in milliseconds.
    pub started_at_ms: i64,
    pub duration_ms: f64,
    /// Time to the first streamed chunk sent to the client.
    pub ttft_ms: Option<f64>,
    pub route: String,
    pub class: String,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
    pub stream: bool,
    /// HTTP status returned to the client.
    pub status: u16,
    /// `ok`, `error`, `client_disconnected`, `shutdown`, `stream_error`.
    pub outcome: String,
    pub error: Option<String>,
    pub fallback_level: String,
    /// The route's capability level (5 full … 1 off) when the request was served.
    pub capability_level: u8,
    /// `miss`, `exact` or `semantic`: the cache layer that served.
    pub cache: String,
    /// What the cached answer cost when it was made (a hit costs nothing upstream).
    pub cost_saved_usd: f64,
    /// The semantic hit's cosine similarity.
    pub cache_similarity: Option<f64>,
    /// The target that served the answer.
    pub served_by: Option<String>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub request: Option<Body>,
    pub response: Option<Body>,
    pub attempts: Vec<Attempt>,
    /// Each guardrail's outcome, input and output.
    pub guardrails: Vec<crate::guard::GuardRecord>,
    /// Mean token probability of the answer, where the route asks for it and the upstream
    /// gave logprobs.
    pub confidence: Option<f64>,
    /// Request parameters the serving provider could not take.
    pub dropped_params: Vec<String>,
    /// The prompt version rendered into the request (`name@N`).
    pub prompt_version: Option<String>,
    /// The experiment the request was in, and its variant.
    pub experiment: Option<String>,
    pub variant: Option<String>,
    /// The model the upstream says answered (its `model` field), and its
    /// `system_fingerprint`: a change under the same configured model is a drift event.
    pub response_model: Option<String>,
    pub system_fingerprint: Option<String>,
    /// Anomaly flags (`tool_failure_unmentioned`, `tool_loop`, `grounding`, `over_budget`),
    /// set by the writer before the trace is stored (crate::anomaly).
    pub flags: Vec<String>,
    /// The route's input token budget at work (`max_input_tokens`); none without one.
    pub input_budget: Option<InputBudget>,
    /// The caller's key and its tenant, when keys are in use (crate::keys).
    pub tenant: Option<String>,
    pub key_id: Option<String>,
}

/// How a request's input was counted against its route's `max_input_tokens`, and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBudget {
    /// The tokenizers counted with, comma-separated (`o200k_base`, a tokenizer.json path,
    /// `estimate`); each message counts at the largest.
    pub tokenizer: String,
    /// Input tokens as the request came (messages, tool definitions, reply priming).
    pub tokens_before: u64,
    /// Input tokens as sent upstream.
    pub tokens_after: u64,
    /// Messages dropped to fit.
    pub trimmed_messages: u32,
}

/// One call to one target, a child span of the trace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub span_id: String,
    pub target: String,
    pub provider: String,
    pub model: String,
    /// Milliseconds after the trace started.
    pub offset_ms: f64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// `ok` or `error`.
    pub status: String,
    /// The upstream's HTTP status when it answered with an error.
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retryable: bool,
    /// The first call to this target since start (or after a long idle).
    pub cold_start: bool,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub tokens_cached: u64,
    pub cost_usd: f64,
}

/// What `GET /v1/traces` (and the UI's search) filters on; every field narrows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceFilter {
    pub trace_id: Option<String>,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
    pub route: Option<String>,
    /// Started within this window of now (`15m`, `24h`, `7d`) or at or after this Unix time
    /// in milliseconds.
    pub since: Option<String>,
    /// Started before this Unix time in milliseconds (or this long ago: `1h`).
    pub until: Option<String>,
    /// `ok`, `error`, `client_disconnected`, ….
    pub outcome: Option<String>,
    /// `primary`, `model`, `provider`, `degraded`, `cached`, `static`, ….
    pub fallback_level: Option<String>,
    /// A guardrail's name, or `any`: traces where it did more than pass.
    pub guardrail: Option<String>,
    /// `negative`, `positive` or `any`: traces with such feedback.
    pub feedback: Option<String>,
    /// An anomaly flag (`tool_loop`, …), or `any`.
    pub flag: Option<String>,
    pub experiment: Option<String>,
    pub prompt_version: Option<String>,
    /// Only this tenant's traces: set by the server from the caller's key, never from the
    /// query.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// Newest first; at most 1,000 (default 100).
    pub limit: Option<u32>,
}

impl TraceFilter {
    /// Checks what a store cannot: time bounds and the feedback kind.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
                && v.parse::<i64>().is_err()
            {
                trestle_core::window::window_ms(v)
                    .map_err(|e| format!("{field} {e}, or a Unix time in milliseconds"))?;
            }
        }
        match self.feedback.as_deref() {
            None | Some("" | "negative" | "positive" | "any") => Ok(()),
            Some(other) => Err(format!("feedback `{other}`: use negative, positive or any")),
        }
    }
}

/// A trace without bodies and attempts, for listings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub started_at_ms: i64,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub route: String,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub outcome: String,
    pub fallback_level: String,
    pub served_by: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub attempts: u32,
    pub capability_level: u8,
    pub cache: String,
    pub cost_saved_usd: f64,
    /// Anomaly flags (see [`Trace::flags`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}
