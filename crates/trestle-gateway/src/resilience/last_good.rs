//! The `cache` fallback level: the last good answer per route and normalized request, kept in
//! memory (bounded by entry count) and served — even stale, marked as such — when every
//! target failed. It survives config reloads, not restarts.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use trestle_core::openai::{ChatCompletion, ChatRequest};

/// An answer as it was served: the upstream's bytes (no copy of a parsed body on the hot
/// path) or a completion the gateway assembled from a stream.
#[derive(Debug, Clone)]
pub enum Answer {
    Raw(Bytes),
    Parsed(ChatCompletion),
}

impl Answer {
    pub fn completion(&self) -> Option<ChatCompletion> {
        match self {
            Answer::Raw(b) => serde_json::from_slice(b).ok(),
            Answer::Parsed(c) => Some(c.clone()),
        }
    }
}

/// One remembered answer.
#[derive(Debug)]
pub struct Remembered {
    pub answer: Answer,
    pub served_by: String,
    pub stored_at: Instant,
}

/// Keyed by [`request_key`], which covers the route too.
pub struct LastGood {
    entries: moka::sync::Cache<u64, Arc<Remembered>>,
}

impl LastGood {
    pub fn new(capacity: u64) -> Self {
        LastGood {
            entries: moka::sync::Cache::new(capacity),
        }
    }

    pub fn put(&self, key: u64, answer: Answer, served_by: &str) {
        self.entries.insert(
            key,
            Arc::new(Remembered {
                answer,
                served_by: served_by.to_string(),
                stored_at: Instant::now(),
            }),
        );
    }

    /// The remembered answer and its age, if it is not older than `max_age`.
    pub fn get(&self, key: u64, max_age: Duration) -> Option<(Arc<Remembered>, Duration)> {
        let hit = self.entries.get(&key)?;
        let age = hit.stored_at.elapsed();
        (age <= max_age).then_some((hit, age))
    }
}

/// The route and the normalized request: what the answer depends on, with case and runs of
/// whitespace in message text ignored. Sampling settings, ids and stream flags are left out.
pub fn request_key(route: &str, req: &ChatRequest) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    route.hash(&mut h);
    for m in &req.messages {
        m.role.hash(&mut h);
        // Words, lower-cased, each ended by a separator; no allocation per word.
        for word in m.text().split_whitespace() {
            for c in word.chars().flat_map(char::to_lowercase) {
                h.write_u32(c as u32);
            }
            h.write_u8(0);
        }
        0xffu8.hash(&mut h);
        if let Some(calls) = &m.tool_calls {
            serde_json::to_string(calls)
                .unwrap_or_default()
                .hash(&mut h);
        }
        m.tool_call_id.hash(&mut h);
    }
    for part in [
        req.tools
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default()),
        req.tool_choice
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default()),
        req.response_format
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default()),
    ] {
        part.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn normalization_ignores_case_spacing_and_sampling() {
        let a =
            req(json!({"model": "r", "messages": [{"role": "user", "content": "Hello   World"}]}));
        let b = req(json!({"model": "r", "temperature": 0.3, "stream": true,
            "messages": [{"role": "user", "content": " hello world\n"}]}));
        let c =
            req(json!({"model": "r", "messages": [{"role": "user", "content": "hello there"}]}));
        let d =
            req(json!({"model": "r", "messages": [{"role": "system", "content": "hello world"}]}));
        assert_eq!(request_key("r", &a), request_key("r", &b));
        assert_ne!(request_key("r", &a), request_key("r", &c));
        assert_ne!(request_key("r", &a), request_key("r", &d));
        assert_ne!(
            request_key("r", &a),
            request_key("other", &a),
            "scoped by route"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_answers_are_served_up_to_max_age() {
        let store = LastGood::new(100);
        let raw = Bytes::from_static(br#"{"id":"x","choices":[]}"#);
        store.put(7, Answer::Raw(raw), "up/m1");
        tokio::time::advance(Duration::from_secs(30)).await;
        let (hit, age) = store.get(7, Duration::from_secs(60)).unwrap();
        assert_eq!(hit.served_by, "up/m1");
        assert_eq!(hit.answer.completion().unwrap().id, "x");
        assert_eq!(age, Duration::from_secs(30));
        assert!(store.get(8, Duration::from_secs(60)).is_none());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(store.get(7, Duration::from_secs(60)).is_none());
    }
}
