//! The report over a real trace store — SQLite and PostgreSQL, the same test bodies — with
//! windows of known shift, and the alerts' life: fired once, kept while drifted, resolved
//! when the signal returns.

use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use trestle_core::drift::DriftConfig;
use trestle_core::openai::Usage;

use super::*;
use crate::db::PgPool;
use crate::guard::GuardRecord;
use crate::store::{Body, PostgresStore, SqliteStore, Trace, TraceStore};

const HOUR: i64 = 3_600_000;
const END: i64 = 1_800_000_000_000;

const EN: &[&str] = &[
    "where is my parcel",
    "my order has not arrived yet",
    "I need the tracking number for my delivery",
    "when will the package ship",
    "the courier lost my box",
    "delivery is late again",
];
const BILLING: &[&str] = &[
    "please refund my payment",
    "I was charged twice on my card",
    "the invoice is wrong",
    "cancel my subscription and billing",
    "how do I update my credit card",
    "why was I billed this month",
];
const FR: &[&str] = &[
    "où est mon colis, il devait arriver hier",
    "ma commande n'est toujours pas arrivée",
    "je voudrais le numéro de suivi de ma livraison",
    "quand le paquet sera-t-il expédié",
];

struct Row<'a> {
    at: i64,
    route: &'a str,
    text: String,
    answer: &'a str,
    tokens_out: i64,
    fallback: &'a str,
    guard: bool,
    target: &'a str,
    fingerprint: &'a str,
}

/// A store under test: where it is, and its trace writer.
struct Store {
    db: Db,
    writer: Box<dyn TraceStore>,
}

impl Store {
    fn write(&mut self, traces: &[Trace]) {
        self.writer.write_batch(traces).unwrap();
    }

    /// The report over `query`, read as the gateway reads it.
    fn report(&self, config: &DriftConfig, q: &Query) -> Report {
        match &self.db {
            Db::Sqlite(path) => compute(&mut open(path).unwrap(), config, q).unwrap(),
            Db::Postgres(pool) => pool.with(|c| compute(c, config, q)).unwrap(),
        }
    }
}

fn sqlite() -> Option<Store> {
    let dir = std::env::temp_dir().join(format!(
        "trestle-drift-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let path = dir.join("t.db");
    let writer = SqliteStore::open(&path).unwrap();
    Some(Store {
        db: Db::Sqlite(path),
        writer: Box::new(writer),
    })
}

fn postgres() -> Option<Store> {
    let url = crate::store::pg_server::database()?;
    let pool = Arc::new(PgPool::open(&url, 2).unwrap());
    let writer = PostgresStore::on(pool.clone()).unwrap();
    Some(Store {
        db: Db::Postgres(pool),
        writer: Box::new(writer),
    })
}

/// Runs a test body on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($body:ident: $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            if let Some(s) = sqlite() {
                $body(s);
            }
        }

        #[test]
        fn $postgres() {
            if let Some(s) = postgres() {
                $body(s);
            }
        }
    };
}

fn trace(r: &Row<'_>) -> Trace {
    let request =
        serde_json::json!({"model": r.route, "messages": [{"role": "user", "content": r.text}]})
            .to_string();
    let response =
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": r.answer}}]})
            .to_string();
    let mut t = crate::store::sample_trace(&format!("t{:016x}", rand::random::<u64>()), "s", "c");
    t.started_at_ms = r.at;
    t.duration_ms = 10.0;
    t.route = r.route.to_string();
    t.stream = false;
    t.fallback_level = r.fallback.to_string();
    t.served_by = Some(r.target.to_string());
    t.usage = Usage::new((r.text.len() / 4 + 1) as u64, r.tokens_out as u64, 0);
    t.cost_usd = 0.0;
    t.request = Some(Body::Raw(Bytes::from(request)));
    t.response = Some(Body::Raw(Bytes::from(response)));
    t.guardrails = vec![GuardRecord {
        guardrail: "pii".into(),
        kind: "pii".into(),
        stage: "input".into(),
        action: "redact".into(),
        outcome: if r.guard { "redacted" } else { "pass" }.into(),
        entities: Default::default(),
        detail: None,
        latency_ms: 0.1,
    }];
    t.response_model = Some("m1".into());
    t.system_fingerprint = Some(r.fingerprint.to_string());
    t
}

