//! Trestle's TOML configuration: providers, model prices, routes, server and store settings.
//!
//! [`Config::parse`] reads and validates a file; every problem is reported with its line and
//! dotted key so `trestle config check` can say exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

pub use crate::cache::{
    CacheConfig, CacheMode, EmbedderConfig, Normalize, QueryText, RouteCacheConfig, SemanticConfig,
    SemanticScope, ToolNamespace,
};
use crate::price::Price;
pub use crate::resilience::{
    Balance, BreakerConfig, CapabilityConfig, FallbackConfig, LevelConfig, ServeMode,
};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub embedders: BTreeMap<String, EmbedderConfig>,
    /// Named guardrails (docs/guardrails.md), attached to routes by name.
    #[serde(default)]
    pub guardrails: BTreeMap<String, crate::guard::GuardrailConfig>,
    /// `[evals]`: evals on live traffic (docs/evals.md).
    #[serde(default)]
    pub evals: EvalsConfig,
    /// `[prompts]`: where prompt files are (docs/prompts.md).
    #[serde(default)]
    pub prompts: crate::experiment::PromptsConfig,
    /// `[feedback.NAME]`: the kinds of feedback `POST /v1/feedback` takes.
    #[serde(default)]
    pub feedback: BTreeMap<String, crate::experiment::FeedbackConfig>,
    /// `[experiments.NAME]` (docs/experiments.md).
    #[serde(default)]
    pub experiments: BTreeMap<String, crate::experiment::ExperimentConfig>,
    /// `[drift]`: the drift report's windows, schedule and thresholds (docs/observability.md).
    #[serde(default)]
    pub drift: crate::drift::DriftConfig,
    /// `[alerts]`: where drift alerts are sent.
    #[serde(default)]
    pub alerts: crate::drift::AlertsConfig,
    /// `[otel]`: export the gateway's spans and metrics over OTLP (docs/observability.md).
    #[serde(default)]
    pub otel: Option<crate::otel::OtelConfig>,
    /// `[auth]`: client keys (docs/configuration.md, "Keys and tenants").
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[tenants.NAME]`: what all of a tenant's keys may spend together.
    #[serde(default)]
    pub tenants: BTreeMap<String, crate::spend::TenantConfig>,
    /// `[state]`: where per-key and per-target limits, budgets, 429 pauses and the exact and
    /// tool caches are kept (docs/configuration.md, "Shared state").
    #[serde(default)]
    pub state: StateConfig,
    /// The folder of the config file (relative paths in `[prompts]` start there); unset for a
    /// config not read from a file.
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
}

/// `[auth]`: who may call. Keys are made with `trestle keys create` and kept hashed in the
/// store; this section says whether they are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require `Authorization: Bearer <key>` on the API. Unset: required once any key
    /// exists.
    pub required: Option<bool>,
    /// How often keys are re-read from the store (revocations take effect within this).
    pub refresh_ms: u64,
    /// A share of each key's budget (0 < x < 1) at which a soft alert goes to
    /// `[alerts] webhook`; unset: no alerts for keys.
    pub budget_alert_at: Option<f64>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: None,
            refresh_ms: 1_000,
            budget_alert_at: None,
        }
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    /// In this process: each instance counts alone.
    #[default]
    Memory,
    /// In one Redis that every instance shares.
    Redis,
}

/// `[state]`: limits, budgets, 429 pauses and caches, in memory or shared on Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub kind: StateKind,
    /// `redis://[user:password@]host[:port][/db]`; needed with `kind = "redis"`.
    pub url: Option<String>,
    /// How long an operation on Redis (a limit decision, a cache lookup) waits before local
    /// state decides instead.
    pub timeout_ms: u64,
    /// How many instances share the limits: while Redis is unreachable each instance
    /// enforces its share (the limits divided by this).
    pub instances: u32,
    /// Prefix of every Redis key.
    pub prefix: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            kind: StateKind::Memory,
            url: None,
            timeout_ms: 50,
            instances: 1,
            prefix: "trestle:".into(),
        }
    }
}

impl StateConfig {
    /// Problems as (key, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.url, self.kind) {
            (None, StateKind::Redis) => out.push((
                "url".into(),
                "kind = \"redis\" needs `url`, like redis://127.0.0.1:6379".to_string(),
            )),
            (Some(url), _) => {
                if let Err(message) = check_redis_url(url) {
                    out.push(("url".into(), message));
                }
            }
            (None, StateKind::Memory) => {}
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms".into(), "must be at least 1".into()));
        }
        if self.instances == 0 {
            out.push(("instances".into(), "must be at least 1".into()));
        }
        out
    }
}

/// `redis://[user:password@]host[:port][/db]`.
fn check_redis_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{url}`: {why} (write redis://host:port, like redis://127.0.0.1:6379/0)"
        ))
    };
    if url.starts_with("rediss://") {
        return bad("TLS (rediss://) is not supported yet");
    }
    let Some(rest) = url.strip_prefix("redis://") else {
        return bad("a Redis URL starts with redis://");
    };
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !host_port.ends_with(']') => (h, Some(p)),
        _ => (host_port, None),
    };
    if host.is_empty() {
        return bad("no host");
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return bad("the port is not a number from 1 to 65535");
    }
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return bad("the database after `/` is a number");
    }
    Ok(())
}

/// `[evals]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalsConfig {
    /// `[evals.online]`: score a share of live answers off the request path.
    #[serde(default)]
    pub online: Option<OnlineEvalConfig>,
}

/// `[evals.online]`. Assertions and judge criteria are those of eval suites; they are
/// checked when the gateway builds (they belong to the evals crate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineEvalConfig {
    /// Share of answered requests that are scored (0.01 to 0.05 is typical).
    pub sample: f64,
    /// Only these routes (default: every route).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Scorings at once.
    #[serde(default = "default_online_concurrency")]
    pub concurrency: usize,
    /// At most this many scorings a minute; samples past it are skipped and counted.
    #[serde(default = "default_online_per_minute")]
    pub max_per_minute: u32,
    /// At most this much judge spend a day (UTC), in USD, at the judge target's price.
    #[serde(default = "default_online_judge_budget")]
    pub max_judge_usd_per_day: f64,
    /// Samples waiting to be scored; when full, a sample is skipped and counted.
    #[serde(default = "default_online_queue")]
    pub queue: usize,
    /// Assertions, as in a suite's `[[assert]]` (`{type = "not_contains", value = "..."}`).
    #[serde(default, rename = "assert")]
    pub asserts: Vec<serde_json::Value>,
    /// The judge: `{ route = "judge", criteria = ["accuracy"] }` (criteria: the built-in
    /// rubric's, all by default).
    #[serde(default)]
    pub judge: Option<OnlineJudgeConfig>,
    /// The `[embedders.NAME]` a `similar` assertion uses.
    #[serde(default)]
    pub embedder: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineJudgeConfig {
    pub route: String,
    #[serde(default)]
    pub criteria: Vec<String>,
}

