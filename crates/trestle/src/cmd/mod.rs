//! The subcommands.

pub mod cache;
pub mod dataset;
pub mod drift;
pub mod eval;
pub mod experiment;
mod gateway;
pub mod guard;
pub mod keys;
pub mod migrate;
pub mod mock;
pub mod prompt;
mod trace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use trestle_core::Config;
use trestle_core::config::{ConfigError, Loaded};

use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;
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
    // A reload re-reads the file by absolute path, whatever the working directory becomes.
    let config_path = config.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
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
    let state = server::build_state(config, config_path, Some(handle))?;
    server::reload_on_sighup(state.clone());
    trestle_gateway::drift::api::spawn_monitor(&state);
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
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for w in drift::unpinned_targets(&loaded.config, &text) {
                println!("warning: {w}");
            }
            // Building the runtime compiles templates and builds providers, as serve would.
            let registry = Arc::new(Registry::new(&loaded.config.cache));
            if let Err(e) = Runtime::build(loaded.config.clone(), registry) {
                println!("{}: error: {e:#}", file.display());
                println!("{}: 1 problem(s)", file.display());
                return Ok(ExitCode::FAILURE);
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

/// Asks a running gateway to re-read its config file.
pub async fn reload(url: &str) -> anyhow::Result<ExitCode> {
    trestle_gateway::providers::install_tls();
    let url = format!("{}/admin/reload", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let ok = response.status().is_success();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if ok {
        println!("reloaded");
        for note in body["notes"].as_array().into_iter().flatten() {
            println!("  {}", note.as_str().unwrap_or_default());
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "reload rejected; the old config keeps serving:\n{}",
            body["error"]["message"].as_str().unwrap_or("(no message)")
        );
        Ok(ExitCode::FAILURE)
    }
}
