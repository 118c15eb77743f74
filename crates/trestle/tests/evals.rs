//! Evals end to end with the real binary: `trestle eval run` against a gateway in front of
//! `trestle mock` (scripted answers) and against one started in process; gates per category
//! with exit codes, a baseline comparison, reports; dataset import, versions, scrubbing,
//! diff; failure mining from the trace store; runs, datasets and mining on PostgreSQL.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/evals")
        .join(name)
}

fn trestle(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run trestle")
}

/// `trestle eval run suite.toml` in `dir`, with its runs kept in `evals.db`.
fn eval_run(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["eval", "run", "suite.toml", "--db", "evals.db"];
    all.extend_from_slice(args);
    trestle(dir, &all)
}

/// `trestle dataset mine` on the gateway's config in `dir`; it must succeed.
fn mine(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["dataset", "mine", "--config", "trestle.toml"];
    all.extend_from_slice(args);
    let o = trestle(dir, &all);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A work folder with the example suite, its golden set and its judge script; the support
/// model's script says what `kb` says about returns.
fn workdir(name: &str, returns_answer: &str) -> PathBuf {
    let dir = temp_dir(name);
    for f in ["golden.jsonl", "suite.toml", "judge.jsonl"] {
        std::fs::copy(example(f), dir.join(f)).unwrap();
    }
    // Asked which of two answers is better, this judge always picks the first one shown.
    let mut judge = std::fs::read_to_string(dir.join("judge.jsonl")).unwrap();
    judge.push_str("{\"match\": \"<answer_a>\", \"reply\": \"{\\\"reasoning\\\": \\\"the first\\\", \\\"winner\\\": \\\"A\\\"}\"}\n");
    std::fs::write(dir.join("judge.jsonl"), judge).unwrap();
    let kb = std::fs::read_to_string(example("kb.jsonl")).unwrap();
    let kb = kb.replace(
        "You can return any item within 30 days of delivery for a full refund. Start from Orders > Return an item; the refund reaches your card 3-5 business days after we receive it.",
        returns_answer,
    );
    std::fs::write(dir.join("kb.jsonl"), kb).unwrap();
    dir
}

const GOOD_RETURNS: &str = "You can return any item within 30 days of delivery for a full refund. Start from Orders > Return an item; the refund reaches your card 3-5 business days after we receive it.";
// A prompt change that "simplified" the returns answer: the other categories are untouched.
const BROKEN_RETURNS: &str =
    "Returns are accepted within 14 days. Start from Orders > Return an item.";

fn gateway_config(kb: &Proc, judge: &Proc) -> String {
    format!(
        r#"
[providers.kb]
kind = "openai"
base_url = "{}/v1"
[providers.judge]
kind = "openai"
base_url = "{}/v1"
[models."kb/support-v1"]
price = {{ input = 0.15, output = 0.60 }}
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS", "PHONE_NUMBER"]
[routes.support]
targets = ["kb/support-v1"]
[routes.judge]
targets = ["judge/grader"]
"#,
        kb.url(),
        judge.url()
    )
}

fn judge_mock(dir: &Path) -> Proc {
    let good = r#"{"reasoning": "Correct and polite.", "scores": {"accuracy": 5, "helpfulness": 5, "tone": 5, "completeness": 4, "safety": 5}}"#;
    mock(&[
        "--mode",
        "script",
        "--file",
        dir.join("judge.jsonl").to_str().unwrap(),
        "--text",
        good,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_category_fails_its_gate_and_the_fix_passes() {
    let dir = workdir("eval-gate", BROKEN_RETURNS);
    let kb = mock(&[
        "--mode",
        "script",
        "--file",
        dir.join("kb.jsonl").to_str().unwrap(),
    ]);
    let judge = judge_mock(&dir);
    let gw = gateway(&gateway_config(&kb, &judge), &[]);

    // Through a running gateway: returns fails its gate, and the run says which and by how much.
    let broken = eval_run(&dir, &["--url", &gw.url(), "--json", "broken.json"]);
    let out = text(&broken);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL gate returns"), "{out}");
    assert!(out.contains("gate failed: returns (pass rate"), "{out}");
    for other in ["shipping", "billing", "account"] {
        assert!(
            out.contains(&format!("ok   gate {other}")),
            "{other} should hold: {out}"
        );
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("broken.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 15);
    let ret1 = results.iter().find(|r| r["id"] == "ret-001").unwrap();
    assert_eq!(ret1["pass"], false);
    assert!(
        ret1["outcomes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("30 days"),
        "{ret1}"
    );
    assert!(ret1["trace_id"].as_str().is_some_and(|t| t.len() == 32));
    assert!(
        ret1["cost_usd"].as_f64().unwrap() > 0.0,
        "the gateway reports each answer's cost: {ret1}"
    );
    let judged = results.iter().find(|r| r["id"] == "bil-002").unwrap();
    let verdict = judged["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "judge")
        .unwrap();
    assert_eq!(verdict["scores"]["tone"], 5.0);
    assert_eq!(verdict["reason"], "Correct and polite.");
    let broken_id = report["summary"]["run"]["id"].as_str().unwrap().to_string();

    // Fixed, through a gateway in process from a config: every gate holds; compared with
    // the broken run, returns shows its wins and nothing else moved.
    std::fs::write(
        dir.join("kb.jsonl"),
        std::fs::read_to_string(example("kb.jsonl")).unwrap(),
    )
    .unwrap();
    let config = format!(
        "[store]\npath = \"traces.db\"\n[providers.kb]\nkind = \"placeholder\"\nmode = \"script\"\nfile = \"kb.jsonl\"\n[providers.judge]\nkind = \"placeholder\"\nmode = \"script\"\nfile = \"judge.jsonl\"\ntext = '{}'\n[guardrails.pii]\nkind = \"pii\"\naction = \"redact\"\nentities = [\"EMAIL_ADDRESS\"]\n[routes.support]\ntargets = [\"kb/v1\"]\n[routes.judge]\ntargets = [\"judge/grader\"]\n",
        r#"{"reasoning": "fine", "scores": {"accuracy": 5, "helpfulness": 5, "tone": 5, "completeness": 5, "safety": 5}}"#
    );
    std::fs::write(dir.join("trestle.toml"), config).unwrap();
    let fixed = eval_run(
        &dir,
        &[
            "--config",
            "trestle.toml",
            "--baseline",
            &broken_id,
            "--html",
            "report.html",
            "--label",
            "production",
        ],
    );
    let out = text(&fixed);
    assert_eq!(fixed.status.code(), Some(0), "{out}");
    assert!(out.contains("ok   gate returns: 100.0%"), "{out}");
    let returns_row = out.lines().find(|l| l.starts_with("returns")).unwrap();
    assert!(
        returns_row.contains("+80.0") && returns_row.contains("4/1/0"),
        "{returns_row}"
    );
    let shipping_row = out.lines().find(|l| l.starts_with("shipping")).unwrap();
    assert!(shipping_row.contains("0/4/0"), "{shipping_row}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.starts_with("<!doctype html>") && html.contains("returns") && html.contains("win")
    );

    // Broken again: now the newest `production` run is the baseline by default, and
    // `max_drop` catches the fall.
    let again = eval_run(&dir, &["--url", &gw.url(), "--pairwise"]);
    let out = text(&again);
    assert_eq!(again.status.code(), Some(1), "{out}");
    assert!(out.contains("dropped 80.0 points from 100.0%"), "{out}");
    let returns_row = out.lines().find(|l| l.starts_with("returns")).unwrap();
    assert!(
        returns_row.contains("0/1/4") && returns_row.contains("0.125"),
        "sign test on 4 losses: {returns_row}"
    );
    // The pairwise judge is asked in both orders, so its bias for the first answer cancels.
    let pairwise = out
        .split("pairwise judge")
        .nth(1)
        .expect("a pairwise section");
    assert!(
        pairwise
            .lines()
            .any(|l| l.trim_start().starts_with("all") && l.contains("0/15/0")),
        "{out}"
    );

    let list = trestle(&dir, &["eval", "list", "--db", "evals.db"]);
    let out = text(&list);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("[production]"));
    let show = trestle(
        &dir,
        &["eval", "show", &broken_id, "--db", "evals.db", "--failing"],
    );
    let out = text(&show);
    assert!(
        show.status.success()
            && out.contains("✗ ret-001 [returns]")
            && out.contains("not found: \"30 days\""),
        "{out}"
    );
}

/// `[store] kind = "postgres"`: `trestle eval run --config` keeps its runs and datasets in
/// the database (no SQLite file), gates against a baseline found there, and a gateway on the
/// same config lists them in its UI; mining reads the same database's traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_runs_are_kept_in_the_database_every_gateway_reads() {
    let Some(pg) = trestle_gateway::store::pg_server::database() else {
        return;
    };
    let dir = workdir("eval-pg", GOOD_RETURNS);
    let file = |name: &str| dir.join(name).display().to_string();
    // Absolute paths: the served gateway below runs in a folder of its own.
    let config = format!(
        r#"
[store]
kind = "postgres"
url = "{pg}"
flush_interval_ms = 5
[providers.kb]
kind = "placeholder"
mode = "script"
file = "{kb}"
[providers.judge]
kind = "placeholder"
mode = "script"
file = "{judge}"
text = '{{"reasoning": "fine", "scores": {{"accuracy": 5, "helpfulness": 5, "tone": 5, "completeness": 5, "safety": 5}}}}'
[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS"]
[routes.support]
targets = ["kb/v1"]
[routes.judge]
targets = ["judge/grader"]
[routes.down]
targets = ["dead/m"]
retries = 0
fallback = {{ template = "Sorry, we are having trouble." }}
"#,
        kb = file("kb.jsonl"),
        judge = file("judge.jsonl"),
    );
    std::fs::write(dir.join("trestle.toml"), &config).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["eval", "run", "suite.toml", "--config", "trestle.toml"];
        all.extend_from_slice(args);
        trestle(&dir, &all)
    };

    let migrated = text(&trestle(&dir, &["migrate", "--config", "trestle.toml"]));
    assert!(
        migrated.contains("eval_runs (PostgreSQL): schema version 1"),
        "{migrated}"
    );

    let good = run(&["--label", "production"]);
    let out = text(&good);
    assert_eq!(good.status.code(), Some(0), "{out}");
    let good_id = out
        .split("; run ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();

    // Broken: the production run in PostgreSQL is the baseline, and the gate fails.
    std::fs::write(
        dir.join("kb.jsonl"),
        std::fs::read_to_string(dir.join("kb.jsonl"))
            .unwrap()
            .replace(GOOD_RETURNS, BROKEN_RETURNS),
    )
    .unwrap();
    let broken = run(&[]);
    let out = text(&broken);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("baseline {good_id}")), "{out}");
    assert!(out.contains("dropped 80.0 points from 100.0%"), "{out}");
    let broken_id = out
        .split("; run ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        !dir.join(".trestle").exists(),
        "nothing was written to a SQLite file"
    );

    let list = text(&trestle(
        &dir,
        &["eval", "list", "--config", "trestle.toml"],
    ));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.starts_with(&broken_id) && list.contains("[production]"),
        "{list}"
    );
    let show = text(&trestle(
        &dir,
        &[
            "eval",
            "show",
            &broken_id,
            "--config",
            "trestle.toml",
            "--failing",
        ],
    ));
    assert!(show.contains("✗ ret-001 [returns]"), "{show}");
    let datasets = text(&trestle(
        &dir,
        &["dataset", "list", "--config", "trestle.toml"],
    ));
    assert!(datasets.starts_with("golden@"), "{datasets}");

    // A gateway on the same database lists both runs and shows a run's cases.
    let gw = gateway(&config, &[]);
    let page = get_text(&format!("{}/ui/evals", gw.url())).await;
    assert!(
        page.contains(&good_id) && page.contains(&broken_id),
        "{page}"
    );
    let page = get_text(&format!("{}/ui/evals/{broken_id}", gw.url())).await;
    assert!(page.contains("ret-001") && page.contains("fail"), "{page}");
    let page = get_text(&format!("{}/ui/review?source=eval:{broken_id}", gw.url())).await;
    assert!(page.contains("15 left in this queue"), "{page}");

    // Mining reads the same database's traces.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": "down", "messages": [{"role": "user", "content": "Where is my order 1234?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut out = String::new();
    for _ in 0..50 {
        out = mine(&dir, &["--out", "mined.jsonl", "--route", "down"]);
        if out.contains("1 candidate(s)") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(out.contains("1 candidate(s)"), "{out}");
    let mined = std::fs::read_to_string(dir.join("mined.jsonl")).unwrap();
    assert!(
        mined.contains("fallback template") && mined.contains("Where is my order 1234?"),
        "{mined}"
    );
}

#[test]
fn errors_in_the_run_itself_exit_2_and_say_what_to_fix() {
    let dir = workdir("eval-errors", GOOD_RETURNS);
    std::fs::write(
        dir.join("typo.toml"),
        "dataset = \"golden.jsonl\"\nroute = \"support\"\nconcurency = 4\n",
    )
    .unwrap();
    let o = trestle(
        &dir,
        &[
            "eval",
            "run",
            "typo.toml",
            "--url",
            "http://127.0.0.1:9",
            "--db",
            "e.db",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("concurency"), "{}", text(&o));

    std::fs::write(dir.join("bad.jsonl"), "{\"id\": \"a\", \"input\": \"x\"}\n{\"id\": \"b\", \"input\": \"y\", \"assert\": [{\"type\": \"contains\"}]}\n").unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "dataset = \"bad.jsonl\"\nroute = \"support\"\n",
    )
    .unwrap();
    let o = trestle(
        &dir,
        &[
            "eval",
            "run",
            "bad.toml",
            "--url",
            "http://127.0.0.1:9",
            "--db",
            "e.db",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("line 2, field `assert[0]`"),
        "{}",
        text(&o)
    );

    // Nothing listens on port 9: the figures would be meaningless.
    let o = trestle(
        &dir,
        &[
            "eval",
            "run",
            "suite.toml",
            "--url",
            "http://127.0.0.1:9",
            "--db",
            "e.db",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("never reached the gateway"),
        "{}",
        text(&o)
    );

    let o = trestle(&dir, &["eval", "run", "suite.toml", "--db", "e.db"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--config FILE") && text(&o).contains("--url URL"));
}

#[test]
fn datasets_are_validated_versioned_scrubbed_and_diffed() {
    let dir = temp_dir("datasets");
    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"id\": \"a\", \"input\": \"x\"}\n{\"id\": \"a\", \"input\": \"y\"}\n{\"id\": \"c\", \"input\": \"z\", \"categry\": \"x\"}\n",
    )
    .unwrap();
    let o = trestle(&dir, &["dataset", "validate", "bad.jsonl"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("line 2, field `id`: `a` is already the id of line 1"),
        "{out}"
    );
    assert!(out.contains("line 3") && out.contains("categry"), "{out}");

    let v1 = "{\"id\": \"r1\", \"category\": \"returns\", \"input\": \"How do I return shoes? Mail me at jane.doe@example.com\"}\n{\"id\": \"r2\", \"category\": \"returns\", \"input\": \"how do I return shoes? mail me at jane.doe@example.com!\"}\n{\"id\": \"b1\", \"category\": \"billing\", \"input\": \"Where is my invoice?\"}\n{\"id\": \"b2\", \"category\": \"billing\", \"input\": \"Where is my invoice please?\"}\n";
    std::fs::write(dir.join("support.jsonl"), v1).unwrap();
    std::fs::write(
        dir.join("trestle.toml"),
        "[guardrails.pii]\nkind = \"pii\"\naction = \"redact\"\nentities = [\"EMAIL_ADDRESS\"]\n",
    )
    .unwrap();
    let o = trestle(
        &dir,
        &[
            "dataset",
            "import",
            "support.jsonl",
            "--config",
            "trestle.toml",
            "--db",
            "d.db",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("scrubbed 2 finding(s) with guardrail `pii`"),
        "{out}"
    );
    assert!(
        out.contains("duplicate: r2 has the same input as r1"),
        "{out}"
    );
    assert!(
        out.contains("near-duplicate: b2 and b1 (80% shared words)"),
        "{out}"
    );
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("imported support@"))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let again = text(&trestle(
        &dir,
        &[
            "dataset",
            "import",
            "support.jsonl",
            "--config",
            "trestle.toml",
            "--db",
            "d.db",
        ],
    ));
    assert!(
        again.contains(&format!("already stored: support@{version}")),
        "{again}"
    );

    let cases = text(&trestle(
        &dir,
        &["dataset", "show", "support", "--cases", "--db", "d.db"],
    ));
    assert!(
        cases.contains("<EMAIL_ADDRESS>") && !cases.contains("jane.doe"),
        "{cases}"
    );
    let shown = text(&trestle(
        &dir,
        &[
            "dataset",
            "show",
            &format!("support@{}", &version[..6]),
            "--db",
            "d.db",
        ],
    ));
    assert!(
        shown.contains("returns") && shown.contains("50.0%"),
        "{shown}"
    );

    std::fs::write(dir.join("support.jsonl"), format!("{v1}{{\"id\": \"s1\", \"category\": \"shipping\", \"input\": \"Where is my parcel?\"}}\n").replace("\"b1\", \"category\": \"billing\", \"input\": \"Where is my invoice?\"", "\"b1\", \"category\": \"billing\", \"input\": \"Where are my invoices?\"")).unwrap();
    let o = trestle(
        &dir,
        &[
            "dataset",
            "import",
            "support.jsonl",
            "--db",
            "d.db",
            "--no-scrub",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let list = text(&trestle(&dir, &["dataset", "list", "--db", "d.db"]));
    assert_eq!(
        list.lines().filter(|l| l.starts_with("support@")).count(),
        2,
        "{list}"
    );
    let diff = text(&trestle(
        &dir,
        &[
            "dataset",
            "diff",
            &format!("support@{version}"),
            "support",
            "--db",
            "d.db",
        ],
    ));
    assert!(
        diff.contains("+ s1") && diff.contains("~ b1") && diff.contains("~ r1"),
        "{diff}"
    );
    assert!(
        diff.contains("1 added, 0 removed, 3 changed, 1 unchanged"),
        "{diff}"
    );
    assert!(diff.contains("shipping: 0 → 1"), "{diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mining_turns_production_failures_into_candidate_cases() {
    let up = mock(&[]);
    let config = format!(
        r#"
[store]
path = "traces.db"
flush_interval_ms = 5
[providers.up]
kind = "openai"
base_url = "{}/v1"
[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS"]
[routes.chat]
targets = ["up/echo"]
guardrails = {{ input = [], output = ["pii"] }}
[routes.down]
targets = ["dead/m"]
retries = 0
fallback = {{ template = "Sorry, we are having trouble." }}
"#,
        up.url()
    );
    let gw = gateway(&config, &[]);
    let client = client();
    let send = async |model: &str, text: &str| {
        let r = client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": text}], "metadata": {"category": "contact"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    send("chat", "my email is ann@example.com, please write to me").await;
    send("chat", "My email is ann@example.com, please write to me!").await; // a near-duplicate
    send("chat", "what are your opening hours?").await; // fine: not a candidate
    send("down", "Where is my order 1234?").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    std::fs::write(gw.dir.join("golden.jsonl"), "{\"id\": \"x\", \"input\": \"where is my order 1234\"}\n{\"id\": \"y\", \"input\": \"something else\"}\n").unwrap();
    let out = mine(&gw.dir, &["--out", "mined.jsonl"]);
    assert!(
        out.contains("2 candidate(s)") && out.contains("1 near-duplicates of each other"),
        "{out}"
    );
    let rows: Vec<Value> = std::fs::read_to_string(gw.dir.join("mined.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let pii = rows
        .iter()
        .find(|r| {
            r["metadata"]["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("guardrail pii redacted")
        })
        .unwrap();
    assert_eq!(pii["category"], "contact");
    assert_eq!(pii["trace_id"].as_str().unwrap().len(), 32);
    let fallback = rows
        .iter()
        .find(|r| r["metadata"]["reasons"][0] == "fallback template")
        .unwrap();
    assert_eq!(
        fallback["metadata"]["answer"],
        "Sorry, we are having trouble."
    );
    // Mined rows are valid cases: they import as they are.
    let o = trestle(&gw.dir, &["dataset", "validate", "mined.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));

    // Against the golden set, the order question is already covered.
    let out = mine(
        &gw.dir,
        &["--out", "mined2.jsonl", "--against", "golden.jsonl"],
    );
    assert!(
        out.contains("1 candidate(s)") && out.contains("1 of the existing set"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_evals_score_live_traffic_off_the_request_path() {
    let up = mock(&[]); // echo: the model repeats the question
    let dir = temp_dir("online-judge");
    std::fs::write(
        dir.join("judge.jsonl"),
        "{\"match\": \"(?s)<answer>\\\\s*refund\", \"reply\": \"{\\\"reasoning\\\": \\\"terse\\\", \\\"scores\\\": {\\\"accuracy\\\": 2, \\\"tone\\\": 3}}\"}\n",
    )
    .unwrap();
    let judge = mock(&[
        "--mode",
        "script",
        "--file",
        dir.join("judge.jsonl").to_str().unwrap(),
        "--text",
        r#"{"reasoning": "fine", "scores": {"accuracy": 5, "tone": 4}}"#,
    ]);
    let config = format!(
        r#"
[store]
path = "traces.db"
flush_interval_ms = 5
[providers.up]
kind = "openai"
base_url = "{}/v1"
[providers.judge]
kind = "openai"
base_url = "{}/v1"
[models."judge/grader"]
price = {{ input = 10000.0, output = 10000.0 }}
[guardrails.pii]
kind = "pii"
action = "flag"
entities = ["EMAIL_ADDRESS"]
[routes.chat]
targets = ["up/echo"]
[routes.judge]
targets = ["judge/grader"]
[evals.online]
sample = 1.0
max_per_minute = 12
max_judge_usd_per_day = 1.0
assert = [{{ type = "guardrail", value = "pii" }}, {{ type = "not_contains", value = "sorry" }}]
judge = {{ route = "judge", criteria = ["accuracy", "tone"] }}
"#,
        up.url(),
        judge.url()
    );
    let gw = gateway(&config, &[]);
    let client = client();
    for i in 0..20 {
        let (text, category) = match i % 4 {
            0 => ("refund please".to_string(), "returns"),
            1 => (format!("write to me at user{i}@example.com"), "contact"),
            _ => (format!("what are your hours on day {i}?"), "hours"),
        };
        let r = client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": text}], "metadata": {"category": category}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Scoring happens after the answers went out; wait for it.
    let mut report = Value::Null;
    for _ in 0..100 {
        report = get_json(&format!("{}/v1/evals/online?days=1", gw.url())).await;
        if report["counters"]["scored"] == 12 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let c = &report["counters"];
    assert_eq!(report["enabled"], true, "{report}");
    assert_eq!(c["sampled"], 20, "{report}");
    assert_eq!(c["scored"], 12, "{report}");
    assert_eq!(
        c["skipped_rate_limit"], 8,
        "every sample is scored or counted: {report}"
    );
    // The judge's price makes the first judged answer spend the day's budget: later ones
    // are scored without it, and counted.
    assert!(c["judge_over_budget"].as_u64().unwrap() >= 10, "{report}");
    let days = report["days"].as_array().unwrap();
    let by_cat = |cat: &str| {
        days.iter()
            .find(|d| d["category"] == cat && d["route"] == "chat")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        by_cat("contact")["pass_rate"],
        0.0,
        "the pii guardrail flags every contact answer: {report}"
    );
    assert_eq!(by_cat("contact")["by_assertion"]["guardrail"], 0.0);
    assert_eq!(by_cat("hours")["pass_rate"], 1.0, "{report}");
    let scored: u64 = days.iter().map(|d| d["scored"].as_u64().unwrap()).sum();
    assert_eq!(scored, 12);
    assert!(
        days.iter()
            .any(|d| d["judge_means"]["accuracy"].as_f64().is_some()),
        "{report}"
    );

    // Failed online evals feed failure mining. A score is counted before its row is written
    // (off the request path, like the trace): mine again until the rows are there.
    let (mut out, mut mined) = (String::new(), String::new());
    for _ in 0..50 {
        out = mine(&gw.dir, &["--out", "mined.jsonl"]);
        mined = std::fs::read_to_string(gw.dir.join("mined.jsonl")).unwrap();
        if mined.contains("failed online eval") && mined.contains("<EMAIL_ADDRESS>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        mined.contains("failed online eval") && mined.contains("<EMAIL_ADDRESS>"),
        "{out}\n{mined}"
    );

    let bad = client
        .get(format!("{}/v1/evals/online?days=0", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
