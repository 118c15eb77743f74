//! `trestle migrate --config F`: brings the store `[store]` names up to date (on
//! PostgreSQL every component's tables) and exits, so a deployment can migrate before it starts gateways.

use std::path::PathBuf;
use std::process::ExitCode;

use trestle_core::Config;
use trestle_core::store::StoreKind;
use trestle_gateway::db::Db;
use trestle_gateway::store::SqliteStore;

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
            let Some(Db::Postgres(pool)) = Db::from_config(store)? else {
                anyhow::bail!("[store] enabled = false: there is nothing to migrate");
            };
            for (component, version) in trestle_gateway::db::migrate_all(&pool)? {
                println!("{component} (PostgreSQL): schema version {version}, up to date");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
