//! HTTP plumbing shared by the HTTP adapters: one pooled client per provider, error mapping
//! (status, `Retry-After`, the upstream's own error message) and SSE event parsing, with
//! every read bounded: an upstream that sends an endless body, or a line that never ends,
//! fails the attempt instead of filling memory (`max_response_bytes`, `max_event_bytes`).

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
///
/// Requests go out on hyper's pooled client directly (HTTP/1.1 keep-alive, HTTP/2 where a TLS
/// upstream offers it by ALPN, TCP_NODELAY): no per-request URL parsing beyond the one string,
/// no default-header merge, no timeout wrappers (the pipeline times each attempt and its first
/// token). When the environment names a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`),
/// requests go through reqwest instead, which honours it and `NO_PROXY` as before.
#[derive(Clone)]
pub struct HttpClient {
    /// Shared: an adapter clones the client into each request's future.
    transport: std::sync::Arc<Transport>,
    /// The key and the configured headers, sent with every request.
    headers: std::sync::Arc<HeaderMap>,
    base_url: std::sync::Arc<str>,
    max_response_bytes: usize,
    max_event_bytes: usize,
}

type Lean = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

enum Transport {
    Lean(Box<Lean>),
    Proxied(reqwest::Client),
}

/// An upstream's answer: status, headers and a body read by [`HttpClient::read_body`] or
/// [`HttpClient::sse_events`].
pub type Response = hyper::Response<Body>;

/// A response body from either transport.
pub enum Body {
    Lean(hyper::body::Incoming),
    Proxied(reqwest::Body),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = String;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, String>>> {
        use std::pin::Pin;
        let error = |e: &dyn std::error::Error| root_cause(e);
        match self.get_mut() {
            Body::Lean(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| error(&e)))),
            Body::Proxied(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| error(&e)))),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Lean(b) => b.size_hint(),
            Body::Proxied(b) => b.size_hint(),
        }
    }
}

/// Whether the environment asks for a proxy (reqwest's system proxy variables).
fn proxy_in_environment() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
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
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let transport = if proxy_in_environment() {
            Transport::Proxied(
                reqwest::Client::builder()
                    .connect_timeout(connect_timeout)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(256)
                    .tcp_nodelay(true)
                    .build()?,
            )
        } else {
            Transport::Lean(Box::new(lean_client(connect_timeout)?))
        };
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| default_base.to_string())
            .trim_end_matches('/')
            .into();
        Ok(HttpClient {
            transport: std::sync::Arc::new(transport),
            headers: std::sync::Arc::new(headers),
            base_url,
            max_response_bytes: config.max_response_bytes(),
            max_event_bytes: config.max_event_bytes(),
        })
    }

    /// Reads a whole response body, up to `max_response_bytes`.
    pub async fn read_body(&self, response: Response) -> Result<Bytes, ProviderError> {
        use http_body_util::BodyExt;
        let limit = self.max_response_bytes;
        let too_large = |size: String| {
            ProviderError::Malformed(format!(
                "the upstream answer is {size} bytes, over max_response_bytes ({limit})"
            ))
        };
        let length = content_length(response.headers());
        if let Some(len) = length
            && len > limit as u64
        {
            return Err(too_large(len.to_string()));
        }
        let mut body_in = response.into_body();
        let mut body = bytes::BytesMut::new();
        while let Some(frame) = body_in.frame().await {
            let Ok(chunk) = frame.map_err(ProviderError::Stream)?.into_data() else {
                continue; // trailers
            };
            if body.len() + chunk.len() > limit {
                return Err(too_large(format!("more than {limit}")));
            }
            if body.is_empty() && length == Some(chunk.len() as u64) {
                // The whole body in one piece: no copy.
                return Ok(chunk);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Parses a `text/event-stream` response into events, within `max_response_bytes` in all
    /// and `max_event_bytes` per event.
    pub fn sse_events(
        &self,
        response: Response,
    ) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
        let bytes = body_bytes(response.into_body(), None);
        sse_parse(bytes, self.max_response_bytes, self.max_event_bytes)
    }

    /// A `text/event-stream` response's body as it arrives, within the same limits as
    /// [`HttpClient::sse_events`], for a relay that splits the events itself.
    pub fn sse_bytes(
        &self,
        response: Response,
    ) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        let limit = Limiter::new(self.max_response_bytes, self.max_event_bytes);
        body_bytes(response.into_body(), Some(limit)).boxed()
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
    ) -> Result<Response, ProviderError> {
        let url = self.url(path);
        let response = match self.transport.as_ref() {
            Transport::Lean(client) => {
                let mut request = hyper::Request::post(url.as_str())
                    .body(http_body_util::Full::new(body))
                    .map_err(|e| ProviderError::Connect(format!("bad upstream URL {url}: {e}")))?;
                let headers = request.headers_mut();
                // content-type here; host and content-length added by hyper's client as it
                // writes the head (a full map would be grown and rehashed there).
                headers.reserve(self.headers.len() + extra.len() + 3);
                for (name, value) in self.headers.iter() {
                    headers.insert(name, value.clone());
                }
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (name, value) in extra {
                    let value = HeaderValue::from_str(value).map_err(|_| {
                        ProviderError::refused(format!("header {name} has characters not allowed"))
                    })?;
                    headers.insert(*name, value);
                }
                client
                    .request(request)
                    .await
                    .map_err(|e| send_error(&e, e.is_connect()))?
                    .map(Body::Lean)
            }
            Transport::Proxied(client) => {
                let mut request = client
                    .post(url)
                    .headers((*self.headers).clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
                for (name, value) in extra {
                    request = request.header(*name, *value);
                }
                let response = request
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| send_error(&e, e.is_connect()))?;
                hyper::Response::from(response).map(Body::Proxied)
            }
        };
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response).await)
        }
    }
}

