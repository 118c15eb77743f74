//! Fake Azure OpenAI and Vertex AI upstreams for the end-to-end tests, written from the
//! vendors' public REST references: Azure's deployment URLs, `api-key` / bearer auth,
//! content-filter annotations and 429s with `retry-after-ms`; Vertex's regional paths, the
//! OAuth 2 JWT-bearer token exchange (the assertion's RS256 signature checked with the key's
//! public half), `X-Vertex-AI-LLM-Request-Type` and `RESOURCE_EXHAUSTED` 429s.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

/// The throwaway RSA key the Vertex tests sign with (PKCS#8 PEM).
pub const TEST_KEY: &str =
    include_str!("../../../trestle-gateway/src/providers/vertex/fixtures/test-key.pem");

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn sse(events: Vec<String>) -> Response {
    let body: String = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Azure OpenAI

/// A fake Azure OpenAI resource.
pub struct FakeAzure {
    pub url: String,
    pub state: Arc<AzureState>,
}

pub struct AzureState {
    pub api_key: String,
    pub bearer: String,
    /// Deployments answering 429 (their capacity is full).
    pub busy: Mutex<HashSet<String>>,
    /// `retry-after-ms` and `retry-after` (s) on those 429s.
    pub retry_after_ms: AtomicU64,
    pub retry_after_s: AtomicU64,
    /// Calls per deployment, and how each was authenticated.
    pub calls: Mutex<HashMap<String, usize>>,
    pub auth_seen: Mutex<Vec<String>>,
    pub api_versions: Mutex<Vec<String>>,
}

impl FakeAzure {
    pub async fn start(api_key: &str, bearer: &str) -> FakeAzure {
        let state = Arc::new(AzureState {
            api_key: api_key.into(),
            bearer: bearer.into(),
            busy: Mutex::new(HashSet::new()),
            retry_after_ms: AtomicU64::new(50),
            retry_after_s: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            auth_seen: Mutex::new(Vec::new()),
            api_versions: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                axum::routing::post(azure_chat),
            )
            .with_state(state.clone());
        FakeAzure {
            url: serve(app).await,
            state,
        }
    }

    pub fn set_busy(&self, deployment: &str, busy: bool) {
        let mut set = self.state.busy.lock().expect("lock");
        if busy {
            set.insert(deployment.into());
        } else {
            set.remove(deployment);
        }
    }

    pub fn calls(&self, deployment: &str) -> usize {
        self.state
            .calls
            .lock()
            .expect("lock")
            .get(deployment)
            .copied()
            .unwrap_or(0)
    }
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

const FILTER_OK: &str = r#"{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}"#;

async fn azure_chat(
    State(s): State<Arc<AzureState>>,
    Path(deployment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(version) = query.get("api-version") else {
        return azure_error(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found (missing api-version)",
        );
    };
    s.api_versions.lock().expect("lock").push(version.clone());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = if header("api-key") == Some(s.api_key.as_str()) {
        "api-key"
    } else if header("authorization") == Some(format!("Bearer {}", s.bearer).as_str()) {
        "bearer"
    } else {
        return azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        );
    };
    s.auth_seen.lock().expect("lock").push(auth.into());
    *s.calls
        .lock()
        .expect("lock")
        .entry(deployment.clone())
        .or_default() += 1;
    if s.busy.lock().expect("lock").contains(&deployment) {
        let ms = s.retry_after_ms.load(Ordering::SeqCst);
        let secs = s.retry_after_s.load(Ordering::SeqCst);
        let mut r = azure_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            &format!(
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {version} have exceeded the provisioned throughput of deployment {deployment}. Please retry after {secs} second."
            ),
        );
        let h = r.headers_mut();
        h.insert("retry-after-ms", ms.into());
        h.insert("retry-after", secs.into());
        return r;
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return azure_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid JSON");
    };
    let text = last_user_text(&req);
    if text.contains("forbidden") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
                "type": null, "param": "prompt", "code": "content_filter", "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": true, "severity": "medium"}}}}})),
        )
            .into_response();
    }
    let answer = format!("Hello from {deployment}");
    let filters: Value = serde_json::from_str(FILTER_OK).expect("filters");
    let usage = json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12});
    if req["stream"] != true {
        return axum::Json(json!({
            "id": "chatcmpl-az", "object": "chat.completion", "created": 1_732_680_000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_az",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                "content_filter_results": filters,
                "message": {"role": "assistant", "content": answer, "refusal": null}}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1_732_680_000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_az", "choices": choices,
            "usage": usage})
        .to_string()
    };
    let mut events = vec![
        // Azure opens with the prompt's filter results: no choices, empty id and model.
        json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}]})
        .to_string(),
        chunk(
            json!([{"index": 0, "content_filter_results": {}, "finish_reason": null,
                "delta": {"role": "assistant", "content": "", "refusal": null}}]),
            Value::Null,
        ),
    ];
    for word in answer.split_inclusive(' ') {
        events.push(chunk(
            json!([{"index": 0, "content_filter_results": filters, "finish_reason": null,
                "delta": {"content": word}}]),
            Value::Null,
        ));
    }
    events.push(chunk(
        json!([{"index": 0, "content_filter_results": {}, "finish_reason": "stop", "delta": {}}]),
        Value::Null,
    ));
    if req["stream_options"]["include_usage"] == true {
        events.push(chunk(json!([]), usage));
    }
    events.push("[DONE]".into());
    sse(events)
}

