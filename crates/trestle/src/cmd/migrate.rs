//! `trestle migrate --config F`: brings the trace store `[store]` names up to date and
//! exits, so a deployment can migrate before it starts gateways.

use std::path::PathBuf;
use std::process::ExitCode;

use trestle_core::Config;
use trestle_core::store::StoreKind;
use trestle_gateway::store::{PostgresStore, SqliteStore};

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// TOML configuration file whose `[store]` to migrate.
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?.config;
    let store = &config.store;
    match store.kind {
        StoreKind::Sqlite => {
            // As `serve` opens it: relative to the working folder.
            SqliteStore::open(&store.path)?;
            println!("trace store (SQLite, {}): up to date", store.path.display());
        }
        StoreKind::Postgres => {
            let url = store.url.as_deref().ok_or_else(|| {
                anyhow::anyhow!("store.url: is required when kind = \"postgres\"")
            })?;
            let version = PostgresStore::open(url, 1)?.migrate()?;
            println!("trace store (PostgreSQL): schema version {version}, up to date");
        }
    }
    Ok(ExitCode::SUCCESS)
}