/// Hyper's pooled client over rustls (the platform's certificate verifier, as reqwest uses),
/// offering HTTP/2 and HTTP/1.1 by ALPN on TLS, HTTP/1.1 on plain TCP.
fn lean_client(connect_timeout: Duration) -> anyhow::Result<Lean> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use rustls_platform_verifier::ConfigVerifierExt;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let tls = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for upstream calls: {e}"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A body's data frames as a stream of bytes (trailers skipped), each checked against
/// `limit` when there is one.
fn body_bytes(body: Body, limit: Option<Limiter>) -> BodyBytes {
    BodyBytes {
        body: Some(body),
        limit,
    }
}

/// [`body_bytes`]'s stream, polling the body in place, each read checked against `limit` when
/// there is one: a streamed answer passes through it at every read, so it is one layer, not an
/// async block rebuilt per read and a `map` over it.
struct BodyBytes {
    /// `None` once it ended or failed.
    body: Option<Body>,
    limit: Option<Limiter>,
}

impl futures_util::Stream for BodyBytes {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = http_body::Body::poll_frame(std::pin::Pin::new(body), cx);
            let out = match std::task::ready!(frame) {
                None => None,
                Some(Err(e)) => Some(Err(ProviderError::Stream(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Err(_) => continue, // trailers
                    Ok(data) => match this.limit.as_mut() {
                        None => return Poll::Ready(Some(Ok(data))),
                        Some(limit) => match limit.check(data) {
                            Ok(data) => return Poll::Ready(Some(Ok(data))),
                            Err(e) => Some(Err(e)),
                        },
                    },
                },
            };
            this.body = None;
            return Poll::Ready(out);
        }
    }
}

/// The innermost error's text: the outer ones say little ("error sending request").
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    message
}

/// A request that got no answer: a connect timeout, or the cause.
fn send_error(e: &(dyn std::error::Error + 'static), connecting: bool) -> ProviderError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = source {
        let timed_out = inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || inner
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout);
        if timed_out && connecting {
            return ProviderError::Timeout("connecting");
        }
        source = inner.source();
    }
    ProviderError::Connect(root_cause(e))
}

/// Turns a non-2xx response into an error carrying the upstream's own message (the first
/// 64 KiB of its body).
pub async fn status_error(response: Response) -> ProviderError {
    use http_body_util::BodyExt;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    ProviderError::Status {
        status,
        message: error_message(&body),
        retry_after,
    }
}

/// The delay a response asks for: Azure's `retry-after-ms` (or `x-ms-retry-after-ms`) in
/// milliseconds when present, as it is finer, else `Retry-After` in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let millis = header("retry-after-ms")
        .or_else(|| header("x-ms-retry-after-ms"))
        .and_then(|ms| ms.trim().parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0));
    millis.or_else(|| header(reqwest::header::RETRY_AFTER.as_str()).and_then(parse_retry_after))
}

/// `Retry-After` in seconds (fractions allowed), at most a day; HTTP-date forms are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<f64>().ok().and_then(seconds)
}

/// A delay in seconds, at most a day; `None` for a negative or non-finite number.
fn seconds(s: f64) -> Option<Duration> {
    const DAY: Duration = Duration::from_secs(86_400);
    (s.is_finite() && s >= 0.0).then(|| Duration::try_from_secs_f64(s).map_or(DAY, |d| d.min(DAY)))
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

/// Parses server-sent events from a byte stream, failing once the stream passes
/// `max_total` bytes or one event passes `max_event` bytes; the stream ends after an error.
pub fn sse_parse<S>(
    bytes: S,
    max_total: usize,
    max_event: usize,
) -> BoxStream<'static, Result<SseEvent, ProviderError>>
where
    S: futures_util::Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    let mut limit = Limiter::new(max_total, max_event);
    bytes
        .map(move |chunk| chunk.and_then(|c| limit.check(c)))
        .eventsource()
        .map(|item| match item {
            Ok(event) => Ok(SseEvent {
                event: event.event,
                data: event.data,
            }),
            Err(eventsource_stream::EventStreamError::Transport(e)) => Err(e),
            Err(e) => Err(ProviderError::Stream(e.to_string())),
        })
        .scan(false, |failed, item| {
            // Stop after the first error: what follows a broken frame means nothing.
            let out = (!*failed).then(|| {
                *failed = item.is_err();
                item
            });
            std::future::ready(out)
        })
        .boxed()
}

