//! `trestle mock`: the placeholder model as a standalone OpenAI-compatible server, with faults
//! injected at a configurable rate — for tests, chaos runs and benchmarks over real sockets.
//!
//! A request can force a fault by putting `[fault:NAME]` in its last user message.
//!
//! The faults are the shapes real providers show: 500s, 429s with and without `Retry-After`,
//! 503 with `Retry-After`, hangs, a first token later than any sane `ttft_timeout_ms`, a
//! stream that stalls or turns malformed mid-way, a dropped connection mid-answer, and a
//! connection reset before any answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{StreamExt, stream};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use trestle_core::config::PlaceholderConfig;
use trestle_core::openai::{ChatRequest, EmbeddingsRequest};

use crate::error::GatewayError;
use crate::pipeline::ingress::parse_json;
use crate::providers::Provider;
use crate::providers::placeholder::{Placeholder, chunks, completion, new_id, paced};

/// A fault the mock can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 with an OpenAI-shaped error.
    ServerError,
    /// 429 with `Retry-After`.
    RateLimited,
    /// 429 without `Retry-After` (many OpenAI-compatible servers send none).
    RateLimitedBare,
    /// 503 with `Retry-After` (an overloaded or restarting upstream).
    Unavailable,
    /// Never answers (a stream sends its headers, then nothing).
    Hang,
    /// Tokens at `slow_tokens_per_sec`.
    Slow,
    /// The first token after `slow_ttft_ms`, then the normal pace.
    SlowFirstToken,
    /// Half the answer, then nothing: the connection stays open.
    Stall,
    /// A body (or a stream chunk) that is not valid JSON.
    Malformed,
    /// The connection drops mid-answer.
    Disconnect,
    /// The connection is reset (TCP RST) before any answer.
    Reset,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::ServerError,
        Fault::RateLimited,
        Fault::RateLimitedBare,
        Fault::Unavailable,
        Fault::Hang,
        Fault::Slow,
        Fault::SlowFirstToken,
        Fault::Stall,
        Fault::Malformed,
        Fault::Disconnect,
        Fault::Reset,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::ServerError => "500",
            Fault::RateLimited => "429",
            Fault::RateLimitedBare => "429-bare",
            Fault::Unavailable => "503",
            Fault::Hang => "hang",
            Fault::Slow => "slow",
            Fault::SlowFirstToken => "slow-ttft",
            Fault::Stall => "stall",
            Fault::Malformed => "malformed",
            Fault::Disconnect => "disconnect",
            Fault::Reset => "reset",
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(Fault::name).collect();
                format!("unknown fault `{s}`: use {}", names.join(", "))
            })
    }
}

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub model: PlaceholderConfig,
    /// Share of requests that get a fault, 0..=1.
    pub fault_rate: f64,
    /// Faults to draw from, uniformly.
    pub faults: Vec<Fault>,
    /// `Retry-After` sent with `429` and `503`.
    pub retry_after_secs: f64,
    pub slow_tokens_per_sec: f64,
    /// Time to first token of the `slow-ttft` fault.
    pub slow_ttft_ms: f64,
    /// When set, requests must send `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// The `system_fingerprint` answers carry (changed at run time by
    /// `POST /mock/fingerprint`, so a test can see a provider change); none when empty.
    pub system_fingerprint: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            model: PlaceholderConfig::default(),
            fault_rate: 0.0,
            faults: Fault::ALL.to_vec(),
            retry_after_secs: 1.0,
            slow_tokens_per_sec: 5.0,
            slow_ttft_ms: 3_000.0,
            api_key: None,
            system_fingerprint: "fp_mock_1".into(),
        }
    }
}

const LOG_SIZE: usize = 512;

struct Mock {
    options: MockOptions,
    model: Placeholder,
    rng: Mutex<SmallRng>,
    requests: AtomicU64,
    faults: AtomicU64,
    /// The most recent request bodies, for tests to inspect.
    log: Mutex<VecDeque<Value>>,
    /// The `system_fingerprint` answers carry now.
    fingerprint: Mutex<String>,
}

/// The mock's router.
pub fn router(options: MockOptions) -> anyhow::Result<Router> {
    let mock = Arc::new(Mock {
        model: Placeholder::new(options.model.clone())?,
        rng: Mutex::new(SmallRng::seed_from_u64(options.model.seed ^ 0x5eed)),
        fingerprint: Mutex::new(options.system_fingerprint.clone()),
        options,
        requests: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        log: Mutex::new(VecDeque::with_capacity(LOG_SIZE)),
    });
    Ok(Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/moderations", post(moderations))
        .route("/v1/models", get(models))
        .route("/mock/requests", get(requests))
        .route("/mock/fingerprint", post(set_fingerprint))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .with_state(mock))
}

