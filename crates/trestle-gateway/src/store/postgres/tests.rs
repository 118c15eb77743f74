//! PostgreSQL-only behaviour: migrations, bad URLs, unreachable servers, and the same JSON
//! as SQLite for the same traces. The shared behaviour is in `store::suite`.

use super::*;
use crate::store::pg_server;
use crate::store::sqlite_sample as sample;

#[test]
fn migrations_run_once_and_reopening_keeps_the_traces() {
    let Some(url) = pg_server::database() else {
        return;
    };
    let mut store = PostgresStore::open(&url, 1).unwrap();
    store.write_batch(&[sample("m1", "s1", "c1")]).unwrap();
    assert_eq!(store.migrate().unwrap(), 2);
    drop(store);
    let store = PostgresStore::open(&url, 1).unwrap();
    assert!(store.get("m1").unwrap().is_some());
    let rows: i64 = store
        .pool
        .with(|c| {
            Ok(c.query_one(
                "SELECT count(*) FROM schema_version WHERE component = 'traces' AND version = 2",
                &[],
            )?
            .get(0))
        })
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn the_same_traces_read_back_as_the_same_json_as_sqlite() {
    let Some(url) = pg_server::database() else {
        return;
    };
    let mut pg = PostgresStore::open(&url, 2).unwrap();
    let dir = std::env::temp_dir().join(format!("trestle-pg-same-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut lite = crate::store::SqliteStore::open(&dir.join("t.db")).unwrap();
    let mut rich = sample("same", "s2", "c1");
    rich.flags = vec!["over_budget".into()];
    rich.dropped_params = vec!["seed".into()];
    rich.tenant = Some("acme".into());
    rich.request = Some(crate::store::Body::Raw(bytes::Bytes::from_static(
        br#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
    )));
    let batch = [sample("same", "s1", "c1"), rich];
    let redactor: super::super::Redactor = std::sync::Arc::new(|s: &str| s.replace("hi", "[x]"));
    pg = pg.with_redaction(Some(redactor.clone()));
    lite = lite.with_redaction(Some(redactor));
    pg.write_batch(&batch).unwrap();
    lite.write_batch(&batch).unwrap();
    let (a, b) = (pg.get("same").unwrap(), lite.get("same").unwrap());
    assert_eq!(a, b);
    assert_eq!(
        a.as_ref().unwrap()["requests"][1]["request"]["messages"][0]["content"],
        "[x]"
    );
    let filter = TraceFilter::default();
    let as_json = |s: &dyn TraceStore| serde_json::to_value(s.list(&filter).unwrap()).unwrap();
    assert_eq!(as_json(&pg), as_json(&lite));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_malformed_url_names_the_field() {
    let err = PostgresStore::open("postgres://u@h:notaport/db", 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("store.url:"), "{err}");
}

#[test]
fn an_unreachable_server_names_the_field_and_address() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://trestle:secret@127.0.0.1:{port}/traces?connect_timeout=2");
    let err = PostgresStore::open(&url, 1).err().unwrap().to_string();
    assert!(err.starts_with("store.url:"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
