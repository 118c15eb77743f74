//! Gemini on Google Cloud Vertex AI:
//! `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! (`:streamGenerateContent?alt=sse` for streams; the `global` location has no prefix).
//!
//! The body and the answers are the Gemini API's, so the `gemini` adapter's translation is
//! reused; what differs is the URL and the auth: an OAuth 2 access token ([`token`]) from a
//! service-account key, or a token given as is. `throughput` sends Vertex's
//! `X-Vertex-AI-LLM-Request-Type` header: `dedicated` (provisioned throughput only: past it,
//! a 429 that overflows to the next target) or `shared` (pay-as-you-go only).

#[cfg(test)]
mod tests;
pub mod token;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use trestle_core::cloud::VertexConfig;
use trestle_core::openai::ChatRequest;

use super::gemini;
use super::http::{Auth, HttpClient};
use super::{ChunkStream, Completion, Provider, ProviderError};
pub use token::Tokens;

/// The Vertex AI adapter.
pub struct Vertex {
    http: HttpClient,
    tokens: Arc<Tokens>,
    /// `/v1/projects/{project}/locations/{location}/publishers/google/models/`.
    prefix: String,
    request_type: Option<&'static str>,
}

impl Vertex {
    /// Builds the adapter; a relative `credentials_file` is read from `base_dir`.
    pub fn new(config: &VertexConfig, base_dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let tokens = if let Some(token) = config
            .access_token
            .as_ref()
            .filter(|t| !t.expose().is_empty())
        {
            Tokens::Static(token.expose().to_string())
        } else if let Some(json) = config
            .credentials_json
            .as_ref()
            .filter(|j| !j.expose().is_empty())
        {
            Tokens::from_key_json(json.expose())?
        } else if let Some(path) = config.credentials_path() {
            let path = match base_dir {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            };
            let json = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the service-account key {}: {e}",
                    path.display()
                )
            })?;
            Tokens::from_key_json(&json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        } else {
            anyhow::bail!(
                "a vertex provider needs `credentials_file`, `credentials_json` or `access_token`"
            );
        };
        Ok(Vertex {
            http: HttpClient::new(&config.http(), "", Auth::Bearer)?,
            tokens: Arc::new(tokens),
            prefix: format!(
                "/v1/projects/{}/locations/{}/publishers/google/models/",
                config.project, config.location
            ),
            request_type: config.throughput.request_type(),
        })
    }

    /// The path of `method` on `model` (a `publishers/google/models/` or `models/` prefix in
    /// the configured name is tolerated).
    pub fn path(&self, model: &str, method: &str) -> Result<String, ProviderError> {
        let model = model
            .strip_prefix("publishers/google/models/")
            .or_else(|| model.strip_prefix("models/"))
            .unwrap_or(model);
        let valid = !model.is_empty()
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !valid {
            return Err(ProviderError::Refused {
                message: format!("`{model}` is not a Vertex AI model name"),
                param: Some("model".into()),
            });
        }
        Ok(format!("{}{model}:{method}", self.prefix))
    }

    /// POSTs a body with a current token; a 401 forgets the token so the next call gets anew.
    fn post(
        &self,
        path: Result<String, ProviderError>,
        body: Result<Bytes, ProviderError>,
    ) -> BoxFuture<'static, Result<super::http::Response, ProviderError>> {
        let http = self.http.clone();
        let tokens = self.tokens.clone();
        let request_type = self.request_type;
        Box::pin(async move {
            let (path, body) = (path?, body?);
            let token = tokens.get().await?;
            let bearer = format!("Bearer {token}");
            let mut headers: Vec<(&'static str, &str)> = vec![("authorization", &bearer)];
            if let Some(kind) = request_type {
                headers.push(("x-vertex-ai-llm-request-type", kind));
            }
            let result = http.post_json(&path, body, &headers).await;
            if let Err(ProviderError::Status { status: 401, .. }) = &result {
                tokens.invalidate();
            }
            result
        })
    }
}

fn encode(body: Result<serde_json::Value, ProviderError>) -> Result<Bytes, ProviderError> {
    serde_json::to_vec(&body?)
        .map(Bytes::from)
        .map_err(|e| ProviderError::refused(format!("cannot encode request: {e}")))
}

impl Provider for Vertex {
    fn kind(&self) -> &'static str {
        "vertex"
    }

    fn dropped(&self, req: &ChatRequest) -> Vec<String> {
        gemini::dropped(req)
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let sent = self.post(
            self.path(model, "generateContent"),
            encode(gemini::request::request_body(req)),
        );
        let model = model.to_string();
        let http = self.http.clone();
        Box::pin(async move {
            let response = sent.await?;
            gemini::response::parse_completion(&http.read_body(response).await?, &model)
        })
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let sent = self.post(
            self.path(model, "streamGenerateContent?alt=sse"),
            encode(gemini::request::request_body(req)),
        );
        let state = gemini::StreamState::new(model);
        let http = self.http.clone();
        Box::pin(async move {
            let response = sent.await?;
            Ok(gemini::chunks(http.sse_events(response), state))
        })
    }
}
