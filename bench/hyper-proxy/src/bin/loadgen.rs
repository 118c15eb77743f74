//! A small HTTP load generator for bench/run.sh, for what wrk cannot measure:
//! streamed responses (time to first body byte and total time) and fixed-rate (open-loop)
//! load. One thread, so it takes at most one core from the machine.
//!
//! loadgen --url URL --body-file FILE [--header 'k: v']... --duration SECS [--warmup SECS]
//!         (--conns N | --rate REQ_PER_SEC [--max-inflight N]) [--stream]
//!
//! Prints one JSON line: requests, errors, rps, lat_* and ttfb_* percentiles in ms.
//! Closed loop (--conns): N connections, each sends the next request when the last ends.
//! Open loop (--rate): requests start on a fixed schedule whatever the server does; latency
//! counts from the scheduled start, so a stalled server is not hidden (no coordinated
//! omission). A request that would exceed --max-inflight counts as an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Spec {
    uri: Uri,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    stream: bool,
}

impl Spec {
    /// `origin_form`: the request target is the path alone, as a client on its own
    /// connection must send it (the pooled client turns absolute URIs into that itself).
    fn request(&self, origin_form: bool) -> Request<Full<Bytes>> {
        let target = if origin_form {
            self.uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .parse()
                .expect("path")
        } else {
            self.uri.clone()
        };
        let mut req = Request::post(target);
        if let Some(auth) = self.uri.authority() {
            req = req.header(http::header::HOST, auth.as_str());
        }
        req = req.header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req.body(Full::new(self.body.clone()))
            .expect("valid request")
    }
}

#[derive(Default)]
struct Stats {
    lat_us: Vec<u64>,
    ttfb_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
    fn merge(&mut self, other: Stats) {
        self.lat_us.extend(other.lat_us);
        self.ttfb_us.extend(other.ttfb_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Reads a response to its end. Returns time to first body byte, or an error text.
async fn finish<B>(
    start: Instant,
    status: StatusCode,
    mut body: B,
    stream: bool,
) -> Result<Duration, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if data.is_empty() {
                continue;
            }
            ttfb.get_or_insert_with(|| start.elapsed());
            if head.len() < 300 {
                head.extend_from_slice(&data[..data.len().min(300)]);
            }
            tail.extend_from_slice(data);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    if !status.is_success() {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&head)
        ));
    }
    if stream && !String::from_utf8_lossy(&tail).contains("[DONE]") {
        return Err(format!(
            "stream without [DONE]: {}",
            String::from_utf8_lossy(&head)
        ));
    }
    ttfb.ok_or_else(|| "empty body".to_string())
}

async fn closed_worker(spec: Spec, warm_until: Instant, end: Instant) -> Stats {
    let mut stats = Stats::default();
    let host = spec
        .uri
        .authority()
        .expect("url has host")
        .as_str()
        .to_owned();
    'reconnect: while Instant::now() < end {
        let tcp = match TcpStream::connect(&host).await {
            Ok(t) => t,
            Err(e) => {
                stats.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                Ok(x) => x,
                Err(e) => {
                    stats.error(format!("handshake: {e}"));
                    continue;
                }
            };
        tokio::spawn(conn);
        while Instant::now() < end {
            if sender.ready().await.is_err() {
                continue 'reconnect;
            }
            let start = Instant::now();
            let result = match sender.send_request(spec.request(true)).await {
                Ok(resp) => {
                    let status = resp.status();
                    finish(start, status, resp.into_body(), spec.stream).await
                }
                Err(e) => Err(format!("request: {e}")),
            };
            let total = start.elapsed();
            if start < warm_until {
                if result.is_err() {
                    continue 'reconnect;
                }
                continue;
            }
            match result {
                Ok(ttfb) => {
                    stats.lat_us.push(total.as_micros() as u64);
                    stats.ttfb_us.push(ttfb.as_micros() as u64);
                }
                Err(e) => {
                    stats.error(e);
                    continue 'reconnect;
                }
            }
        }
    }
    stats
}

