//! The test harness: starts the real `trestle` binary (gateway and mock upstreams) on free
//! loopback ports and stops it when dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trestle");

/// A running `trestle` process.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Proc {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "trestle did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trestle-it-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Waits until the process answers HTTP on `port`; `Err` with its exit status if it ended
/// first.
pub fn wait_ready(port: u16, child: &mut Child) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        if answers_http(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("trestle did not listen on {port}");
}

/// Whether an HTTP server answers on `port`. A connect alone is not enough: a probed port is
/// in the ephemeral range, and a connect to it while nothing listens yet can pick that same
/// port as its source and connect to itself (it then reads back its own request).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 8];
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

/// Starts `trestle` with the arguments `args` gives for a free port. The port is free when
/// probed but another process may take it before trestle binds it: then trestle exits saying
/// so, and it is started again on another port.
fn spawn(args: impl Fn(u16) -> Vec<String>, dir: &PathBuf, envs: &[(&str, &str)]) -> Proc {
    for _ in 0..5 {
        let port = free_port();
        let log_path = dir.join(format!("trestle-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(args(port))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start trestle");
        match wait_ready(port, &mut child) {
            Ok(()) => {
                return Proc {
                    child,
                    port,
                    dir: dir.clone(),
                };
            }
            Err(status) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(
                    log.contains("Address already in use"),
                    "trestle exited early: {status}\n{log}"
                );
            }
        }
    }
    panic!("no free port after 5 tries");
}

/// Starts `trestle mock` with extra flags.
pub fn mock(flags: &[&str]) -> Proc {
    let dir = temp_dir("mock");
    let args = |port: u16| {
        let mut args = vec![
            "mock".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        args
    };
    spawn(args, &dir, &[])
}

/// Starts `trestle serve` with a config body; `{UP}`/`{BACKUP}` are replaced by the URLs given.
pub fn gateway(config: &str, envs: &[(&str, &str)]) -> Proc {
    let dir = temp_dir("gw");
    std::fs::write(dir.join("trestle.toml"), config).expect("write config");
    let args = |port: u16| {
        vec![
            "serve".to_string(),
            "--config".into(),
            "trestle.toml".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ]
    };
    spawn(args, &dir, envs)
}

/// The reference config (`examples/two-upstreams.toml`, as documented) pointed at two mock
/// upstreams; `extra` lines are appended to its `[routes.chat]` table.
pub fn reference_config(up: &Proc, backup: &Proc, extra: &str) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/two-upstreams.toml");
    let text = std::fs::read_to_string(path).expect("examples/two-upstreams.toml");
    format!(
        "{}\n{extra}\n",
        text.replace("http://127.0.0.1:9101", &up.url())
            .replace("http://127.0.0.1:9102", &backup.url())
    )
}

pub fn client() -> reqwest::Client {
    trestle_gateway::providers::install_tls();
    reqwest::Client::builder().build().expect("client")
}

pub fn chat_body(model: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
}

/// GETs a URL and parses its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

/// GETs a URL's body as text (e.g. `/metrics`).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text body")
}

/// Fetches a trace, waiting briefly for the writer to commit it.
pub async fn trace(gw: &Proc, id: &str) -> serde_json::Value {
    for _ in 0..100 {
        let r = client()
            .get(format!("{}/v1/traces/{id}", gw.url()))
            .send()
            .await
            .expect("traces");
        if r.status() == 200 {
            return r.json().await.expect("trace json");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("trace {id} never appeared");
}

/// The status of each attempt of a trace's first request, in order.
pub fn attempt_statuses(trace: &serde_json::Value) -> Vec<String> {
    trace["requests"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].as_str().expect("status").to_string())
        .collect()
}

/// POSTs a chat body with extra headers.
pub async fn post_with(
    gw: &Proc,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("request")
}

/// The assistant text of a JSON or SSE answer; panics on anything not OpenAI-shaped.
pub async fn answer_text(r: reqwest::Response) -> String {
    let is_sse = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = r.text().await.expect("body");
    if !is_sse {
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        return v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_string();
    }
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).expect("chunk"))
        .inspect(|c| assert_eq!(c["object"], "chat.completion.chunk", "{c}"))
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Runs `trestle keys ARGS --db DB` and returns what it printed (a new key, or the list).
pub fn keys_cli(db: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run trestle keys");
    assert!(
        out.status.success(),
        "trestle keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A `redis-server` on a free loopback port, stopped when dropped; `None` when the binary is
/// missing and `TRESTLE_SKIP_REDIS=1`.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        let port = free_port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var("TRESTLE_SKIP_REDIS").as_deref() == Ok("1") => {
                eprintln!("skipping: cannot run redis-server: {e}");
                return None;
            }
            Err(e) => panic!(
                "cannot run redis-server ({e}): install it (apt-get install redis-server) or set TRESTLE_SKIP_REDIS=1"
            ),
        };
        let mut redis = Redis { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.pongs() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server on port {port} exited before answering: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// Whether the server answers `PING` (accepting a connection is not yet serving).
    fn pongs(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
