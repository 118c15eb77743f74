//! HTTP plumbing shared by the HTTP adapters: one pooled client per provider, error mapping
//! (status, `Retry-After`, the upstream's own error message) and SSE event parsing.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use trestle_core::config::HttpProviderConfig;

use super::ProviderError;

/// How a provider wants its API key sent.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI and compatibles).
    Bearer,
    /// A named header carrying the bare key (`x-api-key`, `x-goog-api-key`).
    Header(&'static str),
}

/// A pooled HTTP client bound to one provider's base URL and credentials.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base_url: String,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Installs the TLS crypto provider (ring) for this process; later calls do nothing.
/// Every `reqwest::Client` in the process needs it first.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpClient {
    pub fn new(
        config: &HttpProviderConfig,
        default_base: &str,
        auth: Auth,
    ) -> anyhow::Result<Self> {
        install_tls();
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.expose().is_empty()) {
            let (name, value) = match auth {
                Auth::Bearer => (
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {}", key.expose()),
                ),
                Auth::Header(name) => (HeaderName::from_static(name), key.expose().to_string()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                anyhow::anyhow!("the API key contains characters not allowed in a header")
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        for (name, value) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| anyhow::anyhow!("invalid header name `{name}`"))?,
                HeaderValue::from_str(value)
                    .map_err(|_| anyhow::anyhow!("invalid value for header `{name}`"))?,
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| default_base.to_string())
            .trim_end_matches('/')
            .to_string();
        Ok(HttpClient { client, base_url })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// POSTs a JSON body; a non-2xx answer becomes a [`ProviderError::Status`].
    pub async fn post_json(
        &self,
        path: &str,
        body: Bytes,
        extra: &[(&'static str, &str)],
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.map_err(send_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response).await)
        }
    }
}

fn send_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout("connecting")
    } else {
        // Walk to the root cause: reqwest's top-level text says little ("error sending request").
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message = inner.to_string();
            source = inner.source();
        }
        ProviderError::Connect(message)
    }
}

/// Turns a non-2xx response into an error carrying the upstream's own message.
pub async fn status_error(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.bytes().await.unwrap_or_default();
    ProviderError::Status {
        status,
        message: error_message(&body),
        retry_after,
    }
}

/// `Retry-After` in seconds (fractions allowed), at most a day; HTTP-date forms are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    const DAY: Duration = Duration::from_secs(86_400);
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::try_from_secs_f64(s).map_or(DAY, |d| d.min(DAY)))
}

/// The message inside `{"error":{"message":…}}` (OpenAI, Anthropic, Gemini), else the body.
pub fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        e.get("message")
            .and_then(|m| m.as_str())
            .or_else(|| e.as_str())
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "(empty body)".to_string()
        } else {
            text.chars().take(500).collect()
        }
    })
}

/// Reads a whole response body.
pub async fn read_body(response: reqwest::Response) -> Result<Bytes, ProviderError> {
    response
        .bytes()
        .await
        .map_err(|e| ProviderError::Stream(e.to_string()))
}

/// Parses a `text/event-stream` response into events.
pub fn sse_events(
    response: reqwest::Response,
) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
    response
        .bytes_stream()
        .eventsource()
        .map(|item| match item {
            Ok(event) => Ok(SseEvent {
                event: event.event,
                data: event.data,
            }),
            Err(e) => Err(ProviderError::Stream(e.to_string())),
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#),
            "bad key"
        );
        assert_eq!(error_message(b"upstream down"), "upstream down");
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        // An absurd value is capped, never a panic.
        assert_eq!(parse_retry_after("1e30"), Some(Duration::from_secs(86_400)));
    }
}