// ---------------------------------------------------------------------------------------
// Vertex AI

/// A fake Vertex AI with its OAuth token endpoint (`/token`).
pub struct FakeVertex {
    pub url: String,
    pub state: Arc<VertexState>,
}

pub struct VertexState {
    pub token_uri: Mutex<String>,
    public_key: Vec<u8>,
    /// Lifetime of the tokens it issues.
    pub expires_in: AtomicU64,
    /// Token exchanges so far.
    pub exchanges: AtomicUsize,
    /// Issued tokens and when they expire.
    tokens: Mutex<HashMap<String, Instant>>,
    /// Calls refused for a missing, unknown or expired token.
    pub unauthorized: AtomicUsize,
    /// Whether provisioned throughput is full (`dedicated` requests get 429).
    pub provisioned_full: AtomicBool,
    /// Calls by `X-Vertex-AI-LLM-Request-Type` value (`none` when absent).
    pub calls: Mutex<HashMap<String, usize>>,
    pub paths: Mutex<Vec<String>>,
}

impl FakeVertex {
    pub async fn start() -> FakeVertex {
        let der = pem_der(TEST_KEY);
        let pair = RsaKeyPair::from_pkcs8(&der).expect("test key");
        let state = Arc::new(VertexState {
            token_uri: Mutex::new(String::new()),
            public_key: pair.public_key().as_ref().to_vec(),
            expires_in: AtomicU64::new(3600),
            exchanges: AtomicUsize::new(0),
            tokens: Mutex::new(HashMap::new()),
            unauthorized: AtomicUsize::new(0),
            provisioned_full: AtomicBool::new(false),
            calls: Mutex::new(HashMap::new()),
            paths: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(vertex_token))
            .route(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}",
                axum::routing::post(vertex_generate),
            )
            .with_state(state.clone());
        let url = serve(app).await;
        *state.token_uri.lock().expect("lock") = format!("{url}/token");
        FakeVertex { url, state }
    }

    /// A service-account key file's JSON whose `token_uri` is this fake.
    pub fn key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "k1",
            "private_key": TEST_KEY,
            "client_email": "trestle@proj.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": format!("{}/token", self.url),
        })
        .to_string()
    }

    pub fn exchanges(&self) -> usize {
        self.state.exchanges.load(Ordering::SeqCst)
    }

    pub fn calls(&self, request_type: &str) -> usize {
        self.state
            .calls
            .lock()
            .expect("lock")
            .get(request_type)
            .copied()
            .unwrap_or(0)
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM")
}

fn oauth_error(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": description})),
    )
        .into_response()
}

