//! Azure OpenAI's wire differences from OpenAI, over fixtures written from Azure's public
//! REST reference (content-filter annotations, the deployment URL, the content-filter 400).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::providers::http;

#[test]
fn the_url_names_the_deployment_and_the_api_version() {
    assert_eq!(
        deployment_path("gpt-4o-ptu", "chat/completions", "2024-10-21").unwrap(),
        "/openai/deployments/gpt-4o-ptu/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        deployment_path("emb.3-small", "embeddings", "2025-01-01-preview").unwrap(),
        "/openai/deployments/emb.3-small/embeddings?api-version=2025-01-01-preview"
    );
    // A name that would change the URL is refused, naming `model`.
    for bad in ["", "a/b", "x?y", "a b", "../x"] {
        match deployment_path(bad, "chat/completions", "2024-10-21") {
            Err(ProviderError::Refused { param, .. }) => {
                assert_eq!(param.as_deref(), Some("model"))
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn annotation_only_chunks_are_recognised_and_the_rest_parse_as_openai() {
    let text = include_str!("fixtures/stream.sse");
    let chunks: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| openai::parse_chunk(d).unwrap())
        .collect();
    assert_eq!(chunks.len(), 5);
    let kept: Vec<_> = chunks.iter().filter(|c| !is_annotation_only(c)).collect();
    // The `prompt_filter_results` chunk goes; the usage chunk (no choices) stays.
    assert_eq!(kept.len(), 4);
    assert_eq!(kept[0].chunk.id, "chatcmpl-AZ1");
    assert_eq!(
        kept[1].chunk.choices[0].delta.content.as_deref(),
        Some("Bonjour")
    );
    assert!(
        kept[1].chunk.choices[0]
            .extra
            .contains_key("content_filter_results")
    );
    assert_eq!(kept[3].chunk.usage.as_ref().unwrap().total_tokens, 11);
}

#[test]
fn a_completion_with_filter_results_parses() {
    let c = openai::parse_completion(Bytes::from_static(include_bytes!(
        "fixtures/completion.json"
    )))
    .unwrap();
    assert_eq!(
        c.body.choices[0].message.content.as_deref(),
        Some("Bonjour")
    );
    assert!(c.body.extra.contains_key("prompt_filter_results"));
}

#[test]
fn a_content_filter_refusal_is_the_clients_error_and_not_retried() {
    let body = include_bytes!("fixtures/content_filter.json");
    let e = ProviderError::Status {
        status: 400,
        message: http::error_message(body),
        retry_after: None,
    };
    assert!(e.message_contains("content management policy"));
    assert!(e.is_client_error());
    assert!(!e.is_retryable());
}

impl ProviderError {
    fn message_contains(&self, needle: &str) -> bool {
        self.to_string().contains(needle)
    }
}

/// The `azure_openai` column is the `openai` one (the same body), with the model naming the
/// deployment in the URL.
#[test]
fn every_row_of_the_parameter_table() {
    let config: AzureOpenaiConfig =
        toml::from_str("endpoint = \"https://r.openai.azure.com\"\napi_key = \"k\"").unwrap();
    let provider = AzureOpenAi::new(&config).unwrap();
    crate::providers::param_table::check(
        "azure_openai",
        &crate::providers::openai::tests::table_cases(),
        |req| {
            let body = openai::request_body("up-model", req, req.is_stream())?;
            Ok(serde_json::from_slice(&body).unwrap())
        },
        |req| provider.dropped(req),
        None,
    );
    assert_eq!(
        provider.path("gpt-4o-ptu", "chat/completions").unwrap(),
        format!(
            "/openai/deployments/gpt-4o-ptu/chat/completions?api-version={}",
            config.api_version
        )
    );
}
