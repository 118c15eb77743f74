//! The gateway an eval or a dataset command talks to: a running one (`--url`), or one started
//! in process from `--config` on a free local port, so a suite goes through the same path
//! (HTTP, guardrails, cache, fallbacks, traces) as production traffic.

use std::path::PathBuf;

use clap::Args;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trestle_core::Config;
use trestle_core::config::EmbedderConfig;
use trestle_eval::store::EvalStore;
use trestle_gateway::cache::embed::Embedder;
use trestle_gateway::db::Db;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;
use trestle_gateway::server;

/// Where datasets, runs, keys (and, for mining, traces) are kept.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// A SQLite file to keep them in (default: the config's `[store]`, its PostgreSQL
    /// database when `kind = "postgres"`; else .trestle/trestle.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A gateway config (for its store path, guardrails and embedders).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl DbArgs {
    pub fn load_config(&self) -> anyhow::Result<Option<Config>> {
        match &self.config {
            None => Ok(None),
            Some(p) => Ok(Some(
                Config::load(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                    .config,
            )),
        }
    }

    /// The place: the SQLite file `--db` names; else the config's `[store]` (the PostgreSQL
    /// database when `kind = "postgres"`); else `.trestle/trestle.db`, as the gateway's
    /// default.
    pub fn place(&self) -> anyhow::Result<Db> {
        if let Some(path) = &self.db {
            return Ok(Db::Sqlite(path.clone()));
        }
        let Some(config) = self.load_config()? else {
            return Ok(default_db());
        };
        let db = Db::from_config(&config.store).map_err(|e| {
            let file = self
                .config
                .as_deref()
                .unwrap_or(std::path::Path::new("config"));
            anyhow::anyhow!("{}: {e:#}", file.display())
        })?;
        Ok(db.unwrap_or_else(default_db))
    }

    /// The eval store of datasets and runs at [`DbArgs::place`].
    pub fn eval_store(&self) -> anyhow::Result<Box<dyn EvalStore>> {
        trestle_gateway::evals::runs::open(&self.place()?).map_err(anyhow::Error::msg)
    }
}

/// Where things are kept without `--db` or a `[store]`.
fn default_db() -> Db {
    Db::Sqlite(PathBuf::from(".trestle/trestle.db"))
}

#[derive(Args)]
pub struct TargetArgs {
    /// Run the cases through a gateway started in process from this config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run the cases against a running gateway instead.
    #[arg(long, env = "TRESTLE_URL", conflicts_with = "config")]
    pub url: Option<String>,
    /// A SQLite file to keep datasets and runs in (default: the config's `[store]`, its
    /// PostgreSQL database when `kind = "postgres"`; else .trestle/trestle.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

pub struct Gateway {
    pub url: String,
    pub describe: String,
    /// Where datasets and runs are kept.
    pub db: Db,
    runtime: Option<std::sync::Arc<Runtime>>,
    stop: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

impl Gateway {
    pub async fn start(args: &TargetArgs) -> Result<Gateway, String> {
        match (&args.url, &args.config) {
            (Some(url), _) => Ok(Gateway {
                url: url.trim_end_matches('/').to_string(),
                describe: url.clone(),
                // No config, so no `[store]`: the SQLite file `--db` names, or the default.
                db: args.db.clone().map_or_else(default_db, Db::Sqlite),
                runtime: None,
                stop: None,
            }),
            (None, Some(path)) => {
                let loaded = Config::load(path)
                    .map_err(|e| format!("{} is not a valid config:\n{e}", path.display()))?;
                let state = server::build_state(loaded.config, None, None)
                    .map_err(|e| format!("{}: {e:#}", path.display()))?;
                // The gateway's own store (one pool on PostgreSQL), unless `--db` names a file.
                let db = match &args.db {
                    Some(file) => Db::Sqlite(file.clone()),
                    None => state.db.clone().unwrap_or_else(default_db),
                };
                let listener = server::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let runtime = state.runtime().clone();
                let (tx, rx) = oneshot::channel::<()>();
                let handle = tokio::spawn(server::serve(state, listener, async move {
                    let _ = rx.await;
                }));
                Ok(Gateway {
                    url: format!("http://{addr}"),
                    describe: format!("in process ({})", path.display()),
                    db,
                    runtime: Some(runtime),
                    stop: Some((tx, handle)),
                })
            }
            (None, None) => Err(
                "give --config FILE (a gateway in process) or --url URL (a running gateway)".into(),
            ),
        }
    }

    /// The embedder `similar` uses: the config's `[embedders.NAME]`, else the in-process
    /// MiniLM when this build has it and its files are found.
    pub fn embedder(&self, name: Option<&str>, needed: bool) -> Result<Option<Embedder>, String> {
        if !needed {
            return Ok(None);
        }
        match name {
            Some(name) => {
                let rt = self.runtime.as_ref().ok_or("`embedder` in the suite names an [embedders.NAME] of --config; with --url there is no config")?;
                rt.embedders.get(name).cloned().map(Some).ok_or_else(|| {
                    format!(
                        "the suite's embedder `{name}` is not an [embedders] entry of the config"
                    )
                })
            }
            None => {
                let mut config = Config::default();
                config
                    .embedders
                    .insert("minilm".into(), EmbedderConfig::Minilm { path: None });
                let registry = std::sync::Arc::new(Registry::new(&config.cache));
                match Runtime::build(config, registry) {
                    Ok(rt) => Ok(rt.embedders.get("minilm").cloned()),
                    Err(e) => Err(format!(
                        "`similar` needs an embedder: set `embedder` in the suite, or make the in-process MiniLM available ({e:#})"
                    )),
                }
            }
        }
    }

    /// Stops an in-process gateway, waiting for its traces to be written.
    pub async fn stop(mut self) {
        if let Some((tx, handle)) = self.stop.take() {
            let _ = tx.send(());
            let _ = handle.await;
        }
    }
}