fn default_online_concurrency() -> usize {
    2
}
fn default_online_per_minute() -> u32 {
    60
}
fn default_online_judge_budget() -> f64 {
    1.0
}
fn default_online_queue() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    pub listen: String,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long open streams may run before they are ended.
    pub shutdown_grace_ms: u64,
    /// How long a client may take to send its request headers before the connection is
    /// closed (slow-loris protection).
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send its request body; past it the request gets 408.
    pub body_read_timeout_ms: u64,
    /// A second listener for the admin endpoints (`/admin/*`, `/metrics`, `/v1/keys`),
    /// reachable without an admin key; it must be a loopback address.
    pub admin_listen: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8787".to_string(),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            admin_listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Record traces at all.
    pub enabled: bool,
    /// SQLite database file (created with its folder).
    pub path: PathBuf,
    /// Traces waiting to be written; when full, new traces are dropped and counted.
    pub queue_capacity: usize,
    /// Most traces written in one transaction.
    pub batch_size: usize,
    /// How long the writer gathers traces before a commit (group commit); a trace is
    /// readable within about this long of its response.
    pub flush_interval_ms: u64,
    /// Keep full request and response bodies on traces.
    pub record_bodies: bool,
    /// Guardrails (`pii` kind) applied to request and response bodies before they are
    /// written. Unset: every configured `pii` guardrail; `[]` keeps bodies as they were.
    pub redact: Option<Vec<String>>,
    /// `sqlite` (default) or `postgres` (crate::store).
    pub kind: crate::store::StoreKind,
    /// The PostgreSQL server (`postgres://user@host:port/database`); `kind = "postgres"` only.
    pub url: Option<String>,
    /// Connections kept open to PostgreSQL for reads.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            path: PathBuf::from(".trestle/trestle.db"),
            queue_capacity: 16_384,
            batch_size: 512,
            flush_interval_ms: 20,
            record_bodies: true,
            redact: None,
            kind: crate::store::StoreKind::Sqlite,
            url: None,
            pool_size: 4,
        }
    }
}

/// An upstream provider. `kind` picks the adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Openai(HttpProviderConfig),
    Anthropic(HttpProviderConfig),
    Gemini(HttpProviderConfig),
    /// Azure OpenAI deployments (`crate::cloud`).
    #[serde(rename = "azure_openai")]
    AzureOpenai(crate::cloud::AzureOpenaiConfig),
    /// Gemini on Vertex AI (`crate::cloud`).
    Vertex(crate::cloud::VertexConfig),
    Placeholder(PlaceholderConfig),
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Openai(_) => "openai",
            ProviderConfig::Anthropic(_) => "anthropic",
            ProviderConfig::Gemini(_) => "gemini",
            ProviderConfig::AzureOpenai(_) => "azure_openai",
            ProviderConfig::Vertex(_) => "vertex",
            ProviderConfig::Placeholder(_) => "placeholder",
        }
    }
}

/// Settings shared by the HTTP providers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// Base URL; each kind has the vendor's public endpoint as default.
    pub base_url: Option<String>,
    /// API key; `${ENV}` is interpolated. Never logged or traced.
    pub api_key: Option<Secret>,
    /// Extra headers sent on every request (values interpolated too).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TCP connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `anthropic` only: mark the stable prefix (tools and system prompt) as a prompt-cache
    /// breakpoint. OpenAI and Gemini cache prefixes without markers.
    #[serde(default)]
    pub prompt_cache: bool,
    /// Largest upstream answer read: a non-streamed body, or all of one stream. Past it the
    /// attempt fails (`malformed`), so a runaway upstream cannot exhaust memory.
    pub max_response_bytes: Option<usize>,
    /// Largest single server-sent event (or line without a newline) in a stream.
    pub max_event_bytes: Option<usize>,
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

impl HttpProviderConfig {
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
            .unwrap_or(Self::DEFAULT_MAX_RESPONSE_BYTES)
    }

    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
            .unwrap_or(Self::DEFAULT_MAX_EVENT_BYTES)
    }
}

/// A secret string: its `Debug` never shows the value.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The in-process placeholder model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaceholderConfig {
    /// What it writes: `echo` (the last user message), `lorem`, `fixed` (`text`), `file`
    /// (a random line), `script` (rules matched on the question).
    pub mode: TextMode,
    /// The reply for `mode = "fixed"`.
    pub text: Option<String>,
    /// A file of replies, one per line, for `mode = "file"`.
    pub file: Option<PathBuf>,
    /// How many words `lorem` writes (capped by the request's max tokens).
    pub lorem_words: u32,
    /// Time to first token, in milliseconds.
    pub ttft_ms: Dist,
    /// Streaming speed after the first token; 0 means as fast as possible.
    pub tokens_per_sec: Dist,
    /// Seed for the random draws; the same seed and request give the same reply and timings.
    pub seed: u64,
}

impl Default for PlaceholderConfig {
    fn default() -> Self {
        PlaceholderConfig {
            mode: TextMode::Echo,
            text: None,
            file: None,
            lorem_words: 48,
            ttft_ms: Dist::Fixed(0.0),
            tokens_per_sec: Dist::Fixed(0.0),
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextMode {
    #[default]
    Echo,
    Lorem,
    Fixed,
    File,
    /// Rules from `file` (JSON Lines of `{"match": REGEX, "reply": TEXT}`): the first rule
    /// whose regex matches the last user message answers; `text`, else an echo, otherwise.
    Script,
}

impl std::str::FromStr for TextMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "echo" => Ok(TextMode::Echo),
            "lorem" => Ok(TextMode::Lorem),
            "fixed" => Ok(TextMode::Fixed),
            "file" => Ok(TextMode::File),
            "script" => Ok(TextMode::Script),
            other => Err(format!(
                "unknown text mode `{other}`: use echo, lorem, fixed, file or script"
            )),
        }
    }
}

/// A distribution of values: a plain number is fixed; a table names a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Dist {
    Fixed(f64),
    Spec(DistSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum DistSpec {
    Fixed {
        value: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
    /// Log-normal with the given median and shape; long right tail like real latencies.
    Lognormal {
        median: f64,
        sigma: f64,
    },
}

impl Dist {
    fn check(&self) -> Result<(), String> {
        let ok = match *self {
            Dist::Fixed(v) => v >= 0.0,
            Dist::Spec(DistSpec::Fixed { value }) => value >= 0.0,
            Dist::Spec(DistSpec::Uniform { min, max }) => min >= 0.0 && max >= min,
            Dist::Spec(DistSpec::Normal { mean, std }) => mean >= 0.0 && std >= 0.0,
            Dist::Spec(DistSpec::Lognormal { median, sigma }) => median > 0.0 && sigma >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid distribution {self:?}: values must be non-negative and max >= min"
            ))
        }
    }
}

