//! The provisioned-capacity clouds end to end: `azure_openai` and `vertex` targets through
//! the real `trestle serve`, against fakes written from the public references
//! (`fakes/mod.rs`): auth (api-key, Entra bearer, service-account token exchange with
//! refresh before expiry), streams, content filters, and overflow from provisioned capacity
//! to pay-as-you-go under 429s with nothing reaching the client.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod fakes;

use std::time::Duration;

use common::*;
use fakes::{FakeAzure, FakeVertex};
use serde_json::json;

fn azure_config(fake: &FakeAzure, auth: &str, models: &str) -> String {
    format!(
        "[providers.azure]\nkind = \"azure_openai\"\nendpoint = \"{}\"\n{auth}\n\
         [routes.chat]\ntargets = [\"azure/gpt-4o-ptu\", \"azure/gpt-4o-paygo\"]\nretries = 1\n\
         timeout_ms = 10000\n{models}",
        fake.url
    )
}

async fn ask(gw: &Proc, model: &str, text: &str, stream: bool) -> (u16, String) {
    let r = post_with(gw, &chat_body(model, text, stream), &[]).await;
    let status = r.status().as_u16();
    if status != 200 {
        return (status, r.text().await.unwrap());
    }
    (status, answer_text(r).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_answers_with_an_api_key_and_with_an_entra_bearer_token() {
    let fake = FakeAzure::start("az-key", "entra-token").await;
    for (auth, env, seen) in [
        ("api_key = \"${AZ_KEY}\"", ("AZ_KEY", "az-key"), "api-key"),
        (
            "bearer_token = \"${AZ_TOKEN}\"",
            ("AZ_TOKEN", "entra-token"),
            "bearer",
        ),
    ] {
        let gw = gateway(&azure_config(&fake, auth, ""), &[env]);
        for stream in [false, true] {
            let (status, text) = ask(&gw, "chat", "hi", stream).await;
            assert_eq!((status, text.as_str()), (200, "Hello from gpt-4o-ptu"));
        }
        assert_eq!(fake.state.auth_seen.lock().unwrap().last().unwrap(), seen);
    }
    assert!(
        fake.state
            .api_versions
            .lock()
            .unwrap()
            .iter()
            .all(|v| v == "2024-10-21")
    );
    // A wrong key is not the client's fault: a 502, not a 400.
    let gw = gateway(&azure_config(&fake, "api_key = \"wrong\"", ""), &[]);
    let (status, _) = ask(&gw, "chat", "hi", false).await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_stream_hides_filter_annotations_and_keeps_usage_when_asked() {
    let fake = FakeAzure::start("az-key", "t").await;
    let gw = gateway(&azure_config(&fake, "api_key = \"az-key\"", ""), &[]);
    let mut body = chat_body("chat", "hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post_with(&gw, &body, &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let chunks: Vec<serde_json::Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "chatcmpl-az"),
        "{text}"
    );
    assert!(!text.contains("prompt_filter_results"), "{text}");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_content_filter_refusal_is_a_400_tried_once() {
    let fake = FakeAzure::start("az-key", "t").await;
    let gw = gateway(&azure_config(&fake, "api_key = \"az-key\"", ""), &[]);
    let (status, body) = ask(&gw, "chat", "something forbidden", false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("content management policy"), "{body}");
    // Not retried, and not sent on to the pay-as-you-go deployment.
    assert_eq!(fake.calls("gpt-4o-ptu"), 1);
    assert_eq!(fake.calls("gpt-4o-paygo"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_azure_ptu_deployment_overflows_to_pay_as_you_go_for_its_retry_after_ms() {
    let fake = FakeAzure::start("az-key", "t").await;
    fake.set_busy("gpt-4o-ptu", true);
    // Azure's finer header says 1.2 s; `retry-after` (30 s) would keep the deployment out of
    // rotation for the whole test if it were read instead.
    fake.state
        .retry_after_ms
        .store(1_200, std::sync::atomic::Ordering::SeqCst);
    fake.state
        .retry_after_s
        .store(30, std::sync::atomic::Ordering::SeqCst);
    let models = "[models.\"azure/gpt-4o-ptu\"]\nretry_after_pause_ms = 500\nthrottle_k = 0\n";
    let gw = gateway(&azure_config(&fake, "api_key = \"az-key\"", models), &[]);
    for i in 0..6 {
        let (status, text) = ask(&gw, "chat", "hi", i % 2 == 1).await;
        assert_eq!((status, text.as_str()), (200, "Hello from gpt-4o-paygo"));
    }
    // One 429, then the deployment is out of rotation for 1.2 s: no more calls to it.
    assert_eq!(fake.calls("gpt-4o-ptu"), 1);
    assert_eq!(fake.calls("gpt-4o-paygo"), 6);
    // Served one level down the chain, and said so.
    let r = post_with(&gw, &chat_body("chat", "again", false), &[]).await;
    assert_eq!(r.headers()["x-trestle-fallback-level"], "model");
    // After the pause the PTU deployment is asked again and, with room, serves.
    fake.set_busy("gpt-4o-ptu", false);
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    let (status, text) = ask(&gw, "chat", "hi", false).await;
    assert_eq!((status, text.as_str()), (200, "Hello from gpt-4o-ptu"));
    assert_eq!(fake.calls("gpt-4o-ptu"), 2);
}

fn vertex_config(fake: &FakeVertex, dir: &std::path::Path, extra: &str) -> String {
    std::fs::write(dir.join("sa.json"), fake.key_json()).unwrap();
    format!(
        "[providers.vertex]\nkind = \"vertex\"\nproject = \"proj\"\nlocation = \"europe-west4\"\n\
         endpoint = \"{}\"\ncredentials_file = \"{}\"\n{extra}\n\
         [routes.gemini]\ntargets = [\"vertex/gemini-2.0-flash-001\"]\ntimeout_ms = 10000\n",
        fake.url,
        dir.join("sa.json").display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn vertex_exchanges_a_service_account_key_caches_the_token_and_refreshes_it_early() {
    let fake = FakeVertex::start().await;
    // Tokens live 2 s: the gateway replaces them after 1 s (halfway), before they expire.
    fake.state
        .expires_in
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let dir = temp_dir("vertex-key");
    let gw = gateway(&vertex_config(&fake, &dir, ""), &[]);
    for stream in [false, true, false] {
        let (status, text) = ask(&gw, "gemini", "hi", stream).await;
        assert_eq!((status, text.as_str()), (200, "Hello from Vertex (none)"));
    }
    assert_eq!(fake.exchanges(), 1, "the token is cached");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = ask(&gw, "gemini", "hi", true).await;
    assert_eq!(status, 200);
    assert_eq!(fake.exchanges(), 2, "refreshed before expiry");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = ask(&gw, "gemini", "hi", false).await;
    assert_eq!(status, 200);
    assert_eq!(fake.exchanges(), 3);
    // No call ever carried an expired token.
    assert_eq!(
        fake.state
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let paths = fake.state.paths.lock().unwrap().clone();
    assert!(paths.contains(&"proj/europe-west4/gemini-2.0-flash-001:generateContent".into()));
    assert!(paths.contains(&"proj/europe-west4/gemini-2.0-flash-001:streamGenerateContent".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn vertex_takes_a_static_access_token_and_sends_the_throughput_header() {
    let fake = FakeVertex::start().await;
    // A token obtained elsewhere (as `gcloud auth print-access-token` gives).
    let issued = {
        let client = client();
        let jwt_free = client
            .post(format!("{}/token", fake.url))
            .body("grant_type=bad")
            .send()
            .await
            .unwrap();
        assert_eq!(jwt_free.status(), 400);
        let dir = temp_dir("vertex-static");
        let gw = gateway(&vertex_config(&fake, &dir, "throughput = \"shared\""), &[]);
        let (status, text) = ask(&gw, "gemini", "hi", false).await;
        assert_eq!((status, text.as_str()), (200, "Hello from Vertex (shared)"));
        "ya29.fake-1"
    };
    let config = format!(
        "[providers.vertex]\nkind = \"vertex\"\nproject = \"proj\"\nlocation = \"global\"\n\
         endpoint = \"{}\"\naccess_token = \"${{TOKEN}}\"\nthroughput = \"provisioned\"\n\
         [routes.gemini]\ntargets = [\"vertex/gemini-2.0-flash-001\"]\n",
        fake.url
    );
    let gw = gateway(&config, &[("TOKEN", issued)]);
    let (status, text) = ask(&gw, "gemini", "hi", true).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "Hello from Vertex (dedicated)")
    );
    assert_eq!(fake.exchanges(), 1);
    assert!(
        fake.state
            .paths
            .lock()
            .unwrap()
            .contains(&"proj/global/gemini-2.0-flash-001:streamGenerateContent".into())
    );
}

/// `examples/provisioned-overflow.toml`, pointed at the fakes through its environment
/// variables: `trestle config check` passes, and with both provisioned capacities full every
/// request is served by pay-as-you-go.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_overflows_both_clouds_from_provisioned_to_pay_as_you_go() {
    let azure = FakeAzure::start("az-key", "t").await;
    let vertex = FakeVertex::start().await;
    azure.set_busy("gpt-4o-ptu", true);
    vertex
        .state
        .provisioned_full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = temp_dir("example-overflow");
    let key = dir.join("sa.json");
    std::fs::write(&key, vertex.key_json()).unwrap();
    let key = key.display().to_string();
    let env = [
        ("AZURE_OPENAI_ENDPOINT", azure.url.as_str()),
        ("AZURE_OPENAI_API_KEY", "az-key"),
        ("VERTEX_PROJECT", "proj"),
        ("VERTEX_ENDPOINT", vertex.url.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", key.as_str()),
    ];
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/provisioned-overflow.toml");
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&example)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let gw = gateway(&std::fs::read_to_string(&example).unwrap(), &env);
    for i in 0..8 {
        let stream = i % 2 == 0;
        let (status, text) = ask(&gw, "chat", "hi", stream).await;
        assert_eq!((status, text.as_str()), (200, "Hello from gpt-4o-paygo"));
        let (status, text) = ask(&gw, "gemini", "hi", stream).await;
        assert_eq!((status, text.as_str()), (200, "Hello from Vertex (shared)"));
    }
    assert!(azure.calls("gpt-4o-ptu") >= 1);
    assert_eq!(azure.calls("gpt-4o-paygo"), 8);
    assert!(vertex.calls("dedicated") >= 1);
    assert_eq!(vertex.calls("shared"), 8);
    // Both Vertex providers share one key file, each with its own token.
    assert!(vertex.exchanges() <= 2);
    // Once provisioned capacity frees up, it serves again.
    vertex
        .state
        .provisioned_full
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut served_by_ptu = false;
    for _ in 0..40 {
        let (status, text) = ask(&gw, "gemini", "hi", false).await;
        assert_eq!(status, 200);
        if text == "Hello from Vertex (dedicated)" {
            served_by_ptu = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_by_ptu, "the provisioned target came back");
}
