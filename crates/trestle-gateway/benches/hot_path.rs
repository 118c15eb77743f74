//! Criterion benches of the per-request work on the gateway's hot path:
//! parse → resolve → serialize the upstream body, one SSE chunk relayed, a trace enqueued,
//! the fallback cache's key and write, counting a conversation for `max_input_tokens`, a
//! key's check, the input guardrails on 1 KB, and a request's cost reserved and settled on
//! its budgets. Each stage's budget is written next to its figure in BENCHMARKS.md
//! ("Stage budgets").
//!
//! `cargo bench -p trestle-gateway --bench hot_path`; results and commands in BENCHMARKS.md.

// Bench code: a failed setup is the bench failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use trestle_core::Config;
use trestle_core::config::{CacheConfig, Normalize};
use trestle_core::openai::Usage;
use trestle_gateway::cache::exact::{Answer, Entry};
use trestle_gateway::cache::key::exact_key;
use trestle_gateway::pipeline::{ingress, sse_frame};
use trestle_gateway::providers::openai;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;
use trestle_gateway::store::{Attempt, Body, Recorder, SqliteStore, Trace};

const CONFIG: &str = r#"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[routes.chat]
targets = ["up/m1"]
"#;

const REQUEST: &[u8] = br#"{"model":"chat","messages":[{"role":"system","content":"You are a helpful support assistant for an online shop. Answer briefly."},{"role":"user","content":"Where is my parcel? I ordered a pair of shoes last Tuesday and the tracking page has not changed since."}],"temperature":0.2,"max_tokens":200,"user":"u-123"}"#;

const CHUNK: &str = r#"{"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1732000000,"model":"m1","choices":[{"index":0,"delta":{"content":" parcel"},"finish_reason":null}]}"#;

const COMPLETION: &[u8] = br#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1732000000,"model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"Your parcel left the depot this morning."},"finish_reason":"stop"}],"usage":{"prompt_tokens":52,"completion_tokens":9,"total_tokens":61}}"#;

fn runtime() -> Runtime {
    let config = Config::parse(CONFIG, &|_| None).unwrap().config;
    Runtime::build(config, Arc::new(Registry::new(&CacheConfig::default()))).unwrap()
}

fn trace(i: u64) -> Trace {
    Trace {
        trace_id: format!("{i:032x}"),
        span_id: format!("{i:016x}"),
        parent_span_id: None,
        started_at_ms: 1_700_000_000_000,
        duration_ms: 12.5,
        ttft_ms: None,
        route: "chat".into(),
        class: "progressive".into(),
        conversation_id: Some("c1".into()),
        user_id: Some("u1".into()),
        stream: false,
        status: 200,
        outcome: "ok".into(),
        error: None,
        fallback_level: "primary".into(),
        capability_level: 5,
        cache: "miss".into(),
        cost_saved_usd: 0.0,
        cache_similarity: None,
        served_by: Some("up/m1".into()),
        usage: Usage::new(52, 9, 0),
        cost_usd: 0.0,
        request: Some(Body::Raw(Bytes::from_static(REQUEST))),
        response: Some(Body::Raw(Bytes::from_static(COMPLETION))),
        attempts: vec![Attempt {
            span_id: "a1".into(),
            target: "up/m1".into(),
            provider: "up".into(),
            model: "m1".into(),
            offset_ms: 0.1,
            latency_ms: 12.0,
            ttft_ms: None,
            status: "ok".into(),
            http_status: None,
            error: None,
            retryable: false,
            cold_start: false,
            tokens_in: 52,
            tokens_out: 9,
            tokens_cached: 0,
            cost_usd: 0.0,
        }],
        guardrails: Vec::new(),
        confidence: None,
        dropped_params: Vec::new(),
        prompt_version: None,
        experiment: None,
        variant: None,
        response_model: None,
        system_fingerprint: None,
        flags: Vec::new(),
        tenant: None,
        key_id: None,
        input_budget: None,
    }
}

fn request_path(c: &mut Criterion) {
    let rt = runtime();
    c.bench_function("parse → resolve → upstream body", |b| {
        b.iter(|| {
            let req = ingress::parse_chat(black_box(REQUEST)).unwrap();
            let route = rt.resolve(&req.model).unwrap();
            let body = openai::request_body(&route.targets[0].model, &req, false).unwrap();
            black_box(body)
        })
    });
    c.bench_function("completion parsed for usage", |b| {
        b.iter(|| black_box(openai::parse_completion(Bytes::from_static(COMPLETION)).unwrap()))
    });
}

fn stream_relay(c: &mut Criterion) {
    c.bench_function("SSE chunk: parse + frame", |b| {
        b.iter(|| {
            let chunk = openai::parse_chunk(black_box(CHUNK)).unwrap().unwrap();
            black_box(sse_frame(chunk.raw.as_deref().unwrap_or_default()))
        })
    });
}

