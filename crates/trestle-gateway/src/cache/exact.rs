//! The exact response cache: answers by [`key::exact_key`](super::key::exact_key), in memory
//! (moka, bounded by entry count). A hit within the route's `ttl_s` is served before
//! inference; the `cache` fallback level serves older entries too (up to
//! `fallback.cache_max_age_s`), marked stale. Survives config reloads, and restarts when
//! `[cache] persist` keeps it in the store ([`super::persist`]: [`ExactCache::store`] queues
//! the entry for the store's writer; entries come back at start with their age).
//!
//! With `[state] kind = "redis"` every instance shares its entries through Redis
//! ([`super::remote`]): [`ExactCache::lookup`] asks Redis after a local miss, and
//! [`ExactCache::store`] writes there off the request path.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use trestle_core::openai::ChatCompletion;

use super::persist::Persist;
use super::remote::{self, ExactValue, Remote};

/// An answer as it was served: the upstream's bytes (no copy of a parsed body on the hot
/// path) or a completion the gateway assembled from a stream.
#[derive(Debug, Clone)]
pub enum Answer {
    Raw(Bytes),
    Parsed(ChatCompletion),
    /// A pass-through stream's SSE frames (`data: CHUNK\n\n`…), assembled when read.
    Frames(Bytes),
}

impl Answer {
    pub fn completion(&self) -> Option<ChatCompletion> {
        match self {
            Answer::Raw(b) => serde_json::from_slice(b).ok(),
            Answer::Parsed(c) => Some(c.clone()),
            Answer::Frames(f) => Some(crate::pipeline::assemble_frames(std::slice::from_ref(f))),
        }
    }

    /// The answer's JSON (assembled for a stream's).
    pub fn json(&self) -> Option<Bytes> {
        match self {
            Answer::Raw(b) => Some(b.clone()),
            Answer::Parsed(c) => serde_json::to_vec(c).ok().map(Bytes::from),
            Answer::Frames(_) => serde_json::to_vec(&self.completion()?)
                .ok()
                .map(Bytes::from),
        }
    }
}

/// One remembered answer.
#[derive(Debug)]
pub struct Entry {
    pub answer: Answer,
    pub served_by: String,
    pub stored_at: Instant,
    /// What the answer cost when it was made: what a hit saves.
    pub cost_usd: f64,
    /// The query's embedding, when the route has a semantic cache (to rebuild its index).
    pub embedding: Option<Arc<[f32]>>,
    /// The embedded query text, for the semantic guard.
    pub query: Option<Arc<str>>,
    /// The semantic scope the query is indexed in (kept with the entry, to rebuild the index
    /// after a restart).
    pub scope: Option<u64>,
}

pub struct ExactCache {
    entries: moka::sync::Cache<u64, Arc<Entry>>,
    /// The entries every instance shares, with `[state] kind = "redis"`.
    remote: Option<Arc<Remote>>,
    /// The store's writer, with `[cache] persist` (set once at start).
    persist: OnceLock<Arc<Persist>>,
}

impl ExactCache {
    pub fn new(capacity: u64) -> Self {
        ExactCache::with_remote(capacity, None)
    }

    pub fn with_remote(capacity: u64, remote: Option<Arc<Remote>>) -> Self {
        ExactCache {
            entries: moka::sync::Cache::new(capacity.max(1)),
            remote,
            persist: OnceLock::new(),
        }
    }

    /// Keeps every entry [`store`](Self::store)d from now on in the store too.
    pub(crate) fn persist_to(&self, persist: Arc<Persist>) {
        let _ = self.persist.set(persist);
    }

    /// Stores an entry in this instance only.
    pub fn put(&self, key: u64, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
    }

    /// Stores an entry, and shares it for `keep` (how long any reader may serve it) when the
    /// cache is shared; that write is spawned. With `[cache] persist` the entry is queued for
    /// the store (never waiting).
    pub fn store(&self, key: u64, entry: Entry, keep: Duration) {
        self.store_as(key, entry, keep, true);
    }

