//! The thinnest reverse proxy hyper allows: it forwards every request to the upstream and
//! streams the response back frame by frame, without buffering or parsing. It is the
//! "physical limit" line in the benchmark: what any Rust proxy pays for one extra HTTP hop.
//!
//! Usage: hyper-proxy LISTEN_ADDR UPSTREAM_HOST:PORT [--read-body]

use std::convert::Infallible;
use std::net::SocketAddr;

use http::uri::{Authority, Scheme, Uri};
use http::{HeaderValue, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

async fn forward<B>(
    client: Client<HttpConnector, B>,
    upstream: Authority,
    mut req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(upstream.clone())
        .path_and_query(path)
        .build()
        .expect("valid upstream uri");
    *req.uri_mut() = uri;
    if let Ok(host) = HeaderValue::from_str(upstream.as_str()) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(err) => {
            let body = Full::new(Bytes::from(format!("upstream error: {err}\n")))
                .map_err(|never| match never {})
                .boxed();
            Ok(Response::builder()
                .status(502)
                .body(body)
                .expect("valid response"))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .ok_or("usage: hyper-proxy LISTEN UPSTREAM")?
        .parse()?;
    let upstream: Authority = args
        .next()
        .ok_or("usage: hyper-proxy LISTEN UPSTREAM")?
        .parse()?;

    // `--read-body`: the handler reads the whole request body before forwarding it, as a
    // gateway that parses requests must (BENCHMARKS.md, "One connection, measured again").
    let read_body = args.next().as_deref() == Some("--read-body");

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector.clone());
    let buffered: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);

    let listener = TcpListener::bind(listen).await?;
    eprintln!("hyper-proxy listening on {listen}, upstream {upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let buffered = buffered.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            if read_body {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, upstream) = (buffered.clone(), upstream.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        forward(
                            client,
                            upstream,
                            Request::from_parts(parts, Full::new(bytes)),
                        )
                        .await
                    }
                });
                let _ = http1::Builder::new().serve_connection(io, service).await;
            } else {
                let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
                let _ = http1::Builder::new().serve_connection(io, service).await;
            }
        });
    }
}
