//! `trestle prompt`: prompts as code — list, show, diff, render, promote (docs/prompts.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use trestle_core::Config;
use trestle_core::experiment::PromptRef;
use trestle_gateway::db::Db;
use trestle_gateway::prompts::{PromptLabels, Prompts};

#[derive(Subcommand)]
pub enum PromptCommand {
    /// Every prompt: versions and labels.
    List(Common),
    /// One prompt, or one version of it (NAME, NAME@VERSION, NAME:LABEL).
    Show {
        prompt: String,
        #[command(flatten)]
        common: Common,
    },
    /// What changed between two versions (numbers or labels).
    Diff {
        name: String,
        a: String,
        b: String,
        #[command(flatten)]
        common: Common,
    },
    /// What the model would see: a version rendered with variables from a JSON file.
    Render {
        prompt: String,
        /// A JSON object of variables.
        #[arg(long)]
        vars: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Point a label at a version; the move is recorded (who, when, from, to).
    Promote {
        name: String,
        version: u32,
        #[arg(long, default_value = "production")]
        label: String,
        /// Who moves it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Move it on a running gateway (it takes effect at once) instead of in the store.
        #[arg(long, env = "TRESTLE_URL")]
        url: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Clone)]
pub struct Common {
    /// The gateway config (its `[prompts] dir` and store).
    #[arg(long, short, default_value = "trestle.toml")]
    config: PathBuf,
}

struct Loaded {
    prompts: Prompts,
    labels: PromptLabels,
    /// The labels are in PostgreSQL, which running gateways read every few seconds.
    shared: bool,
}

fn load(common: &Common) -> anyhow::Result<Loaded> {
    let config = Config::load(&common.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", common.config.display()))?
        .config;
    let prompts = Prompts::load(&config.prompts_dir()).map_err(anyhow::Error::msg)?;
    // Labels are kept where `[store]` says; a SQLite file never made has none (and is not
    // made here).
    let db = match Db::from_config(&config.store)? {
        Some(Db::Sqlite(path)) if !path.exists() => None,
        db => db,
    };
    let shared = matches!(db, Some(Db::Postgres(_)));
    let labels = PromptLabels::new(db);
    labels.sync(&prompts).map_err(anyhow::Error::msg)?;
    Ok(Loaded {
        prompts,
        labels,
        shared,
    })
}

fn resolve(l: &Loaded, spec: &str) -> anyhow::Result<(String, u32)> {
    let r = PromptRef::parse(spec).map_err(anyhow::Error::msg)?;
    l.prompts.check(&r).map_err(anyhow::Error::msg)?;
    let p = &l.prompts.by_name[r.name()];
    let n = match &r {
        PromptRef::Version(_, n) => *n,
        PromptRef::Label(name, label) => l
            .labels
            .get(name, label)
            .or_else(|| p.labels.get(label).copied())
            .ok_or_else(|| anyhow::anyhow!("prompt {name} has no label `{label}`"))?,
    };
    Ok((r.name().to_string(), n))
}

fn version_text(v: &trestle_gateway::prompts::Version) -> String {
    let mut out = String::new();
    if let Some(s) = &v.system {
        out.push_str(&format!("[system]\n{s}\n"));
    }
    for m in &v.messages {
        out.push_str(&format!("[{}]\n{}\n", m.role, m.content));
    }
    if !v.params.is_empty() {
        out.push_str(&format!("[params]\n{}\n", Value::Object(v.params.clone())));
    }
    out
}

pub fn run(cmd: PromptCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PromptCommand::List(common) => {
            let l = load(&common)?;
            if l.prompts.by_name.is_empty() {
                println!("no prompts (put NAME.toml files in the config's [prompts] dir)");
            }
            for p in l.prompts.by_name.values() {
                let mut labels = p.labels.clone();
                labels.extend(l.labels.of(&p.name));
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}→{v}")).collect();
                println!(
                    "{:<24} versions {:<12} labels {}  {}",
                    p.name,
                    p.versions
                        .keys()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    labels.join(" "),
                    p.description
                );
            }
        }
        PromptCommand::Show { prompt, common } => {
            let l = load(&common)?;
            let bare = !prompt.contains(['@', ':']);
            let (name, n) = if bare {
                (prompt.clone(), 0)
            } else {
                resolve(&l, &prompt)?
            };
            let p = l
                .prompts
                .by_name
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("no prompt `{name}`"))?;
            println!("{} — {}\nfile: {}", p.name, p.description, p.path.display());
            for (k, v) in &p.variables {
                println!(
                    "variable {k}: {:?}{}{}",
                    v.kind,
                    if v.required { ", required" } else { "" },
                    v.default
                        .as_ref()
                        .map_or(String::new(), |d| format!(", default {d}"))
                );
            }
            let mut labels = p.labels.clone();
            labels.extend(l.labels.of(&p.name));
            for (k, v) in &labels {
                println!("label {k} → version {v}");
            }
            let shown: Vec<u32> = if bare {
                p.versions.keys().copied().collect()
            } else {
                vec![n]
            };
            for n in shown {
                let v = &p.versions[&n];
                println!(
                    "\n--- version {n} (hash {}){}\n{}",
                    v.hash,
                    v.description
                        .as_ref()
                        .map_or(String::new(), |d| format!(" {d}")),
                    version_text(v)
                );
            }
            let history = l.labels.history(&p.name).map_err(anyhow::Error::msg)?;
            if !history.is_empty() {
                println!("label history:");
                for m in history {
                    println!(
                        "  {} {}: {} → {} by {} ({})",
                        trestle_eval::store::utc(m.at_ms / 1000),
                        m.label,
                        m.from.map_or("-".into(), |f| f.to_string()),
                        m.to,
                        m.by,
                        m.source
                    );
                }
            }
        }
        PromptCommand::Diff { name, a, b, common } => {
            let l = load(&common)?;
            let spec = |x: &str| {
                if x.chars().all(|c| c.is_ascii_digit()) {
                    format!("{name}@{x}")
                } else {
                    format!("{name}:{x}")
                }
            };
            let (_, na) = resolve(&l, &spec(&a))?;
            let (_, nb) = resolve(&l, &spec(&b))?;
            let p = &l.prompts.by_name[&name];
            let (ta, tb) = (
                version_text(&p.versions[&na]),
                version_text(&p.versions[&nb]),
            );
            println!("--- {name}@{na}\n+++ {name}@{nb}");
            let diff = similar::TextDiff::from_lines(&ta, &tb);
            for change in diff.iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                print!("{sign}{change}");
            }
        }
        PromptCommand::Render {
            prompt,
            vars,
            common,
        } => {
            let l = load(&common)?;
            let (name, n) = resolve(&l, &prompt)?;
            let vars: Option<Map<String, Value>> = match vars {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        anyhow::anyhow!("{}: a JSON object of variables: {e}", path.display())
                    })?)
                }
                None => None,
            };
            let r = l.prompts.by_name[&name]
                .render(n, vars.as_ref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"prompt": r.id, "messages": r.messages, "params": r.params})
                )?
            );
        }
        PromptCommand::Promote {
            name,
            version,
            label,
            by,
            url,
            common,
        } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".into());
            match url {
                Some(url) => return promote_remote(&url, &name, version, &label, &by),
                None => {
                    let l = load(&common)?;
                    let m = l
                        .labels
                        .promote(&l.prompts, &name, &label, version, &by)
                        .map_err(anyhow::Error::msg)?;
                    let when = if l.shared {
                        format!(
                            "running gateways pick it up within {} s",
                            trestle_gateway::prompts::labels::REFRESH.as_secs()
                        )
                    } else {
                        "a running gateway picks it up on its next reload".to_string()
                    };
                    println!(
                        "{name}: label {label} {} → {version} (recorded; {when})",
                        m.from.map_or("-".into(), |f| f.to_string())
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn promote_remote(
    url: &str,
    name: &str,
    version: u32,
    label: &str,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/v1/prompts/{name}/labels",
                url.trim_end_matches('/')
            ))
            .json(&json!({"label": label, "version": version, "by": by}))
            .send()
            .await?;
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap_or_default();
        if ok {
            println!("{name}: label {label} {} → {version}", v["move"]["from"]);
            Ok(ExitCode::SUCCESS)
        } else {
            println!("refused: {}", v["error"]["message"].as_str().unwrap_or("?"));
            Ok(ExitCode::FAILURE)
        }
    })
}
