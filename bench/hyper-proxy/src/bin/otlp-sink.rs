//! A do-nothing OTLP/HTTP receiver for bench/otel.sh: takes every `POST` (`/v1/traces`,
//! `/v1/metrics`), reads the whole body and answers 200 with an empty protobuf message, so
//! the gateway's exporter is measured, not a collector. `GET /stats` answers
//! `{"requests": N, "bytes": N}`.
//!
//! Usage: otlp-sink LISTEN_ADDR

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn handle(
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let body = format!(
            "{{\"requests\": {}, \"bytes\": {}}}\n",
            counts.requests.load(Ordering::Relaxed),
            counts.bytes.load(Ordering::Relaxed)
        );
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let n = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len() as u64,
        Err(_) => 0,
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(n, Ordering::Relaxed);
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .expect("valid response"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: otlp-sink LISTEN")?
        .parse()?;
    let counts = Arc::new(Counts::default());
    let listener = TcpListener::bind(listen).await?;
    eprintln!("otlp-sink listening on {listen}");
    loop {
        let (stream, _) = listener.accept().await?;
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(counts.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
