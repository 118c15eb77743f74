//! The report over a real SQLite trace store with windows of known shift, and the alerts'
//! life: fired once, kept while drifted, resolved when the signal returns.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use trestle_core::drift::DriftConfig;

use super::*;

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

fn insert(conn: &Connection, r: &Row<'_>) {
    let request =
        serde_json::json!({"model": r.route, "messages": [{"role": "user", "content": r.text}]})
            .to_string();
    let response =
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": r.answer}}]})
            .to_string();
    let guardrails = if r.guard {
        r#"[{"guardrail":"pii","outcome":"redacted"}]"#
    } else {
        r#"[{"guardrail":"pii","outcome":"pass"}]"#
    };
    conn.execute(
        "INSERT INTO requests (span_id, trace_id, started_at_ms, duration_ms, route, class, stream, status, outcome,
            fallback_level, served_by, tokens_in, tokens_out, tokens_cached, cost_usd, attempts, request, response,
            guardrails, response_model, system_fingerprint)
         VALUES ('s', 't', ?1, 10, ?2, 'progressive', 0, 200, 'ok', ?3, ?4, ?5, ?6, 0, 0, 1, ?7, ?8, ?9, 'm1', ?10)",
        params![r.at, r.route, r.fallback, r.target, (r.text.len() / 4 + 1) as i64, r.tokens_out, request, response, guardrails, r.fingerprint],
    )
    .unwrap();
}

/// `n` requests on `route` spread over `[start, start + span)`.
#[allow(clippy::too_many_arguments)]
fn fill_over(
    conn: &Connection,
    rng: &mut SmallRng,
    route: &str,
    start: i64,
    span: i64,
    n: usize,
    shifted: bool,
    fingerprint: &str,
) {
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
        insert(
            conn,
            &Row {
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
            },
        );
    }
}

/// `n` requests on `route` over the hour from `start`.
fn fill(
    conn: &Connection,
    rng: &mut SmallRng,
    route: &str,
    start: i64,
    n: usize,
    shifted: bool,
    fingerprint: &str,
) {
    fill_over(conn, rng, route, start, HOUR, n, shifted, fingerprint);
}

