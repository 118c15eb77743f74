//! The exact and tool caches shared in Redis (`[state] kind = "redis"`), behind each
//! instance's own moka cache.
//!
//! A lookup that misses locally asks Redis (one `GET`, at most `[state] timeout_ms`); what it
//! finds is kept locally too. A write goes to the local cache at once and to Redis in a
//! spawned task (`SET … PX`), never holding up the answer. Keys: `<prefix>exact:<key as 16
//! hex digits>` and `<prefix>tool:<namespace length>:<namespace><key>` (unambiguous for any
//! namespace and key). A value is one JSON header line (who served it, its cost, when it was
//! stored, in Unix ms; a tool entry's content type and TTL), then the payload's bytes as they
//! are: the answer's JSON, the tool result. While Redis does not answer the caches are this
//! instance's only: each skipped lookup or write counts
//! `trestle_state_fallback_total{use="cache"}`, and nothing is an error to the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::limiter::link::{self, Link};

/// The exact cache's header line.
#[derive(Serialize, Deserialize)]
struct ExactHeader<'a> {
    /// The target that served the answer.
    #[serde(borrow)]
    s: std::borrow::Cow<'a, str>,
    /// Its cost (USD).
    c: f64,
    /// Stored at (Unix ms).
    t: i64,
}

/// The tool cache's header line.
#[derive(Serialize, Deserialize)]
struct ToolHeader<'a> {
    /// Content type.
    #[serde(borrow)]
    ct: std::borrow::Cow<'a, str>,
    /// Stored at (Unix ms).
    t: i64,
    /// Freshness (ms).
    ttl: u64,
}

/// An exact-cache entry as Redis keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactValue {
    /// The answer's JSON.
    pub answer: Bytes,
    pub served_by: String,
    pub cost_usd: f64,
    pub stored_ms: i64,
}

/// A tool-cache entry as Redis keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolValue {
    pub value: Bytes,
    pub content_type: String,
    pub stored_ms: i64,
    pub ttl: Duration,
}

fn encode<H: Serialize>(header: &H, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = serde_json::to_vec(header).ok()?;
    out.reserve(payload.len() + 1);
    // serde_json escapes every newline inside a string: the first one ends the header.
    out.push(b'\n');
    out.extend_from_slice(payload);
    Some(out)
}

fn split(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.iter().position(|&b| b == b'\n')?;
    Some((&raw[..end], &raw[end + 1..]))
}

impl ExactValue {
    pub fn encode(&self) -> Option<Vec<u8>> {
        let header = ExactHeader {
            s: self.served_by.as_str().into(),
            c: self.cost_usd,
            t: self.stored_ms,
        };
        encode(&header, &self.answer)
    }

    pub fn decode(raw: &Bytes) -> Option<ExactValue> {
        let (header, payload) = split(raw)?;
        let h: ExactHeader<'_> = serde_json::from_slice(header).ok()?;
        Some(ExactValue {
            answer: raw.slice_ref(payload),
            served_by: h.s.into_owned(),
            cost_usd: h.c,
            stored_ms: h.t,
        })
    }
}

impl ToolValue {
    pub fn encode(&self) -> Option<Vec<u8>> {
        let header = ToolHeader {
            ct: self.content_type.as_str().into(),
            t: self.stored_ms,
            ttl: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        };
        encode(&header, &self.value)
    }

    pub fn decode(raw: &Bytes) -> Option<ToolValue> {
        let (header, payload) = split(raw)?;
        let h: ToolHeader<'_> = serde_json::from_slice(header).ok()?;
        Some(ToolValue {
            value: raw.slice_ref(payload),
            content_type: h.ct.into_owned(),
            stored_ms: h.t,
            ttl: Duration::from_millis(h.ttl),
        })
    }
}

/// How old something stored at `stored_ms` is now (zero for a clock ahead of ours).
pub fn age(stored_ms: i64) -> Duration {
    Duration::from_millis((crate::store::now_ms() - stored_ms).max(0).unsigned_abs())
}

/// Both caches' side in Redis, on a gateway's link.
pub struct Remote {
    link: Arc<Link>,
}

impl Remote {
    pub fn new(link: Arc<Link>) -> Self {
        Remote { link }
    }

    pub fn exact_key(&self, key: u64) -> String {
        format!("{}exact:{key:016x}", self.link.prefix)
    }

    pub fn tool_key(&self, namespace: &str, key: &str) -> String {
        format!(
            "{}tool:{}:{namespace}{key}",
            self.link.prefix,
            namespace.len()
        )
    }

    /// The value under `key`: `None` when Redis did not answer (counted), `Some(None)` when
    /// it has none.
    pub async fn get(&self, key: String) -> Option<Option<Bytes>> {
        let found = self
            .link
            .run(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
            .await;
        match found {
            Some(v) => {
                let result = if v.is_some() { "hit" } else { "miss" };
                metrics::counter!("trestle_state_cache_total", "result" => result).increment(1);
                Some(v.map(Bytes::from))
            }
            None => {
                link::fell_back("cache");
                None
            }
        }
    }

    /// Stores `value` under `key` for `ttl`, in a spawned task. `encode` runs there too.
    pub fn set(
        self: &Arc<Self>,
        key: String,
        ttl: Duration,
        encode: impl FnOnce() -> Option<Vec<u8>> + Send + 'static,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.link.healthy() {
            link::fell_back("cache");
            return;
        }
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        let this = self.clone();
        rt.spawn(async move {
            let Some(value) = encode() else {
                return;
            };
            let stored = this
                .link
                .run(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg(ms)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
            if stored.is_none() {
                link::fell_back("cache");
            }
        });
    }

    /// Deletes `key`; whether Redis had it (`None`: Redis did not answer).
    pub async fn delete(&self, key: String) -> Option<bool> {
        let deleted = self
            .link
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if deleted.is_none() {
            link::fell_back("cache");
        }
        deleted.map(|n| n > 0)
    }
}

#[cfg(test)]
mod tests;