/// Per-model settings, keyed by `provider/model`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub price: Option<Price>,
    /// Share of traffic under `balance = "weighted"` (default 1).
    pub weight: Option<u32>,
    /// Most requests in flight at once; when full, requests overflow to the next target.
    pub max_concurrency: Option<u32>,
    /// Tokens (prompt estimate + output cap, settled to actual usage) per rolling minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests per rolling minute.
    pub requests_per_minute: Option<u64>,
    /// The old all-or-nothing 429 handling: when set, every 429 takes the target out of
    /// rotation for its `Retry-After`, or this long without one. Unset (the default), 429s
    /// feed the adaptive throttle instead and only a long `Retry-After` pauses the target.
    pub cooldown_ms: Option<u64>,
    /// Adaptive throttling after 429s (Google SRE book, "Handling Overload"): a request is
    /// refused locally, and overflows to the next target, with probability
    /// max(0, (requests − K·accepts) / (requests + 1)) over the last `throttle_window_ms`.
    /// K = 2 by default; higher is more permissive; 0 turns throttling off.
    pub throttle_k: Option<f64>,
    /// The window the throttle counts requests and accepts over (default 30 s).
    pub throttle_window_ms: Option<u64>,
    /// A 429 whose `Retry-After` is longer than this pauses the target for everyone for that
    /// long (default 5 s); shorter ones only feed the throttle.
    pub retry_after_pause_ms: Option<u64>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The tokenizer a route's `max_input_tokens` counts with: `o200k_base`, `cl100k_base`
    /// or a `tokenizer.json` path. Default: by model family (OpenAI names), else an estimate.
    pub tokenizer: Option<crate::budget::TokenizerSpec>,
}

/// How a user waits for the answer; sets the default latency budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InteractionClass {
    /// The user watches a spinner: whole response under 1 s.
    Sync,
    /// Streamed: first token under 500 ms, whole response under 5 s.
    #[default]
    Progressive,
    /// The user does other things: under 20 s.
    Async,
}

impl InteractionClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            InteractionClass::Sync => "sync",
            InteractionClass::Progressive => "progressive",
            InteractionClass::Async => "async",
        }
    }

    /// The default whole-response budget in milliseconds.
    pub fn total_budget_ms(&self) -> u64 {
        match self {
            InteractionClass::Sync => 1_000,
            InteractionClass::Progressive => 5_000,
            InteractionClass::Async => 20_000,
        }
    }

    /// The default time-to-first-token budget in milliseconds, where the class has one.
    pub fn ttft_budget_ms(&self) -> Option<u64> {
        match self {
            InteractionClass::Progressive => Some(500),
            _ => None,
        }
    }
}

/// A named route: what a request's `model` may name instead of a concrete model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub class: InteractionClass,
    /// Ordered `provider/model` targets; later ones serve when earlier ones fail.
    pub targets: Vec<Spanned<String>>,
    /// Cap on output tokens; a client's larger request is lowered to it.
    pub max_tokens: Option<u32>,
    /// Cap on input tokens (messages and tool definitions), counted with the tokenizer of
    /// the route's targets; over it, the request is trimmed or refused (`trim`).
    pub max_input_tokens: Option<u32>,
    /// What happens over `max_input_tokens` (default `oldest_turns`).
    pub trim: Option<crate::budget::TrimPolicy>,
    /// Whole-request deadline (default: the class budget).
    pub timeout_ms: Option<u64>,
    /// Deadline for the first streamed token of each attempt (default: the class budget).
    pub ttft_timeout_ms: Option<u64>,
    /// Deadline of one attempt (default: what is left of the route's deadline). Lets a hung
    /// non-streamed attempt give way to the next target in time.
    pub attempt_timeout_ms: Option<u64>,
    /// Retries per target on retryable errors, before moving to the next target.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff; doubles each retry, with full jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest backoff (and longest Retry-After honoured before moving on).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How the first target is chosen among the route's targets.
    #[serde(default)]
    pub balance: Balance,
    /// Send a second attempt to the next target when the first is slow; the first good
    /// answer wins and the other is cancelled.
    #[serde(default)]
    pub hedge: bool,
    /// Hedge after this long (default: the target's latency p95 estimate).
    pub hedge_after_ms: Option<u64>,
    /// Without `hedge`: a non-streamed first attempt still unanswered after four times the
    /// target's latency p95 (and at least a quarter of the route's deadline) gets a second
    /// attempt on the next target, and the first good answer wins. A hung upstream then costs
    /// a quarter of the budget instead of all of it; a slow but good answer still arrives.
    #[serde(default = "default_true")]
    pub hedge_stragglers: bool,
    /// The levels below `model`: cache, template, omitted.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// Capability levels driven by live health; none: the route stays at level 5.
    pub capability: Option<CapabilityConfig>,
    /// The exact and semantic response caches.
    #[serde(default)]
    pub cache: RouteCacheConfig,
    /// Guardrails on the request (`input`) and the answer (`output`), by name, in order.
    #[serde(default)]
    pub guardrails: crate::guard::RouteGuardrails,
    /// Ask OpenAI-compatible upstreams for logprobs and report a confidence
    /// (`x-trestle-confidence`, the trace).
    #[serde(default)]
    pub confidence: bool,
    /// Cheapest target first, escalating on low confidence or a failed output guardrail.
    pub cascade: Option<crate::guard::CascadeConfig>,
    /// The route's prompt: `name` (its `production` label), `name:LABEL` or `name@VERSION`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// What every request on the route may spend together: `day:X` or `month:X` USD.
    #[serde(default)]
    pub budget_usd: Option<String>,
    /// A share of `budget_usd` (0 < x < 1) at which a soft alert goes to `[alerts] webhook`.
    #[serde(default)]
    pub alert_at: Option<f64>,
}

fn default_retries() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_backoff_ms() -> u64 {
    50
}
fn default_backoff_max_ms() -> u64 {
    2_000
}

impl RouteConfig {
    /// A route of one target with the defaults; used for direct `provider/model` requests.
    pub fn direct(target: &str) -> Self {
        RouteConfig {
            class: InteractionClass::Async,
            targets: vec![Spanned::new(0..0, target.to_string())],
            max_tokens: None,
            max_input_tokens: None,
            trim: None,
            timeout_ms: None,
            ttft_timeout_ms: None,
            attempt_timeout_ms: None,
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            balance: Balance::default(),
            hedge: false,
            hedge_after_ms: None,
            hedge_stragglers: true,
            fallback: FallbackConfig::default(),
            capability: None,
            cache: RouteCacheConfig::default(),
            guardrails: crate::guard::RouteGuardrails::default(),
            confidence: false,
            cascade: None,
            prompt: None,
            budget_usd: None,
            alert_at: None,
        }
    }

    pub fn total_timeout_ms(&self) -> u64 {
        self.timeout_ms
            .unwrap_or_else(|| self.class.total_budget_ms())
    }

    pub fn first_token_timeout_ms(&self) -> Option<u64> {
        self.ttft_timeout_ms.or_else(|| self.class.ttft_budget_ms())
    }
}

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

/// What loading a config produced besides the config: things worth a warning.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigIssue>,
}

impl Config {
    /// Whether any tenant or route has a budget: only then does a request without a
    /// budgeted key estimate its cost before the call.
    pub fn has_budgets(&self) -> bool {
        self.tenants.values().any(|t| t.budget_usd.is_some())
            || self.routes.values().any(|r| r.budget_usd.is_some())
    }

