//! `[providers.NAME]` for the provisioned-capacity clouds: `kind = "azure_openai"` (Azure
//! OpenAI deployments) and `kind = "vertex"` (Gemini on Vertex AI). Each reads into the shared
//! [`HttpProviderConfig`] for the HTTP plumbing and adds what its URL and auth need.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{HttpProviderConfig, Secret};

/// The Azure OpenAI `api-version` used when none is set (the current GA data-plane version).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// `kind = "azure_openai"`: `{endpoint}/openai/deployments/{deployment}/chat/completions`,
/// where a target's model names the deployment (`azure/gpt-4o-ptu`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureOpenaiConfig {
    /// The resource's endpoint, `https://NAME.openai.azure.com`.
    pub endpoint: String,
    /// The `api-version` query parameter.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// A resource key, sent as the `api-key` header.
    pub api_key: Option<Secret>,
    /// A Microsoft Entra ID access token (scope `https://cognitiveservices.azure.com/.default`),
    /// sent as `Authorization: Bearer`; usually `${AZURE_OPENAI_TOKEN}`, refreshed by a reload.
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    pub max_response_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
}

fn default_api_version() -> String {
    DEFAULT_AZURE_API_VERSION.to_string()
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

impl AzureOpenaiConfig {
    /// The HTTP settings (the endpoint as base URL; the key is the bearer token when one is
    /// set, else the `api-key`).
    pub fn http(&self) -> HttpProviderConfig {
        HttpProviderConfig {
            base_url: Some(self.endpoint.clone()),
            api_key: self
                .bearer()
                .or_else(|| self.api_key.clone().filter(|k| !k.expose().is_empty())),
            headers: self.headers.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            prompt_cache: false,
            max_response_bytes: self.max_response_bytes,
            max_event_bytes: self.max_event_bytes,
        }
    }

    /// The Entra ID token, when one is set and not empty.
    pub fn bearer(&self) -> Option<Secret> {
        self.bearer_token.clone().filter(|k| !k.expose().is_empty())
    }

    /// The fields `${NAME}` is expanded in, by key.
    pub fn fields_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut out: Vec<(String, &mut String)> = vec![
            ("endpoint".into(), &mut self.endpoint),
            ("api_version".into(), &mut self.api_version),
        ];
        if let Some(key) = self.api_key.as_mut() {
            out.push(("api_key".into(), &mut key.0));
        }
        if let Some(token) = self.bearer_token.as_mut() {
            out.push(("bearer_token".into(), &mut token.0));
        }
        for (header, value) in self.headers.iter_mut() {
            out.push((format!("headers.{header}"), value));
        }
        out
    }

    /// What is wrong, as (field, message) pairs.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(message) = url_problem(&self.endpoint) {
            out.push(("endpoint", message));
        }
        if self.api_version.trim().is_empty() {
            out.push((
                "api_version",
                "must not be empty (e.g. \"2024-10-21\")".into(),
            ));
        }
        let key = self
            .api_key
            .as_ref()
            .is_some_and(|k| !k.expose().is_empty());
        if key && self.bearer().is_some() {
            out.push((
                "bearer_token",
                "set either `api_key` or `bearer_token`, not both".into(),
            ));
        }
        out
    }
}

/// Which Vertex AI capacity a request may use (the `X-Vertex-AI-LLM-Request-Type` header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Throughput {
    /// Provisioned throughput first, pay-as-you-go past it (no header).
    #[default]
    Default,
    /// Provisioned throughput only (`dedicated`): over it, Vertex answers 429.
    Provisioned,
    /// Pay-as-you-go only (`shared`), even where provisioned throughput is bought.
    Shared,
}

impl Throughput {
    /// The header value, if any.
    pub fn request_type(self) -> Option<&'static str> {
        match self {
            Throughput::Default => None,
            Throughput::Provisioned => Some("dedicated"),
            Throughput::Shared => Some("shared"),
        }
    }
}

/// `kind = "vertex"`: Gemini on Vertex AI,
/// `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VertexConfig {
    /// The Google Cloud project id.
    pub project: String,
    /// The region (`us-central1`, `europe-west4`…) or `global`.
    #[serde(default = "default_location")]
    pub location: String,
    /// Replaces `https://{location}-aiplatform.googleapis.com` (a private endpoint, a test
    /// server); the `/v1/projects/…` path follows it.
    pub endpoint: Option<String>,
    /// A service-account key file (JSON), exchanged for OAuth 2 access tokens; `${NAME}` is
    /// expanded (e.g. `${GOOGLE_APPLICATION_CREDENTIALS}`).
    pub credentials_file: Option<String>,
    /// The same key inline (e.g. `${VERTEX_SA_KEY}`).
    pub credentials_json: Option<Secret>,
    /// A ready access token (e.g. from `gcloud auth print-access-token`), used as is.
    pub access_token: Option<Secret>,
    /// `provisioned` (dedicated capacity only), `shared` (pay-as-you-go only) or `default`.
    #[serde(default)]
    pub throughput: Throughput,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    pub max_response_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
}

fn default_location() -> String {
    "us-central1".to_string()
}

