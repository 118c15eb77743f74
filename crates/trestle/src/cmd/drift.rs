//! `trestle drift report`: the drift report as a table (or JSON), from a running gateway
//! (`--url`) or straight from the trace store of a config (`--config`: its SQLite file or
//! PostgreSQL database).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::Value;
use trestle_core::Config;
use trestle_core::drift::parse_duration;
use trestle_gateway::db::Db;
use trestle_gateway::drift::{self, Query};
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;

#[derive(Subcommand)]
pub enum DriftCommand {
    /// Compare recent traffic with a reference window: inputs (length, tokens, language,
    /// topics), outputs per prompt version (length, refusals, fallbacks, guardrail findings,
    /// feedback, online evals) and providers (model and system_fingerprint changes).
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// The current window (default: `[drift] window`, else 7d).
    #[arg(long)]
    window: Option<String>,
    /// The reference window, just before the current one (default: `[drift] reference`,
    /// else 28d).
    #[arg(long)]
    reference: Option<String>,
    /// Only this route.
    #[arg(long)]
    route: Option<String>,
    /// Read the trace store of this config directly (no gateway needed).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Ask a running gateway (default http://127.0.0.1:8787).
    #[arg(long, env = "TRESTLE_URL", conflicts_with = "config")]
    url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: DriftCommand) -> anyhow::Result<ExitCode> {
    let DriftCommand::Report(args) = command;
    let report = match &args.config {
        Some(path) => local(path, &args).await?,
        None => remote(&args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

async fn local(path: &std::path::Path, args: &ReportArgs) -> anyhow::Result<Value> {
    let config = Config::load(path)
        .map_err(|e| anyhow::anyhow!("{} is not a valid config:\n{e}", path.display()))?
        .config;
    if !config.store.enabled {
        anyhow::bail!(
            "{}: [store] is disabled: there are no traces to compare",
            path.display()
        );
    }
    let mut query = Query::from_config(&config.drift);
    if let Some(w) = &args.window {
        query.window = duration("--window", w)?;
    }
    if let Some(r) = &args.reference {
        query.reference = duration("--reference", r)?;
    }
    query.route.clone_from(&args.route);
    let db = match Db::from_config(&config.store)? {
        Some(Db::Sqlite(file)) if !file.exists() => {
            anyhow::bail!("no trace store at {}", file.display())
        }
        Some(db) => db,
        None => anyhow::bail!(
            "{}: [store] is disabled: there are no traces to compare",
            path.display()
        ),
    };
    let drift_config = config.drift.clone();
    let embedder = if drift_config.embedder.is_some() {
        let registry = Arc::new(Registry::new(&config.cache));
        let runtime = Runtime::build(config, registry)?;
        drift::api::embedder(&runtime)
    } else {
        None
    };
    let report = drift::run(db, drift_config, query, embedder).await?;
    Ok(serde_json::to_value(report)?)
}

async fn remote(args: &ReportArgs) -> anyhow::Result<Value> {
    let base = args
        .url
        .as_deref()
        .unwrap_or("http://127.0.0.1:8787")
        .trim_end_matches('/');
    let mut params: Vec<(&str, String)> = Vec::new();
    for (name, value) in [("window", &args.window), ("reference", &args.reference)] {
        if let Some(v) = value {
            duration(&format!("--{name}"), v)?;
            params.push((name, v.clone()));
        }
    }
    if let Some(r) = &args.route {
        params.push(("route", r.clone()));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = if query.is_empty() {
        format!("{base}/v1/drift")
    } else {
        format!("{base}/v1/drift?{}", query.join("&"))
    };
    let response = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: not a JSON answer: {e}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{url}: {status}: {}",
            body["error"]["message"].as_str().unwrap_or("(no message)")
        );
    }
    Ok(body)
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => anyhow::bail!("{flag} must be longer than 0"),
        Err(e) => anyhow::bail!("{flag}: {e}"),
    }
}

fn when(ms: &Value) -> String {
    ms.as_i64().map_or_else(
        || "-".into(),
        |ms| trestle_eval::store::utc(ms.div_euclid(1000)),
    )
}

/// The report as text: the windows, a table per section, the providers' pairs and changes.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let window = |w: &Value| {
        format!(
            "{} → {} UTC, {} requests",
            when(&w["start_ms"]),
            when(&w["end_ms"]),
            w["requests"]
        )
    };
    out.push_str(&format!("current:   {}\n", window(&report["current"])));
    out.push_str(&format!("reference: {}\n", window(&report["reference"])));
    if let Some(route) = report["route"].as_str() {
        out.push_str(&format!("route:     {route}\n"));
    }
    out.push_str(&format!(
        "{} signal(s) drifted; topic features: {}\n",
        report["drifted"],
        report["topic_features"].as_str().unwrap_or("-")
    ));
    for (title, signals) in [
        ("INPUTS", &report["inputs"]),
        ("OUTPUTS", &report["outputs"]),
        ("PROVIDERS", &report["providers"]["signals"]),
    ] {
        out.push_str(&format!("\n{title}\n"));
        let rows = signals.as_array().map(Vec::as_slice).unwrap_or_default();
        if rows.is_empty() {
            out.push_str("  (no traffic)\n");
            continue;
        }
        out.push_str(&format!(
            "  {:<28} {:<26} {:<22} {:>8} {:>9} {:>6} {:>6}  {}\n",
            "scope", "signal", "method", "value", "threshold", "ref n", "cur n", "verdict"
        ));
        for s in rows {
            let verdict = match s["status"].as_str() {
                Some("drifted") => "DRIFTED",
                Some("ok") => "ok",
                _ => "not enough data",
            };
            let value = s["value"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            out.push_str(&format!(
                "  {:<28} {:<26} {:<22} {:>8} {:>9.3} {:>6} {:>6}  {verdict}",
                s["scope"].as_str().unwrap_or("-"),
                s["name"].as_str().unwrap_or("-"),
                s["method"].as_str().unwrap_or("-"),
                value,
                s["threshold"].as_f64().unwrap_or(0.0),
                s["reference_n"],
                s["current_n"],
            ));
            match s["detail"].as_str() {
                Some(d) if !d.is_empty() && verdict != "not enough data" => {
                    out.push_str(&format!("  ({d})\n"))
                }
                _ => out.push('\n'),
            }
        }
    }
    let seen = report["providers"]["seen"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !seen.is_empty() {
        out.push_str("\nmodels and fingerprints upstreams answered with\n");
        for s in seen {
            out.push_str(&format!(
                "  {:<24} model {:<28} fingerprint {:<20} {} → {} ({} requests)\n",
                s["target"].as_str().unwrap_or("-"),
                s["model"].as_str().unwrap_or("-"),
                s["system_fingerprint"].as_str().unwrap_or("-"),
                when(&s["first_seen_ms"]),
                when(&s["last_seen_ms"]),
                s["requests"]
            ));
        }
    }
    let changes = report["providers"]["changes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in changes {
        let pair = |p: &Value| {
            format!(
                "{}/{}",
                p["model"].as_str().unwrap_or("-"),
                p["system_fingerprint"].as_str().unwrap_or("-")
            )
        };
        out.push_str(&format!(
            "  change at {}: {} {} → {}\n",
            when(&c["at_ms"]),
            c["target"].as_str().unwrap_or("-"),
            pair(&c["from"]),
            pair(&c["to"])
        ));
    }
    out
}

/// `trestle config check`'s warnings for routes whose targets name a model by an alias the
/// provider can move (`gpt-4o`, `claude-3-5-sonnet-latest`), with the line of each:
/// `trestle_core::drift::is_unpinned_alias` has the rule. The placeholder's models are not
/// checked.
pub fn unpinned_targets(config: &Config, text: &str) -> Vec<String> {
    use trestle_core::config::ProviderConfig;
    let mut out = Vec::new();
    for (name, route) in &config.routes {
        for (i, target) in route.targets.iter().enumerate() {
            let Some((provider, model)) = target.get_ref().split_once('/') else {
                continue;
            };
            let http = matches!(
                config.providers.get(provider),
                Some(
                    ProviderConfig::Openai(_)
                        | ProviderConfig::Anthropic(_)
                        | ProviderConfig::Gemini(_)
                        | ProviderConfig::AzureOpenai(_)
                        | ProviderConfig::Vertex(_)
                )
            );
            if !http || !trestle_core::drift::is_unpinned_alias(model) {
                continue;
            }
            let line = text
                .get(..target.span().start)
                .map_or(0, |head| head.matches('\n').count() + 1);
            out.push(format!(
                "line {line}: routes.{name}.targets[{i}]: `{}` is an unpinned alias: the provider can change the model behind it without notice; pin a dated or numbered version (e.g. gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, gemini-1.5-pro-002) so a change is your decision (drift reports model and system_fingerprint changes)",
                target.get_ref()
            ));
        }
    }
    out
}
