//! `trestle experiment`: an experiment's Bayesian readout as a table, and shipping a winner
//! (docs/experiments.md).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// The readout: per variant n, mean, 95% interval, chance to be best, expected loss,
    /// traffic figures, and the decision.
    Show {
        name: String,
        #[arg(long, default_value = "http://127.0.0.1:8787", env = "TRESTLE_URL")]
        url: String,
        /// Print the JSON the gateway answered.
        #[arg(long)]
        json: bool,
    },
    /// Every experiment's status and decision.
    List {
        #[arg(long, default_value = "http://127.0.0.1:8787", env = "TRESTLE_URL")]
        url: String,
    },
    /// Ship a variant: its prompt version gets the label (default `production`).
    Ship {
        name: String,
        variant: String,
        #[arg(long, default_value = "production")]
        label: String,
        #[arg(long, default_value = "http://127.0.0.1:8787", env = "TRESTLE_URL")]
        url: String,
    },
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.3}"))
}

/// The readout as a table.
pub fn table(r: &Value) -> String {
    let mut out = format!(
        "experiment {} on route {} ({}, by {}), {:.1} h of at least {} h\nprimary metric: {}\n\n{:<14} {:>7} {:>8} {:>17} {:>9} {:>10} {:>18} {:>9} {:>8} {:>8}\n",
        r["name"].as_str().unwrap_or("?"),
        r["route"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?"),
        r["unit"].as_str().unwrap_or("?"),
        r["elapsed_h"].as_f64().unwrap_or(0.0),
        r["min_duration_h"],
        r["primary_metric"].as_str().unwrap_or("?"),
        "variant",
        "n",
        "mean",
        "95% interval",
        "P(best)",
        "exp. loss",
        "change vs control",
        "requests",
        "errors",
        "p90 ms"
    );
    for v in r["variants"].as_array().into_iter().flatten() {
        let change = v["relative_change"]
            .as_array()
            .map_or("—".to_string(), |c| {
                format!(
                    "{:+.1}% [{:+.1}, {:+.1}]",
                    c[1].as_f64().unwrap_or(0.0) * 100.0,
                    c[0].as_f64().unwrap_or(0.0) * 100.0,
                    c[2].as_f64().unwrap_or(0.0) * 100.0
                )
            });
        out.push_str(&format!(
            "{:<14} {:>7} {:>8} {:>17} {:>9} {:>10} {:>18} {:>9} {:>8} {:>8}{}\n",
            v["name"].as_str().unwrap_or("?"),
            v["n"],
            pct(&v["mean"]),
            format!("[{}, {}]", pct(&v["ci_low"]), pct(&v["ci_high"])),
            pct(&v["prob_best"]),
            v["expected_loss"]
                .as_f64()
                .map_or("—".into(), |x| format!("{x:.4}")),
            change,
            v["traffic"]["requests"],
            v["traffic"]["error_rate"]
                .as_f64()
                .map_or("—".into(), |x| format!("{:.1}%", x * 100.0)),
            v["traffic"]["latency_p90_ms"]
                .as_f64()
                .map_or("—".into(), |x| format!("{x:.0}")),
            if v["stopped"].is_object() {
                "  STOPPED"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "\ndecision: {}\n",
        r["decision"].as_str().unwrap_or("?")
    ));
    out
}

async fn get(url: &str) -> anyhow::Result<(bool, Value)> {
    let r = reqwest::get(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let ok = r.status().is_success();
    Ok((ok, r.json().await.unwrap_or_default()))
}

pub async fn run(cmd: ExperimentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExperimentCommand::Show { name, url, json } => {
            let (ok, v) = get(&format!(
                "{}/v1/experiments/{name}",
                url.trim_end_matches('/')
            ))
            .await?;
            if !ok {
                anyhow::bail!("{}", v["error"]["message"].as_str().unwrap_or("error"));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", table(&v));
            }
        }
        ExperimentCommand::List { url } => {
            let (ok, v) = get(&format!("{}/v1/experiments", url.trim_end_matches('/'))).await?;
            if !ok {
                anyhow::bail!("{}", v["error"]["message"].as_str().unwrap_or("error"));
            }
            for e in v["data"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<8} route {:<16} {}",
                    e["name"].as_str().unwrap_or("?"),
                    e["status"].as_str().unwrap_or("?"),
                    e["route"].as_str().unwrap_or("?"),
                    e["decision"].as_str().unwrap_or("")
                );
            }
        }
        ExperimentCommand::Ship {
            name,
            variant,
            label,
            url,
        } => {
            let r = reqwest::Client::new()
                .post(format!(
                    "{}/v1/experiments/{name}/ship",
                    url.trim_end_matches('/')
                ))
                .json(&json!({"variant": variant, "label": label}))
                .send()
                .await?;
            let ok = r.status().is_success();
            let v: Value = r.json().await.unwrap_or_default();
            if !ok {
                println!("refused: {}", v["error"]["message"].as_str().unwrap_or("?"));
                return Ok(ExitCode::FAILURE);
            }
            let m = &v["move"];
            println!(
                "shipped {variant}: {} label {} {} → {}",
                m["prompt"].as_str().unwrap_or("?"),
                m["label"].as_str().unwrap_or("?"),
                m["from"],
                m["to"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
