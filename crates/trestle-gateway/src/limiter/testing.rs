//! Test helpers for the shared state: a real `redis-server` on a free loopback port (the
//! suites of the limiter, the per-target minute and the caches run on it), and a
//! `[state]` for it. Without the binary the Redis tests fail, unless `TRESTLE_SKIP_REDIS=1`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_core::config::{StateConfig, StateKind};

use super::link::Link;

/// A `redis-server` on a free loopback port, stopped when dropped.
pub(crate) struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` when `TRESTLE_SKIP_REDIS=1` and there is no binary.
    pub fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        RedisServer::on(port)
    }

    pub fn on(port: u16) -> Option<RedisServer> {
        let bin = std::env::var("TRESTLE_REDIS_SERVER").unwrap_or("redis-server".into());
        let spawned = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var("TRESTLE_SKIP_REDIS").as_deref() == Ok("1") => {
                eprintln!("skipping the Redis tests: cannot run {bin}: {e}");
                return None;
            }
            Err(e) => panic!(
                "cannot run {bin} ({e}): install Redis (apt-get install redis-server) or set TRESTLE_SKIP_REDIS=1"
            ),
        };
        let server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `[state]` on `url` with its own key prefix (tests share nothing by accident).
pub(crate) fn state(url: &str, instances: u32) -> StateConfig {
    StateConfig {
        kind: StateKind::Redis,
        url: Some(url.into()),
        timeout_ms: 50,
        instances,
        prefix: format!("test{}:", rand::random::<u32>()),
    }
}

/// A link to `config`'s Redis, once it has connected: another instance when `config` is
/// shared.
pub(crate) async fn link(config: &StateConfig) -> Arc<Link> {
    let link = Link::start(config.url.as_deref().unwrap(), config).unwrap();
    wait_until(|| link.healthy(), "the link never connected").await;
    link
}

/// Polls `done` every 10 ms for up to 5 s.
pub(crate) async fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
