//! The gateway an eval or a dataset command talks to: a running one (`--url`), or one started
//! in process from `--config` on a free local port, so a suite goes through the same path
//! (HTTP, guardrails, cache, fallbacks, traces) as production traffic.

use std::path::PathBuf;

use clap::Args;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trestle_core::Config;
use trestle_core::config::EmbedderConfig;
use trestle_gateway::cache::embed::Embedder;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;
use trestle_gateway::server;

/// Where the SQLite store of datasets and runs is.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// The SQLite file datasets and runs are kept in (default: the config's `[store] path`,
    /// else .trestle/trestle.db).
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

    pub fn path(&self) -> anyhow::Result<PathBuf> {
        let config = self.load_config()?;
        Ok(db_path(self.db.clone(), config.as_ref()))
    }
}

fn db_path(db: Option<PathBuf>, config: Option<&Config>) -> PathBuf {
    db.or_else(|| {
        config
            .filter(|c| c.store.enabled)
            .map(|c| c.store.path.clone())
    })
    .unwrap_or_else(|| PathBuf::from(".trestle/trestle.db"))
}

#[derive(Args)]
pub struct TargetArgs {
    /// Run the cases through a gateway started in process from this config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run the cases against a running gateway instead.
    #[arg(long, env = "TRESTLE_URL", conflicts_with = "config")]
    pub url: Option<String>,
    /// The SQLite file runs are kept in (default: the config's `[store] path`, else
    /// .trestle/trestle.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

pub struct Gateway {
    pub url: String,
    pub describe: String,
    pub db: PathBuf,
    runtime: Option<std::sync::Arc<Runtime>>,
    stop: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

impl Gateway {
    pub async fn start(args: &TargetArgs) -> Result<Gateway, String> {
        match (&args.url, &args.config) {
            (Some(url), _) => Ok(Gateway {
                url: url.trim_end_matches('/').to_string(),
                describe: url.clone(),
                db: db_path(args.db.clone(), None),
                runtime: None,
                stop: None,
            }),
            (None, Some(path)) => {
                let loaded = Config::load(path)
                    .map_err(|e| format!("{} is not a valid config:\n{e}", path.display()))?;
                let config = loaded.config;
                let db = db_path(args.db.clone(), Some(&config));
                let state = server::build_state(config, None, None)
                    .map_err(|e| format!("{}: {e:#}", path.display()))?;
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
