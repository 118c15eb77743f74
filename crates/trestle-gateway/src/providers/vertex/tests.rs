//! Vertex AI: URLs, the throughput header, and the service-account token exchange against a
//! token endpoint that checks the signature with the key's public half.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};
use trestle_core::cloud::{Throughput, VertexConfig};

use super::token::{self, Account, ServiceAccountKey};
use super::*;

const KEY: &str = include_str!("fixtures/test-key.pem");

fn config(toml_text: &str) -> VertexConfig {
    toml::from_str(toml_text).unwrap()
}

fn key(token_uri: &str) -> ServiceAccountKey {
    ServiceAccountKey {
        client_email: "trestle@proj.iam.gserviceaccount.com".into(),
        private_key: KEY.into(),
        private_key_id: Some("k1".into()),
        token_uri: Some(token_uri.into()),
    }
}

/// Checks a JWT's RS256 signature with the test key's public half; returns its claims.
fn verify(jwt: &str) -> Value {
    let der = token::pem_body(KEY).unwrap();
    let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref());
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    public
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("a valid RS256 signature");
    let (header, claims) = signed.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "k1");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[test]
fn urls_follow_the_location_and_the_endpoint_override() {
    let c = config("project = \"p\"\nlocation = \"europe-west4\"\naccess_token = \"t\"");
    assert_eq!(
        c.base_url(),
        "https://europe-west4-aiplatform.googleapis.com"
    );
    let c = config("project = \"p\"\nlocation = \"global\"\naccess_token = \"t\"");
    assert_eq!(c.base_url(), "https://aiplatform.googleapis.com");
    let c = config("project = \"p\"\nendpoint = \"http://127.0.0.1:9/\"\naccess_token = \"t\"");
    assert_eq!(c.base_url(), "http://127.0.0.1:9");
    let v = Vertex::new(&c, None).unwrap();
    assert_eq!(
        v.path("gemini-2.0-flash-001", "generateContent").unwrap(),
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent"
    );
    assert_eq!(
        v.path(
            "publishers/google/models/gemini-2.5-pro",
            "streamGenerateContent?alt=sse"
        )
        .unwrap(),
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert!(matches!(
        v.path("x/../y", "generateContent"),
        Err(ProviderError::Refused { .. })
    ));
}

#[test]
fn throughput_picks_the_documented_header_value() {
    assert_eq!(Throughput::Provisioned.request_type(), Some("dedicated"));
    assert_eq!(Throughput::Shared.request_type(), Some("shared"));
    assert_eq!(Throughput::Default.request_type(), None);
    let c = config("project = \"p\"\nthroughput = \"provisioned\"\naccess_token = \"t\"");
    assert_eq!(c.throughput, Throughput::Provisioned);
}

#[test]
fn the_assertion_is_a_signed_jwt_with_the_documented_claims() {
    let account = Account::new(key("https://oauth2.example.test/token")).unwrap();
    let claims = verify(&account.assertion(1_700_000_000).unwrap());
    assert_eq!(claims["iss"], "trestle@proj.iam.gserviceaccount.com");
    assert_eq!(claims["scope"], token::SCOPE);
    assert_eq!(claims["aud"], "https://oauth2.example.test/token");
    assert_eq!(claims["iat"], 1_700_000_000u64);
    assert_eq!(claims["exp"], 1_700_003_600u64);
}

#[test]
fn tokens_are_replaced_five_minutes_early_or_halfway() {
    assert_eq!(
        token::refresh_margin(Duration::from_secs(3600)),
        Duration::from_secs(300)
    );
    assert_eq!(
        token::refresh_margin(Duration::from_secs(60)),
        Duration::from_secs(30)
    );
}

/// A token endpoint: checks the form and the signature, counts exchanges, answers tokens
/// valid for `expires_in` seconds.
async fn token_server(expires_in: u64) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let counted = counted.clone();
            async move {
                let mut grant = None;
                let mut assertion = None;
                for pair in body.split('&') {
                    match pair.split_once('=') {
                        Some(("grant_type", v)) => grant = Some(v.to_string()),
                        Some(("assertion", v)) => assertion = Some(v.to_string()),
                        _ => {}
                    }
                }
                assert_eq!(
                    grant.as_deref(),
                    Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
                );
                verify(&assertion.unwrap());
                // Slow enough that concurrent callers overlap.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(json!({"access_token": format!("tok-{n}"), "expires_in": expires_in, "token_type": "Bearer"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_exchange_serves_concurrent_callers_and_refresh_comes_before_expiry() {
    // Valid 2 s: replaced after 1 s (halfway), while still valid.
    let (url, count) = token_server(2).await;
    let tokens = Arc::new(Tokens::Account(Arc::new(Account::new(key(&url)).unwrap())));
    let got = futures_util::future::join_all((0..8).map(|_| {
        let tokens = tokens.clone();
        async move { tokens.get().await.unwrap().to_string() }
    }))
    .await;
    assert!(got.iter().all(|t| t == "tok-1"), "{got:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "single flight");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(&*tokens.get().await.unwrap(), "tok-2");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // A refused token is forgotten: the next call exchanges again.
    tokens.invalidate();
    assert_eq!(&*tokens.get().await.unwrap(), "tok-3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_is_a_401_not_the_clients_error() {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let tokens = Tokens::Account(Arc::new(Account::new(key(&url)).unwrap()));
    let e = tokens.get().await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Status { status: 401, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("invalid_grant: Invalid JWT Signature."),
        "{e}"
    );
    assert!(!e.is_client_error());
}

/// The `vertex` column is the `gemini` one (the same body and dropped list), with the model in
/// the Vertex URL.
#[test]
fn every_row_of_the_parameter_table() {
    let provider = Vertex::new(
        &config("project = \"p\"\nlocation = \"us-central1\"\naccess_token = \"t\""),
        None,
    )
    .unwrap();
    crate::providers::param_table::check(
        "vertex",
        &gemini::param_tests::cases(),
        gemini::request::request_body,
        |req| provider.dropped(req),
        Some(gemini::param_tests::GENERATE_FIELDS),
    );
    assert_eq!(
        provider
            .path("gemini-2.0-flash", "generateContent")
            .unwrap(),
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    );
}