/// `n` requests on `route` spread over `[start, start + span)`.
#[allow(clippy::too_many_arguments)]
fn fill_over(
    store: &mut Store,
    rng: &mut SmallRng,
    route: &str,
    start: i64,
    span: i64,
    n: usize,
    shifted: bool,
    fingerprint: &str,
) {
    let mut traces = Vec::with_capacity(n);
    for i in 0..n {
        let text = if shifted {
            if rng.random::<f64>() < 0.5 {
                let t = BILLING[rng.random_range(0..BILLING.len())];
                format!("{t}, please could you look into this as soon as possible, thank you")
            } else {
                let t = FR[rng.random_range(0..FR.len())];
                format!("{t}, merci de regarder cela au plus vite, c'est très urgent pour moi")
            }
        } else {
            EN[rng.random_range(0..EN.len())].to_string()
        };
        let refusal = rng.random::<f64>() < if shifted { 0.3 } else { 0.02 };
        traces.push(trace(&Row {
            at: start + (i as i64 * span) / n as i64,
            route,
            text,
            answer: if refusal {
                "I'm sorry, but I can't help with that."
            } else {
                "It ships tomorrow."
            },
            tokens_out: rng.random_range(if shifted { 60..120 } else { 20..60 }),
            fallback: if rng.random::<f64>() < if shifted { 0.25 } else { 0.02 } {
                "model"
            } else {
                "primary"
            },
            guard: rng.random::<f64>() < 0.05,
            target: "up/m1",
            fingerprint,
        }));
    }
    store.write(&traces);
}

/// `n` requests on `route` over the hour from `start`.
fn fill(
    store: &mut Store,
    rng: &mut SmallRng,
    route: &str,
    start: i64,
    n: usize,
    shifted: bool,
    fingerprint: &str,
) {
    fill_over(store, rng, route, start, HOUR, n, shifted, fingerprint);
}

fn query(route: &str) -> Query {
    Query {
        window: std::time::Duration::from_secs(3600),
        reference: std::time::Duration::from_secs(3600),
        end_ms: Some(END),
        route: Some(route.into()),
    }
}

fn signal<'r>(report: &'r Report, name: &str) -> &'r Signal {
    report
        .signals()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#?}"))
}

use trestle_eval::drift::{Signal, Status};

fn the_report_flags_the_shift_and_not_the_null(mut store: Store) {
    let mut rng = SmallRng::seed_from_u64(7);
    fill(
        &mut store,
        &mut rng,
        "steady",
        END - 2 * HOUR,
        300,
        false,
        "fp_a",
    );
    fill(
        &mut store,
        &mut rng,
        "steady",
        END - HOUR,
        300,
        false,
        "fp_a",
    );
    fill(
        &mut store,
        &mut rng,
        "moved",
        END - 2 * HOUR,
        300,
        false,
        "fp_a",
    );
    fill(&mut store, &mut rng, "moved", END - HOUR, 300, true, "fp_a");
    let config = DriftConfig::default();

    let null = store.report(&config, &query("steady"));
    assert_eq!(null.current.requests, 300);
    assert_eq!(null.reference.requests, 300);
    let flagged: Vec<&str> = null
        .signals()
        .filter(|s| s.drifted())
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        flagged.is_empty(),
        "the null pair drifted: {flagged:?}\n{null:#?}"
    );
    for name in [
        "input_length_psi",
        "input_tokens_wasserstein",
        "language_js",
        "topic_auc",
        "output_length_psi",
        "refusal_rate",
        "fallback_rate",
        "guardrail_rate",
    ] {
        assert_eq!(signal(&null, name).status, Status::Ok, "{name}");
    }

    let shift = store.report(&config, &query("moved"));
    for name in [
        "input_length_psi",
        "input_length_wasserstein",
        "input_tokens_psi",
        "language_js",
        "topic_auc",
        "output_length_psi",
        "output_length_wasserstein",
        "refusal_rate",
        "fallback_rate",
    ] {
        let s = signal(&shift, name);
        assert_eq!(s.status, Status::Drifted, "{name} not flagged: {s:?}");
        assert_eq!(s.scope, "route:moved");
    }
    // Guardrail findings did not move.
    assert_eq!(signal(&shift, "guardrail_rate").status, Status::Ok);
    assert!(
        signal(&shift, "language_js").detail.contains("fra"),
        "{:?}",
        signal(&shift, "language_js")
    );
}

