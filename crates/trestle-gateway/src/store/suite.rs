//! The behaviour every [`TraceStore`] backend must show, written once over
//! `&mut dyn TraceStore` and run against each backend by [`store_suite!`]: round trips,
//! every filter, ordering, limits, the shape of `get`'s JSON, large batches.

use serde_json::json;

use super::sqlite_sample as sample;
use super::{Trace, TraceFilter, TraceStore};
use crate::guard::GuardRecord;

fn list(store: &dyn TraceStore, filter: TraceFilter) -> Vec<String> {
    store
        .list(&filter)
        .unwrap()
        .into_iter()
        .map(|s| s.trace_id)
        .collect()
}

fn at(trace_id: &str, started_at_ms: i64) -> Trace {
    let mut t = sample(trace_id, &format!("s-{trace_id}"), "c1");
    t.started_at_ms = started_at_ms;
    t
}

fn guard(name: &str, outcome: &str) -> GuardRecord {
    GuardRecord {
        guardrail: name.into(),
        kind: "pii".into(),
        stage: "input".into(),
        action: "redact".into(),
        outcome: outcome.into(),
        entities: [("email".to_string(), 2u32)].into_iter().collect(),
        detail: None,
        latency_ms: 0.25,
    }
}

pub(crate) fn round_trip(store: &mut dyn TraceStore) {
    store
        .write_batch(&[
            sample("t1", "s1", "c1"),
            sample("t2", "s2", "c2"),
            sample("t1", "s3", "c1"),
        ])
        .unwrap();
    let got = store.get("t1").unwrap().unwrap();
    assert_eq!(got["object"], "trace");
    assert_eq!(got["trace_id"], "t1");
    let requests = got["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["span_id"], "s1");
    assert_eq!(requests[1]["span_id"], "s3");
    let first = &requests[0];
    assert_eq!(first["request"]["model"], "chat");
    assert_eq!(first["response"], "not json");
    assert_eq!(first["attempts"][0]["http_status"], 500);
    assert_eq!(first["attempts"][0]["error"], "boom");
    assert_eq!(first["attempts"][0]["retryable"], true);
    assert_eq!(first["tokens_cached"], 2);
    assert_eq!(first["stream"], true);
    assert_eq!(first["capability_level"], 4);
    assert_eq!(first["guardrails"], json!([]));
    assert_eq!(first["dropped_params"], json!([]));
    assert!(store.get("nope").unwrap().is_none());
    store.write_batch(&[]).unwrap();
}

/// Every key of a request in `get`, in order: a client (and the UI) sees the same object
/// from every backend.
pub(crate) fn get_json_shape(store: &mut dyn TraceStore) {
    let mut t = sample("shape", "s1", "c1");
    t.guardrails = vec![guard("pii", "redacted")];
    t.dropped_params = vec!["logit_bias".into(), "seed".into()];
    t.flags = vec!["tool_loop".into()];
    t.confidence = Some(0.75);
    t.cache_similarity = Some(0.5);
    t.prompt_version = Some("greet@2".into());
    t.experiment = Some("e1".into());
    t.variant = Some("b".into());
    t.input_budget = Some(super::InputBudget {
        tokenizer: "o200k_base".into(),
        tokens_before: 5120,
        tokens_after: 3990,
        trimmed_messages: 4,
    });
    t.tenant = Some("acme".into());
    t.key_id = Some("k1".into());
    t.attempts.push(super::Attempt {
        span_id: "a2".into(),
        target: "backup/m1".into(),
        provider: "backup".into(),
        model: "m1".into(),
        offset_ms: 4.5,
        latency_ms: 6.0,
        ttft_ms: Some(1.5),
        status: "ok".into(),
        http_status: None,
        error: None,
        retryable: false,
        cold_start: false,
        tokens_in: 10,
        tokens_out: 5,
        tokens_cached: 2,
        cost_usd: 0.001,
    });
    store.write_batch(&[t]).unwrap();
    let got = store.get("shape").unwrap().unwrap();
    let r = &got["requests"][0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "trace_id",
            "started_at_ms",
            "duration_ms",
            "ttft_ms",
            "route",
            "conversation_id",
            "user_id",
            "stream",
            "status",
            "outcome",
            "fallback_level",
            "served_by",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "attempts",
            "capability_level",
            "cache",
            "cost_saved_usd",
            "flags",
            "span_id",
            "parent_span_id",
            "class",
            "error",
            "tokens_cached",
            "request",
            "response",
            "cache_similarity",
            "guardrails",
            "confidence",
            "dropped_params",
            "prompt_version",
            "experiment",
            "variant",
            "response_model",
            "system_fingerprint",
            "input_tokens_before",
            "input_tokens_after",
            "trimmed_messages",
            "tokenizer",
            "tenant",
            "key_id",
        ]
    );
    assert_eq!(r["flags"], json!(["tool_loop"]));
    assert_eq!(r["dropped_params"], json!(["logit_bias", "seed"]));
    assert_eq!(r["guardrails"][0]["outcome"], "redacted");
    assert_eq!(r["guardrails"][0]["entities"]["email"], 2);
    assert_eq!(r["guardrails"][0]["latency_ms"], 0.25);
    assert_eq!(r["confidence"], 0.75);
    assert_eq!(r["input_tokens_before"], 5120);
    assert_eq!(r["trimmed_messages"], 4);
    assert_eq!(r["tokenizer"], "o200k_base");
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(r["attempts"][1]["ttft_ms"], 1.5);
    assert!(r["attempts"][1]["http_status"].is_null());
    assert!(r["parent_span_id"].is_null());
    assert!(r["response_model"].is_null());
}

