//! The verifier in the lookup, with a deterministic scorer through the same trait as the
//! cross-encoder ([`crate::cache::verify::PairScorer`]) and the placeholder provider's
//! pseudo-embeddings (bags of hashed words): which candidates it is asked about, what its
//! verdicts serve, and what the trace keeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::*;
use crate::cache::embed::Embedder;
use crate::cache::exact::Answer;
use crate::cache::verify::PairScorer;
use crate::resilience::Registry;

/// 0.9 when both questions name the same fruit, else 0.1; counts its calls.
struct Fruit(Arc<AtomicUsize>);

impl PairScorer for Fruit {
    fn describe(&self) -> String {
        "fruit scorer".into()
    }

    fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let fruit = |t: &str| ["apple", "pear"].into_iter().find(|f| t.contains(f));
        Ok(pairs
            .iter()
            .map(|(a, b)| if fruit(a) == fruit(b) { 0.9 } else { 0.1 })
            .collect())
    }
}

/// A runtime whose route `r` has a semantic cache with the fake verifier, `threshold` and
/// `verifier_all`; and the scorer's call count.
fn runtime(threshold: f32, all: bool) -> (Runtime, Arc<AtomicUsize>) {
    let text = format!(
        r#"
[providers.p]
kind = "placeholder"
[embedders.e]
kind = "provider"
target = "p/embed"
[embedders.v]
kind = "provider"
target = "p/embed"
[routes.r]
targets = ["p/chat"]
[routes.r.cache]
mode = "on"
[routes.r.cache.semantic]
embedder = "e"
threshold = {threshold}
learn = false
guard = false
verifier = "v"
verifier_from = 0.3
verifier_all = {all}
"#
    );
    let config = trestle_core::Config::parse(&text, &|_| None)
        .unwrap()
        .config;
    let mut rt = Runtime::build(config, Arc::new(Registry::new(&Default::default()))).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    rt.embedders
        .insert("v".into(), Embedder::Pairs(Arc::new(Fruit(calls.clone()))));
    (rt, calls)
}

fn request(text: &str) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "r", "messages": [{"role": "user", "content": text}]
    }))
    .unwrap()
}

fn identity() -> Identity {
    Identity {
        trace_id: "t".into(),
        span_id: "s".into(),
        parent_span_id: None,
        conversation_id: None,
        user_id: None,
    }
}

async fn lookup_text(rt: &Runtime, text: &str) -> Outcome {
    let route = rt.resolve("r").unwrap();
    lookup(
        rt,
        &route,
        "",
        &request(text),
        &identity(),
        &HeaderMap::new(),
    )
    .await
}

/// Looks `text` up (a miss) and stores an answer for it, as the record stage does.
async fn store(rt: &Runtime, text: &str) {
    let Outcome::Miss(Some(remember), _, _) = lookup_text(rt, text).await else {
        panic!("{text}: expected a miss that stores");
    };
    let sem = remember.semantic.unwrap();
    let mut entry = Entry::new(Answer::Raw(Bytes::from_static(b"{}")), "p/chat", 0.01);
    entry.embedding = Some(sem.vector.clone());
    entry.query = Some(sem.query.clone());
    entry.scope = Some(sem.scope);
    let caches = &rt.registry.caches;
    caches
        .exact
        .store_as(remember.key, entry, remember.keep, false);
    caches
        .semantic
        .insert(sem.scope, sem.vector, remember.key, |_| None);
}

#[tokio::test]
async fn the_verifier_serves_below_the_threshold_and_stops_what_it_turns_down() {
    let (rt, calls) = runtime(0.99, false);
    store(&rt, "how do i reset the password of my apple account").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "an empty index asks nothing"
    );

    // Below the threshold, within the band: the verifier's yes serves.
    match lookup_text(&rt, "how can i reset the password of my apple account").await {
        Outcome::Hit(hit) => {
            assert_eq!(hit.layer, "semantic");
            assert!(hit.similarity.unwrap() < 0.99);
            let r = &hit.judged[..];
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(
                (r[0].kind.as_str(), r[0].guardrail.as_str()),
                ("cache_verifier", "v")
            );
            assert_eq!(
                (r[0].action.as_str(), r[0].outcome.as_str()),
                ("serve", "same")
            );
            let detail = r[0].detail.as_deref().unwrap();
            assert!(
                detail.contains("score 0.900 (serves from 0.500)"),
                "{detail}"
            );
        }
        Outcome::Miss(..) => panic!("the verifier said yes"),
    }
    // Its no is a miss, kept in the trace.
    match lookup_text(&rt, "how can i reset the password of my pear account").await {
        Outcome::Miss(_, _, records) => {
            assert_eq!(records.len(), 1);
            assert_eq!(
                (records[0].action.as_str(), records[0].outcome.as_str()),
                ("miss", "different")
            );
        }
        Outcome::Hit(_) => panic!("the verifier said no"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Below the band (similarity under verifier_from): not asked.
    assert!(
        matches!(lookup_text(&rt, "pear tart recipe").await, Outcome::Miss(_, _, r) if r.is_empty())
    );
    // An exact hit never reaches it.
    let exact = lookup_text(&rt, "how do i reset the password of my apple account").await;
    assert!(matches!(exact, Outcome::Hit(Hit { layer: "exact", .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn with_verifier_all_a_candidate_above_the_threshold_is_verified_too() {
    let cached = "how do i reset the password of my apple account";
    let query = "how can i reset the password of my pear account";
    // Without verifier_all, above the threshold: served, the verifier not asked.
    let (rt, calls) = runtime(0.3, false);
    store(&rt, cached).await;
    assert!(matches!(lookup_text(&rt, query).await, Outcome::Hit(h) if h.judged.is_empty()));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // With it: asked, and its no is a miss.
    let (rt, calls) = runtime(0.3, true);
    store(&rt, cached).await;
    match lookup_text(&rt, query).await {
        Outcome::Miss(_, _, records) => assert_eq!(records[0].outcome, "different"),
        Outcome::Hit(_) => panic!("verifier_all: its no is a miss"),
    }
    assert!(matches!(
        lookup_text(&rt, "how can i reset the password of my apple account").await,
        Outcome::Hit(h) if h.judged.len() == 1
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
