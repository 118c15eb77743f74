//! `[otel]`: exporting the gateway's own spans and metrics over OTLP/HTTP to an OpenTelemetry
//! collector or backend (docs/observability.md, "OTLP export"). Plain data and its checks.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[otel]`. Present: export is on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    /// The collector's base URL (`http://collector:4318`): spans go to `{endpoint}/v1/traces`
    /// and metrics to `{endpoint}/v1/metrics`. A URL that already ends in `/v1/traces` is
    /// taken as the traces URL, and metrics go next to it.
    pub endpoint: String,
    /// Headers sent with every export (`authorization`, an API key); `${ENV}` is interpolated.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The resource's `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans waiting to be sent; when full, new spans are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Spans in one export request; a full batch is sent at once. (About: a trace's spans
    /// are never split between requests.)
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Whatever is queued is sent at least this often.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How often the GenAI metrics are sent; 0 sends none.
    #[serde(default = "default_metrics_interval_s")]
    pub metrics_interval_s: u64,
    /// One export request, connection included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_service_name() -> String {
    "trestle".into()
}
fn default_queue() -> usize {
    8192
}
fn default_batch() -> usize {
    512
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_metrics_interval_s() -> u64 {
    30
}
fn default_timeout_ms() -> u64 {
    5000
}

const TRACES_PATH: &str = "/v1/traces";
const METRICS_PATH: &str = "/v1/metrics";

impl OtelConfig {
    /// Where spans are sent.
    pub fn traces_url(&self) -> String {
        format!("{}{TRACES_PATH}", self.base())
    }

    /// Where metrics are sent.
    pub fn metrics_url(&self) -> String {
        format!("{}{METRICS_PATH}", self.base())
    }

    /// The endpoint without a trailing slash or signal path.
    fn base(&self) -> &str {
        let e = self.endpoint.trim_end_matches('/');
        e.strip_suffix(TRACES_PATH)
            .or_else(|| e.strip_suffix(METRICS_PATH))
            .unwrap_or(e)
    }

    /// Problems, as (key, message).
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let e = &self.endpoint;
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len() {
            out.push((
                "endpoint",
                format!("`{e}` is not an http:// or https:// URL (e.g. http://127.0.0.1:4318)"),
            ));
        }
        if self.queue == 0 || self.batch == 0 {
            out.push(("queue", "`queue` and `batch` must be at least 1".into()));
        }
        if self.interval_ms == 0 {
            out.push((
                "interval_ms",
                "must be at least 1 (a partial batch waits this long)".into(),
            ));
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms", "must be at least 1".into()));
        }
        for name in self.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                out.push(("headers", format!("`{name}` is not a header name")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtelConfig {
        toml::from_str(&format!("endpoint = \"{endpoint}\"")).unwrap()
    }

    #[test]
    fn urls_from_a_base_or_a_signal_url() {
        for e in [
            "http://c:4318",
            "http://c:4318/",
            "http://c:4318/v1/traces",
            "http://c:4318/v1/metrics/",
        ] {
            let c = config(e);
            assert_eq!(c.traces_url(), "http://c:4318/v1/traces", "{e}");
            assert_eq!(c.metrics_url(), "http://c:4318/v1/metrics", "{e}");
        }
        let c = config("https://otlp.example/otlp");
        assert_eq!(c.traces_url(), "https://otlp.example/otlp/v1/traces");
    }

    #[test]
    fn defaults_and_checks() {
        let c = config("http://c:4318");
        assert_eq!(
            (
                c.service_name.as_str(),
                c.queue,
                c.batch,
                c.metrics_interval_s
            ),
            ("trestle", 8192, 512, 30)
        );
        assert!(c.check().is_empty());
        assert_eq!(config("c:4318").check()[0].0, "endpoint");
        let mut c = config("http://c:4318");
        c.batch = 0;
        c.headers.insert("bad header".into(), "x".into());
        let keys: Vec<_> = c.check().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["queue", "headers"]);
    }

    #[test]
    fn in_a_config_file_headers_are_interpolated_and_problems_named() {
        let text = "[otel]\nendpoint = \"http://c:4318\"\nheaders = { authorization = \"Bearer ${OTEL_TOKEN}\" }\n";
        let env = |n: &str| (n == "OTEL_TOKEN").then(|| "t0k".to_string());
        let loaded = crate::Config::parse(text, &env).unwrap();
        let otel = loaded.config.otel.unwrap();
        assert_eq!(otel.headers["authorization"], "Bearer t0k");
        let loaded = crate::Config::parse(text, &|_| None).unwrap();
        assert_eq!(loaded.warnings[0].key, "otel.headers.authorization");
        let Err(crate::config::ConfigError::Invalid(issues)) =
            crate::Config::parse("[otel]\nendpoint = \"c:4318\"\n", &|_| None)
        else {
            panic!("a bad endpoint is refused")
        };
        assert_eq!(
            (issues[0].key.as_str(), issues[0].line),
            ("otel.endpoint", Some(1))
        );
        assert!(crate::Config::parse("[otel]\nendpiont = \"x\"\n", &|_| None).is_err());
    }
}
