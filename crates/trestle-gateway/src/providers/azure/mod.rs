//! Azure OpenAI: OpenAI's chat API on a deployment,
//! `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`.
//!
//! The body and the answers are OpenAI's, so the `openai` adapter's mapping is reused; what
//! differs is the URL (a target's model names the deployment), the auth (`api-key` header or
//! a Microsoft Entra ID bearer token), the finer `retry-after-ms` on 429s (read by
//! [`super::http::retry_after`]), and Azure's content-filter annotations: a stream may open
//! with chunks that carry only `prompt_filter_results` and no choices, which are dropped so
//! a client sees OpenAI's stream shape. A prompt the content filter rejects is a 400
//! (`code: content_filter`): the client's error, answered as such and not retried.

#[cfg(test)]
mod tests;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use trestle_core::cloud::AzureOpenaiConfig;
use trestle_core::openai::{ChatRequest, EmbeddingsRequest, EmbeddingsResponse};

use super::http::{Auth, HttpClient};
use super::{ChunkStream, Completion, Provider, ProviderError, openai};

/// The Azure OpenAI adapter.
pub struct AzureOpenAi {
    http: HttpClient,
    api_version: String,
}

impl AzureOpenAi {
    pub fn new(config: &AzureOpenaiConfig) -> anyhow::Result<Self> {
        let auth = if config.bearer().is_some() {
            Auth::Bearer
        } else {
            Auth::Header("api-key")
        };
        Ok(AzureOpenAi {
            http: HttpClient::new(&config.http(), "", auth)?,
            api_version: config.api_version.clone(),
        })
    }

    /// The path of `operation` (`chat/completions`, `embeddings`) on a deployment.
    pub fn path(&self, deployment: &str, operation: &str) -> Result<String, ProviderError> {
        deployment_path(deployment, operation, &self.api_version)
    }
}

/// `/openai/deployments/{deployment}/{operation}?api-version={version}`; a deployment name
/// that could not be one (Azure allows letters, digits, `-`, `_` and `.`) is refused.
pub fn deployment_path(
    deployment: &str,
    operation: &str,
    api_version: &str,
) -> Result<String, ProviderError> {
    let valid = !deployment.is_empty()
        && deployment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ProviderError::Refused {
            message: format!("`{deployment}` is not an Azure OpenAI deployment name"),
            param: Some("model".into()),
        });
    }
    let version: String = api_version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    Ok(format!(
        "/openai/deployments/{deployment}/{operation}?api-version={version}"
    ))
}

/// Whether a chunk is only Azure's content-filter annotation (no choices, no usage).
pub fn is_annotation_only(chunk: &super::Chunk) -> bool {
    chunk.chunk.choices.is_empty() && chunk.chunk.usage.is_none()
}

impl Provider for AzureOpenAi {
    fn kind(&self) -> &'static str {
        "azure_openai"
    }

    fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<Completion, ProviderError>> {
        let body = openai::request_body(model, req, false);
        let path = self.path(model, "chat/completions");
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json(&path?, body?, &[]).await?;
            openai::parse_completion(http.read_body(response).await?)
        })
    }

    fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> BoxFuture<'static, Result<ChunkStream, ProviderError>> {
        let body = openai::request_body(model, req, true);
        let path = self.path(model, "chat/completions");
        let http = self.http.clone();
        Box::pin(async move {
            let response = http.post_json(&path?, body?, &[]).await?;
            let chunks = http
                .sse_events(response)
                .map(|event| event.and_then(|e| openai::parse_chunk(&e.data)))
                // `[DONE]` (Ok(None)) ends the stream.
                .take_while(|item| std::future::ready(!matches!(item, Ok(None))))
                .filter_map(|item| {
                    let item = item
                        .transpose()
                        .filter(|c| !matches!(c, Ok(c) if is_annotation_only(c)));
                    std::future::ready(item)
                });
            Ok(chunks.boxed())
        })
    }

    fn embed(
        &self,
        model: &str,
        req: &EmbeddingsRequest,
    ) -> BoxFuture<'static, Result<EmbeddingsResponse, ProviderError>> {
        let mut out = req.clone();
        out.model = model.to_string();
        let body = serde_json::to_vec(&out).map(Bytes::from);
        let path = self.path(model, "embeddings");
        let http = self.http.clone();
        Box::pin(async move {
            let body = body.map_err(|e| ProviderError::refused(e.to_string()))?;
            let response = http.post_json(&path?, body, &[]).await?;
            let bytes = http.read_body(response).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Malformed(format!("embeddings: {e}")))
        })
    }
}
