//! A trace as OTLP spans, named and attributed by the OpenTelemetry GenAI semantic
//! conventions: one SERVER span for the request through the gateway (`chat {model asked}`)
//! and one CLIENT child span for each call to an upstream (`chat {upstream model}`).

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::{span, status};
use trestle_core::Config;
use trestle_core::config::ProviderConfig;

use super::wire::{self, Value};
use crate::store::{Attempt, Trace};

/// `flags`: the W3C trace flags (sampled), and whether the parent is known to be local or
/// remote (bits 8 and 9 of the OTLP span flags).
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// What the conventions want to know about an upstream, by provider name in the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderInfo {
    /// `gen_ai.provider.name`.
    pub name: String,
    /// `server.address` and `server.port`, from the provider's base URL.
    pub address: Option<String>,
    pub port: Option<i64>,
}

/// The configured providers, as the exporter describes them.
pub type Providers = HashMap<String, ProviderInfo>;

/// Describes every provider of a config.
pub fn providers(config: &Config) -> Providers {
    config
        .providers
        .iter()
        .map(|(name, p)| (name.clone(), describe(p)))
        .collect()
}

fn describe(p: &ProviderConfig) -> ProviderInfo {
    let (kind_name, base) = match p {
        ProviderConfig::Openai(h) => ("openai", h.base_url.as_deref()),
        ProviderConfig::Anthropic(h) => ("anthropic", h.base_url.as_deref()),
        ProviderConfig::Gemini(h) => ("gcp.gemini", h.base_url.as_deref()),
        ProviderConfig::AzureOpenai(a) => ("azure.ai.openai", Some(a.endpoint.as_str())),
        ProviderConfig::Vertex(_) => ("gcp.vertex_ai", None),
        ProviderConfig::Placeholder(_) => {
            return ProviderInfo {
                name: "trestle.placeholder".into(),
                ..Default::default()
            };
        }
    };
    let default = match p {
        ProviderConfig::Openai(_) => "https://api.openai.com/v1",
        ProviderConfig::Anthropic(_) => crate::providers::anthropic::DEFAULT_BASE_URL,
        _ => "https://generativelanguage.googleapis.com",
    };
    let vertex_base = match p {
        ProviderConfig::Vertex(v) => Some(v.base_url()),
        _ => None,
    };
    let url = reqwest::Url::parse(vertex_base.as_deref().or(base).unwrap_or(default)).ok();
    let address = url.as_ref().and_then(|u| u.host_str().map(str::to_string));
    let port = url
        .as_ref()
        .and_then(reqwest::Url::port_or_known_default)
        .map(i64::from);
    // An OpenAI-compatible API is named by its host where the conventions list the vendor.
    let name = address
        .as_deref()
        .and_then(|host| {
            KNOWN_HOSTS
                .iter()
                .find(|(suffix, _)| host == *suffix || host.ends_with(&format!(".{suffix}")))
                .map(|(_, name)| *name)
        })
        .unwrap_or(kind_name);
    ProviderInfo {
        name: name.into(),
        address,
        port,
    }
}

