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
    /// Learn each entry's threshold from feedback and verification, keeping the expected
    /// share of wrong semantic answers under `max_false_hit_rate`; off: `threshold` alone.
    #[serde(default = "default_true")]
    pub learn: bool,
    /// The share of served semantic answers allowed to be wrong (learned thresholds).
    #[serde(default = "default_max_false_hit_rate")]
    pub max_false_hit_rate: f32,
    /// The lowest similarity a learned threshold may reach (default: `threshold` − 0.15).
    #[serde(default)]
    pub min_threshold: Option<f32>,
    /// Share of semantic hits answered fresh instead and compared with the cached answer
    /// (each costs an upstream call).
    #[serde(default)]
    pub verify_rate: f32,
    /// Share of near misses (a neighbour within reach, below its learned threshold) whose
    /// fresh answer is compared with the neighbour's (costs an embedding of both answers).
    #[serde(default = "default_explore_rate")]
    pub explore_rate: f32,
    /// A route or `provider/model` asked "do these two questions ask for the same answer?"
    /// about candidates the threshold alone would not serve (from `judge_from` up): yes
    /// serves the cached answer, no (or no answer in time) is a miss. Off by default.
    #[serde(default)]
    pub judge: Option<String>,
    /// How long the judge may take; later is a miss (never an error).
    #[serde(default = "default_judge_timeout_ms")]
    pub judge_timeout_ms: u64,
    /// The lowest similarity sent to the judge (default: the learned thresholds' floor,
    /// `min_threshold`).
    #[serde(default)]
    pub judge_from: Option<f32>,
    /// Also ask the judge about candidates the threshold would serve (every served semantic
    /// answer is then judged).
    #[serde(default)]
    pub judge_all: bool,
    /// An `[embedders.NAME]` asked, in process, whether the cached question and the new one
    /// ask the same thing: a `cross_encoder` reads both together and gives a probability; a
    /// sentence encoder (e.g. `mpnet` over a `minilm` index) gives the cosine of their
    /// embeddings. From `verifier_from` up, a candidate the threshold would not serve is
    /// served when the score reaches `verifier_threshold`; with `verifier_all`, one it would
    /// serve is a miss when the score does not. Off by default.
    #[serde(default)]
    pub verifier: Option<String>,
    /// The score at or above which the verifier says "the same question".
    #[serde(default = "default_verifier_threshold")]
    pub verifier_threshold: f32,
    /// The lowest similarity sent to the verifier (default: the learned thresholds' floor,
    /// `min_threshold`).
    #[serde(default)]
    pub verifier_from: Option<f32>,
    /// Also verify candidates the threshold would serve (a no is then a miss).
    #[serde(default)]
    pub verifier_all: bool,
}

fn default_verifier_threshold() -> f32 {
    0.5
}

fn default_judge_timeout_ms() -> u64 {
    300
}

fn default_max_false_hit_rate() -> f32 {
    0.01
}

fn default_explore_rate() -> f32 {
    1.0
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
    /// all-mpnet-base-v2 in process (the same files, plus `sentence_bert_config.json`, in
    /// `path`; default: `$TRESTLE_MPNET_DIR`, then `.venv*/models/all-mpnet-base-v2`). Same
    /// build feature; about 8× MiniLM's compute per query (docs/caching.md, "Which encoder").
    Mpnet { path: Option<PathBuf> },
    /// A BERT cross-encoder in process (`model.safetensors`, `tokenizer.json`, `config.json`
    /// of a sequence classifier in `path`), for a semantic cache's `verifier` only: it scores
    /// pairs of questions and embeds nothing. Same build feature.
    CrossEncoder { path: PathBuf },
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
    /// Keep the exact cache, the semantic index and the tool cache in the store (`[store]`)
    /// and load them at start, so they survive a restart. Nothing is kept with the store off.
    pub persist: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            semantic_max_entries: 100_000,
            tool_max_entries: 100_000,
            tool_ttl_s: 3_600,
            tools: BTreeMap::new(),
            persist: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolNamespace {
    pub ttl_s: u64,
}

impl SemanticConfig {
    /// How far below `threshold` a learned threshold may go when `min_threshold` is unset.
    pub const DEFAULT_REACH: f32 = 0.15;

    pub fn check(&self) -> Option<String> {
        (!(0.0..=1.0).contains(&self.threshold))
            .then(|| "threshold is a cosine similarity between 0 and 1".to_string())
    }

    /// The learned thresholds' settings: (field, message) for each one out of range.
    pub fn check_learning(&self) -> Vec<(&'static str, String)> {
        let mut issues = Vec::new();
        if !(self.max_false_hit_rate > 0.0 && self.max_false_hit_rate < 1.0) {
            issues.push((
                "max_false_hit_rate",
                "a share above 0 and below 1 (0.01: one wrong answer in a hundred)".to_string(),
            ));
        }
        if let Some(m) = self.min_threshold
            && !(0.0..=self.threshold).contains(&m)
        {
            issues.push((
                "min_threshold",
                format!(
                    "a cosine similarity between 0 and `threshold` ({})",
                    self.threshold
                ),
            ));
        }
        if let Some(from) = self.judge_from
            && !(0.0..=1.0).contains(&from)
        {
            issues.push((
                "judge_from",
                "a cosine similarity between 0 and 1".to_string(),
            ));
        }
        for (field, value) in [
            ("verifier_from", self.verifier_from),
            ("verifier_threshold", Some(self.verifier_threshold)),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                issues.push((field, "a score between 0 and 1".to_string()));
            }
        }
        if self.judge.is_some() && self.judge_timeout_ms == 0 {
            issues.push((
                "judge_timeout_ms",
                "milliseconds above 0 (300: a small model nearby)".to_string(),
            ));
        }
        for (field, rate) in [
            ("verify_rate", self.verify_rate),
            ("explore_rate", self.explore_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                issues.push((field, "a share between 0 and 1".to_string()));
            }
        }
        issues
    }

    /// The lowest similarity a learned threshold may reach.
    pub fn floor(&self) -> f32 {
        self.min_threshold
            .unwrap_or(self.threshold - Self::DEFAULT_REACH)
            .clamp(0.0, self.threshold)
    }

    /// The lowest similarity the verifier is asked about.
    pub fn verifier_floor(&self) -> f32 {
        self.verifier_from.unwrap_or_else(|| self.floor())
    }

    /// The lowest similarity the judge is asked about.
    pub fn judge_floor(&self) -> f32 {
        self.judge_from.unwrap_or_else(|| self.floor())
    }
}