    /// [`store`](Self::store), queuing the entry for the store only when `persist` (answers
    /// kept just for the `cache` fallback level of a route whose cache is off are not: that
    /// would be a write per request on every route).
    pub fn store_as(&self, key: u64, entry: Entry, keep: Duration, persist: bool) {
        let entry = Arc::new(entry);
        self.entries.insert(key, entry.clone());
        if persist && let Some(store) = self.persist.get() {
            store.answer(key, &entry, keep);
        }
        if let Some(remote) = &self.remote {
            let stored_ms = crate::store::now_ms()
                - i64::try_from(entry.stored_at.elapsed().as_millis()).unwrap_or(0);
            remote.set(remote.exact_key(key), keep, move || {
                let answer = entry.answer.json()?;
                ExactValue {
                    answer,
                    served_by: entry.served_by.clone(),
                    cost_usd: entry.cost_usd,
                    stored_ms,
                }
                .encode()
            });
        }
    }

    /// The entry and its age, if it is not older than `max_age`, from this instance.
    pub fn get(&self, key: u64, max_age: Duration) -> Option<(Arc<Entry>, Duration)> {
        let hit = self.entries.get(&key)?;
        let age = hit.stored_at.elapsed();
        (age <= max_age).then_some((hit, age))
    }

    /// [`get`](Self::get), then the shared entries when this instance has none as young.
    /// What Redis has is kept here too, also when it is older than `max_age` (the `cache`
    /// fallback level may serve it).
    pub async fn lookup(&self, key: u64, max_age: Duration) -> Option<(Arc<Entry>, Duration)> {
        if let Some(hit) = self.get(key, max_age) {
            return Some(hit);
        }
        let remote = self.remote.as_ref()?;
        let raw = remote.get(remote.exact_key(key)).await??;
        let value = ExactValue::decode(&raw)?;
        let age = remote::age(value.stored_ms);
        let local = self.entries.get(&key);
        let entry = match local {
            // This instance's copy is as young: nothing new.
            Some(e) if e.stored_at.elapsed() <= age => e,
            _ => {
                let now = Instant::now();
                // The same key is the same query: a semantic index's embedding carries over.
                let entry = Arc::new(Entry {
                    answer: Answer::Raw(value.answer),
                    served_by: value.served_by,
                    stored_at: now.checked_sub(age).unwrap_or(now),
                    cost_usd: value.cost_usd,
                    embedding: local.as_ref().and_then(|e| e.embedding.clone()),
                    query: local.as_ref().and_then(|e| e.query.clone()),
                    scope: local.as_ref().and_then(|e| e.scope),
                });
                self.entries.insert(key, entry.clone());
                entry
            }
        };
        let age = entry.stored_at.elapsed();
        (age <= max_age).then_some((entry, age))
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

impl Entry {
    pub fn new(answer: Answer, served_by: &str, cost_usd: f64) -> Self {
        Entry {
            answer,
            served_by: served_by.to_string(),
            stored_at: Instant::now(),
            cost_usd,
            embedding: None,
            query: None,
            scope: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_age_and_expire_by_the_asked_max_age() {
        let store = ExactCache::new(100);
        let raw = Bytes::from_static(br#"{"id":"x","choices":[]}"#);
        store.put(7, Entry::new(Answer::Raw(raw), "up/m1", 0.002));
        tokio::time::advance(Duration::from_secs(30)).await;
        let (hit, age) = store.get(7, Duration::from_secs(60)).unwrap();
        assert_eq!(hit.served_by, "up/m1");
        assert_eq!(hit.answer.completion().unwrap().id, "x");
        assert_eq!(age, Duration::from_secs(30));
        assert!(store.get(8, Duration::from_secs(60)).is_none());
        // Fresh for a 60 s TTL no more; still there for a day-long stale window.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(store.get(7, Duration::from_secs(60)).is_none());
        assert!(store.get(7, Duration::from_secs(86_400)).is_some());
    }
}
