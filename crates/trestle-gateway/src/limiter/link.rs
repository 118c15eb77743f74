//! The link to the shared state's Redis (`[state] kind = "redis"`), one per gateway: the
//! per-key limiter ([`super::redis`]), the per-target minute and pauses
//! ([`crate::resilience::shared`]) and the exact and tool caches ([`crate::cache::remote`])
//! all go through it.
//!
//! Every operation waits at most `[state] timeout_ms`. A timeout or an error marks Redis down
//! (logged once, `GET /ready` says so) and everything decides locally until a background
//! probe, a `PING` every [`PROBE_EVERY`], gets an answer again; nothing waits on a dead
//! Redis in between.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use trestle_core::config::{StateConfig, StateKind};

use super::Status;

/// How often the probe pings Redis.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct Link {
    client: redis::Client,
    /// `None` until connected, and again after a failure (the probe reconnects).
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Prefix of every key.
    pub prefix: String,
    /// How long one operation may take.
    pub timeout: Duration,
    /// How many instances share the limits (`[state] instances`): each one's share while
    /// Redis does not answer.
    pub instances: u32,
    healthy: AtomicBool,
    since_ms: AtomicI64,
    /// The URL without its password, for the log.
    url: String,
}

impl Link {
    /// The link `[state]` asks for: none for `kind = "memory"`. A Redis that does not answer
    /// at start is not an error: everything is local until it does.
    pub fn from_config(config: &StateConfig) -> anyhow::Result<Option<Arc<Link>>> {
        match (config.kind, &config.url) {
            (StateKind::Redis, Some(url)) => Link::start(url, config).map(Some),
            (StateKind::Redis, None) => anyhow::bail!("state.url: kind = \"redis\" needs a url"),
            (StateKind::Memory, _) => Ok(None),
        }
    }

    /// A link to the Redis at `url`, connecting in the background. Needs a tokio runtime.
    pub fn start(url: &str, config: &StateConfig) -> anyhow::Result<Arc<Link>> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("state.url: {e}"))?;
        let link = Arc::new(Link {
            client,
            conn: ArcSwapOption::empty(),
            prefix: config.prefix.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            instances: config.instances.max(1),
            healthy: AtomicBool::new(false),
            since_ms: AtomicI64::new(crate::store::now_ms()),
            url: redacted(url),
        });
        spawn_probe(Arc::downgrade(&link));
        Ok(link)
    }

    /// Whether Redis answered lately (operations are tried only then).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// What `GET /ready` says.
    pub fn status(&self) -> Status {
        Status {
            kind: "redis",
            healthy: self.healthy(),
            since_ms: self.since_ms.load(Ordering::Relaxed),
        }
    }

    /// Runs one operation on Redis within the timeout. `None` when Redis is down, or when
    /// the operation fails or times out (which marks Redis down until the probe gets an
    /// answer): the caller decides locally then.
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection()?;
        match tokio::time::timeout(self.timeout, op(conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down(&format!("no answer in {:?}", self.timeout));
                None
            }
        }
    }

    /// The connection while Redis is healthy.
    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.healthy() {
            return None;
        }
        self.conn.load_full().map(|c| c.as_ref().clone())
    }

    fn mark_down(&self, why: &str) {
        self.conn.store(None);
        if self.healthy.swap(false, Ordering::Relaxed) {
            self.since_ms
                .store(crate::store::now_ms(), Ordering::Relaxed);
            tracing::warn!(
                "shared state: Redis at {} does not answer ({why}); until it does, limits are local (each instance enforces its share, [state] instances) and the caches are this instance's only",
                self.url
            );
        }
    }

    fn mark_up(&self, conn: MultiplexedConnection) {
        self.conn.store(Some(Arc::new(conn)));
        if !self.healthy.swap(true, Ordering::Relaxed) {
            self.since_ms
                .store(crate::store::now_ms(), Ordering::Relaxed);
            tracing::info!(
                "shared state: Redis at {} answers; limits, pauses and caches are shared",
                self.url
            );
        }
    }

    /// Connects (when not connected) and pings.
    async fn probe(&self) -> Result<(), String> {
        let budget = self.timeout.max(Duration::from_millis(500));
        let mut conn = match self.conn.load_full() {
            Some(c) => c.as_ref().clone(),
            None => tokio::time::timeout(budget, self.client.get_multiplexed_async_connection())
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?,
        };
        let pong: String = tokio::time::timeout(budget, redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|_| "ping timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong}"));
        }
        self.mark_up(conn);
        Ok(())
    }
}

/// Counts one thing done locally because Redis did not answer: `what` is `keys` (a key's
/// limit decision), `targets` (a target's) or `cache` (a lookup or write).
pub fn fell_back(what: &'static str) {
    metrics::counter!("trestle_state_fallback_total", "use" => what).increment(1);
}

/// Pings Redis every [`PROBE_EVERY`] while the link lives: a failure starts the fallback,
/// an answer ends it.
fn spawn_probe(link: Weak<Link>) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Some(l) = link.upgrade() else {
                return;
            };
            if let Err(why) = l.probe().await {
                if first {
                    tracing::warn!(
                        "shared state: cannot reach Redis at {} ({why}); until it answers, limits are local (each instance enforces its share, [state] instances) and the caches are this instance's only",
                        l.url
                    );
                }
                l.mark_down(&why);
            }
            first = false;
            drop(l);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

/// The URL without its password, for the log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(
            super::redacted("redis://u:secret@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(
            super::redacted("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