/// `POST /token`: RFC 7523 JWT bearer grant, as Google's token endpoint takes it.
async fn vertex_token(State(s): State<Arc<VertexState>>, body: String) -> Response {
    let form: HashMap<&str, &str> = body.split('&').filter_map(|p| p.split_once('=')).collect();
    if form.get("grant_type") != Some(&"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return oauth_error("Invalid grant_type");
    }
    let Some(jwt) = form.get("assertion") else {
        return oauth_error("Missing assertion");
    };
    let Some((signed, signature)) = jwt.rsplit_once('.') else {
        return oauth_error("Invalid JWT");
    };
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &s.public_key);
    let sig_ok = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .is_some_and(|sig| public.verify(signed.as_bytes(), &sig).is_ok());
    if !sig_ok {
        return oauth_error("Invalid JWT Signature.");
    }
    let claims: Option<Value> = signed
        .split_once('.')
        .and_then(|(_, c)| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|c| serde_json::from_slice(&c).ok());
    let Some(claims) = claims else {
        return oauth_error("Invalid JWT claims");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token_uri = s.token_uri.lock().expect("lock").clone();
    let valid = claims["iss"] == "trestle@proj.iam.gserviceaccount.com"
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["aud"] == token_uri.as_str()
        && claims["iat"]
            .as_u64()
            .is_some_and(|iat| iat.abs_diff(now) < 60)
        && claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp > now && exp <= now + 3600);
    if !valid {
        return oauth_error(&format!("Invalid JWT claims: {claims}"));
    }
    let n = s.exchanges.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = s.expires_in.load(Ordering::SeqCst);
    let token = format!("ya29.fake-{n}");
    s.tokens.lock().expect("lock").insert(
        token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    axum::Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}))
        .into_response()
}

fn google_error(status: StatusCode, code: u16, state: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message, "status": state}})),
    )
        .into_response()
}

/// `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`.
async fn vertex_generate(
    State(s): State<Arc<VertexState>>,
    Path((project, location, call)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token = header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    let live = token.is_some_and(|t| {
        s.tokens
            .lock()
            .expect("lock")
            .get(t)
            .is_some_and(|until| Instant::now() < *until)
    });
    if !live {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
        return google_error(
            StatusCode::UNAUTHORIZED,
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    let Some((model, method)) = call.split_once(':') else {
        return google_error(StatusCode::NOT_FOUND, 404, "NOT_FOUND", "no method");
    };
    s.paths
        .lock()
        .expect("lock")
        .push(format!("{project}/{location}/{model}:{method}"));
    let request_type = header("x-vertex-ai-llm-request-type")
        .unwrap_or("none")
        .to_string();
    *s.calls
        .lock()
        .expect("lock")
        .entry(request_type.clone())
        .or_default() += 1;
    if request_type == "dedicated" && s.provisioned_full.load(Ordering::SeqCst) {
        return google_error(
            StatusCode::TOO_MANY_REQUESTS,
            429,
            "RESOURCE_EXHAUSTED",
            "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
        );
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return google_error(StatusCode::BAD_REQUEST, 400, "INVALID_ARGUMENT", "bad JSON");
    };
    if req["contents"].as_array().is_none_or(|c| c.is_empty()) {
        return google_error(
            StatusCode::BAD_REQUEST,
            400,
            "INVALID_ARGUMENT",
            "contents is not specified",
        );
    }
    let answer = format!("Hello from Vertex ({request_type})");
    let usage = json!({"promptTokenCount": 6, "candidatesTokenCount": 4, "totalTokenCount": 10});
    match method {
        "generateContent" => axum::Json(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                "finishReason": "STOP", "avgLogprobs": -0.1}],
            "usageMetadata": usage,
            "modelVersion": model,
            "createTime": "2026-11-27T05:00:00.000000Z",
            "responseId": "vtx-1",
        }))
        .into_response(),
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => {
            let words: Vec<&str> = answer.split_inclusive(' ').collect();
            let last = words.len() - 1;
            let events = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut candidate =
                        json!({"content": {"role": "model", "parts": [{"text": w}]}});
                    let mut event = json!({"modelVersion": model, "responseId": "vtx-2",
                        "createTime": "2026-11-27T05:00:00.000000Z"});
                    if i == last {
                        candidate["finishReason"] = "STOP".into();
                        event["usageMetadata"] = usage.clone();
                    }
                    event["candidates"] = json!([candidate]);
                    event.to_string()
                })
                .collect();
            sse(events)
        }
        _ => google_error(StatusCode::NOT_FOUND, 404, "NOT_FOUND", "unknown method"),
    }
}