fn trace_enqueue(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("trestle-bench-{}", std::process::id()));
    let store = SqliteStore::open(&dir.join("bench.db")).unwrap();
    let recorder =
        Recorder::start(Box::new(store), 1 << 20, 512, Duration::from_millis(20)).unwrap();
    let mut i = 0u64;
    c.bench_function("trace enqueue (bounded queue, writer thread)", |b| {
        b.iter(|| {
            i += 1;
            recorder.record(black_box(trace(i)));
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(recorder.close(Duration::from_secs(60)));
    let _ = std::fs::remove_dir_all(dir);
}

fn exact_cache(c: &mut Criterion) {
    let rt = runtime();
    let route = rt.resolve("chat").unwrap();
    let req = ingress::parse_chat(REQUEST).unwrap();
    let norm = Normalize::default();
    c.bench_function("exact cache: normalized key", |b| {
        b.iter(|| black_box(exact_key(&route, "", black_box(&req), &norm)))
    });
    let caches = &rt.registry.caches;
    let mut k = 0u64;
    c.bench_function("exact cache: store an answer", |b| {
        b.iter(|| {
            k = k.wrapping_add(1) % 20_000;
            let answer = Answer::Raw(Bytes::from_static(COMPLETION));
            caches.exact.put(k, Entry::new(answer, "up/m1", 0.0001));
        })
    });
    c.bench_function("exact cache: lookup (hit)", |b| {
        b.iter(|| black_box(caches.exact.get(black_box(17), Duration::from_secs(60))))
    });
}

/// An experiment's assignment and a prompt version rendered into the request: the work a
/// request on a route with a prompt and an experiment adds (issue bar: under 20 µs p50).
fn experiment_and_prompt(c: &mut Criterion) {
    use trestle_core::experiment::ExperimentConfig;
    use trestle_gateway::experiments::Experiment;
    use trestle_gateway::prompts::{self, Prompt};
    let dir = std::env::temp_dir().join(format!("trestle-bench-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("support-answer.toml");
    std::fs::write(
        &path,
        "variables = { shop = { type = \"string\", required = true }, tier = { type = \"integer\", default = 1 } }\n[[versions]]\nversion = 1\nsystem = \"You are a helpful support agent for {{ shop }}.\"\n[[versions]]\nversion = 2\nsystem = \"You are a concise support agent for {{ shop }} (tier {{ tier }}). Answer in one sentence; never promise refunds the policy does not allow.\"\nparams = { temperature = 0.2 }\n",
    )
    .unwrap();
    let prompt = Prompt::load(&path).unwrap();
    let cfg: ExperimentConfig = toml::from_str(
        "route = \"chat\"\nvariants = { control = \"support-answer@1\", concise = \"support-answer@2\" }",
    )
    .unwrap();
    let e = Experiment::build("tone", &cfg, |_| anyhow::bail!("no targets")).unwrap();
    let body = br#"{"model":"chat","messages":[{"role":"user","content":"Where is my parcel? I ordered it a week ago."}],"prompt_variables":{"shop":"Acme"}}"#;
    let req = ingress::parse_chat(body).unwrap();
    let vars = req.extra["prompt_variables"].as_object().cloned();
    c.bench_function("experiment: assign a user", |b| {
        b.iter(|| black_box(e.assign(black_box("user-8812"))))
    });
    c.bench_function("prompt: render a version and apply it", |b| {
        b.iter(|| {
            let mut r = req.clone();
            let v = e.variants[e.assign("user-8812")].prompt.clone();
            let n = match v {
                Some(trestle_core::experiment::PromptRef::Version(_, n)) => n,
                _ => 1,
            };
            prompts::apply(&mut r, prompt.render(n, vars.as_ref()).unwrap());
            black_box(r)
        })
    });
    c.bench_function(
        "prompt: the request clone alone (baseline for the above)",
        |b| b.iter(|| black_box(req.clone())),
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Counting a ~2,000-token conversation (a system prompt and 26 turns) with o200k_base: the
/// work `max_input_tokens` adds to a request on such a route.
fn input_budget(c: &mut Criterion) {
    use trestle_core::budget::Encoding;
    use trestle_core::openai::{Message, Role};
    use trestle_gateway::tokens::{REPLY_PRIMING, Tokenizer};
    let mut messages = vec![Message::new(
        Role::System,
        "You are a helpful support assistant for an online shop. Answer briefly and politely.",
    )];
    for i in 0..26 {
        messages.push(Message::new(
            Role::User,
            format!(
                "Question {i}: I ordered a pair of running shoes last Tuesday, size 42, and the \
                 tracking page still says the parcel is at the depot. Can you check?"
            ),
        ));
        messages.push(Message::new(
            Role::Assistant,
            "I checked your order: the parcel left the depot this morning and should reach you \
             within two working days. You will get an e-mail with the new tracking link.",
        ));
    }
    let tok = Tokenizer::Tiktoken(Encoding::O200kBase);
    let total: u64 = messages.iter().map(|m| tok.message(m)).sum::<u64>() + REPLY_PRIMING;
    assert!((1_900..2_100).contains(&total), "{total} tokens");
    c.bench_function("budget: count a 2k-token conversation (o200k_base)", |b| {
        b.iter(|| {
            black_box(
                black_box(&messages)
                    .iter()
                    .map(|m| tok.message(m))
                    .sum::<u64>(),
            )
        })
    });
}

/// A key's check on every request: its hash, the in-memory map, the minute window and the
/// budget (issue: under 5 µs p50).
fn key_check(c: &mut Criterion) {
    use trestle_gateway::keys::{KeyStore, Keys, NewKey, admit, parse_budget};
    let dir = std::env::temp_dir().join(format!("trestle-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keys.db");
    let store = KeyStore::open(&db).unwrap();
    let (secret, _) = store
        .create(
            &NewKey {
                name: "bench".into(),
                tenant: "acme".into(),
                rpm: Some(u64::MAX / 2),
                budget: Some(parse_budget("month:1000000").unwrap()),
                ..Default::default()
            },
            trestle_gateway::store::now_ms(),
        )
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let keys = Keys::new(Some(trestle_gateway::db::Db::Sqlite(db)));
    c.bench_function("auth: check a key, its limits and budget", |b| {
        b.iter(|| {
            let caller = keys.authenticate(black_box(&secret)).unwrap();
            admit(&caller).unwrap();
            black_box(caller)
        })
    });
    std::fs::remove_dir_all(dir).ok();
}

const GUARDED: &str = r#"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]
[guardrails.injection]
kind = "prompt_injection"
[routes.chat]
targets = ["up/m1"]
guardrails = { input = ["pii", "injection"] }
"#;

/// The input guardrails of bench/full/trestle.toml (PII without a named-entity model, and
/// prompt injection) on a 1 KB user message with an email and a phone number in it
/// (budget: 200 µs).
fn guardrails(c: &mut Criterion) {
    use trestle_gateway::guard::Context;
    let config = Config::parse(GUARDED, &|_| None).unwrap().config;
    let rt = Runtime::build(config, Arc::new(Registry::new(&CacheConfig::default()))).unwrap();
    let (pii, injection) = (
        rt.guardrails["pii"].clone(),
        rt.guardrails["injection"].clone(),
    );
    let mut text = String::from(
        "Hello, I ordered a pair of walking shoes last Tuesday and paid by card. My email is \
         jane.doe@example.com and you can call me on +1 415 555 0134 in the afternoon. ",
    );
    while text.len() < 1024 {
        text.push_str("The tracking page has not changed since the parcel left the depot. ");
    }
    text.truncate(1024);
    let ctx = Context::default();
    c.bench_function("guardrails: pii (redact) + prompt injection on 1 KB", |b| {
        b.iter(|| {
            black_box(pii.check_now(black_box(&text), &ctx).unwrap());
            black_box(injection.check_now(black_box(&text), &ctx).unwrap())
        })
    });
}

/// A request's estimated cost reserved on its key's, tenant's and route's budgets, and the
/// real cost settled, in memory (budget: 5 µs).
fn budget_reserve(c: &mut Criterion) {
    use trestle_gateway::keys::{Caller, KeyRecord, Keys, Usage, parse_budget};
    let config = Config::parse(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[tenants.acme]\nbudget_usd = \"month:1000000\"\n[routes.chat]\ntargets = [\"up/m1\"]\nbudget_usd = \"month:1000000\"\n",
        &|_| None,
    )
    .unwrap()
    .config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let keys = Keys::new(None);
    let budget = parse_budget("month:1000000").unwrap();
    let caller = Caller {
        key: Arc::new(KeyRecord {
            id: "k1".into(),
            hash: String::new(),
            name: "bench".into(),
            tenant: "acme".into(),
            routes: None,
            rpm: None,
            tpm: None,
            budget: Some(budget),
            admin: false,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            rotated_from: None,
        }),
        usage: Arc::new(Usage::new(0.0, 0)),
    };
    c.bench_function(
        "budgets: reserve an estimate on key, tenant and route, then settle",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let held = keys
                        .reserve(&config, Some(&caller), "chat", black_box(0.0004))
                        .await
                        .unwrap();
                    keys.settle_request(&config, Some(&caller), Some("chat"), 0.0001, held, 61)
                        .await;
                })
            })
        },
    );
}

criterion_group!(
    benches,
    key_check,
    guardrails,
    budget_reserve,
    request_path,
    stream_relay,
    trace_enqueue,
    exact_cache,
    experiment_and_prompt,
    input_budget
);
criterion_main!(benches);
