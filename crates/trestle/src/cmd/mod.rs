//! The subcommands.

pub mod mock;
mod trace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use trestle_core::Config;
use trestle_core::config::{ConfigError, Loaded};
use trestle_gateway::server;

pub use trace::show as trace_show;

fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    match path {
        None => Ok(Loaded {
            config: Config::builtin(),
            warnings: Vec::new(),
        }),
        Some(p) => Config::load(p).map_err(|e| match e {
            ConfigError::Invalid(_) => {
                anyhow::anyhow!("{} is not a valid config:\n{e}", p.display())
            }
            other => other.into(),
        }),
    }
}

pub async fn serve(config: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let loaded = load(config.as_deref())?;
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
    }
    let config = loaded.config;
    let addr = listen.unwrap_or_else(|| config.server.listen.clone());
    let handle = trestle_gateway::metrics::install()?;
    let listener = server::bind(&addr).await?;
    let routes: Vec<String> = config.routes.keys().cloned().collect();
    let store = if config.store.enabled {
        config.store.path.display().to_string()
    } else {
        "off".into()
    };
    let state = server::build_state(config, Some(handle))?;
    tracing::info!(listen = %listener.local_addr()?, routes = %routes.join(","), traces = %store, "trestle is serving");
    server::serve(state, listener, server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            let c = &loaded.config;
            println!(
                "{}: ok ({} providers, {} routes, {} priced models)",
                file.display(),
                c.providers.len(),
                c.routes.len(),
                c.models.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(issues)) => {
            for i in &issues {
                println!("{}: error: {i}", file.display());
            }
            println!("{}: {} problem(s)", file.display(), issues.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
