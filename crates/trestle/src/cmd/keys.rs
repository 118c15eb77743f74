//! `trestle keys create|list|revoke|rotate`: client keys in the store (docs/configuration.md,
//! "Keys and tenants"). A key is printed once, when it is made; the store keeps its hash.
//! The store is the one the gateway reads keys from: the config's `[store]` (SQLite or
//! PostgreSQL), or the SQLite file `--db` names.

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

/// The key store `--db` or `--config` names, its table made or brought up to date.
fn open(args: &DbArgs) -> anyhow::Result<KeyStore> {
    KeyStore::on(&args.place()?)
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
            let store = open(&a.db)?;
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
            let store = open(&a.db)?;
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
            let store = open(&a.db)?;
            let key = store.revoke(&a.key, now_ms())?;
            println!("revoked {} ({})", key.id, key.name);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate(a) => {
            let store = open(&a.db)?;
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use trestle_gateway::db::Db;

    use super::*;

    fn args(db: Option<&Path>, config: Option<&Path>) -> DbArgs {
        DbArgs {
            db: db.map(Path::to_path_buf),
            config: config.map(Path::to_path_buf),
        }
    }

    fn config(dir: &Path, name: &str, store: &str) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "[store]\n{store}\n[providers.local]\nkind = \"placeholder\"\n[routes.chat]\ntargets = [\"local/echo\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn keys_go_to_the_store_the_config_names() {
        let dir = std::env::temp_dir().join(format!("trestle-keys-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.db");
        let lite = config(
            &dir,
            "lite.toml",
            &format!("path = {:?}", file.display().to_string()),
        );
        // Nothing listens on port 1: the error shows PostgreSQL is what was opened.
        let pg = config(
            &dir,
            "pg.toml",
            "kind = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/db?connect_timeout=2\"",
        );
        let e = open(&args(None, Some(&pg))).err().unwrap().to_string();
        assert!(e.contains("pg.toml: store.url: cannot connect"), "{e}");
        // The SQLite config: its `[store] path`.
        let store = open(&args(None, Some(&lite))).unwrap();
        store
            .create(
                &NewKey {
                    name: "app".into(),
                    tenant: "acme".into(),
                    ..Default::default()
                },
                1,
            )
            .unwrap();
        drop(store);
        assert!(file.exists());
        assert!(matches!(args(None, Some(&lite)).place().unwrap(), Db::Sqlite(p) if p == file));
        // `--db` names a SQLite file, whatever the config says.
        let other = dir.join("other.db");
        assert!(
            matches!(args(Some(&other), Some(&pg)).place().unwrap(), Db::Sqlite(p) if p == other)
        );
        assert!(matches!(
            args(None, None).place().unwrap(),
            Db::Sqlite(p) if p == Path::new(".trestle/trestle.db")
        ));
        std::fs::remove_dir_all(dir).ok();
    }
}