    /// The configuration used when no file is given: the placeholder model under route `default`.
    pub fn builtin() -> Config {
        let mut config = Config::default();
        config.providers.insert(
            "placeholder".into(),
            ProviderConfig::Placeholder(PlaceholderConfig {
                ttft_ms: Dist::Fixed(20.0),
                tokens_per_sec: Dist::Fixed(200.0),
                ..Default::default()
            }),
        );
        let mut route = RouteConfig::direct("placeholder/echo");
        route.class = InteractionClass::Progressive;
        config.routes.insert("default".into(), route);
        config
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut loaded = Config::parse(&text, &|name| std::env::var(name).ok())?;
        loaded.config.base_dir = Some(
            path.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(
                    || std::path::PathBuf::from("."),
                    std::path::Path::to_path_buf,
                ),
        );
        let missing = loaded.config.missing_tokenizer_files(&text);
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(missing));
        }
        Ok(loaded)
    }

    /// A path from the config, relative to the config file's folder.
    pub fn resolve_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Models whose `tokenizer` names a file that is not there.
    fn missing_tokenizer_files(&self, text: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (key, model) in &self.models {
            if let Some(crate::budget::TokenizerSpec::File(path)) = &model.tokenizer {
                let full = self.resolve_path(path);
                if !full.is_file() {
                    issues.push(ConfigIssue {
                        line: find_line(text, &format!("[models.\"{key}\"]")),
                        key: format!("models.\"{key}\".tokenizer"),
                        message: format!(
                            "no tokenizer file at {} (paths are relative to the config file)",
                            full.display()
                        ),
                    });
                }
            }
        }
        issues
    }

    /// The prompts folder: `[prompts] dir`, relative to the config file.
    pub fn prompts_dir(&self) -> std::path::PathBuf {
        let dir = self.prompts.dir.clone().unwrap_or_else(|| "prompts".into());
        match &self.base_dir {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir,
        }
    }

    /// Parses and validates TOML text; `env` resolves `${NAME}` references.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError::Invalid(vec![ConfigIssue {
                line,
                key: "toml".into(),
                message: e.message().trim().to_string(),
            }])
        })?;
        let mut warnings = Vec::new();
        config.interpolate(text, env, &mut warnings);
        let issues = config.validate(text);
        if issues.is_empty() {
            Ok(Loaded { config, warnings })
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    fn interpolate(
        &mut self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<ConfigIssue>,
    ) {
        if let Some(otel) = self.otel.as_mut() {
            for (header, value) in otel.headers.iter_mut() {
                let (expanded, missing) = expand_env(value, env);
                *value = expanded;
                for var in missing {
                    warnings.push(ConfigIssue {
                        line: find_line(text, "[otel]"),
                        key: format!("otel.headers.{header}"),
                        message: format!(
                            "environment variable {var} is not set; using an empty value"
                        ),
                    });
                }
            }
        }
        for (name, provider) in self.providers.iter_mut() {
            let http = match provider {
                ProviderConfig::Openai(h)
                | ProviderConfig::Anthropic(h)
                | ProviderConfig::Gemini(h) => h,
                ProviderConfig::AzureOpenai(a) => {
                    interpolate_fields(text, name, a.fields_mut(), env, warnings);
                    continue;
                }
                ProviderConfig::Vertex(v) => {
                    interpolate_fields(text, name, v.fields_mut(), env, warnings);
                    continue;
                }
                ProviderConfig::Placeholder(_) => continue,
            };
            let mut fields: Vec<(String, &mut String)> = Vec::new();
            if let Some(url) = http.base_url.as_mut() {
                fields.push(("base_url".into(), url));
            }
            if let Some(key) = http.api_key.as_mut() {
                fields.push(("api_key".into(), &mut key.0));
            }
            for (header, value) in http.headers.iter_mut() {
                fields.push((format!("headers.{header}"), value));
            }
            for (field, value) in fields {
                let (expanded, missing) = expand_env(value, env);
                *value = expanded;
                for var in missing {
                    warnings.push(ConfigIssue {
                        line: find_line(text, &format!("[providers.{name}]")),
                        key: format!("providers.{name}.{field}"),
                        message: format!(
                            "environment variable {var} is not set; using an empty value"
                        ),
                    });
                }
            }
        }
    }

    fn validate(&self, text: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |line: Option<usize>, key: String, message: String| {
            issues.push(ConfigIssue { line, key, message })
        };
        for (name, provider) in &self.providers {
            let line = find_line(text, &format!("[providers.{name}]"));
            if name.contains('/') {
                issue(
                    line,
                    format!("providers.{name}"),
                    "a provider name cannot contain `/`".into(),
                );
            }
            match provider {
                ProviderConfig::Placeholder(p) => {
                    if p.mode == TextMode::Fixed && p.text.is_none() {
                        issue(
                            line,
                            format!("providers.{name}.text"),
                            "mode = \"fixed\" needs `text`".into(),
                        );
                    }
                    if matches!(p.mode, TextMode::File | TextMode::Script) && p.file.is_none() {
                        issue(
                            line,
                            format!("providers.{name}.file"),
                            "mode = \"file\" and mode = \"script\" need `file`".into(),
                        );
                    }
                    for (field, dist) in [
                        ("ttft_ms", &p.ttft_ms),
                        ("tokens_per_sec", &p.tokens_per_sec),
                    ] {
                        if let Err(message) = dist.check() {
                            issue(line, format!("providers.{name}.{field}"), message);
                        }
                    }
                }
                ProviderConfig::AzureOpenai(a) => {
                    for (field, message) in a.check() {
                        issue(line, format!("providers.{name}.{field}"), message);
                    }
                }
                ProviderConfig::Vertex(v) => {
                    for (field, message) in v.check() {
                        issue(line, format!("providers.{name}.{field}"), message);
                    }
                }
                ProviderConfig::Openai(h) | ProviderConfig::Gemini(h) if h.prompt_cache => {
                    issue(
                        line,
                        format!("providers.{name}.prompt_cache"),
                        "only `kind = \"anthropic\"` needs prompt-cache markers; OpenAI and Gemini cache prompt prefixes by themselves".into(),
                    );
                }
                ProviderConfig::Openai(h)
                | ProviderConfig::Anthropic(h)
                | ProviderConfig::Gemini(h) => {
                    if let Some(url) = &h.base_url
                        && !(url.starts_with("http://") || url.starts_with("https://"))
                    {
                        issue(
                            line,
                            format!("providers.{name}.base_url"),
                            format!("`{url}` is not an http:// or https:// URL"),
                        );
                    }
                }
            }
        }
        for (name, embedder) in &self.embedders {
            if let EmbedderConfig::Provider { target } = embedder
                && let Err(message) = self.check_target(target)
            {
                issue(
                    find_line(text, &format!("[embedders.{name}]")),
                    format!("embedders.{name}.target"),
                    message,
                );
            }
        }
        for (key, model) in &self.models {
            let line = find_line(text, &format!("[models.\"{key}\"]"));
            if let Err(message) = self.check_target(key) {
                issue(line, format!("models.\"{key}\""), message);
            }
            for (field, message) in model.breaker.check() {
                issue(line, format!("models.\"{key}\".{field}"), message);
            }
            if let Some(k) = model.throttle_k
                && (!k.is_finite() || (k != 0.0 && k < 1.0))
            {
                issue(
                    line,
                    format!("models.\"{key}\".throttle_k"),
                    format!("must be 0 (off) or at least 1, not {k}"),
                );
            }
            if model.throttle_window_ms == Some(0) {
                issue(
                    line,
                    format!("models.\"{key}\".throttle_window_ms"),
                    "must be above 0".into(),
                );
            }
            for (field, value) in [
                ("weight", model.weight.map(u64::from)),
                ("max_concurrency", model.max_concurrency.map(u64::from)),
                ("tokens_per_minute", model.tokens_per_minute),
                ("requests_per_minute", model.requests_per_minute),
            ] {
                if value == Some(0) {
                    issue(
                        line,
                        format!("models.\"{key}\".{field}"),
                        "must be above 0 (leave it out for no limit)".into(),
                    );
                }
            }
        }
        for (name, g) in &self.guardrails {
            let line = find_line(text, &format!("[guardrails.{name}]"));
            for (key, message) in g.check() {
                issue(line, format!("guardrails.{name}.{key}"), message);
            }
            if let Some(target) = &g.target
                && let Err(message) = self.check_target(target)
            {
                issue(line, format!("guardrails.{name}.target"), message);
            }
        }
        for (key, message) in crate::store::check(&self.store) {
            issue(find_line(text, "[store]"), key.into(), message);
        }
        if let Some(names) = &self.store.redact {
            for n in names {
                let kind = self.guardrails.get(n).map(|g| g.kind);
                if kind != Some(crate::guard::GuardKind::Pii) {
                    issue(
                        find_line(text, "[store]"),
                        "store.redact".into(),
                        format!("`{n}` is not a `pii` guardrail in [guardrails]"),
                    );
                }
            }
        }
        for (name, tenant) in &self.tenants {
            let line = find_line(text, &format!("[tenants.{name}]"));
            for (key, message) in crate::spend::check(tenant.budget_usd.as_deref(), tenant.alert_at)
            {
                issue(line, format!("tenants.{name}.{key}"), message);
            }
        }
        if let Some(share) = self.auth.budget_alert_at
            && !(share > 0.0 && share < 1.0)
        {
            issue(
                find_line(text, "[auth]"),
                "auth.budget_alert_at".into(),
                format!(
                    "{share} is not a share strictly between 0 and 1 (0.8 alerts at 80% of a key's budget)"
                ),
            );
        }
        for (name, route) in &self.routes {
            let line = find_line(text, &format!("[routes.{name}]"));
            for (key, message) in crate::spend::check(route.budget_usd.as_deref(), route.alert_at) {
                issue(line, format!("routes.{name}.{key}"), message);
            }
            if let Some(c) = &route.cascade {
                if !(0.0..=1.0).contains(&c.threshold) {
                    issue(
                        line,
                        format!("routes.{name}.cascade.threshold"),
                        format!("must be between 0 and 1, not {}", c.threshold),
                    );
                }
                if route.targets.len() < 2 {
                    issue(
                        line,
                        format!("routes.{name}.cascade"),
                        "a cascade needs at least two targets, cheapest first".into(),
                    );
                }
            }
            for (stage, names) in [
                ("input", &route.guardrails.input),
                ("output", &route.guardrails.output),
            ] {
                for n in names {
                    if !self.guardrails.contains_key(n) {
                        let known: Vec<&str> = self.guardrails.keys().map(String::as_str).collect();
                        issue(
                            line,
                            format!("routes.{name}.guardrails.{stage}"),
                            format!(
                                "unknown guardrail `{n}`; configured: {}",
                                if known.is_empty() {
                                    "none".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
            if name.contains('/') {
                issue(
                    line,
                    format!("routes.{name}"),
                    "a route name cannot contain `/`".into(),
                );
            }
            if route.targets.is_empty() {
                issue(
                    line,
                    format!("routes.{name}.targets"),
                    "a route needs at least one target (`provider/model`)".into(),
                );
            }
            for (i, target) in route.targets.iter().enumerate() {
                if let Err(message) = self.check_target(target.get_ref()) {
                    issue(
                        Some(line_of(text, target.span().start)),
                        format!("routes.{name}.targets[{i}]"),
                        message,
                    );
                }
            }
            let day = 86_400_000u64;
            for (field, value) in [
                ("timeout_ms", route.timeout_ms),
                ("ttft_timeout_ms", route.ttft_timeout_ms),
                ("attempt_timeout_ms", route.attempt_timeout_ms),
                ("backoff_ms", Some(route.backoff_ms)),
                ("backoff_max_ms", Some(route.backoff_max_ms)),
                ("hedge_after_ms", route.hedge_after_ms),
            ] {
                if value.is_some_and(|v| v > day) {
                    issue(
                        line,
                        format!("routes.{name}.{field}"),
                        format!("at most {day} ms (a day)"),
                    );
                }
            }
            if route.timeout_ms == Some(0) {
                issue(
                    line,
                    format!("routes.{name}.timeout_ms"),
                    "must be above 0".into(),
                );
            }
            if route.max_input_tokens == Some(0) {
                issue(
                    line,
                    format!("routes.{name}.max_input_tokens"),
                    "must be above 0 (leave it out for no limit)".into(),
                );
            }
            if route.trim.is_some() && route.max_input_tokens.is_none() {
                issue(
                    line,
                    format!("routes.{name}.trim"),
                    "`trim` needs `max_input_tokens` (the budget it trims to)".into(),
                );
            }
            let fb = &route.fallback;
            if !(200..=599).contains(&fb.omitted_status) {
                issue(
                    line,
                    format!("routes.{name}.fallback.omitted_status"),
                    "must be an HTTP status (200 to 599)".into(),
                );
            }
            if let Some(cap) = &route.capability {
                for (field, message) in cap.check() {
                    issue(line, format!("routes.{name}.{field}"), message);
                }
                for (level, lc) in &cap.levels {
                    for (i, target) in lc.targets.iter().flatten().enumerate() {
                        if let Err(message) = self.check_target(target.get_ref()) {
                            issue(
                                Some(line_of(text, target.span().start)),
                                format!("routes.{name}.capability.levels.{level}.targets[{i}]"),
                                message,
                            );
                        }
                    }
                    if lc.targets.as_ref().is_some_and(Vec::is_empty) {
                        issue(
                            line,
                            format!("routes.{name}.capability.levels.{level}.targets"),
                            "needs at least one target, or leave it out".into(),
                        );
                    }
                }
            }
            if let Some(sem) = &route.cache.semantic {
                if !self.embedders.contains_key(&sem.embedder) {
                    let known: Vec<&str> = self.embedders.keys().map(String::as_str).collect();
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.embedder"),
                        format!(
                            "unknown embedder `{}`; configured [embedders]: {}",
                            sem.embedder,
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
                if let Some(message) = sem.check() {
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.threshold"),
                        message,
                    );
                }
                for (field, message) in sem.check_learning() {
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.{field}"),
                        message,
                    );
                }
                if let Some(verifier) = &sem.verifier
                    && !self.embedders.contains_key(verifier)
                {
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.verifier"),
                        format!("unknown embedder `{verifier}`: name an [embedders.NAME]"),
                    );
                }
                if matches!(
                    self.embedders.get(&sem.embedder),
                    Some(EmbedderConfig::CrossEncoder { .. })
                ) {
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.embedder"),
                        format!(
                            "`{}` is a cross-encoder: it scores pairs, it embeds nothing; \
                             name it as `verifier` and a sentence encoder as `embedder`",
                            sem.embedder
                        ),
                    );
                }
                if let Some(judge) = &sem.judge
                    && !self.routes.contains_key(judge)
                    && let Err(message) = self.check_target(judge)
                {
                    issue(
                        line,
                        format!("routes.{name}.cache.semantic.judge"),
                        format!("neither a route nor a target: {message}"),
                    );
                }
            }
            if fb.cache_semantic {
                match &route.cache.semantic {
                    None => issue(
                        line,
                        format!("routes.{name}.fallback.cache_semantic"),
                        "needs a semantic cache on the route ([routes.NAME.cache.semantic])".into(),
                    ),
                    Some(sem) if !(sem.threshold..=1.0).contains(&fb.cache_semantic_threshold) => {
                        issue(
                            line,
                            format!("routes.{name}.fallback.cache_semantic_threshold"),
                            format!(
                                "a cosine similarity between the route's cache.semantic.threshold ({}) and 1",
                                sem.threshold
                            ),
                        )
                    }
                    Some(_) => {}
                }
                if !fb.cache {
                    issue(
                        line,
                        format!("routes.{name}.fallback.cache_semantic"),
                        "is part of the `cache` level: needs `cache = true`".into(),
                    );
                }
            }
            let total = route.total_timeout_ms();
            if let Some(ttft) = route.ttft_timeout_ms
                && (ttft == 0 || ttft > total)
            {
                issue(
                    line,
                    format!("routes.{name}.ttft_timeout_ms"),
                    format!("must be above 0 and at most the route's timeout ({total} ms)"),
                );
            }
        }
        for (name, route) in &self.routes {
            if let Some(p) = &route.prompt
                && let Err(e) = crate::experiment::PromptRef::parse(p)
            {
                issue(
                    find_line(text, &format!("[routes.{name}]")),
                    format!("routes.{name}.prompt"),
                    e,
                );
            }
        }
        for (name, f) in &self.feedback {
            use crate::experiment::FeedbackKind;
            let line = find_line(text, &format!("[feedback.{name}]"));
            match f.kind {
                FeedbackKind::Number => {
                    if let (Some(lo), Some(hi)) = (f.min, f.max)
                        && lo >= hi
                    {
                        issue(
                            line,
                            format!("feedback.{name}.min"),
                            format!("min {lo} must be below max {hi}"),
                        );
                    }
                }
                FeedbackKind::Category if f.categories.is_empty() => {
                    issue(
                        line,
                        format!("feedback.{name}.categories"),
                        "a category feedback lists its categories".into(),
                    );
                }
                _ => {}
            }
            for n in &f.negative {
                if !f.categories.contains(n) {
                    issue(
                        line,
                        format!("feedback.{name}.negative"),
                        format!("`{n}` is not one of the categories"),
                    );
                }
            }
        }
        for (name, e) in &self.experiments {
            let line = find_line(text, &format!("[experiments.{name}]"));
            let mut problem = |key: &str, message: String| {
                issue(line, format!("experiments.{name}.{key}"), message)
            };
            if !self.routes.contains_key(&e.route) {
                problem("route", format!("unknown route `{}`", e.route));
            }
            if e.variants.len() < 2 {
                problem(
                    "variants",
                    "an experiment needs at least two variants".into(),
                );
            }
            for v in e.traffic.keys() {
                if !e.variants.contains_key(v) {
                    problem("traffic", format!("`{v}` is not a variant"));
                }
            }
            if !e.traffic.is_empty() && e.traffic.values().all(|w| *w == 0) {
                problem("traffic", "every share is 0".into());
            }
            if let Some(c) = &e.control
                && !e.variants.contains_key(c)
            {
                problem("control", format!("`{c}` is not a variant"));
            }
            for (vname, v) in &e.variants {
                let t = v.table();
                if let Some(p) = &t.prompt
                    && let Err(err) = crate::experiment::PromptRef::parse(p)
                {
                    problem(&format!("variants.{vname}.prompt"), err);
                }
                for target in &t.targets {
                    if let Err(err) = self.check_target(target) {
                        problem(&format!("variants.{vname}.targets"), err);
                    }
                }
            }
            const BUILT_IN: [&str; 9] = [
                "error",
                "fallback",
                "guardrail",
                "latency_ms",
                "cost_usd",
                "regenerated",
                "correction_distance",
                "online_eval",
                "quality_engagement",
            ];
            for m in &e.metrics {
                if !BUILT_IN.contains(&m.as_str()) && !self.feedback.contains_key(m) {
                    problem(
                        "metrics",
                        format!(
                            "unknown metric `{m}`: a [feedback.NAME] or one of {}",
                            BUILT_IN.join(", ")
                        ),
                    );
                }
            }
            for m in &e.guards.metrics {
                if !["error", "fallback", "guardrail", "latency_p99"].contains(&m.as_str()) {
                    problem(
                        "guards.metrics",
                        format!("unknown guard `{m}`: error, fallback, guardrail or latency_p99"),
                    );
                }
            }
            if !(0.5..1.0).contains(&e.decision.prob_best) {
                problem(
                    "decision.prob_best",
                    format!("{} is not between 0.5 and 1", e.decision.prob_best),
                );
            }
        }
        let mut experiment_routes: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, e) in &self.experiments {
            if e.enabled
                && let Some(other) = experiment_routes.insert(&e.route, name)
            {
                issue(
                    find_line(text, &format!("[experiments.{name}]")),
                    format!("experiments.{name}.route"),
                    format!(
                        "route `{}` already runs experiment `{other}`; pause one (`enabled = false`)",
                        e.route
                    ),
                );
            }
        }
        if let Some(otel) = &self.otel {
            for (key, message) in otel.check() {
                issue(find_line(text, "[otel]"), format!("otel.{key}"), message);
            }
        }
        for (section, problems) in [
            ("drift", self.drift.check()),
            ("alerts", self.alerts.check()),
            ("state", self.state.check()),
        ] {
            let line = find_line(text, &format!("[{section}]"));
            for (key, message) in problems {
                issue(line, format!("{section}.{key}"), message);
            }
        }
        if let Some(e) = &self.drift.embedder
            && !self.embedders.contains_key(e)
        {
            issue(
                find_line(text, "[drift]"),
                "drift.embedder".into(),
                format!("unknown embedder `{e}`"),
            );
        }
        if let Some(online) = &self.evals.online {
            let line = find_line(text, "[evals.online]");
            let mut problem = |key: &str, message: String| {
                issue(line, format!("evals.online.{key}"), message);
            };
            if !(online.sample > 0.0 && online.sample <= 1.0) {
                problem(
                    "sample",
                    format!(
                        "{} is not a share between 0 and 1 (0.02 scores 2% of answers)",
                        online.sample
                    ),
                );
            }
            for r in &online.routes {
                if !self.routes.contains_key(r) {
                    problem("routes", format!("unknown route `{r}`"));
                }
            }
            if let Some(j) = &online.judge
                && !self.routes.contains_key(&j.route)
            {
                problem("judge.route", format!("unknown route `{}`", j.route));
            }
            if online.concurrency == 0 || online.queue == 0 {
                problem(
                    "concurrency",
                    "`concurrency` and `queue` must be at least 1".into(),
                );
            }
            if !self.store.enabled || !self.store.record_bodies {
                problem(
                    "sample",
                    "online evals score stored answers: they need [store] enabled with record_bodies".into(),
                );
            }
            if let Some(e) = &online.embedder
                && !self.embedders.contains_key(e)
            {
                problem("embedder", format!("unknown embedder `{e}`"));
            }
        }
        issues
    }

    /// Checks a `provider/model` reference against the configured providers.
    pub fn check_target(&self, target: &str) -> Result<(), String> {
        let Some((provider, model)) = target.split_once('/') else {
            return Err(format!("`{target}` is not of the form provider/model"));
        };
        if model.is_empty() {
            return Err(format!("`{target}` names no model after the `/`"));
        }
        if !self.providers.contains_key(provider) {
            let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown provider `{provider}` in `{target}`; configured providers: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok(())
    }

    /// The price of a `provider/model`, if configured.
    pub fn price(&self, target: &str) -> Option<Price> {
        self.models.get(target).and_then(|m| m.price)
    }
}

/// Expands `${NAME}` in a provider's `fields`, warning about unset variables.
fn interpolate_fields(
    text: &str,
    name: &str,
    fields: Vec<(String, &mut String)>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<ConfigIssue>,
) {
    for (field, value) in fields {
        let (expanded, missing) = expand_env(value, env);
        *value = expanded;
        for var in missing {
            warnings.push(ConfigIssue {
                line: find_line(text, &format!("[providers.{name}]")),
                key: format!("providers.{name}.{field}"),
                message: format!("environment variable {var} is not set; using an empty value"),
            });
        }
    }
}

/// Replaces `${NAME}` and `${NAME:-default}`; returns the names that were not set.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(value.len());
    let mut missing = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name), default) {
            (Some(v), None) => out.push_str(&v),
            (Some(v), Some(_)) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// 1-based line where `needle` first starts a line (after leading spaces).
fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented reference file, which must work as written.
    const ISSUE_EXAMPLE: &str = include_str!("../../../examples/two-upstreams.toml");

    fn env(name: &str) -> Option<String> {
        (name == "UP_KEY").then(|| "sk-test".to_string())
    }

    #[test]
    fn the_reference_example_loads() {
        let loaded = Config::parse(ISSUE_EXAMPLE, &env).unwrap();
        let c = loaded.config;
        assert!(loaded.warnings.is_empty());
        let ProviderConfig::Openai(up) = &c.providers["up"] else {
            panic!("up is openai")
        };
        assert_eq!(up.api_key.as_ref().unwrap().expose(), "sk-test");
        assert_eq!(format!("{:?}", up.api_key), "Some(Secret(***))");
        let route = &c.routes["chat"];
        assert_eq!(route.targets.len(), 2);
        assert_eq!(route.first_token_timeout_ms(), Some(500));
        assert_eq!(c.price("up/m1").unwrap().cached_input, Some(0.075));
    }

    #[test]
    fn the_resilience_example_loads() {
        let text = include_str!("../../../examples/resilient.toml");
        let c = Config::parse(text, &env).unwrap().config;
        let route = &c.routes["support"];
        assert!(route.hedge);
        assert_eq!(route.fallback.cache_max_age_s, 3600);
        let cap = route.capability.as_ref().unwrap();
        assert_eq!(cap.behaviour(3).max_tokens, Some(150));
        assert_eq!(cap.behaviour(1).serve(), ServeMode::Omitted);
        assert_eq!(c.models["primary/m1"].breaker.slow_ms, Some(4000));
        assert_eq!(c.routes["spread"].balance, Balance::LeastLatency);
    }

    #[test]
    fn resilience_settings_are_checked() {
        let text = r#"
[providers.p]
kind = "placeholder"
[models."p/m"]
max_concurrency = 0
[models."p/m".breaker]
error_rate = 1.5
[routes.r]
targets = ["p/m"]
fallback = { omitted_status = 42 }
[routes.r.capability]
degrade_at = 0.1
recover_at = 0.3
[routes.r.capability.levels.7]
serve = "omitted"
[routes.r.capability.levels.4]
targets = ["nowhere/m"]
"#;
        let err = Config::parse(text, &env).unwrap_err().to_string();
        for key in [
            "models.\"p/m\".max_concurrency",
            "models.\"p/m\".breaker.error_rate",
            "routes.r.fallback.omitted_status",
            "routes.r.capability: need 0 <= recover_at",
            "routes.r.capability.levels.7",
            "routes.r.capability.levels.4.targets[0]",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
    }

    #[test]
    fn cache_settings_are_checked() {
        let text = r#"
[providers.p]
kind = "placeholder"
[embedders.remote]
kind = "provider"
target = "nowhere/e5"
[routes.r]
targets = ["p/m"]
cache = { mode = "on", semantic = { embedder = "missing", threshold = 1.5 } }
[routes.l]
targets = ["p/m"]
cache = { semantic = { embedder = "remote", max_false_hit_rate = 0.0, verify_rate = 2.0, min_threshold = 0.9, judge = "nobody", judge_from = 1.5 } }
fallback = { cache_semantic = true, cache_semantic_threshold = 0.5 }
[routes.j]
targets = ["p/m"]
cache = { semantic = { embedder = "remote", judge = "r", judge_all = true } }
[routes.k]
targets = ["p/m"]
cache = { semantic = { embedder = "remote", judge = "p/small", judge_timeout_ms = 0 } }
[routes.f]
targets = ["p/m"]
fallback = { cache_semantic = true }
[embedders.xenc]
kind = "cross_encoder"
path = "/models/xenc"
[routes.v]
targets = ["p/m"]
cache = { semantic = { embedder = "xenc", verifier = "nope", verifier_threshold = 1.5, verifier_from = -0.1 } }
[routes.w]
targets = ["p/m"]
cache = { semantic = { embedder = "remote", verifier = "xenc" } }
[routes.s]
targets = ["p/m"]
cache = { mode = "sometimes" }
"#;
        let err = Config::parse(text, &env).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        let text = text.replace("cache = { mode = \"sometimes\" }", "");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        for key in [
            "embedders.remote.target",
            "routes.r.cache.semantic.embedder",
            "routes.r.cache.semantic.threshold",
            "routes.l.cache.semantic.max_false_hit_rate",
            "routes.l.cache.semantic.verify_rate",
            "routes.l.cache.semantic.min_threshold",
            "routes.l.cache.semantic.judge",
            "routes.l.cache.semantic.judge_from",
            "routes.k.cache.semantic.judge_timeout_ms",
            "routes.l.fallback.cache_semantic_threshold",
            "routes.f.fallback.cache_semantic",
            "routes.v.cache.semantic.verifier",
            "routes.v.cache.semantic.verifier_threshold",
            "routes.v.cache.semantic.verifier_from",
            "routes.v.cache.semantic.embedder",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
        assert!(err.contains("`xenc` is a cross-encoder"), "{err}");
        // A cross-encoder as the verifier is fine.
        assert!(!err.contains("routes.w."), "{err}");
        // A judge naming a route or a target of a known provider is fine.
        assert!(!err.contains("routes.j."), "{err}");
        assert!(!err.contains("p/small"), "{err}");
        assert!(err.contains("neither a route nor a target"), "{err}");
    }

    #[test]
    fn the_guardrails_example_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/guardrails.toml");
        let loaded = Config::load(&path).unwrap();
        let c = &loaded.config;
        assert_eq!(c.guardrails.len(), 7);
        assert_eq!(c.routes["support"].guardrails.output.len(), 5);
        assert!(c.routes["support"].cascade.is_some());
    }

    #[test]
    fn guardrail_settings_are_checked_with_their_lines() {
        let text = r#"
[providers.p]
kind = "placeholder"
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON", "LOCATION"]
[guardrails.names]
kind = "pii"
entities = ["NAME"]
[guardrails.codes]
kind = "regex"
patterns = ["ORD-(\\d+"]
[guardrails.shape]
kind = "json_schema"
schema = { type = "no-such-type" }
[guardrails.long]
kind = "max_length"
action = "redact"
[guardrails.mod]
kind = "moderation"
target = "ghost/omni"
[routes.chat]
targets = ["p/m"]
guardrails = { input = ["missing"], output = ["pii"] }
"#;
        let err = Config::parse(text, &env).unwrap_err().to_string();
        for (key, line) in [
            ("guardrails.names.entities", 8),
            ("guardrails.codes.patterns", 11),
            ("guardrails.shape.schema", 14),
            ("guardrails.long.action", 17),
            ("guardrails.long.max_chars", 17),
            ("guardrails.mod.target", 20),
            ("routes.chat.guardrails.input", 23),
        ] {
            assert!(
                err.contains(&format!("line {line}: {key}")),
                "{key} at line {line} missing from:\n{err}"
            );
        }
        assert!(!err.contains("guardrails.pii"), "{err}");
        let unknown = text.replace("kind = \"max_length\"", "kind = \"maximum\"");
        let err = Config::parse(&unknown, &env).unwrap_err().to_string();
        assert!(err.contains("maximum") && err.contains("line"), "{err}");
        // The contract from the issue loads as written.
        let ok = "[providers.p]\nkind = \"placeholder\"\n[guardrails.pii]\nkind = \"pii\"\naction = \"redact\"\nentities = [\"EMAIL_ADDRESS\", \"PERSON\"]\n[routes.chat]\ntargets = [\"p/m\"]\nguardrails = { input = [], output = [\"pii\"] }\n";
        let loaded = Config::parse(ok, &env).unwrap();
        assert_eq!(loaded.config.routes["chat"].guardrails.output, ["pii"]);
    }

    #[test]
    fn an_unset_secret_is_a_warning() {
        let loaded = Config::parse(ISSUE_EXAMPLE, &|_| None).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].key, "providers.up.api_key");
        assert_eq!(loaded.warnings[0].line, Some(1));
    }

    #[test]
    fn errors_name_line_and_key() {
        let text = ISSUE_EXAMPLE.replace("\"backup/m1\"", "\"nowhere/m1\"");
        let Err(ConfigError::Invalid(issues)) = Config::parse(&text, &env) else {
            panic!("should fail")
        };
        assert_eq!(issues[0].key, "routes.chat.targets[1]");
        assert_eq!(issues[0].line, Some(14));
        assert!(issues[0].message.contains("unknown provider `nowhere`"));

        let text = ISSUE_EXAMPLE.replace("retries = 1", "retrys = 1");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("line 18"), "{err}");
        assert!(err.contains("retrys"), "{err}");
    }

    #[test]
    fn budgets_are_checked_by_field() {
        let keys = |text: &str| match Config::parse(text, &env) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(issues)) => issues
                .into_iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        let route = "[providers.local]\nkind = \"placeholder\"\n[routes.chat]\ntargets = [\"local/echo\"]\n";
        assert!(keys(&format!("{route}budget_usd = \"day:50\"\nalert_at = 0.8\n[tenants.acme]\nbudget_usd = \"month:500\"\n[auth]\nbudget_alert_at = 0.9\n")).is_empty());
        let bad = keys("[tenants.acme]\nbudget_usd = \"week:5\"\n");
        assert!(bad[0].starts_with("tenants.acme.budget_usd: "), "{bad:?}");
        assert!(bad[0].contains("day or month"), "{bad:?}");
        let bad = keys(&format!(
            "{route}budget_usd = \"day:$1,000\"\nalert_at = 1.0\n"
        ));
        assert!(bad[0].starts_with("routes.chat.budget_usd: "), "{bad:?}");
        assert!(bad[1].starts_with("routes.chat.alert_at: "), "{bad:?}");
        let bad = keys("[tenants.acme]\nalert_at = 0.5\n");
        assert!(bad[0].contains("needs a `budget_usd`"), "{bad:?}");
        let bad = keys("[auth]\nbudget_alert_at = 0\n");
        assert!(bad[0].starts_with("auth.budget_alert_at: "), "{bad:?}");
    }

    #[test]
    fn state_urls_are_checked() {
        let parse = |state: &str| Config::parse(&format!("[state]\n{state}\n"), &env);
        let ok = parse("kind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"").unwrap();
        assert_eq!(ok.config.state.kind, StateKind::Redis);
        assert_eq!(ok.config.state.timeout_ms, 50);
        assert_eq!(ok.config.state.prefix, "trestle:");
        assert!(parse("kind = \"redis\"\nurl = \"redis://[::1]:7000\"").is_ok());
        assert!(parse("kind = \"redis\"\nurl = \"redis://u:p@cache\"").is_ok());
        for bad in [
            "http://x:1",
            "redis://:6379",
            "redis://h:port",
            "redis://h/x",
            "rediss://h",
        ] {
            let err = parse(&format!("kind = \"redis\"\nurl = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("state.url"), "{bad}: {err}");
        }
        let err = parse("kind = \"redis\"").unwrap_err().to_string();
        assert!(err.contains("state.url") && err.contains("needs"), "{err}");
        assert!(
            parse("instances = 0")
                .unwrap_err()
                .to_string()
                .contains("state.instances")
        );
    }

    #[test]
    fn env_expansion() {
        let e = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b", &e), ("axb".into(), vec![]));
        assert_eq!(expand_env("${B:-d}", &e), ("d".into(), vec![]));
        assert_eq!(expand_env("${B}", &e), ("".into(), vec!["B".into()]));
        assert_eq!(expand_env("${open", &e), ("${open".into(), vec![]));
    }

    #[test]
    fn distributions_parse() {
        let text = r#"
[providers.p]
kind = "placeholder"
ttft_ms = { dist = "lognormal", median = 200, sigma = 0.5 }
tokens_per_sec = 50
"#;
        let c = Config::parse(text, &env).unwrap().config;
        let ProviderConfig::Placeholder(p) = &c.providers["p"] else {
            panic!("placeholder")
        };
        assert_eq!(p.tokens_per_sec, Dist::Fixed(50.0));
        assert!(matches!(p.ttft_ms, Dist::Spec(DistSpec::Lognormal { .. })));
    }
}
