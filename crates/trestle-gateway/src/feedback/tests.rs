//! Each backend test runs once on a SQLite file and once on a fresh PostgreSQL database
//! (`NAME::sqlite`, `NAME::postgres`), with the traces written by the trace store of the
//! same place, as a gateway writes them.

use super::*;
use crate::store::{PostgresStore, SqliteStore, Trace, TraceFilter, TraceStore};

use crate::db::testing::{on_both_backends, postgres, sqlite};

on_both_backends!(
    feedback_is_kept_with_its_trace_and_read_back,
    tenants_see_only_feedback_on_their_own_traces,
    a_repeated_question_is_recorded_as_a_regeneration,
    negative_feedback_finds_its_traces,
);

fn trace_store(db: &Db) -> Box<dyn TraceStore> {
    match db {
        Db::Sqlite(path) => Box::new(SqliteStore::open(path).unwrap()),
        Db::Postgres(pool) => Box::new(PostgresStore::on(pool.clone()).unwrap()),
    }
}

/// A stored answer of `tenant` in conversation `c1`, from experiment `exp`.
fn answer_trace(trace_id: &str, tenant: &str, answer: &str) -> Trace {
    let mut t = crate::store::sample_trace(trace_id, &format!("s-{trace_id}"), "c1");
    t.tenant = Some(tenant.into());
    t.experiment = Some("exp".into());
    t.variant = Some("b".into());
    t.prompt_version = Some("support@2".into());
    t.response = Some(crate::store::Body::Raw(bytes::Bytes::from(
        json!({"choices": [{"message": {"role": "assistant", "content": answer}}]}).to_string(),
    )));
    t
}

fn thumbs(id: &str, trace_id: &str, up: bool, meta: TraceMeta) -> Row {
    Row {
        id: id.into(),
        trace_id: trace_id.into(),
        name: "thumbs".into(),
        value_num: Some(f64::from(u8::from(up))),
        value_text: None,
        negative: !up,
        comment: Some("ok".into()),
        correction: None,
        source: "api",
        meta,
    }
}

fn feedback_is_kept_with_its_trace_and_read_back(db: Db) {
    trace_store(&db)
        .write_batch(&[answer_trace("t1", "acme", "Paris")])
        .unwrap();
    let fb = Feedback::new(Some(db.clone()));
    // Not in the recent cache: read from the store's requests.
    let meta = fb.meta("t1").unwrap().unwrap();
    assert_eq!(
        (
            meta.route.as_str(),
            meta.conversation_id.as_deref(),
            meta.experiment.as_deref(),
            meta.variant.as_deref(),
            meta.prompt_version.as_deref(),
            meta.tenant.as_deref()
        ),
        (
            "chat",
            Some("c1"),
            Some("exp"),
            Some("b"),
            Some("support@2"),
            Some("acme")
        )
    );
    assert!(fb.meta("nope").unwrap().is_none());
    assert_eq!(fb.answer("t1").as_deref(), Some("Paris"));
    assert_eq!(fb.answer("nope"), None);
    // A retry with the same id keeps one row.
    assert!(fb.insert(&thumbs("f1", "t1", false, meta.clone())).unwrap());
    assert!(!fb.insert(&thumbs("f1", "t1", true, meta.clone())).unwrap());
    let category = Row {
        id: "f2".into(),
        name: "reason".into(),
        value_num: None,
        value_text: Some("wrong".into()),
        correction: Some("Lyon".into()),
        ..thumbs("", "t1", false, meta)
    };
    assert!(fb.insert(&category).unwrap());
    let by_trace = fb.list(Some("t1"), None).unwrap();
    assert_eq!(by_trace, fb.list(None, Some("c1")).unwrap());
    assert_eq!(by_trace.len(), 2);
    let first = &by_trace[0];
    assert_eq!(
        (
            &first["id"],
            &first["value"],
            &first["negative"],
            &first["comment"],
            &first["source"]
        ),
        (
            &json!("f1"),
            &json!(0.0),
            &json!(true),
            &json!("ok"),
            &json!("api")
        )
    );
    assert_eq!(
        (
            &first["route"],
            &first["experiment"],
            &first["variant"],
            &first["prompt_version"]
        ),
        (
            &json!("chat"),
            &json!("exp"),
            &json!("b"),
            &json!("support@2")
        )
    );
    assert!(first["created_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(
        (&by_trace[1]["value"], &by_trace[1]["correction"]),
        (&json!("wrong"), &json!("Lyon"))
    );
    assert!(fb.list(Some("nope"), None).unwrap().is_empty());
    // Another gateway on the same place reads the same rows.
    assert_eq!(
        Feedback::new(Some(db)).list(Some("t1"), None).unwrap(),
        by_trace
    );
}

fn tenants_see_only_feedback_on_their_own_traces(db: Db) {
    trace_store(&db)
        .write_batch(&[
            answer_trace("t-acme", "acme", "a"),
            answer_trace("t-beta", "beta", "b"),
        ])
        .unwrap();
    let fb = Feedback::new(Some(db));
    for (id, trace) in [("f-acme", "t-acme"), ("f-beta", "t-beta")] {
        let meta = fb.meta(trace).unwrap().unwrap();
        fb.insert(&thumbs(id, trace, true, meta)).unwrap();
    }
    let rows = fb.list(None, Some("c1")).unwrap();
    assert_eq!(rows.len(), 2);
    let ids = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(fb.visible(rows.clone(), Some("acme")).unwrap()),
        ["f-acme"]
    );
    assert_eq!(
        ids(fb.visible(rows.clone(), Some("beta")).unwrap()),
        ["f-beta"]
    );
    assert!(fb.visible(rows.clone(), Some("gamma")).unwrap().is_empty());
    assert_eq!(fb.visible(rows, None).unwrap().len(), 2);
    // Feedback on another tenant's trace is refused as if the trace were absent.
    let beta = fb.meta("t-beta").unwrap().unwrap();
    assert!(!beta.visible_to(Some("acme")) && beta.visible_to(Some("beta")));
    assert!(beta.visible_to(None));
}