fn small_windows_say_not_enough_data(mut store: Store) {
    let mut rng = SmallRng::seed_from_u64(8);
    fill(
        &mut store,
        &mut rng,
        "tiny",
        END - 2 * HOUR,
        10,
        false,
        "fp_a",
    );
    fill(&mut store, &mut rng, "tiny", END - HOUR, 10, true, "fp_a");
    let report = store.report(&DriftConfig::default(), &query("tiny"));
    for s in report.inputs.iter().chain(&report.outputs) {
        assert_eq!(s.status, Status::NotEnoughData, "{s:?}");
        assert!(s.detail.starts_with("not enough data"), "{s:?}");
    }
    assert_eq!(report.drifted, 0);
}

fn a_new_fingerprint_is_a_change_and_alerts_fire_once_and_resolve(mut store: Store) {
    let mut rng = SmallRng::seed_from_u64(9);
    fill(
        &mut store,
        &mut rng,
        "chat",
        END - 2 * HOUR,
        50,
        false,
        "fp_a",
    );
    fill_over(
        &mut store,
        &mut rng,
        "chat",
        END - HOUR,
        HOUR / 2,
        25,
        false,
        "fp_a",
    );
    fill_over(
        &mut store,
        &mut rng,
        "chat",
        END - HOUR / 2,
        HOUR / 2,
        25,
        false,
        "fp_b",
    );
    // Only the provider signal has enough data for a verdict.
    let config = DriftConfig {
        min_samples: 1000,
        ..DriftConfig::default()
    };
    let report = store.report(&config, &query("chat"));
    let s = signal(&report, "provider_fingerprint");
    assert_eq!(
        (s.status, s.scope.as_str()),
        (Status::Drifted, "target:up/m1"),
        "{s:?}"
    );
    assert!(s.detail.contains("fp_b"), "{s:?}");
    assert_eq!(report.providers.changes.len(), 1);
    let change = &report.providers.changes[0];
    assert_eq!(change.from.system_fingerprint.as_deref(), Some("fp_a"));
    assert_eq!(change.to.system_fingerprint.as_deref(), Some("fp_b"));

    let mut kept = alerts::Alerts::open(&store.db).unwrap();
    let first = kept.update(&report, 1000, true).unwrap();
    assert_eq!(
        first.fired,
        vec!["provider_fingerprint:target:up/m1".to_string()]
    );
    let pending = kept.undelivered("http://ui").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].link, "http://ui/ui/drift");
    assert_eq!(alerts::payload(&pending[0])["event"], "alert.firing");
    kept.delivered(&pending[0].id, "firing").unwrap();
    // Still drifted: no new firing, nothing to send, last seen moves.
    let again = kept.update(&report, 2000, true).unwrap();
    assert_eq!(again, alerts::Transitions::default());
    assert!(kept.undelivered("http://ui").unwrap().is_empty());
    let listed = kept.list(None, "http://ui").unwrap();
    assert_eq!(
        (
            listed[0].state.as_str(),
            listed[0].first_seen_ms,
            listed[0].last_seen_ms
        ),
        ("firing", 1000, 2000)
    );

    // Later, fp_b is in the reference window too: the signal returns, the alert resolves.
    let later = Query {
        end_ms: Some(END + 2 * HOUR),
        ..query("chat")
    };
    fill(&mut store, &mut rng, "chat", END + HOUR, 25, false, "fp_b");
    fill(&mut store, &mut rng, "chat", END, 25, false, "fp_b");
    let report = store.report(&config, &later);
    assert_eq!(signal(&report, "provider_fingerprint").status, Status::Ok);
    let back = kept.update(&report, 3000, true).unwrap();
    assert_eq!(
        back.resolved,
        vec!["provider_fingerprint:target:up/m1".to_string()]
    );
    let pending = kept.undelivered("http://ui").unwrap();
    assert_eq!(
        (
            pending.len(),
            pending[0].state.as_str(),
            pending[0].resolved_at_ms
        ),
        (1, "resolved", Some(3000))
    );
    assert_eq!(alerts::payload(&pending[0])["event"], "alert.resolved");
    // Without a webhook nothing waits for delivery.
    let report = store.report(&config, &query("chat"));
    kept.update(&report, 4000, false).unwrap();
    assert!(kept.undelivered("http://ui").unwrap().is_empty());
    assert_eq!(kept.list(Some("firing"), "http://ui").unwrap().len(), 1);
}