fn store() -> (std::path::PathBuf, Connection) {
    let dir = std::env::temp_dir().join(format!(
        "trestle-drift-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let path = dir.join("t.db");
    drop(crate::store::SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    (path, conn)
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

#[test]
fn the_report_flags_the_shift_and_not_the_null() {
    let (_path, conn) = store();
    let mut rng = SmallRng::seed_from_u64(7);
    fill(
        &conn,
        &mut rng,
        "steady",
        END - 2 * HOUR,
        300,
        false,
        "fp_a",
    );
    fill(&conn, &mut rng, "steady", END - HOUR, 300, false, "fp_a");
    fill(&conn, &mut rng, "moved", END - 2 * HOUR, 300, false, "fp_a");
    fill(&conn, &mut rng, "moved", END - HOUR, 300, true, "fp_a");
    let config = DriftConfig::default();

    let null = compute(&conn, &config, &query("steady")).unwrap();
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

    let shift = compute(&conn, &config, &query("moved")).unwrap();
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

#[test]
fn small_windows_say_not_enough_data() {
    let (_path, conn) = store();
    let mut rng = SmallRng::seed_from_u64(8);
    fill(&conn, &mut rng, "tiny", END - 2 * HOUR, 10, false, "fp_a");
    fill(&conn, &mut rng, "tiny", END - HOUR, 10, true, "fp_a");
    let report = compute(&conn, &DriftConfig::default(), &query("tiny")).unwrap();
    for s in report.inputs.iter().chain(&report.outputs) {
        assert_eq!(s.status, Status::NotEnoughData, "{s:?}");
        assert!(s.detail.starts_with("not enough data"), "{s:?}");
    }
    assert_eq!(report.drifted, 0);
}

#[test]
fn a_new_fingerprint_is_a_change_and_alerts_fire_once_and_resolve() {
    let (path, conn) = store();
    let mut rng = SmallRng::seed_from_u64(9);
    fill(&conn, &mut rng, "chat", END - 2 * HOUR, 50, false, "fp_a");
    fill_over(
        &conn,
        &mut rng,
        "chat",
        END - HOUR,
        HOUR / 2,
        25,
        false,
        "fp_a",
    );
    fill_over(
        &conn,
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
    let report = compute(&conn, &config, &query("chat")).unwrap();
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

    let mut conn = Connection::open(&path).unwrap();
    alerts::open(&conn).unwrap();
    let first = alerts::update(&mut conn, &report, 1000, true).unwrap();
    assert_eq!(
        first.fired,
        vec!["provider_fingerprint:target:up/m1".to_string()]
    );
    let pending = alerts::undelivered(&conn, "http://ui").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].link, "http://ui/ui/drift");
    assert_eq!(alerts::payload(&pending[0])["event"], "alert.firing");
    alerts::delivered(&conn, &pending[0].id, "firing").unwrap();
    // Still drifted: no new firing, nothing to send, last seen moves.
    let again = alerts::update(&mut conn, &report, 2000, true).unwrap();
    assert_eq!(again, alerts::Transitions::default());
    assert!(alerts::undelivered(&conn, "http://ui").unwrap().is_empty());
    let listed = alerts::list(&conn, None, "http://ui").unwrap();
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
    fill(&conn, &mut rng, "chat", END + HOUR, 25, false, "fp_b");
    fill(&conn, &mut rng, "chat", END, 25, false, "fp_b");
    let report = compute(&conn, &config, &later).unwrap();
    assert_eq!(signal(&report, "provider_fingerprint").status, Status::Ok);
    let back = alerts::update(&mut conn, &report, 3000, true).unwrap();
    assert_eq!(
        back.resolved,
        vec!["provider_fingerprint:target:up/m1".to_string()]
    );
    let pending = alerts::undelivered(&conn, "http://ui").unwrap();
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
    let report = compute(&conn, &config, &query("chat")).unwrap();
    alerts::update(&mut conn, &report, 4000, false).unwrap();
    assert!(alerts::undelivered(&conn, "http://ui").unwrap().is_empty());
    assert_eq!(
        alerts::list(&conn, Some("firing"), "http://ui")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn feedback_and_online_evals_are_read_per_prompt_version() {
    let (path, conn) = store();
    drop(crate::feedback::Feedback::new(Some(path.clone())));
    drop(trestle_eval::online::OnlineStore::open(&path).unwrap());
    // 100 answers a window from prompt support@2, each with feedback and an online eval.
    for (start, negative_share) in [(END - 2 * HOUR, 0.1), (END - HOUR, 0.4)] {
        for i in 0..100i64 {
            let at = start + i * HOUR / 100;
            conn.execute(
                "INSERT INTO requests (span_id, trace_id, started_at_ms, duration_ms, route, class, stream, status,
                    outcome, fallback_level, tokens_in, tokens_out, tokens_cached, cost_usd, attempts, prompt_version)
                 VALUES ('s', ?1, ?2, 10, 'chat', 'sync', 0, 200, 'ok', 'primary', 10, 20, 0, 0, 1, 'support@2')",
                params![format!("t{at}"), at],
            )
            .unwrap();
            let negative = (i as f64) < negative_share * 100.0;
            conn.execute(
                "INSERT INTO feedback (id, trace_id, name, value_num, negative, source, created_at_ms, route, prompt_version)
                 VALUES (?1, ?1, 'thumbs', ?2, ?3, 'api', ?4, 'chat', 'support@2')",
                params![format!("f{at}"), if negative { 0.0 } else { 1.0 }, negative, at],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO eval_online_scores (trace_id, at_ms, day, route, prompt_version, category, pass, outcomes)
                 VALUES (?1, ?2, '2027-01-15', 'chat', 'support@2', 'default', ?3, '[]')",
                params![format!("t{at}"), at, i % 10 != 0],
            )
            .unwrap();
        }
    }
    let report = compute(&conn, &DriftConfig::default(), &query("chat")).unwrap();
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