fn a_repeated_question_is_recorded_as_a_regeneration(db: Db) {
    trace_store(&db)
        .write_batch(&[answer_trace("t1", "acme", "Paris")])
        .unwrap();
    let fb = Feedback::new(Some(db));
    fb.question("c1", "capital of France?", "t1");
    fb.question("c1", "  capital of France?\n", "t2");
    // A new question is not a regeneration.
    fb.question("c1", "and of Italy?", "t3");
    let rows = fb.list(None, Some("c1")).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            &rows[0]["id"],
            &rows[0]["trace_id"],
            &rows[0]["name"],
            &rows[0]["negative"],
            &rows[0]["source"],
            &rows[0]["experiment"]
        ),
        (
            &json!("t1:regenerated:t2"),
            &json!("t1"),
            &json!("regenerated"),
            &json!(true),
            &json!("implicit"),
            &json!("exp")
        )
    );
}

/// The trace list's `feedback=negative` filter reads `negative` from this table (a BOOLEAN
/// on PostgreSQL, 0 or 1 on SQLite).
fn negative_feedback_finds_its_traces(db: Db) {
    let mut traces = trace_store(&db);
    traces
        .write_batch(&[
            answer_trace("bad", "acme", "a"),
            answer_trace("good", "acme", "b"),
            answer_trace("none", "acme", "c"),
        ])
        .unwrap();
    let fb = Feedback::new(Some(db));
    for (trace, up) in [("bad", false), ("good", true)] {
        let meta = fb.meta(trace).unwrap().unwrap();
        fb.insert(&thumbs(trace, trace, up, meta)).unwrap();
    }
    let found = |which: &str| -> Vec<String> {
        let filter = TraceFilter {
            feedback: Some(which.into()),
            ..Default::default()
        };
        let mut ids: Vec<String> = traces
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|t| t.trace_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(found("negative"), ["bad"]);
    assert_eq!(found("positive"), ["good"]);
    assert_eq!(found("any"), ["bad", "good"]);
}

#[test]
fn without_a_store_feedback_says_what_to_enable() {
    let fb = Feedback::new(None);
    assert!(fb.meta("t1").unwrap().is_none());
    fb.remember("t1", TraceMeta::default());
    assert!(fb.meta("t1").unwrap().is_some());
    let e = fb
        .insert(&thumbs("f", "t1", true, TraceMeta::default()))
        .unwrap_err();
    assert!(e.contains("[store] enabled"), "{e}");
    // Regenerations are not tracked without a store.
    fb.question("c", "q", "t1");
    fb.question("c", "q", "t2");
}

/// PostgreSQL's `feedback` has SQLite's column names, so readers (the conversation view,
/// trace filters) use the same SQL on both.
#[test]
fn feedback_has_the_same_columns_on_both_backends() {
    let Some(Db::Postgres(pool)) = postgres() else {
        return;
    };
    drop(Feedback::new(Some(Db::Postgres(pool.clone()))));
    let pg: Vec<(String, String)> = pool
        .with(|c| {
            Ok(c.query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_name = 'feedback' ORDER BY ordinal_position",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
        .unwrap();
    let Db::Sqlite(path) = sqlite("columns") else {
        unreachable!()
    };
    drop(Feedback::new(Some(Db::Sqlite(path.clone()))));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info('feedback') ORDER BY cid")
        .unwrap();
    let lite: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = pg.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, lite);
    let negative = pg.iter().find(|(n, _)| n == "negative").unwrap();
    assert_eq!(negative.1, "boolean");
}

/// The pipeline calls `question` on an async task: on PostgreSQL the regeneration is
/// written on a blocking thread, and `Feedback::new` (in `build_state`) migrates on a
/// thread of its own.
#[test]
fn on_postgres_feedback_works_from_inside_the_async_runtime() {
    let Some(db) = postgres() else {
        return;
    };
    trace_store(&db)
        .write_batch(&[answer_trace("t1", "acme", "Paris")])
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fb = Arc::new(rt.block_on(async { Feedback::new(Some(db)) }));
    let f = fb.clone();
    rt.block_on(async move {
        f.question("c1", "capital of France?", "t1");
        f.question("c1", "capital of France?", "t2");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = fb.list(Some("t1"), None).unwrap();
        if rows.len() == 1 {
            assert_eq!(rows[0]["name"], "regenerated");
            assert_eq!(rows[0]["experiment"], "exp");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no regeneration row");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Trace ids are each seen once: a full `recent` must still take the newest (moka's default
/// admission would keep the oldest and turn the newest away), and hold no more than asked.
#[test]
fn a_full_recent_cache_keeps_the_newest_traces() {
    let fb = Feedback::new(None).remembering(64);
    for i in 0..1_000 {
        fb.remember(&format!("t{i}"), TraceMeta::default());
    }
    for i in 936..1_000 {
        assert!(
            fb.meta(&format!("t{i}")).unwrap().is_some(),
            "t{i} was turned away"
        );
    }
    assert!(fb.meta("t935").unwrap().is_none());
    assert_eq!(fb.recent.len(), 64);
    // A trace remembered twice (a retry of the record) is one entry.
    fb.remember("t999", TraceMeta::default());
    assert_eq!(fb.recent.len(), 64);
    assert!(fb.meta("t936").unwrap().is_some());
}