/// Feedback rows (id, value, negative, at) as the feedback store keeps them.
fn insert_feedback(db: &Db, rows: &[(String, f64, bool, i64)]) {
    match db {
        Db::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            for (id, value, negative, at) in rows {
                conn.execute(
                    "INSERT INTO feedback (id, trace_id, name, value_num, negative, source, created_at_ms, route, prompt_version)
                     VALUES (?1, ?1, 'thumbs', ?2, ?3, 'api', ?4, 'chat', 'support@2')",
                    rusqlite::params![id, value, negative, at],
                )
                .unwrap();
            }
        }
        Db::Postgres(pool) => pool
            .with(|c| {
                for (id, value, negative, at) in rows {
                    c.execute(
                        "INSERT INTO feedback (id, trace_id, name, value_num, negative, source, created_at_ms, route, prompt_version)
                         VALUES ($1, $1, 'thumbs', $2, $3, 'api', $4, 'chat', 'support@2')",
                        &[id, value, negative, at],
                    )?;
                }
                Ok(())
            })
            .unwrap(),
    }
}

fn feedback_and_online_evals_are_read_per_prompt_version(mut store: Store) {
    drop(crate::feedback::Feedback::new(Some(store.db.clone())));
    let scores = crate::evals::OnlineScores::open(&store.db).unwrap();
    // 100 answers a window from prompt support@2, each with feedback and an online eval.
    for (start, negative_share) in [(END - 2 * HOUR, 0.1), (END - HOUR, 0.4)] {
        let mut traces = Vec::new();
        let mut feedback = Vec::new();
        let mut evals = Vec::new();
        for i in 0..100i64 {
            let at = start + i * HOUR / 100;
            let mut t = crate::store::sample_trace(&format!("t{at}"), "s", "c");
            t.started_at_ms = at;
            t.route = "chat".into();
            t.fallback_level = "primary".into();
            t.prompt_version = Some("support@2".into());
            t.request = None;
            t.response = None;
            traces.push(t);
            let negative = (i as f64) < negative_share * 100.0;
            feedback.push((
                format!("f{at}"),
                if negative { 0.0 } else { 1.0 },
                negative,
                at,
            ));
            evals.push(trestle_eval::online::OnlineScore {
                trace_id: format!("t{at}"),
                at_ms: at,
                route: "chat".into(),
                prompt_version: Some("support@2".into()),
                category: "default".into(),
                outcomes: vec![trestle_eval::assertion::Outcome::new(
                    "contains",
                    i % 10 != 0,
                    None,
                    "",
                )],
            });
        }
        store.write(&traces);
        insert_feedback(&store.db, &feedback);
        scores.insert(&evals).unwrap();
    }
    let report = store.report(&DriftConfig::default(), &query("chat"));
    let find = |name: &str| {
        report
            .outputs
            .iter()
            .find(|s| s.name == name && s.scope == "prompt:support@2")
            .unwrap_or_else(|| panic!("no {name}: {report:#?}"))
    };
    let feedback = find("feedback_score");
    assert_eq!(feedback.status, Status::Drifted, "{feedback:?}");
    assert!((feedback.value.unwrap() + 0.3).abs() < 1e-9, "{feedback:?}");
    assert_eq!((feedback.reference_n, feedback.current_n), (100, 100));
    let evals = find("online_eval_pass_rate");
    assert_eq!(evals.status, Status::Ok, "{evals:?}");
    assert_eq!((evals.reference_n, evals.current_n), (100, 100));
}

on_both!(the_report_flags_the_shift_and_not_the_null: shift_and_null_on_sqlite, shift_and_null_on_postgres);
on_both!(small_windows_say_not_enough_data: small_windows_on_sqlite, small_windows_on_postgres);
on_both!(a_new_fingerprint_is_a_change_and_alerts_fire_once_and_resolve: alerts_on_sqlite, alerts_on_postgres);
on_both!(feedback_and_online_evals_are_read_per_prompt_version: feedback_and_evals_on_sqlite, feedback_and_evals_on_postgres);

/// With no trace store tables yet, a PostgreSQL report says what to do.
#[test]
fn an_empty_postgres_database_says_what_to_do() {
    let Some(url) = crate::store::pg_server::database() else {
        return;
    };
    let pool = PgPool::open(&url, 1).unwrap();
    let e = pool
        .with(|c| compute(c, &DriftConfig::default(), &query("chat")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("trestle migrate"), "{e}");
}

/// The gateway's path: `run` reads off the async runtime (the PostgreSQL client must not
/// run on it).
#[test]
fn run_reads_postgres_off_the_runtime() {
    let Some(mut store) = postgres() else {
        return;
    };
    let mut rng = SmallRng::seed_from_u64(10);
    fill(&mut store, &mut rng, "chat", END - HOUR, 20, false, "fp_a");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(run(
            store.db.clone(),
            DriftConfig::default(),
            query("chat"),
            None,
        ))
        .unwrap();
    assert_eq!(report.current.requests, 20);
}
