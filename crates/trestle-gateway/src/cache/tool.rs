//! The tool-response cache: a key/value store apps use for their tools' results through
//! `PUT/GET/DELETE /v1/cache/{namespace}/{key}`, with per-namespace freshness (specs for
//! hours, prices and stock for minutes). In memory, bounded by entry count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use trestle_core::config::CacheConfig;

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
}

impl ToolCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        let cache = ToolCache {
            entries: moka::sync::Cache::new(cfg.tool_max_entries.max(1)),
            ttls: std::sync::RwLock::new((Duration::ZERO, BTreeMap::new())),
        };
        cache.configure(cfg);
        cache
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
        self.entries.insert(
            (Arc::from(namespace), Arc::from(key)),
            Arc::new(ToolEntry {
                value,
                content_type,
                stored_at: Instant::now(),
                ttl,
            }),
        );
        ttl
    }

    /// A fresh entry and its age.
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

    pub fn delete(&self, namespace: &str, key: &str) -> bool {
        self.entries
            .remove(&(Arc::from(namespace), Arc::from(key)))
            .is_some()
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
