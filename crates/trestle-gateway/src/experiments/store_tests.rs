//! Stops and readouts over a real store, the same test bodies on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trestle_core::Config;
use trestle_eval::assertion::Outcome;
use trestle_eval::online::OnlineScore;

use super::*;
use crate::db::PgPool;
use crate::store::{PostgresStore, SqliteStore, Trace, TraceStore};

fn sqlite() -> Option<(Db, Box<dyn TraceStore>)> {
    let dir = std::env::temp_dir().join(format!(
        "trestle-experiments-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let path = dir.join("t.db");
    let writer = SqliteStore::open(&path).unwrap();
    Some((Db::Sqlite(path), Box::new(writer)))
}

fn postgres() -> Option<(Db, Box<dyn TraceStore>)> {
    let url = crate::store::pg_server::database()?;
    let pool = Arc::new(PgPool::open(&url, 2).unwrap());
    let writer = PostgresStore::on(pool.clone()).unwrap();
    Some((Db::Postgres(pool), Box::new(writer)))
}

fn stops_outlive_a_restart_and_reach_other_gateways(db: Db) {
    let states = ExperimentStates::new(Some(db.clone()));
    states.stop("tone", "canary", "error 30.0% against control's 2.0%");
    assert!(states.is_stopped("tone", "canary"));
    // A restart reads the stop back.
    let again = ExperimentStates::new(Some(db.clone()));
    assert!(again.is_stopped("tone", "canary"));
    assert_eq!(
        again.stops("tone")[0].reason,
        "error 30.0% against control's 2.0%"
    );
    assert!(!again.is_stopped("tone", "control"));
    // Another gateway's stop shows after a refresh, once.
    let other = ExperimentStates::new(Some(db.clone()));
    other.stop("tone", "bold", "latency_p99 worse");
    other.stop("tone", "bold", "latency_p99 worse again");
    assert!(!again.is_stopped("tone", "bold"));
    again.refresh().unwrap();
    again.refresh().unwrap();
    assert!(again.is_stopped("tone", "bold"));
    assert_eq!(again.stops("tone").len(), 2);
    let restarted = ExperimentStates::new(Some(db));
    let reasons: Vec<String> = restarted
        .stops("tone")
        .into_iter()
        .filter(|s| s.variant == "bold")
        .map(|s| s.reason)
        .collect();
    assert_eq!(reasons, vec!["latency_p99 worse again".to_string()]);
}

#[test]
fn stops_on_sqlite() {
    if let Some((db, _)) = sqlite() {
        stops_outlive_a_restart_and_reach_other_gateways(db);
    }
}

#[test]
fn stops_on_postgres() {
    if let Some((db, _)) = postgres() {
        stops_outlive_a_restart_and_reach_other_gateways(db);
    }
}

/// The gateway builds its states on the async runtime and stops variants on the request
/// path: on PostgreSQL neither may run the client on the runtime's threads.
#[test]
fn stops_on_postgres_from_inside_the_async_runtime() {
    let Some((db, _)) = postgres() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let states = rt.block_on(async {
        let states = ExperimentStates::new(Some(db.clone()));
        states.stop("tone", "canary", "error");
        assert!(states.is_stopped("tone", "canary"));
        states
    });
    drop(states);
    let reader = ExperimentStates::new(Some(db));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_stopped("tone", "canary") {
        assert!(
            Instant::now() < deadline,
            "the stop never reached the store"
        );
        std::thread::sleep(Duration::from_millis(50));
        reader.refresh().unwrap();
    }
}

fn config() -> Config {
    let mut config = Config::builtin();
    config.experiments.insert(
        "tone".into(),
        toml::from_str(
            "route = \"chat\"\nvariants = { control = \"p@1\", concise = \"p@2\" }\n\
             metrics = [\"thumbs\", \"error\", \"fallback\", \"guardrail\", \"latency_ms\", \"cost_usd\", \
             \"regenerated\", \"online_eval\", \"quality_engagement\", \"stars\"]",
        )
        .unwrap(),
    );
    config.feedback.insert(
        "thumbs".into(),
        toml::from_str("type = \"boolean\"").unwrap(),
    );
    config.feedback.insert(
        "stars".into(),
        toml::from_str("type = \"number\"\nmin = 1\nmax = 5").unwrap(),
    );
    config
}

/// One request of a variant: the `i`th, some failing, falling back or flagged.
fn request(variant: &str, i: usize) -> Trace {
    let mut t = crate::store::sample_trace(&format!("{variant}-{i}"), "s", "c");
    t.started_at_ms = 1_700_000_000_000 + i as i64;
    t.experiment = Some("tone".into());
    t.variant = Some(variant.into());
    t.duration_ms = 100.0 + i as f64;
    t.cost_usd = 0.001 * (1 + i % 3) as f64;
    let concise = variant == "concise";
    t.status = if i < if concise { 8 } else { 2 } {
        502
    } else {
        200
    };
    t.fallback_level = match i % 10 {
        0 if concise => "target".into(),
        1 => "model".into(),
        _ => "primary".into(),
    };
    if concise && i == 5 {
        t.guardrails = vec![crate::guard::GuardRecord {
            guardrail: "pii".into(),
            kind: "pii".into(),
            stage: "output".into(),
            action: "block".into(),
            outcome: "blocked".into(),
            entities: Default::default(),
            detail: None,
            latency_ms: 0.1,
        }];
    }
    t
}

/// Feedback rows (trace, name, value, negative, source) of a variant.
type FeedbackRow = (String, &'static str, f64, bool, &'static str);

fn insert_feedback(db: &Db, variant: &str, rows: &[FeedbackRow]) {
    let sql = "INSERT INTO feedback (id, trace_id, name, value_num, negative, source, created_at_ms, experiment, variant)";
    match db {
        Db::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            for (i, (trace, name, value, negative, source)) in rows.iter().enumerate() {
                conn.execute(
                    &format!("{sql} VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 'tone', ?7)"),
                    rusqlite::params![
                        format!("{variant}-f{i}"),
                        trace,
                        name,
                        value,
                        negative,
                        source,
                        variant
                    ],
                )
                .unwrap();
            }
        }
        Db::Postgres(pool) => pool
            .with(|c| {
                for (i, (trace, name, value, negative, source)) in rows.iter().enumerate() {
                    c.execute(
                        &format!("{sql} VALUES ($1, $2, $3, $4, $5, $6, 0, 'tone', $7)"),
                        &[
                            &format!("{variant}-f{i}"),
                            trace,
                            name,
                            value,
                            negative,
                            source,
                            &variant,
                        ],
                    )?;
                }
                Ok(())
            })
            .unwrap(),
    }
}

/// Fills the store with both variants' traffic, feedback and online evals, and reads the
/// readout (without the figures that depend on the clock).
fn readout_of_a_filled_store(db: Db, mut writer: Box<dyn TraceStore>) -> Value {
    let states = ExperimentStates::new(Some(db.clone()));
    let config = config();
    // Nothing recorded yet: no traffic, and no feedback table.
    let empty = readout(&db, &config, "tone", &states).unwrap();
    assert_eq!(empty["variants"][0]["traffic"]["requests"], 0);
    assert!(empty["metrics"].get("thumbs").is_none(), "{empty:#}");
    drop(crate::feedback::Feedback::new(Some(db.clone())));
    let scores = crate::evals::OnlineScores::open(&db).unwrap();
    for (variant, n, thumbs_up) in [("control", 40, 15), ("concise", 40, 19)] {
        let traces: Vec<Trace> = (0..n).map(|i| request(variant, i)).collect();
        writer.write_batch(&traces).unwrap();
        let mut rows: Vec<FeedbackRow> = (0..20)
            .map(|i| {
                let up = i < thumbs_up;
                let value = if up { 1.0 } else { 0.0 };
                (format!("{variant}-{i}"), "thumbs", value, !up, "api")
            })
            .collect();
        rows.extend((0..5).map(|i| {
            (
                format!("{variant}-{i}"),
                "stars",
                (i + 1) as f64,
                i < 2,
                "api",
            )
        }));
        rows.push((format!("{variant}-1"), "regenerated", 1.0, true, "detector"));
        insert_feedback(&db, variant, &rows);
        let evals: Vec<OnlineScore> = (0..10)
            .map(|i| OnlineScore {
                trace_id: format!("{variant}-{i}"),
                at_ms: 1_700_000_000_000,
                route: "chat".into(),
                prompt_version: None,
                category: "default".into(),
                outcomes: vec![Outcome::new(
                    "contains",
                    variant == "concise" || i < 8,
                    None,
                    "",
                )],
            })
            .collect();
        scores.insert(&evals).unwrap();
    }
    states.stop("tone", "concise", "error 20.0% against control's 5.0%");
    let mut r = readout(&db, &config, "tone", &states).unwrap();
    assert_eq!(r["status"], "stopped");
    assert_eq!(r["control"], "control");
    let concise = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "concise")
        .unwrap()
        .clone();
    let traffic = &concise["traffic"];
    assert_eq!(traffic["requests"], 40);
    assert_eq!(traffic["error_rate"], 0.2);
    assert_eq!(traffic["fallback_rate"], 0.1, "{traffic}");
    assert_eq!(traffic["guardrail_rate"], 0.025);
    assert_eq!(traffic["latency_p50_ms"], 119.0);
    assert_eq!(
        concise["stopped"]["reason"],
        "error 20.0% against control's 5.0%"
    );
    let arm = |metric: &str, variant: &str| -> Value {
        r["metrics"][metric]["variants"]
            .as_array()
            .unwrap_or_else(|| panic!("no metric {metric}: {r:#}"))
            .iter()
            .find(|v| v["name"] == variant)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            arm("thumbs", "control")["n"].clone(),
            arm("thumbs", "control")["mean"].clone()
        ),
        (20.into(), 0.75.into())
    );
    assert_eq!(arm("thumbs", "concise")["mean"], 0.95);
    assert_eq!(arm("stars", "concise")["mean"], 3.0);
    assert_eq!(arm("error", "control")["mean"], 0.05);
    assert_eq!(arm("regenerated", "concise")["mean"], 1.0 / 40.0);
    assert_eq!(arm("online_eval", "control")["mean"], 0.8);
    // Scored answers with positive explicit feedback: control's passing 0..8 all got thumbs
    // up (and stars 3..5 for 2..5), concise's 0..10.
    assert_eq!(arm("quality_engagement", "control")["n"], 10);
    assert_eq!(arm("quality_engagement", "control")["mean"], 0.8);
    assert_eq!(arm("quality_engagement", "concise")["mean"], 1.0);
    assert!(arm("latency_ms", "concise")["mean"].as_f64().unwrap() > 100.0);
    for clock in ["elapsed_h", "decision"] {
        r.as_object_mut().unwrap().remove(clock);
    }
    r
}

#[test]
fn readouts_are_the_same_on_sqlite_and_postgres() {
    let Some((db, writer)) = sqlite() else {
        return;
    };
    let on_sqlite = readout_of_a_filled_store(db, writer);
    let Some((db, writer)) = postgres() else {
        return;
    };
    let on_postgres = readout_of_a_filled_store(db, writer);
    assert_same(&on_sqlite, &on_postgres, "readout");
}

/// The same JSON, numbers within rounding (sums are added in another order), stop times
/// aside (they are the clock's).
fn assert_same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12),
                "{at}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys()
                    .filter(|k| *k != "at_ms")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(x), keys(y), "{at}");
            for k in keys(x) {
                assert_same(&x[&k], &y[&k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}