pub(crate) fn filters(store: &mut dyn TraceStore) {
    let now = super::now_ms();
    let mut a = at("a", now - 1_000);
    a.route = "chat".into();
    a.user_id = Some("ua".into());
    a.tenant = Some("acme".into());
    a.guardrails = vec![guard("pii", "redacted"), guard("tox", "pass")];
    a.flags = vec!["tool_loop".into(), "grounding".into()];
    a.experiment = Some("e1".into());
    a.prompt_version = Some("greet@1".into());
    let mut b = at("b", now - 2 * 3_600_000);
    b.route = "code".into();
    b.outcome = "error".into();
    b.fallback_level = "primary".into();
    b.conversation_id = Some("c2".into());
    b.guardrails = vec![guard("tox", "pass")];
    b.flags = vec!["tool_loop_x".into()];
    let mut c = at("c", now - 3 * 86_400_000);
    c.user_id = None;
    c.conversation_id = None;
    c.tenant = Some("other".into());
    store.write_batch(&[a, b, c]).unwrap();

    let f = TraceFilter::default;
    assert_eq!(list(store, f()), ["a", "b", "c"]);
    let one = |filter: TraceFilter| list(store, filter);
    assert_eq!(
        one(TraceFilter {
            trace_id: Some("b".into()),
            ..f()
        }),
        ["b"]
    );
    assert_eq!(
        one(TraceFilter {
            conversation_id: Some("c1".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            user_id: Some("ua".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            route: Some("code".into()),
            ..f()
        }),
        ["b"]
    );
    assert_eq!(
        one(TraceFilter {
            outcome: Some("error".into()),
            ..f()
        }),
        ["b"]
    );
    assert_eq!(
        one(TraceFilter {
            fallback_level: Some("model".into()),
            ..f()
        }),
        ["a", "c"]
    );
    assert_eq!(
        one(TraceFilter {
            experiment: Some("e1".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            prompt_version: Some("greet@1".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            tenant: Some("other".into()),
            ..f()
        }),
        ["c"]
    );
    // An empty value does not narrow.
    assert_eq!(
        one(TraceFilter {
            route: Some(String::new()),
            ..f()
        })
        .len(),
        3
    );
    // Time bounds: a window back from now, and Unix milliseconds.
    assert_eq!(
        one(TraceFilter {
            since: Some("1h".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            since: Some("1d".into()),
            until: Some("1h".into()),
            ..f()
        }),
        ["b"]
    );
    assert_eq!(
        one(TraceFilter {
            until: Some((now - 86_400_000).to_string()),
            ..f()
        }),
        ["c"]
    );
    assert!(
        store
            .list(&TraceFilter {
                since: Some("soon".into()),
                ..f()
            })
            .is_err()
    );
    // Guardrails that did more than pass.
    assert_eq!(
        one(TraceFilter {
            guardrail: Some("any".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            guardrail: Some("pii".into()),
            ..f()
        }),
        ["a"]
    );
    assert!(
        one(TraceFilter {
            guardrail: Some("tox".into()),
            ..f()
        })
        .is_empty()
    );
    // Flags: any, or one exactly (not a prefix of another).
    assert_eq!(
        one(TraceFilter {
            flag: Some("any".into()),
            ..f()
        }),
        ["a", "b"]
    );
    assert_eq!(
        one(TraceFilter {
            flag: Some("tool_loop".into()),
            ..f()
        }),
        ["a"]
    );
    assert_eq!(
        one(TraceFilter {
            flag: Some("grounding".into()),
            ..f()
        }),
        ["a"]
    );
    // No feedback table yet: nothing has feedback; a bad kind is an error.
    assert!(
        one(TraceFilter {
            feedback: Some("negative".into()),
            ..f()
        })
        .is_empty()
    );
    assert!(
        store
            .list(&TraceFilter {
                feedback: Some("maybe".into()),
                ..f()
            })
            .is_err()
    );
    // Filters combine.
    assert_eq!(
        one(TraceFilter {
            route: Some("chat".into()),
            tenant: Some("acme".into()),
            flag: Some("tool_loop".into()),
            ..f()
        }),
        ["a"]
    );
    assert!(
        one(TraceFilter {
            route: Some("code".into()),
            tenant: Some("acme".into()),
            ..f()
        })
        .is_empty()
    );
}

pub(crate) fn ordering_and_limits(store: &mut dyn TraceStore) {
    store
        .write_batch(&[at("old", 1_000_000_000_100), at("mid", 1_000_000_000_200)])
        .unwrap();
    // Same start time: the one written later comes first.
    store
        .write_batch(&[at("tie1", 1_000_000_000_300), at("tie2", 1_000_000_000_300)])
        .unwrap();
    store.write_batch(&[at("tie3", 1_000_000_000_300)]).unwrap();
    let all = list(store, TraceFilter::default());
    assert_eq!(all, ["tie3", "tie2", "tie1", "mid", "old"]);
    let limited = |limit| {
        list(
            store,
            TraceFilter {
                limit: Some(limit),
                ..Default::default()
            },
        )
    };
    assert_eq!(limited(2), ["tie3", "tie2"]);
    // At least one, at most 1,000.
    assert_eq!(limited(0), ["tie3"]);
    assert_eq!(limited(5_000).len(), 5);
    let s = &store.list(&TraceFilter::default()).unwrap()[0];
    assert_eq!(s.status, 200);
    assert_eq!(s.tokens_in, 10);
    assert_eq!(s.attempts, 1);
    assert_eq!(s.capability_level, 4);
    assert_eq!(s.served_by.as_deref(), Some("backup/m1"));
}

/// A batch larger than one statement's parameters allow (PostgreSQL: 65,535).
pub(crate) fn large_batch(store: &mut dyn TraceStore) {
    let batch: Vec<Trace> = (0..1_700)
        .map(|i| at(&format!("big{i}"), 1_000_000_000_000 + i))
        .collect();
    store.write_batch(&batch).unwrap();
    let got = list(
        store,
        TraceFilter {
            limit: Some(1000),
            ..Default::default()
        },
    );
    assert_eq!(got.len(), 1000);
    assert_eq!(got[0], "big1699");
    let t = store.get("big1234").unwrap().unwrap();
    assert_eq!(t["requests"][0]["attempts"][0]["span_id"], "a1");
}

/// Runs the suite against a backend: `$open` makes a fresh, empty store.
macro_rules! store_suite {
    ($open:expr) => {
        #[test]
        fn round_trip() {
            if let Some(mut s) = $open {
                crate::store::suite::round_trip(&mut *s);
            }
        }
        #[test]
        fn get_json_shape() {
            if let Some(mut s) = $open {
                crate::store::suite::get_json_shape(&mut *s);
            }
        }
        #[test]
        fn filters() {
            if let Some(mut s) = $open {
                crate::store::suite::filters(&mut *s);
            }
        }
        #[test]
        fn ordering_and_limits() {
            if let Some(mut s) = $open {
                crate::store::suite::ordering_and_limits(&mut *s);
            }
        }
        #[test]
        fn large_batch() {
            if let Some(mut s) = $open {
                crate::store::suite::large_batch(&mut *s);
            }
        }
    };
}
pub(crate) use store_suite;

mod sqlite {
    use crate::store::{SqliteStore, TraceStore};

    /// A SQLite store in a folder of its own, removed when the store is dropped.
    struct Scratch(SqliteStore, std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.1).ok();
        }
    }

    impl TraceStore for Scratch {
        fn write_batch(&mut self, traces: &[crate::store::Trace]) -> anyhow::Result<()> {
            self.0.write_batch(traces)
        }
        fn get(&self, trace_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
            self.0.get(trace_id)
        }
        fn list(
            &self,
            filter: &crate::store::TraceFilter,
        ) -> anyhow::Result<Vec<crate::store::TraceSummary>> {
            self.0.list(filter)
        }
    }

    fn open() -> Option<Box<dyn TraceStore>> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trestle-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir.join("t.db")).unwrap();
        Some(Box::new(Scratch(store, dir)))
    }

    super::store_suite!(open());

    #[test]
    fn reopening_migrates_nothing_and_keeps_the_traces() {
        let dir = std::env::temp_dir().join(format!("trestle-suite-re-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = SqliteStore::open(&dir.join("t.db")).unwrap();
        store
            .write_batch(&[crate::store::sample_trace("r1", "s1", "c1")])
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&dir.join("t.db")).unwrap();
        assert!(store.get("r1").unwrap().is_some());
        std::fs::remove_dir_all(dir).ok();
    }
}

mod postgres {
    use crate::store::{PostgresStore, TraceStore};

    fn open() -> Option<Box<dyn TraceStore>> {
        let url = crate::store::pg_server::database()?;
        Some(Box::new(PostgresStore::open(&url, 2).unwrap()))
    }

    super::store_suite!(open());
}

/// The read views (what the API and the UI show) on one place: traces through the
/// recorder's writer, app spans through the OTLP span store, read back through the reader.
fn views(db: crate::db::Db) {
    let mut writer = super::open_writer(&db, None).unwrap();
    let reader = super::open_reader(&db).unwrap();
    let mut traces = Vec::new();
    for (i, tenant) in ["a", "a", "b"].iter().enumerate() {
        let mut t = at(&format!("t{i}"), 1_700_000_000_000 + i as i64);
        t.conversation_id = Some("conv".into());
        t.tenant = Some(tenant.to_string());
        t.class = "sync".into();
        t.duration_ms = 100.0 * (i + 1) as f64;
        t.attempts[0].cold_start = i == 2;
        t.request = Some(super::Body::Raw(bytes::Bytes::from(
            json!({"messages": [{"role": "user", "content": format!("question {i}")}]}).to_string(),
        )));
        t.response = Some(super::Body::Raw(bytes::Bytes::from(
            json!({"choices": [{"message": {"role": "assistant", "content": format!("answer {i}")}}]})
                .to_string(),
        )));
        traces.push(t);
    }
    writer.write_batch(&traces).unwrap();

    let span = |trace: &str, id: &str, status: i32| crate::otlp::AppSpan {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: None,
        name: "tool.search".into(),
        kind: 1,
        service: Some("agent".into()),
        start_ms: 1_700_000_000_000.5,
        end_ms: 1_700_000_000_010.25,
        status_code: status,
        status_message: String::new(),
        attributes: json!({"gen_ai.operation.name": "execute_tool", "n": 3})
            .as_object()
            .unwrap()
            .clone(),
        events: vec![json!({"name": "input", "attributes": {"q": "x"}})],
        conversation_id: None,
    };
    let spans = crate::otlp::SpanStore::new(Some(db.clone()));
    spans.write(&[span("t0", "p1", 0)], Some("a")).unwrap();
    spans.write(&[span("t1", "p2", 2)], Some("a")).unwrap();
    // Sent twice: kept once.
    spans.write(&[span("t1", "p2", 2)], Some("a")).unwrap();

    let turns = reader.conversation("conv", None).unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[0].question.as_deref(), Some("question 0"));
    assert_eq!(turns[2].answer.as_deref(), Some("answer 2"));
    assert_eq!(turns[1].tokens_in, 10);
    assert_eq!(reader.conversation("conv", Some("a")).unwrap().len(), 2);
    assert!(reader.conversation("conv", Some("c")).unwrap().is_empty());

    let app = reader.app_spans("t0").unwrap();
    assert_eq!(app.len(), 1);
    assert_eq!(app[0]["attributes"]["n"], 3);
    assert_eq!(app[0]["events"][0]["attributes"]["q"], "x");
    assert_eq!(app[0]["start_ms"], 1_700_000_000_000.5);
    assert_eq!(app[0]["tenant"], "a");
    assert_eq!(reader.conversation_spans("conv", None).unwrap().len(), 2);
    assert!(
        reader
            .conversation_spans("conv", Some("b"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(reader.traces_with_failed_spans(10).unwrap(), vec!["t1"]);

    let stats = reader.route_stats(0, i64::MAX).unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].requests, 3);
    assert_eq!(stats[0].cold_starts, 1);
    assert_eq!(stats[0].p50_ms, Some(100.0));
    assert_eq!(stats[0].cold_p50_ms, Some(300.0));
    assert_eq!(reader.distinct("route").unwrap(), vec!["chat"]);
    assert!(reader.distinct("request").is_err());
}

#[test]
fn views_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("trestle-views-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    views(crate::db::Db::Sqlite(dir.join("t.db")));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn views_on_postgres() {
    let Some(url) = super::pg_server::database() else {
        return;
    };
    let pool = crate::db::PgPool::open(&url, 2).unwrap();
    views(crate::db::Db::Postgres(std::sync::Arc::new(pool)));
}