/// The 401 answer when the mock wants a key and the request lacks it.
fn unauthorized(mock: &Mock, headers: &HeaderMap) -> Option<Response> {
    let key = mock.options.api_key.as_ref()?;
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (sent != Some(key.as_str())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Incorrect API key provided.",
        )
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": null}});
    (status, axum::Json(body)).into_response()
}

impl Mock {
    fn pick_fault(&self, req: &ChatRequest) -> Option<Fault> {
        let text = req.last_user_text();
        if let Some(start) = text.find("[fault:") {
            let rest = &text[start + 7..];
            if let Some(end) = rest.find(']') {
                return rest[..end].parse().ok();
            }
        }
        if self.options.fault_rate <= 0.0 || self.options.faults.is_empty() {
            return None;
        }
        let mut rng = self.rng.lock().ok()?;
        if rng.random::<f64>() < self.options.fault_rate {
            Some(self.options.faults[rng.random_range(0..self.options.faults.len())])
        } else {
            None
        }
    }

    fn fingerprint(&self) -> Option<String> {
        self.fingerprint
            .lock()
            .ok()
            .map(|f| f.clone())
            .filter(|f| !f.is_empty())
    }

    fn remember(&self, body: &[u8], headers: &HeaderMap) {
        let mut entry: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut entry {
            let auth = headers.get(header::AUTHORIZATION).is_some();
            m.insert("_mock_authorization_sent".into(), json!(auth));
        }
        if let Ok(mut log) = self.log.lock() {
            if log.len() == LOG_SIZE {
                log.pop_front();
            }
            log.push_back(entry);
        }
    }
}

async fn chat(
    State(mock): State<Arc<Mock>>,
    kill: Option<axum::Extension<crate::server::ConnKill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = unauthorized(&mock, &headers) {
        return r;
    }
    mock.remember(&body, &headers);
    let req: ChatRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let fault = mock.pick_fault(&req);
    if fault.is_some() {
        mock.faults.fetch_add(1, Ordering::Relaxed);
    }
    let mut plan = mock.model.plan(&req);
    match fault {
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request.",
            );
        }
        Some(f @ (Fault::RateLimited | Fault::RateLimitedBare | Fault::Unavailable)) => {
            let (status, code, message) = if f == Fault::Unavailable {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "The engine is currently overloaded, please try again later.",
                )
            } else {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    "Rate limit reached; please try again later.",
                )
            };
            let mut r = error(status, code, message);
            if f != Fault::RateLimitedBare
                && let Ok(v) = HeaderValue::from_str(&mock.options.retry_after_secs.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Some(Fault::Reset) => {
            // The connection is closed with a reset; no answer goes out.
            if let Some(axum::Extension(kill)) = kill {
                kill.0.cancel();
            }
            std::future::pending::<()>().await;
        }
        Some(Fault::Hang) if !req.is_stream() => std::future::pending::<()>().await,
        Some(Fault::Slow) => {
            plan.gap = Duration::from_secs_f64(1.0 / mock.options.slow_tokens_per_sec.max(0.01));
        }
        Some(Fault::SlowFirstToken) => {
            plan.ttft = Duration::from_secs_f64(mock.options.slow_ttft_ms.max(0.0) / 1000.0);
        }
        _ => {}
    }
    let id = new_id();
    let fingerprint = mock.fingerprint();
    if !req.is_stream() {
        // A zero wait would still round up to the timer's next millisecond tick.
        let wait = plan.duration();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut answer = completion(&plan, &id, &req.model);
        if let Some(fp) = &fingerprint {
            answer.extra.insert("system_fingerprint".into(), json!(fp));
        }
        let body = match fault {
            Some(Fault::Malformed) => {
                Bytes::from_static(b"{\"id\":\"chatcmpl-broken\",\"choices\":[{\"message\":")
            }
            _ => match serde_json::to_vec(&answer) {
                Ok(v) => Bytes::from(v),
                Err(e) => return GatewayError::Internal(e.to_string()).into_response(),
            },
        };
        if fault == Some(Fault::Disconnect) {
            let half = body.slice(..body.len() / 2);
            let broken = stream::iter([
                Ok(half),
                Err(std::io::Error::other("mock: connection dropped")),
            ]);
            return json_response(Body::from_stream(broken));
        }
        if fault == Some(Fault::Stall) {
            let half = body.slice(..body.len() / 2);
            let stalled =
                stream::once(async move { Ok::<_, Infallible>(half) }).chain(stream::pending());
            return json_response(Body::from_stream(stalled));
        }
        return json_response(Body::from(body));
    }

    let frames: Vec<Bytes> = chunks(&plan, &id, &req.model, req.wants_stream_usage())
        .into_iter()
        .map(|mut c| {
            if let Some(fp) = &fingerprint {
                c.extra.insert("system_fingerprint".into(), json!(fp));
            }
            c
        })
        .filter_map(|c| serde_json::to_vec(&c).ok())
        .map(|json| Bytes::from([b"data: ".as_slice(), &json, b"\n\n"].concat()))
        .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")))
        .collect();
    let cut = (frames.len() / 2).max(2);
    let body = match fault {
        Some(Fault::Hang) => Body::from_stream(stream::pending::<Result<Bytes, Infallible>>()),
        Some(Fault::Stall) => {
            let mut frames = frames;
            frames.truncate(cut);
            Body::from_stream(
                paced(frames, plan.ttft, plan.gap)
                    .map(Ok::<_, Infallible>)
                    .chain(stream::pending()),
            )
        }
        Some(Fault::Malformed) => {
            let mut frames = frames;
            frames.truncate(cut);
            frames.push(Bytes::from_static(
                b"data: {\"id\": \"chatcmpl-broken\", \"choices\": [\n\n",
            ));
            Body::from_stream(paced(frames, plan.ttft, plan.gap).map(Ok::<_, Infallible>))
        }
        Some(Fault::Disconnect) => {
            let mut frames = frames;
            frames.truncate(cut);
            // Let the frames reach the client before the connection drops.
            let drop_it = stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::other("mock: connection dropped"))
            });
            Body::from_stream(paced(frames, plan.ttft, plan.gap).map(Ok).chain(drop_it))
        }
        _ => Body::from_stream(paced(frames, plan.ttft, plan.gap).map(Ok::<_, Infallible>)),
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn json_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn embeddings(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&mock, &headers) {
        return r;
    }
    let req: EmbeddingsRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match mock.model.embed(&req.model, &req).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

