//! `trestle keys create|list|revoke|rotate`: client keys in the store (docs/configuration.md,
//! "Keys and tenants"). A key is printed once, when it is made; the store keeps its hash.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use trestle_gateway::keys::{KeyStore, NewKey, parse_budget};

use super::gateway::DbArgs;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key; it is shown once.
    Create(CreateArgs),
    /// Every key (never a secret), with its tenant, limits and state.
    List(ListArgs),
    /// Revoke a key by id or name; running gateways refuse it within `[auth] refresh_ms`.
    Revoke(OneArgs),
    /// A new secret for a key (same name, tenant and limits); the old one is revoked.
    Rotate(OneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// What the key is for (an app, a team).
    #[arg(long)]
    name: String,
    /// The tenant whose traces, feedback and spend it belongs to.
    #[arg(long)]
    tenant: String,
    /// The routes it may call (comma-separated); all when absent.
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens (in and out) per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// A spending budget in USD per UTC day or calendar month: `day:5`, `month:250`.
    #[arg(long = "budget-usd")]
    budget_usd: Option<String>,
    /// When it stops working: a span from now (`30d`, `12h`) or a date (`2027-01-31`, UTC).
    #[arg(long)]
    expires: Option<String>,
    /// May use the admin endpoints and read every tenant's data.
    #[arg(long)]
    admin: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub struct OneArgs {
    /// The key's id (`tk_<id>_…`) or name.
    key: String,
    #[command(flatten)]
    db: DbArgs,
}

fn now_ms() -> i64 {
    trestle_gateway::store::now_ms()
}

/// `30d` from now, or midnight UTC of `2027-01-31`.
fn expires_at(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(d) = trestle_core::window::parse_duration(text) {
        return Ok(now + d.as_millis() as i64);
    }
    trestle_gateway::keys::date_ms(text).ok_or_else(|| {
        anyhow::anyhow!("--expires `{text}`: give a span like 30d or a date like 2027-01-31")
    })
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(a) => {
            let now = now_ms();
            let budget = a
                .budget_usd
                .as_deref()
                .map(parse_budget)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--budget-usd: {e}"))?;
            let expires_at_ms = a
                .expires
                .as_deref()
                .map(|t| expires_at(t, now))
                .transpose()?;
            if expires_at_ms.is_some_and(|e| e <= now) {
                anyhow::bail!("--expires: that is in the past");
            }
            for (flag, v) in [("--rpm", a.rpm), ("--tpm", a.tpm)] {
                if v == Some(0) {
                    anyhow::bail!(
                        "{flag}: 0 would refuse every request; leave it out for no limit"
                    );
                }
            }
            let store = KeyStore::open(&a.db.path()?)?;
            let (secret, key) = store.create(
                &NewKey {
                    name: a.name,
                    tenant: a.tenant,
                    routes: a.routes,
                    rpm: a.rpm,
                    tpm: a.tpm,
                    budget,
                    admin: a.admin,
                    expires_at_ms,
                },
                now,
            )?;
            println!("{secret}");
            eprintln!(
                "key {} for tenant `{}` made; it is shown only now: keep it (the store keeps its hash)",
                key.id, key.tenant
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List(a) => {
            let store = KeyStore::open(&a.db.path()?)?;
            let keys = store.all()?;
            let now = now_ms();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<14} {:<16} {:<12} {:<8} {:<18} {:<10} {:<10} {:<14} admin",
                "id", "name", "tenant", "state", "routes", "rpm", "tpm", "budget"
            );
            for k in keys {
                let state = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else if !k.active(now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<14} {:<16} {:<12} {:<8} {:<18} {:<10} {:<10} {:<14} {}",
                    k.id,
                    k.name,
                    k.tenant,
                    state,
                    k.routes
                        .map(|r| r.join(","))
                        .unwrap_or_else(|| "all".into()),
                    k.rpm.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    k.tpm.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    k.budget
                        .map(|b| format!("{}:{}", b.period.as_str(), b.usd))
                        .unwrap_or_else(|| "-".into()),
                    if k.admin { "yes" } else { "" },
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke(a) => {
            let store = KeyStore::open(&a.db.path()?)?;
            let key = store.revoke(&a.key, now_ms())?;
            println!("revoked {} ({})", key.id, key.name);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate(a) => {
            let store = KeyStore::open(&a.db.path()?)?;
            let (secret, key) = store.rotate(&a.key, now_ms())?;
            println!("{secret}");
            eprintln!(
                "key {} replaces {} (now revoked); it is shown only now",
                key.id,
                key.rotated_from.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
