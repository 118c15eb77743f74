//! The cache tables on both backends (rows, TTLs, deletes, capacity, pruning), and a
//! restart through the caches themselves: what one registry stored, a second one started
//! on the same store serves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use trestle_core::config::CacheConfig;

use super::store::{AnswerRow, Change, SemanticPart, Store, ToolRow};
use super::{Persist, start};
use crate::cache::exact::{Answer, Entry};
use crate::cache::remote::{ExactValue, ToolValue};
use crate::cache::semantic::normalize;
use crate::db::Db;
use crate::db::testing::on_both_backends;
use crate::resilience::Registry;
use crate::store::now_ms;

const HOUR: Duration = Duration::from_secs(3_600);

fn unit(seed: u64, dims: usize) -> Arc<[f32]> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    normalize(v).into()
}

/// Keys over the whole u64 range (half of them negative as a signed column).
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn answer(i: u64, stored_ms: i64, keep_ms: i64, scope: Option<u64>) -> AnswerRow {
    AnswerRow {
        key: key(i),
        expires_ms: stored_ms + keep_ms,
        value: ExactValue {
            answer: Bytes::from(format!(r#"{{"id":"a{i}","choices":[]}}"#)),
            served_by: "up/m1".into(),
            cost_usd: 0.001,
            stored_ms,
        },
        semantic: scope.map(|scope| SemanticPart {
            scope,
            vector: unit(i, 8),
            query: Arc::from(format!("question {i}").as_str()),
        }),
    }
}

fn tool(namespace: &str, key: &str, stored_ms: i64, ttl_ms: u64, value: &str) -> ToolRow {
    ToolRow {
        namespace: namespace.into(),
        key: key.into(),
        value: ToolValue {
            value: Bytes::from(value.to_string()),
            content_type: "application/json".into(),
            stored_ms,
            ttl: Duration::from_millis(ttl_ms),
        },
    }
}

fn answers(rows: &[AnswerRow]) -> Vec<Change> {
    rows.iter().cloned().map(Change::Answer).collect()
}

on_both_backends!(
    rows_come_back_newest_first_within_the_limit,
    expired_rows_are_skipped_and_pruned_with_the_surplus,
    tool_rows_are_replaced_and_deleted_in_order,
    graphs_are_kept_for_scopes_with_answers_only,
    a_restart_brings_back_all_three_caches,
    loading_keeps_the_newest_within_each_capacity,
);

fn rows_come_back_newest_first_within_the_limit(db: Db) {
    let mut store = Store::open(&db).unwrap();
    let now = now_ms();
    let rows: Vec<AnswerRow> = (0..10u64)
        .map(|i| {
            let scope = (i % 2 == 0).then_some(u64::MAX - 3);
            answer(i, now - 10_000 + i as i64 * 100, 60_000, scope)
        })
        .collect();
    store.write(&answers(&rows)).unwrap();
    let loaded = store.load(now, 4, 100).unwrap();
    let newest: Vec<AnswerRow> = rows[6..].iter().rev().cloned().collect();
    assert_eq!(
        loaded.answers, newest,
        "keys, values, scopes and vectors as written"
    );
    assert_eq!(loaded.unreadable, 0);
    // The same key again is one row, the newer one.
    store
        .write(&[Change::Answer(answer(9, now, 60_000, None))])
        .unwrap();
    assert_eq!(store.count().0, 10);
    let loaded = store.load(now, 1, 0).unwrap();
    assert_eq!(loaded.answers, vec![answer(9, now, 60_000, None)]);
    assert!(loaded.tools.is_empty());
    // Another connection (a restart) reads the same.
    drop(store);
    let mut again = Store::open(&db).unwrap();
    assert_eq!(again.load(now, 100, 100).unwrap().answers.len(), 10);
}

fn expired_rows_are_skipped_and_pruned_with_the_surplus(db: Db) {
    let mut store = Store::open(&db).unwrap();
    let now = now_ms();
    let mut rows: Vec<AnswerRow> = (1..=3u64)
        .map(|i| answer(i, now - 4_000 + i as i64 * 1_000, 60_000, None))
        .collect();
    // Stored two minutes ago, servable for one.
    rows.push(answer(4, now - 120_000, 60_000, None));
    let mut changes = answers(&rows);
    changes.push(Change::Tool(tool("specs", "live", now, 60_000, "1")));
    changes.push(Change::Tool(tool(
        "price",
        "old",
        now - 120_000,
        60_000,
        "2",
    )));
    store.write(&changes).unwrap();

    let loaded = store.load(now, 100, 100).unwrap();
    let keys: Vec<u64> = loaded.answers.iter().map(|r| r.key).collect();
    assert_eq!(keys, vec![key(3), key(2), key(1)]);
    assert_eq!(loaded.tools, vec![tool("specs", "live", now, 60_000, "1")]);

    // Pruning: the expired answer and tool, and the oldest live answer beyond 2.
    assert_eq!(store.prune(now, 2, 100).unwrap(), 3);
    assert_eq!(store.count(), (2, 1, 0));
    assert_eq!(store.prune(now, 2, 100).unwrap(), 0);
}

fn tool_rows_are_replaced_and_deleted_in_order(db: Db) {
    let mut store = Store::open(&db).unwrap();
    let now = now_ms();
    let delete = |key: &str| Change::ToolDelete {
        namespace: "specs".into(),
        key: key.into(),
    };
    store
        .write(&[
            Change::Tool(tool("specs", "a", now - 10, 60_000, "v1")),
            Change::Tool(tool("specs", "b", now - 5, 60_000, "b")),
            Change::Tool(tool("specs", "a", now, 60_000, "v2")),
            delete("b"),
            delete("never stored"),
        ])
        .unwrap();
    let loaded = store.load(now, 100, 100).unwrap();
    assert_eq!(loaded.tools, vec![tool("specs", "a", now, 60_000, "v2")]);
    // A delete then a write: the write stands.
    store
        .write(&[
            delete("a"),
            Change::Tool(tool("specs", "a", now, 60_000, "v3")),
        ])
        .unwrap();
    let loaded = store.load(now, 100, 100).unwrap();
    assert_eq!(loaded.tools, vec![tool("specs", "a", now, 60_000, "v3")]);
    assert_eq!(store.count(), (0, 1, 0));
}

/// A graph of `keys` in `scope`, as the semantic index saves it.
fn graph(scope: u64, keys: &[u64]) -> crate::cache::semantic::Snapshot {
    let index = crate::cache::semantic::SemanticIndex::new(1_000);
    for &k in keys {
        index.insert(scope, unit(k, 8), key(k), |_| None);
    }
    index.snapshots(&std::env::temp_dir()).pop().unwrap()
}

fn graphs_are_kept_for_scopes_with_answers_only(db: Db) {
    let now = now_ms();
    let mut store = Store::open(&db).unwrap();
    let mut changes = answers(
        &(0..20u64)
            .map(|i| answer(i, now - 1_000 + i as i64, 600_000, Some(1)))
            .collect::<Vec<_>>(),
    );
    // Scope 1's graph knows the first 15; scope 2 has no answers left.
    changes.push(Change::Graph(graph(1, &(0..15).collect::<Vec<_>>())));
    changes.push(Change::Graph(graph(2, &[100, 101])));
    store.write(&changes).unwrap();
    let mut scopes = store.graph_scopes().unwrap();
    scopes.sort_unstable();
    assert_eq!(scopes, vec![1, 2]);
    let two = store.graph(2).unwrap().unwrap();
    assert_eq!(two, graph(2, &[100, 101]));
    assert_eq!(two.keys, vec![key(100), key(101)]);
    assert!(store.graph(3).unwrap().is_none());
    drop(store);

    let cfg = CacheConfig::default();
    let registry = Arc::new(Registry::new(&cfg));
    let mut started = start(&registry, db.clone(), &cfg).unwrap();
    assert_eq!(started.vectors, 20);
    let indexed = started.indexing.take().unwrap().join().unwrap();
    assert_eq!((indexed.scopes, indexed.from_saved_graphs), (1, 1));
    let c = &registry.caches;
    // The graph's 15 and the 5 stored after it.
    assert_eq!(c.semantic.len(), 20);
    for i in [0, 14, 15, 19] {
        let near = c.semantic.nearest(1, &unit(i, 8), |_| true).unwrap();
        assert_eq!(near.key, key(i));
    }
    c.persisted().unwrap().close_blocking(&c.semantic);
    // Scope 2's graph is gone; scope 1's saved again.
    let mut store = Store::open(&db).unwrap();
    assert_eq!(store.count(), (20, 0, 1));
    assert_eq!(store.graph(1).unwrap().unwrap().keys.len(), 20);
}

fn aged(answer: &'static [u8], age: Duration) -> Entry {
    let mut e = Entry::new(Answer::Raw(Bytes::from_static(answer)), "up/m1", 0.002);
    e.stored_at = Instant::now().checked_sub(age).unwrap();
    e
}

fn a_restart_brings_back_all_three_caches(db: Db) {
    let cfg = CacheConfig::default();
    let first = Arc::new(Registry::new(&cfg));
    let started = start(&first, db.clone(), &cfg).unwrap();
    assert_eq!((started.answers, started.tools), (0, 0));
    assert!(started.indexing.is_none());
    let caches = &first.caches;

    // An answer with its place in the semantic index; a parsed one (assembled from a
    // stream); one 30 s old servable for a minute; one 30 s old servable for 10 s.
    let mut semantic = aged(br#"{"id":"sem","choices":[]}"#, Duration::ZERO);
    semantic.embedding = Some(unit(1, 8));
    semantic.query = Some(Arc::from("How do I reset my password?"));
    semantic.scope = Some(7);
    caches.exact.store(1, semantic, HOUR);
    caches.semantic.insert(7, unit(1, 8), 1, |_| None);
    let parsed = serde_json::from_str(r#"{"id":"parsed","choices":[]}"#).unwrap();
    let parsed = Entry::new(Answer::Parsed(parsed), "up/m2", 0.0);
    caches.exact.store(2, parsed, HOUR);
    let old = br#"{"id":"old","choices":[]}"#;
    caches.exact.store(
        3,
        aged(old, Duration::from_secs(30)),
        Duration::from_secs(60),
    );
    caches.exact.store(
        4,
        aged(old, Duration::from_secs(30)),
        Duration::from_secs(10),
    );

    let json = || "application/json".to_string();
    let tools = &caches.tools;
    tools.put(
        "specs",
        "sku-1",
        Bytes::from_static(b"{}"),
        json(),
        Some(HOUR),
    );
    tools.put(
        "specs",
        "gone",
        Bytes::from_static(b"x"),
        json(),
        Some(HOUR),
    );
    assert!(tools.delete("specs", "gone"));
    let moment = Some(Duration::from_millis(1));
    tools.put(
        "price",
        "sku-1",
        Bytes::from_static(b"9.99"),
        json(),
        moment,
    );

    let persist = caches.persisted().unwrap();
    persist.close_blocking(&caches.semantic);
    // Four answers, three tool writes and a delete, and scope 7's graph.
    assert_eq!(persist.stats().written.load(Ordering::Relaxed), 9);
    assert_eq!(persist.stats().dropped.load(Ordering::Relaxed), 0);
    std::thread::sleep(Duration::from_millis(5));

    let second = Arc::new(Registry::new(&cfg));
    let mut started = start(&second, db, &cfg).unwrap();
    assert_eq!(
        (
            started.answers,
            started.vectors,
            started.scopes,
            started.tools
        ),
        (3, 1, 1, 1),
        "{started:?}"
    );
    let indexed = started.indexing.take().unwrap().join().unwrap();
    assert_eq!(
        indexed.from_saved_graphs, 1,
        "the graph saved at the clean stop"
    );
    let c = &second.caches;

    let (hit, age) = c.exact.get(1, HOUR).unwrap();
    assert_eq!(hit.answer.completion().unwrap().id, "sem");
    assert_eq!((hit.served_by.as_str(), hit.cost_usd), ("up/m1", 0.002));
    assert_eq!(hit.query.as_deref(), Some("How do I reset my password?"));
    assert!(age < Duration::from_secs(5), "{age:?}");
    let (hit, _) = c.exact.get(2, HOUR).unwrap();
    assert_eq!(hit.answer.completion().unwrap().id, "parsed");
    // The old answer keeps its age: past a 20 s TTL, within a 40 s one.
    assert!(c.exact.get(3, Duration::from_secs(20)).is_none());
    let (_, age) = c.exact.get(3, Duration::from_secs(40)).unwrap();
    assert!(age >= Duration::from_secs(30) && age < Duration::from_secs(35));
    assert!(
        c.exact.get(4, Duration::MAX).is_none(),
        "expired in the store"
    );

    let near = c.semantic.nearest(7, &unit(1, 8), |_| true).unwrap();
    assert_eq!(near.key, 1);
    assert!(c.semantic.nearest(8, &unit(1, 8), |_| true).is_none());

    let (spec, _) = c.tools.get("specs", "sku-1").unwrap();
    assert_eq!((&spec.value[..], spec.ttl), (&b"{}"[..], HOUR));
    assert_eq!(spec.content_type, "application/json");
    assert!(c.tools.get("specs", "gone").is_none(), "deleted");
    assert!(c.tools.get("price", "sku-1").is_none(), "expired");
    c.persisted().unwrap().close_blocking(&c.semantic);
}

fn loading_keeps_the_newest_within_each_capacity(db: Db) {
    let now = now_ms();
    let mut store = Store::open(&db).unwrap();
    let rows: Vec<AnswerRow> = (0..30u64)
        .map(|i| answer(i, now - 30_000 + i as i64 * 100, 600_000, Some(5)))
        .collect();
    let mut changes = answers(&rows);
    for i in 0..10 {
        changes.push(Change::Tool(tool(
            "ns",
            &i.to_string(),
            now - 10_000 + i * 100,
            600_000,
            "v",
        )));
    }
    store.write(&changes).unwrap();
    drop(store);

    let cfg = CacheConfig {
        max_entries: 20,
        semantic_max_entries: 16,
        tool_max_entries: 4,
        ..CacheConfig::default()
    };
    let registry = Arc::new(Registry::new(&cfg));
    let mut started = start(&registry, db, &cfg).unwrap();
    assert_eq!(
        (started.answers, started.vectors, started.tools),
        (20, 20, 4)
    );
    started.indexing.take().unwrap().join().unwrap();
    let c = &registry.caches;
    assert_eq!(c.exact.entry_count(), 20);
    assert!(c.exact.get(key(9), HOUR).is_none());
    assert!(c.exact.get(key(10), HOUR).is_some());
    assert_eq!(c.semantic.len(), 16, "the scope's bound");
    let newest = c.semantic.nearest(5, &unit(29, 8), |_| true).unwrap();
    assert_eq!(newest.key, key(29));
    assert!(c.tools.get("ns", "5").is_none());
    assert!(c.tools.get("ns", "6").is_some());
    c.persisted().unwrap().close_blocking(&c.semantic);
}

#[test]
fn a_full_queue_drops_and_counts_without_waiting() {
    let (tx, rx) = super::queue(2);
    let persist = Persist::new(tx, None, Default::default(), std::env::temp_dir());
    for i in 0..10 {
        persist.tool_delete("ns", &i.to_string());
    }
    assert_eq!(persist.stats().dropped.load(Ordering::Relaxed), 8);
    // Taken by the writer, the queue has room again.
    assert!(rx.try_recv().is_some());
    persist.tool_delete("ns", "again");
    assert_eq!(persist.stats().dropped.load(Ordering::Relaxed), 8);
    assert_eq!(std::iter::from_fn(|| rx.try_recv()).count(), 2);
    drop(rx);
    persist.tool_delete("ns", "late");
    assert_eq!(persist.stats().dropped.load(Ordering::Relaxed), 9);
}