impl VertexConfig {
    /// The base URL the `/v1/projects/…` paths follow.
    pub fn base_url(&self) -> String {
        match self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None if self.location == "global" => "https://aiplatform.googleapis.com".into(),
            None => format!("https://{}-aiplatform.googleapis.com", self.location),
        }
    }

    /// The HTTP settings (no key: the token is added per request).
    pub fn http(&self) -> HttpProviderConfig {
        HttpProviderConfig {
            base_url: Some(self.base_url()),
            api_key: None,
            headers: self.headers.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            prompt_cache: false,
            max_response_bytes: self.max_response_bytes,
            max_event_bytes: self.max_event_bytes,
        }
    }

    /// The credentials file, if set and not empty.
    pub fn credentials_path(&self) -> Option<PathBuf> {
        self.credentials_file
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// The fields `${NAME}` is expanded in, by key.
    pub fn fields_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut out: Vec<(String, &mut String)> = vec![
            ("project".into(), &mut self.project),
            ("location".into(), &mut self.location),
        ];
        if let Some(endpoint) = self.endpoint.as_mut() {
            out.push(("endpoint".into(), endpoint));
        }
        if let Some(file) = self.credentials_file.as_mut() {
            out.push(("credentials_file".into(), file));
        }
        if let Some(json) = self.credentials_json.as_mut() {
            out.push(("credentials_json".into(), &mut json.0));
        }
        if let Some(token) = self.access_token.as_mut() {
            out.push(("access_token".into(), &mut token.0));
        }
        for (header, value) in self.headers.iter_mut() {
            out.push((format!("headers.{header}"), value));
        }
        out
    }

    /// What is wrong, as (field, message) pairs.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.project.trim().is_empty() {
            out.push(("project", "must name the Google Cloud project".into()));
        }
        let location_ok = !self.location.is_empty()
            && self
                .location
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !location_ok {
            out.push((
                "location",
                format!(
                    "`{}` is not a Vertex AI location (e.g. us-central1, europe-west4, global)",
                    self.location
                ),
            ));
        }
        if let Some(message) = self
            .endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
            .and_then(url_problem)
        {
            out.push(("endpoint", message));
        }
        let set = [
            self.credentials_path().is_some(),
            self.credentials_json
                .as_ref()
                .is_some_and(|j| !j.expose().is_empty()),
            self.access_token
                .as_ref()
                .is_some_and(|t| !t.expose().is_empty()),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => out.push((
                "credentials_file",
                "set one of `credentials_file` (a service-account key), `credentials_json` or `access_token`".into(),
            )),
            1 => {}
            _ => out.push((
                "credentials_file",
                "set only one of `credentials_file`, `credentials_json` and `access_token`".into(),
            )),
        }
        out
    }
}

fn url_problem(url: &str) -> Option<String> {
    (!(url.starts_with("http://") || url.starts_with("https://")))
        .then(|| format!("`{url}` is not an http:// or https:// URL"))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, ProviderConfig};

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        let env = |name: &str| (name == "AZ_KEY").then(|| "secret".to_string());
        match Config::parse(text, &env) {
            Ok(loaded) => Ok(loaded.config),
            Err(ConfigError::Invalid(issues)) => Err(issues.into_iter().map(|i| i.key).collect()),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn azure_and_vertex_parse_with_defaults_and_expanded_secrets() {
        let c = parse(
            "[providers.az]\nkind = \"azure_openai\"\nendpoint = \"https://r.openai.azure.com\"\n\
             api_key = \"${AZ_KEY}\"\n\
             [providers.vx]\nkind = \"vertex\"\nproject = \"p\"\naccess_token = \"t\"\n",
        )
        .unwrap();
        let ProviderConfig::AzureOpenai(az) = &c.providers["az"] else {
            panic!("azure_openai");
        };
        assert_eq!(az.api_version, super::DEFAULT_AZURE_API_VERSION);
        assert_eq!(az.http().api_key.unwrap().expose(), "secret");
        assert_eq!(format!("{az:?}").matches("secret").count(), 0);
        let ProviderConfig::Vertex(vx) = &c.providers["vx"] else {
            panic!("vertex");
        };
        assert_eq!(vx.location, "us-central1");
        assert_eq!(vx.throughput, super::Throughput::Default);
        assert_eq!(c.providers["vx"].kind(), "vertex");
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let issues = parse(
            "[providers.az]\nkind = \"azure_openai\"\nendpoint = \"r.openai.azure.com\"\n\
             api_key = \"k\"\nbearer_token = \"t\"\n\
             [providers.vx]\nkind = \"vertex\"\nproject = \"\"\nlocation = \"US Central\"\n",
        )
        .unwrap_err();
        for key in [
            "providers.az.endpoint",
            "providers.az.bearer_token",
            "providers.vx.project",
            "providers.vx.location",
            "providers.vx.credentials_file",
        ] {
            assert!(issues.iter().any(|i| i == key), "{key}: {issues:?}");
        }
        let issues = parse(
            "[providers.vx]\nkind = \"vertex\"\nproject = \"p\"\naccess_token = \"t\"\n\
             credentials_file = \"k.json\"\nthroughput = \"provisioned\"\n",
        )
        .unwrap_err();
        assert_eq!(issues, vec!["providers.vx.credentials_file".to_string()]);
    }
}