/// Hosts whose `gen_ai.provider.name` the conventions fix.
const KNOWN_HOSTS: &[(&str, &str)] = &[
    ("openai.azure.com", "azure.ai.openai"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cohere.com", "cohere"),
];

/// Whether an attempt row is a call to an upstream (a CLIENT span); the others (`skipped`,
/// `refused`, `waited`, `escalated`) sent nothing.
pub fn is_call(a: &Attempt) -> bool {
    matches!(a.status.as_str(), "ok" | "error" | "cancelled")
}

/// How many spans a trace becomes.
pub fn count(t: &Trace) -> usize {
    1 + t.attempts.iter().filter(|a| is_call(a)).count()
}

/// `error.type` of a failed attempt: the upstream's status, else a coarse class.
pub fn attempt_error_type(a: &Attempt) -> Option<String> {
    match a.status.as_str() {
        "error" => Some(match (a.http_status, a.error.as_deref()) {
            (Some(status), _) => status.to_string(),
            (None, Some(e)) if e.contains("timed out") || e.contains("timeout") => "timeout".into(),
            _ => "_OTHER".into(),
        }),
        _ => None,
    }
}

/// The attempt that served the answer: the last one that succeeded.
pub fn serving(t: &Trace) -> Option<&Attempt> {
    t.attempts.iter().rev().find(|a| a.status == "ok")
}

/// Appends a trace's spans to `out`, each encoded as a `ScopeSpans.spans` field (so `out`
/// is a valid `ScopeSpans` message on its own); answers how many. A trace whose ids are not
/// hex of the right length (never the case for the gateway's own) gives none. `scratch` is
/// reused between calls.
pub fn append(t: &Trace, providers: &Providers, scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> usize {
    let (Some(trace_id), Some(span_id)) = (hex::<16>(&t.trace_id), hex::<8>(&t.span_id)) else {
        return 0;
    };
    let start = nanos(t.started_at_ms as f64);
    let parent = t.parent_span_id.as_deref().and_then(hex::<8>);
    let served = serving(t);
    let provider = served.and_then(|a| providers.get(&a.provider));
    let response_model = t
        .response_model
        .as_deref()
        .or_else(|| served.map(|a| a.model.as_str()));

    let b = scratch;
    b.clear();
    wire::bytes(1, &trace_id, b);
    wire::bytes(2, &span_id, b);
    if let Some(p) = &parent {
        wire::bytes(4, p, b);
    }
    wire::str2(5, "chat ", &t.route, b);
    wire::varint(6, span::SpanKind::Server as u64, b);
    wire::fixed64(7, start, b);
    wire::fixed64(8, start + nanos(t.duration_ms), b);
    let mut attr = |name: &str, value: Value<'_>| wire::attr(9, name, value, b);
    attr("gen_ai.operation.name", Value::Str("chat"));
    if let Some(p) = provider {
        attr("gen_ai.provider.name", Value::Str(&p.name));
    }
    attr("gen_ai.request.model", Value::Str(&t.route));
    if let Some(m) = response_model {
        attr("gen_ai.response.model", Value::Str(m));
    }
    if t.usage.prompt_tokens > 0 || t.usage.completion_tokens > 0 {
        attr("gen_ai.usage.input_tokens", int(t.usage.prompt_tokens));
        attr("gen_ai.usage.output_tokens", int(t.usage.completion_tokens));
    }
    if let Some(c) = &t.conversation_id {
        attr("gen_ai.conversation.id", Value::Str(c));
    }
    if let Some(u) = &t.user_id {
        attr("user.id", Value::Str(u));
    }
    attr("http.response.status_code", int(u64::from(t.status)));
    let failed = t.status >= 500 || t.outcome == "stream_error";
    let status_text;
    if failed {
        status_text = if t.status >= 500 {
            t.status.to_string()
        } else {
            t.outcome.clone()
        };
        attr("error.type", Value::Str(&status_text));
    }
    attr("trestle.route", Value::Str(&t.route));
    if !t.class.is_empty() {
        attr("trestle.class", Value::Str(&t.class));
    }
    attr("trestle.outcome", Value::Str(&t.outcome));
    attr("trestle.fallback_level", Value::Str(&t.fallback_level));
    attr(
        "trestle.capability_level",
        int(u64::from(t.capability_level)),
    );
    attr("trestle.cache", Value::Str(&t.cache));
    attr("trestle.cost_usd", Value::Double(t.cost_usd));
    if t.cost_saved_usd > 0.0 {
        attr("trestle.cost_saved_usd", Value::Double(t.cost_saved_usd));
    }
    attr("trestle.stream", Value::Bool(t.stream));
    if let Some(ms) = t.ttft_ms {
        attr("trestle.ttft_ms", Value::Double(ms));
    }
    if let Some(s) = &t.served_by {
        attr("trestle.served_by", Value::Str(s));
    }
    if t.usage.cached_tokens() > 0 {
        attr("trestle.usage.cached_tokens", int(t.usage.cached_tokens()));
    }
    for (key, value) in [
        ("trestle.prompt_version", &t.prompt_version),
        ("trestle.experiment", &t.experiment),
        ("trestle.variant", &t.variant),
        ("trestle.system_fingerprint", &t.system_fingerprint),
    ] {
        if let Some(v) = value {
            attr(key, Value::Str(v));
        }
    }
    if !t.guardrails.is_empty() {
        let outcomes: Vec<String> = t
            .guardrails
            .iter()
            .map(|g| format!("{}:{}", g.guardrail, g.outcome))
            .collect();
        wire::attr_strs(
            9,
            "trestle.guardrails",
            outcomes.iter().map(String::as_str),
            b,
        );
    }
    if !t.flags.is_empty() {
        wire::attr_strs(9, "trestle.flags", t.flags.iter().map(String::as_str), b);
    }
    if failed {
        let message = t.error.as_deref().unwrap_or_default();
        wire::status(15, status::StatusCode::Error as i32, message, b);
    }
    let remote = if parent.is_some() { IS_REMOTE } else { 0 };
    wire::fixed32(16, SAMPLED | HAS_IS_REMOTE | remote, b);
    wire::bytes(SCOPE_SPANS_SPANS, b, out);
    let mut added = 1;

    for a in t.attempts.iter().filter(|a| is_call(a)) {
        let Some(id) = hex::<8>(&a.span_id) else {
            continue;
        };
        let p = providers.get(&a.provider);
        let begin = start + nanos(a.offset_ms);
        b.clear();
        wire::bytes(1, &trace_id, b);
        wire::bytes(2, &id, b);
        wire::bytes(4, &span_id, b);
        wire::str2(5, "chat ", &a.model, b);
        wire::varint(6, span::SpanKind::Client as u64, b);
        wire::fixed64(7, begin, b);
        wire::fixed64(8, begin + nanos(a.latency_ms), b);
        let mut attr = |name: &str, value: Value<'_>| wire::attr(9, name, value, b);
        attr("gen_ai.operation.name", Value::Str("chat"));
        if let Some(p) = p {
            attr("gen_ai.provider.name", Value::Str(&p.name));
        }
        attr("gen_ai.request.model", Value::Str(&a.model));
        if served.is_some_and(|s| std::ptr::eq(s, a)) {
            let model = t.response_model.as_deref().unwrap_or(&a.model);
            attr("gen_ai.response.model", Value::Str(model));
        }
        if a.tokens_in > 0 || a.tokens_out > 0 {
            attr("gen_ai.usage.input_tokens", int(a.tokens_in));
            attr("gen_ai.usage.output_tokens", int(a.tokens_out));
        }
        if let Some(c) = &t.conversation_id {
            attr("gen_ai.conversation.id", Value::Str(c));
        }
        if let Some(p) = p {
            if let Some(host) = &p.address {
                attr("server.address", Value::Str(host));
            }
            if let Some(port) = p.port {
                attr("server.port", Value::Int(port));
            }
        }
        if let Some(status) = a.http_status {
            attr("http.response.status_code", int(u64::from(status)));
        }
        let error_type = attempt_error_type(a);
        if let Some(e) = &error_type {
            attr("error.type", Value::Str(e));
        }
        attr("trestle.target", Value::Str(&a.target));
        attr("trestle.attempt.status", Value::Str(&a.status));
        if a.cost_usd > 0.0 {
            attr("trestle.cost_usd", Value::Double(a.cost_usd));
        }
        if let Some(ms) = a.ttft_ms {
            attr("trestle.ttft_ms", Value::Double(ms));
        }
        if a.cold_start {
            attr("trestle.cold_start", Value::Bool(true));
        }
        if error_type.is_some() {
            let message = a.error.as_deref().unwrap_or_default();
            wire::status(15, status::StatusCode::Error as i32, message, b);
        }
        wire::fixed32(16, SAMPLED | HAS_IS_REMOTE, b);
        wire::bytes(SCOPE_SPANS_SPANS, b, out);
        added += 1;
    }
    added
}

/// The field of `ScopeSpans` that holds its spans.
const SCOPE_SPANS_SPANS: u64 = 2;

fn int(v: u64) -> Value<'static> {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Milliseconds as nanoseconds (negative and non-finite values as 0).
fn nanos(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1_000_000.0) as u64
    } else {
        0
    }
}

