//! The tool-response cache: a key/value store apps use for their tools' results through
//! `PUT/GET/DELETE /v1/cache/{namespace}/{key}`, with per-namespace freshness (specs for
//! hours, prices and stock for minutes). In memory, bounded by entry count; with `[cache]
//! persist`, writes and deletes are queued for the store too and entries come back at start
//! ([`super::persist`]).
//!
//! With `[state] kind = "redis"` every instance shares the entries through Redis
//! ([`super::remote`]): [`ToolCache::fetch`] asks Redis after a local miss, [`ToolCache::put`]
//! writes there off the request path, and [`ToolCache::remove`] deletes there too. Another
//! instance's local copy of a deleted or replaced entry lives on until it goes stale.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use trestle_core::config::CacheConfig;

use super::persist::Persist;
use super::remote::{self, Remote, ToolValue};

/// One stored tool result.
#[derive(Debug)]
pub struct ToolEntry {
    pub value: Bytes,
    pub content_type: String,
    pub stored_at: Instant,
    pub ttl: Duration,
}

pub struct ToolCache {
    entries: moka::sync::Cache<(Arc<str>, Arc<str>), Arc<ToolEntry>>,
    ttls: std::sync::RwLock<(Duration, BTreeMap<String, Duration>)>,
    /// The entries every instance shares, with `[state] kind = "redis"`.
    remote: Option<Arc<Remote>>,
    /// The store's writer, with `[cache] persist` (set once at start).
    persist: OnceLock<Arc<Persist>>,
}

impl ToolCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        ToolCache::with_remote(cfg, None)
    }

    pub fn with_remote(cfg: &CacheConfig, remote: Option<Arc<Remote>>) -> Self {
        let cache = ToolCache {
            entries: moka::sync::Cache::new(cfg.tool_max_entries.max(1)),
            ttls: std::sync::RwLock::new((Duration::ZERO, BTreeMap::new())),
            remote,
            persist: OnceLock::new(),
        };
        cache.configure(cfg);
        cache
    }

    /// Keeps every write and delete from now on in the store too.
    pub(crate) fn persist_to(&self, persist: Arc<Persist>) {
        let _ = self.persist.set(persist);
    }

    /// Puts back an entry loaded from the store (nothing is written anywhere).
    pub(crate) fn restore(&self, namespace: &str, key: &str, entry: ToolEntry) {
        self.entries
            .insert((Arc::from(namespace), Arc::from(key)), Arc::new(entry));
    }

    /// Applies namespace TTLs (on start and reload).
    pub fn configure(&self, cfg: &CacheConfig) {
        if let Ok(mut t) = self.ttls.write() {
            t.0 = Duration::from_secs(cfg.tool_ttl_s);
            t.1 = cfg
                .tools
                .iter()
                .map(|(ns, c)| (ns.clone(), Duration::from_secs(c.ttl_s)))
                .collect();
        }
    }

    /// The namespace's freshness.
    pub fn ttl(&self, namespace: &str) -> Duration {
        self.ttls
            .read()
            .map(|t| t.1.get(namespace).copied().unwrap_or(t.0))
            .unwrap_or_default()
    }

    pub fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        content_type: String,
        ttl: Option<Duration>,
    ) -> Duration {
        let ttl = ttl.unwrap_or_else(|| self.ttl(namespace));
        let entry = Arc::new(ToolEntry {
            value,
            content_type,
            stored_at: Instant::now(),
            ttl,
        });
        self.entries
            .insert((Arc::from(namespace), Arc::from(key)), entry.clone());
        if let Some(persist) = self.persist.get() {
            persist.tool(namespace, key, &entry);
        }
        if let Some(remote) = &self.remote {
            let stored_ms = crate::store::now_ms();
            remote.set(remote.tool_key(namespace, key), ttl, move || {
                ToolValue {
                    value: entry.value.clone(),
                    content_type: entry.content_type.clone(),
                    stored_ms,
                    ttl: entry.ttl,
                }
                .encode()
            });
        }
        ttl
    }

    /// [`get`](Self::get), then the shared entries.
    pub async fn fetch(&self, namespace: &str, key: &str) -> Option<(Arc<ToolEntry>, Duration)> {
        if let Some(hit) = self.get(namespace, key) {
            return Some(hit);
        }
        let remote = self.remote.as_ref()?;
        let raw = remote.get(remote.tool_key(namespace, key)).await??;
        let value = ToolValue::decode(&raw)?;
        let age = remote::age(value.stored_ms);
        if age > value.ttl {
            return None;
        }
        let now = Instant::now();
        let entry = Arc::new(ToolEntry {
            value: value.value,
            content_type: value.content_type,
            stored_at: now.checked_sub(age).unwrap_or(now),
            ttl: value.ttl,
        });
        self.entries
            .insert((Arc::from(namespace), Arc::from(key)), entry.clone());
        Some((entry, age))
    }

    /// A fresh entry and its age, from this instance.
    pub fn get(&self, namespace: &str, key: &str) -> Option<(Arc<ToolEntry>, Duration)> {
        let k = (Arc::from(namespace), Arc::from(key));
        let hit = self.entries.get(&k)?;
        let age = hit.stored_at.elapsed();
        if age > hit.ttl {
            self.entries.invalidate(&k);
            return None;
        }
        Some((hit, age))
    }

    /// Deletes an entry from this instance (and from the store, with `[cache] persist`).
    pub fn delete(&self, namespace: &str, key: &str) -> bool {
        if let Some(persist) = self.persist.get() {
            persist.tool_delete(namespace, key);
        }
        self.entries
            .remove(&(Arc::from(namespace), Arc::from(key)))
            .is_some()
    }

    /// [`delete`](Self::delete), and from the shared entries (waiting at most `[state]
    /// timeout_ms`); whether either had it.
    pub async fn remove(&self, namespace: &str, key: &str) -> bool {
        let here = self.delete(namespace, key);
        let Some(remote) = &self.remote else {
            return here;
        };
        let shared = remote.delete(remote.tool_key(namespace, key)).await;
        here || shared == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trestle_core::config::ToolNamespace;

    #[tokio::test(start_paused = true)]
    async fn namespaces_keep_their_own_freshness() {
        let mut cfg = CacheConfig::default();
        cfg.tools
            .insert("specs".into(), ToolNamespace { ttl_s: 3_600 });
        cfg.tools
            .insert("price".into(), ToolNamespace { ttl_s: 60 });
        let cache = ToolCache::new(&cfg);
        let json = || "application/json".to_string();
        cache.put("specs", "sku-1", Bytes::from_static(b"{}"), json(), None);
        cache.put("price", "sku-1", Bytes::from_static(b"9.99"), json(), None);
        cache.put(
            "other",
            "k",
            Bytes::from_static(b"x"),
            json(),
            Some(Duration::from_secs(5)),
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            cache.get("price", "sku-1").is_none(),
            "prices go stale in a minute"
        );
        let (spec, age) = cache.get("specs", "sku-1").unwrap();
        assert_eq!(&spec.value[..], b"{}");
        assert_eq!(age, Duration::from_secs(61));
        assert!(cache.get("other", "k").is_none(), "a per-entry TTL wins");
        assert_eq!(cache.ttl("unknown"), Duration::from_secs(3_600));
        assert!(cache.delete("specs", "sku-1"));
        assert!(cache.get("specs", "sku-1").is_none());
    }
}