async fn open_loop(
    spec: Spec,
    rate: f64,
    max_inflight: usize,
    warm_until: Instant,
    end: Instant,
) -> Stats {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_inflight)
        .build(connector);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let sem = Arc::new(tokio::sync::Semaphore::new(max_inflight));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    let mut i: u64 = 0;
    loop {
        let scheduled = t0 + Duration::from_secs_f64(i as f64 / rate);
        if scheduled >= end {
            break;
        }
        i += 1;
        tokio::time::sleep_until(scheduled.into()).await;
        let measured = scheduled >= warm_until;
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if measured {
                    stats
                        .lock()
                        .unwrap()
                        .error(format!("over {max_inflight} requests in flight"));
                }
                continue;
            }
        };
        let (client, spec, stats) = (client.clone(), spec.clone(), stats.clone());
        handles.push(tokio::spawn(async move {
            let result = match client.request(spec.request(false)).await {
                Ok(resp) => {
                    let status = resp.status();
                    finish(scheduled, status, resp.into_body(), spec.stream).await
                }
                Err(e) => Err(format!("request: {e}")),
            };
            let total = scheduled.elapsed();
            drop(permit);
            if measured {
                let mut s = stats.lock().unwrap();
                match result {
                    Ok(ttfb) => {
                        s.lat_us.push(total.as_micros() as u64);
                        s.ttfb_us.push(ttfb.as_micros() as u64);
                    }
                    Err(e) => s.error(e),
                }
            }
        }));
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    let mut out = Stats::default();
    out.merge(std::mem::take(&mut *stats.lock().unwrap()));
    out
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars().take(300) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let mut url = None;
    let mut body_file = None;
    let mut headers = Vec::new();
    let mut conns = 0usize;
    let mut rate = 0f64;
    let mut max_inflight = 2048usize;
    let mut duration = 10f64;
    let mut warmup = 1f64;
    let mut stream = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val()),
            "--body-file" => body_file = Some(val()),
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').expect("header is 'name: value'");
                headers.push((
                    HeaderName::from_bytes(k.trim().as_bytes()).expect("header name"),
                    HeaderValue::from_str(v.trim()).expect("header value"),
                ));
            }
            "--conns" => conns = val().parse().expect("--conns N"),
            "--rate" => rate = val().parse().expect("--rate R"),
            "--max-inflight" => max_inflight = val().parse().expect("--max-inflight N"),
            "--duration" => duration = val().parse().expect("--duration SECS"),
            "--warmup" => warmup = val().parse().expect("--warmup SECS"),
            "--stream" => stream = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let uri: Uri = url.expect("--url is required").parse().expect("valid url");
    let body =
        std::fs::read(body_file.expect("--body-file is required")).expect("readable body file");
    if uri.scheme_str() != Some("http") || (conns == 0 && rate <= 0.0) {
        panic!("need an http:// url and --conns N or --rate R");
    }
    let spec = Spec {
        uri,
        body: Bytes::from(body),
        headers,
        stream,
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stats, measured_secs) = rt.block_on(async move {
        let start = Instant::now();
        let warm_until = start + Duration::from_secs_f64(warmup);
        let end = warm_until + Duration::from_secs_f64(duration);
        let stats = if conns > 0 {
            let tasks: Vec<_> = (0..conns)
                .map(|_| tokio::spawn(closed_worker(spec.clone(), warm_until, end)))
                .collect();
            let mut all = Stats::default();
            for t in tasks {
                all.merge(t.await.expect("worker"));
            }
            all
        } else {
            open_loop(spec, rate, max_inflight, warm_until, end).await
        };
        (stats, duration)
    });
    let mut lat = stats.lat_us.clone();
    let mut ttfb = stats.ttfb_us.clone();
    lat.sort_unstable();
    ttfb.sort_unstable();
    let ok = lat.len() as f64;
    println!(
        "{{\"requests\":{},\"errors\":{},\"rps\":{},\"lat_p50_ms\":{},\"lat_p90_ms\":{},\"lat_p99_ms\":{},\"ttfb_p50_ms\":{},\"ttfb_p90_ms\":{},\"ttfb_p99_ms\":{},\"first_error\":{}}}",
        lat.len(),
        stats.errors,
        json_num(ok / measured_secs),
        json_num(pct(&lat, 50.0)),
        json_num(pct(&lat, 90.0)),
        json_num(pct(&lat, 99.0)),
        json_num(pct(&ttfb, 50.0)),
        json_num(pct(&ttfb, 90.0)),
        json_num(pct(&ttfb, 99.0)),
        stats.first_error.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
    );
}