/// `N` bytes from `2N` hex digits.
fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use prost::Message;

    /// A trace's spans, decoded from what `append` wrote.
    fn spans_of(t: &Trace, providers: &Providers) -> Vec<Span> {
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let n = append(t, providers, &mut scratch, &mut out);
        let spans = ScopeSpans::decode(out.as_slice()).unwrap().spans;
        assert_eq!(spans.len(), n);
        spans
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text<'a>(s: &'a Span, key: &str) -> &'a str {
        match attr(s, key) {
            Some(any_value::Value::StringValue(v)) => v,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn int(s: &Span, key: &str) -> i64 {
        match attr(s, key) {
            Some(any_value::Value::IntValue(v)) => *v,
            other => panic!("{key}: {other:?}"),
        }
    }

    fn config() -> Config {
        let text = r#"
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9101/v1"
[providers.claude]
kind = "anthropic"
[providers.groq]
kind = "openai"
base_url = "https://api.groq.com/openai/v1"
[providers.gem]
kind = "gemini"
[providers.p]
kind = "placeholder"
[routes.chat]
targets = ["up/m1"]
"#;
        Config::parse(text, &|_| None).unwrap().config
    }

    #[test]
    fn providers_are_named_by_the_conventions() {
        let p = providers(&config());
        assert_eq!(
            p["up"],
            ProviderInfo {
                name: "openai".into(),
                address: Some("127.0.0.1".into()),
                port: Some(9101)
            }
        );
        assert_eq!(p["claude"].name, "anthropic");
        assert_eq!(p["claude"].address.as_deref(), Some("api.anthropic.com"));
        assert_eq!(p["claude"].port, Some(443));
        assert_eq!(p["groq"].name, "groq");
        assert_eq!(p["gem"].name, "gcp.gemini");
        assert_eq!(p["p"].name, "trestle.placeholder");
    }

    fn attempt(span: &str, status: &str, model: &str) -> Attempt {
        Attempt {
            span_id: span.into(),
            target: format!("up/{model}"),
            provider: "up".into(),
            model: model.into(),
            offset_ms: 2.0,
            latency_ms: 30.0,
            ttft_ms: None,
            status: status.into(),
            http_status: (status == "error").then_some(503),
            error: (status == "error").then(|| "upstream answered 503".to_string()),
            retryable: status == "error",
            cold_start: false,
            tokens_in: if status == "ok" { 12 } else { 0 },
            tokens_out: if status == "ok" { 40 } else { 0 },
            tokens_cached: 0,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn a_request_is_a_server_span_with_a_client_span_per_call() {
        let mut t = crate::store::sample_trace(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "conv-1",
        );
        t.parent_span_id = Some("b7ad6b7169203331".into());
        t.route = "chat".into();
        t.started_at_ms = 1_700_000_000_000;
        t.duration_ms = 50.0;
        t.status = 200;
        t.usage.prompt_tokens = 12;
        t.usage.completion_tokens = 40;
        t.response_model = Some("m1-2025-01-01".into());
        t.attempts = vec![
            attempt("1111111111111111", "error", "m0"),
            attempt("2222222222222222", "skipped", "m2"),
            attempt("3333333333333333", "ok", "m1"),
        ];
        let out = spans_of(&t, &providers(&config()));
        assert_eq!((out.len(), count(&t)), (3, 3));
        let server = &out[0];
        assert_eq!(server.name, "chat chat");
        assert_eq!(server.kind, span::SpanKind::Server as i32);
        assert_eq!(server.trace_id[..2], [0x4b, 0xf9]);
        assert_eq!(server.parent_span_id, hex::<8>("b7ad6b7169203331").unwrap());
        assert_eq!(server.flags, SAMPLED | HAS_IS_REMOTE | IS_REMOTE);
        assert_eq!(
            server.end_time_unix_nano - server.start_time_unix_nano,
            50_000_000
        );
        assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(text(server, "gen_ai.operation.name"), "chat");
        assert_eq!(text(server, "gen_ai.provider.name"), "openai");
        assert_eq!(text(server, "gen_ai.request.model"), "chat");
        assert_eq!(text(server, "gen_ai.response.model"), "m1-2025-01-01");
        assert_eq!(text(server, "gen_ai.conversation.id"), "conv-1");
        assert_eq!(int(server, "gen_ai.usage.input_tokens"), 12);
        assert_eq!(int(server, "gen_ai.usage.output_tokens"), 40);
        assert!(server.status.is_none());

        let (failed, ok) = (&out[1], &out[2]);
        for c in [failed, ok] {
            assert_eq!(c.kind, span::SpanKind::Client as i32);
            assert_eq!(c.parent_span_id, server.span_id);
            assert_eq!(c.trace_id, server.trace_id);
            assert_eq!(text(c, "server.address"), "127.0.0.1");
            assert_eq!(int(c, "server.port"), 9101);
        }
        assert_eq!(failed.name, "chat m0");
        assert_eq!(text(failed, "error.type"), "503");
        assert_eq!(
            failed.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
        assert!(attr(failed, "gen_ai.response.model").is_none());
        assert_eq!(ok.name, "chat m1");
        assert_eq!(text(ok, "gen_ai.response.model"), "m1-2025-01-01");
        assert_eq!(int(ok, "gen_ai.usage.output_tokens"), 40);
        assert_eq!(
            ok.start_time_unix_nano - server.start_time_unix_nano,
            2_000_000
        );
    }

    #[test]
    fn a_failed_request_is_an_error_and_bad_ids_give_no_spans() {
        let mut t =
            crate::store::sample_trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "c");
        t.status = 502;
        t.outcome = "error".into();
        t.error = Some("every target failed".into());
        t.attempts.clear();
        let out = spans_of(&t, &Providers::new());
        assert_eq!(text(&out[0], "error.type"), "502");
        assert_eq!(out[0].status.as_ref().map(|s| s.code), Some(2));
        assert!(out[0].parent_span_id.is_empty());
        assert_eq!(out[0].flags, SAMPLED | HAS_IS_REMOTE);
        assert!(attr(&out[0], "gen_ai.provider.name").is_none());
        t.trace_id = "not-hex".into();
        assert!(spans_of(&t, &Providers::new()).is_empty());
    }
}