/// Counts a stream's bytes: in all, and since the last blank line (the current event).
struct Limiter {
    max_total: usize,
    max_event: usize,
    total: usize,
    event: usize,
    after_newline: bool,
}

impl Limiter {
    fn new(max_total: usize, max_event: usize) -> Self {
        Limiter {
            max_total,
            max_event,
            total: 0,
            event: 0,
            after_newline: false,
        }
    }

    fn check(&mut self, chunk: Bytes) -> Result<Bytes, ProviderError> {
        self.total += chunk.len();
        if self.total > self.max_total {
            return Err(ProviderError::Malformed(format!(
                "the upstream stream passed max_response_bytes ({} bytes)",
                self.max_total
            )));
        }
        // Line by line (memchr), not byte by byte: `\r` counts for nothing, a `\n` right after
        // a `\n` (an empty line) ends the event.
        let mut rest = &chunk[..];
        loop {
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            // `\r` is rare (a `\r\n` line end): searched for, not counted byte by byte.
            let counted = match memchr::memchr(b'\r', line) {
                None => line.len(),
                Some(_) => line.len() - memchr::memchr_iter(b'\r', line).count(),
            };
            if counted > 0 {
                self.after_newline = false;
                self.event += counted;
            }
            let Some(next) = next else { break };
            if self.after_newline {
                self.event = 0;
            } else {
                self.after_newline = true;
            }
            rest = next;
        }
        if self.event > self.max_event {
            return Err(ProviderError::Malformed(format!(
                "an upstream event passed max_event_bytes ({} bytes) without ending",
                self.max_event
            )));
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(
        pieces: Vec<&'static [u8]>,
        total: usize,
        event: usize,
    ) -> Vec<Result<String, String>> {
        let bytes =
            futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from_static(p))));
        let parsed = sse_parse(bytes, total, event);
        futures_util::FutureExt::now_or_never(
            parsed
                .map(|e| e.map(|e| e.data).map_err(|e| e.to_string()))
                .collect::<Vec<_>>(),
        )
        .expect("a stream of ready items")
    }

    proptest::proptest! {
        /// However the network splits a stream, the same events come out.
        #[test]
        fn any_split_of_the_bytes_gives_the_same_events(
            datas in proptest::collection::vec("[ -~]{1,40}", 1..8),
            named in proptest::collection::vec(proptest::bool::ANY, 8),
            cuts in proptest::collection::vec(1usize..17, 1..40),
            crlf in proptest::bool::ANY,
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            for (i, data) in datas.iter().enumerate() {
                if named[i % named.len()] {
                    text.push_str(&format!("event: e{i}{nl}"));
                }
                text.push_str(&format!("data: {data}{nl}{nl}"));
            }
            let whole = parse_all(vec![Bytes::from(text.clone())]);
            let bytes = text.as_bytes();
            let mut split = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + cut).min(bytes.len());
                split.push(Bytes::copy_from_slice(&bytes[at..end]));
                at = end;
            }
            let pieces = parse_all(split);
            proptest::prop_assert_eq!(&whole, &pieces);
            let datas_out: Vec<String> = whole.iter().map(|(_, d)| d.clone()).collect();
            proptest::prop_assert_eq!(datas_out, datas);
        }
    }

    fn parse_all(pieces: Vec<Bytes>) -> Vec<(String, String)> {
        let stream = futures_util::stream::iter(pieces.into_iter().map(Ok));
        futures_util::FutureExt::now_or_never(
            sse_parse(stream, 1 << 20, 1 << 16)
                .map(|e| e.map(|e| (e.event, e.data)).map_err(|e| e.to_string()))
                .collect::<Vec<_>>(),
        )
        .expect("a stream of ready items")
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_default()
    }

    #[test]
    fn sse_is_bounded_per_event_and_in_all() {
        let ok = events(vec![b"data: a\n\n", b"data: b\r\n\r\n"], 1_000, 100);
        assert_eq!(ok, vec![Ok("a".to_string()), Ok("b".to_string())]);
        // A line that never ends fails once it passes the event limit, and the stream ends.
        let long: &'static [u8] = Box::leak(vec![b'x'; 300].into_boxed_slice());
        let out = events(
            vec![b"data: a\n\n", b"data: ", long, long, b"\n\n"],
            10_000,
            256,
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[1].as_ref().unwrap_err().contains("max_event_bytes"),
            "{out:?}"
        );
        // Many small events: fine per event, cut by the total.
        let many = vec![b"data: 0123456789\n\n" as &[u8]; 100];
        let out = events(many, 500, 100);
        assert!(out.iter().filter(|e| e.is_ok()).count() < 30);
        assert!(
            out.last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("max_response_bytes")
        );
    }

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

    #[test]
    fn azure_retry_after_ms_wins_over_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        // Garbage in the finer header falls back to `Retry-After`.
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("soon"));
        h.insert("retry-after", HeaderValue::from_static("1"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
