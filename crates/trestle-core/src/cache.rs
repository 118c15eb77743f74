//! Caching settings (DESIGN.md §4): the exact and semantic response caches per route, the
//! embedders the semantic cache uses, and the tool-response cache's namespaces. Plain data;
//! the gateway's `cache` module runs them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Whether a route's response cache serves and stores answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    #[default]
    Off,
    On,
    /// Serve hits, store nothing new.
    ReadOnly,
    /// Store answers, never serve them (to warm a cache or measure it first).
    WriteOnly,
}

impl CacheMode {
    pub fn reads(&self) -> bool {
        matches!(self, CacheMode::On | CacheMode::ReadOnly)
    }

    pub fn writes(&self) -> bool {
        matches!(self, CacheMode::On | CacheMode::WriteOnly)
    }
}

/// `[routes.NAME.cache]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCacheConfig {
    pub mode: CacheMode,
    /// How long an answer is served as fresh.
    pub ttl_s: u64,
    pub normalize: Normalize,
    pub semantic: Option<SemanticConfig>,
}

impl Default for RouteCacheConfig {
    fn default() -> Self {
        RouteCacheConfig {
            mode: CacheMode::Off,
            ttl_s: 3_600,
            normalize: Normalize::default(),
            semantic: None,
        }
    }
}

/// What the exact key ignores in message text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Normalize {
    /// Ignore letter case.
    pub case: bool,
    /// Ignore runs of whitespace and leading/trailing spaces.
    pub whitespace: bool,
    /// Ignore punctuation at the edges of words ("policy?" is "policy").
    pub punctuation: bool,
    /// Words dropped before keying (matched whole, ignoring case), e.g. "please".
    pub filler_words: Vec<String>,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            case: true,
            whitespace: true,
            punctuation: true,
            filler_words: Vec::new(),
        }
    }
}

/// Who may share a semantic hit besides the route, prompt version and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticScope {
    /// Everyone on the route.
    #[default]
    Route,
    /// Only the same user (`x-trestle-user-id`, `user`, `metadata.user_id`).
    User,
    /// Only the same tenant: `metadata.tenant_id`, or the `x-trestle-tenant-id` header.
    Tenant,
}

/// Which part of the request is embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryText {
    /// The last user message.
    #[default]
    LastUser,
    /// Every user message, in order.
    AllUser,
}

/// `[routes.NAME.cache.semantic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticConfig {
    /// An `[embedders.NAME]`.
    pub embedder: String,
    /// Cosine similarity at or above which a cached answer is served.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    #[serde(default)]
    pub scope: SemanticScope,
    #[serde(default)]
    pub query: QueryText,
    /// Also for requests with tools (their definitions must still match exactly).
    #[serde(default)]
    pub allow_tools: bool,
    /// Also for requests with a temperature above 0.
    #[serde(default)]
    pub allow_temperature: bool,
    /// A hit must also agree with the query on numbers, negation, contrasts and names
    /// (docs/caching.md shows why). Turn off only for queries without such details.
    #[serde(default = "default_true")]
    pub guard: bool,
}

fn default_true() -> bool {
    true
}

fn default_threshold() -> f32 {
    0.85
}

/// `[embedders.NAME]`: where semantic-cache embeddings come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmbedderConfig {
    /// all-MiniLM-L6-v2 in process (`model.safetensors`, `tokenizer.json`, `config.json` in
    /// `path`; default: `$TRESTLE_MINILM_DIR`). Needs the `local-embeddings` build feature.
    Minilm { path: Option<PathBuf> },
    /// Any configured `provider/model` with an OpenAI-compatible embeddings endpoint.
    Provider { target: String },
}

/// `[cache]`: bounds shared by every route, and the tool-response cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Answers kept for the exact cache and the `cache` fallback level, all routes together.
    pub max_entries: u64,
    /// Vectors kept per semantic scope before its index is rebuilt from live entries.
    pub semantic_max_entries: usize,
    /// Tool results kept, all namespaces together.
    pub tool_max_entries: u64,
    /// Freshness of a tool result in a namespace without its own `ttl_s`.
    pub tool_ttl_s: u64,
    /// `[cache.tools.NAMESPACE] ttl_s = …`: e.g. specs for hours, prices for minutes.
    pub tools: BTreeMap<String, ToolNamespace>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            semantic_max_entries: 100_000,
            tool_max_entries: 100_000,
            tool_ttl_s: 3_600,
            tools: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolNamespace {
    pub ttl_s: u64,
}

impl SemanticConfig {
    pub fn check(&self) -> Option<String> {
        (!(0.0..=1.0).contains(&self.threshold))
            .then(|| "threshold is a cosine similarity between 0 and 1".to_string())
    }
}