/// Words the mock's moderation model reacts to, by OpenAI category.
const MODERATION_WORDS: &[(&str, &[&str])] = &[
    (
        "violence",
        &["kill", "murder", "shoot", "stab", "bomb", "attack"],
    ),
    ("harassment", &["idiot", "stupid", "loser", "moron"]),
    ("self-harm", &["suicide", "self-harm", "hurt myself"]),
    ("hate", &["subhuman", "vermin"]),
];

/// `POST /v1/moderations`: OpenAI's answer shape, scored by a word list (deterministic, for
/// tests): 0.9 for a category one of whose words appears, 0.01 otherwise.
async fn moderations(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&mock, &headers) {
        return r;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return GatewayError::invalid(format!("not JSON: {e}"), None).into_response(),
    };
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => {
            return GatewayError::invalid("`input` must be a string or strings", Some("input"))
                .into_response();
        }
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let lower = text.to_lowercase();
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            for (cat, words) in MODERATION_WORDS {
                let hit = words.iter().any(|w| lower.contains(w));
                categories.insert((*cat).into(), json!(hit));
                scores.insert((*cat).into(), json!(if hit { 0.9 } else { 0.01 }));
            }
            let flagged = categories.values().any(|v| v == &json!(true));
            json!({"flagged": flagged, "categories": categories, "category_scores": scores})
        })
        .collect();
    axum::Json(
        json!({"id": format!("modr-{}", new_id()), "model": req["model"], "results": results}),
    )
    .into_response()
}

async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "trestle-mock"}]}))
        .into_response()
}

/// `POST /mock/fingerprint` `{"system_fingerprint": "fp_2"}`: answers carry this from now on
/// (`""` for none), as when a provider rolls out a new backend under the same model name.
async fn set_fingerprint(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(fp) = v["system_fingerprint"].as_str() else {
        return GatewayError::invalid(
            "send {\"system_fingerprint\": \"fp_...\"}",
            Some("system_fingerprint"),
        )
        .into_response();
    };
    if let Ok(mut f) = mock.fingerprint.lock() {
        *f = fp.to_string();
    }
    axum::Json(json!({"system_fingerprint": fp})).into_response()
}

async fn requests(State(mock): State<Arc<Mock>>) -> Response {
    let recent: Vec<Value> = mock
        .log
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    axum::Json(json!({
        "count": mock.requests.load(Ordering::Relaxed),
        "faults": mock.faults.load(Ordering::Relaxed),
        "recent": recent,
    }))
    .into_response()
}
