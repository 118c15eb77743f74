//! Where what must last is kept (docs/architecture.md, "Storage"): one SQLite file by
//! default (`[store] path`), or one PostgreSQL database (`[store] kind = "postgres"`) that
//! several gateways share. Every component that keeps rows (traces, feedback, keys, prompt
//! labels, experiment stops, review labels, alerts, app spans, online evals, eval datasets
//! and runs, caches) takes a [`Db`] and keeps its tables in that one place.
//!
//! PostgreSQL is reached with the synchronous `postgres` client, like SQLite through
//! `rusqlite`: every call blocks, so callers run it on a plain thread or in
//! `spawn_blocking`. The client runs a small runtime of its own, so it must never be called
//! from inside an async task.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{Client, NoTls};

/// The configured place: `None` of these when `[store] enabled = false`.
#[derive(Clone)]
pub enum Db {
    /// The SQLite file at `[store] path`; each component opens its own connection.
    Sqlite(PathBuf),
    /// The PostgreSQL database at `[store] url`, through one shared pool.
    Postgres(Arc<PgPool>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Db::Postgres(pool) => write!(f, "postgres:{}", pool.address),
        }
    }
}

impl Db {
    /// The place `[store]` names, opened (and, for PostgreSQL, reachable); `None` when the
    /// store is off. PostgreSQL is opened on a thread of its own, so this may be called
    /// from anywhere.
    pub fn from_config(store: &trestle_core::config::StoreConfig) -> anyhow::Result<Option<Db>> {
        if !store.enabled {
            return Ok(None);
        }
        match store.kind {
            trestle_core::store::StoreKind::Sqlite => Ok(Some(Db::Sqlite(store.path.clone()))),
            trestle_core::store::StoreKind::Postgres => {
                let url = store.url.clone().ok_or_else(|| {
                    anyhow::anyhow!("store.url: is required when kind = \"postgres\"")
                })?;
                let size = store.pool_size;
                let pool = std::thread::spawn(move || PgPool::open(&url, size))
                    .join()
                    .map_err(|_| anyhow::anyhow!("store.url: opening PostgreSQL failed"))??;
                Ok(Some(Db::Postgres(Arc::new(pool))))
            }
        }
    }

    /// The SQLite file, when that is where things are kept.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Db::Sqlite(p) => Some(p),
            Db::Postgres(_) => None,
        }
    }
}

/// A few open PostgreSQL connections, reused; one is made when none is idle, and at most
/// `size` are kept idle.
pub struct PgPool {
    config: postgres::Config,
    address: String,
    idle: Mutex<Vec<Client>>,
    size: usize,
    /// Components this process has brought up to date: their check is not repeated.
    migrated: Mutex<std::collections::HashMap<String, i32>>,
}

/// Held while migrating, so two gateways starting at once do not both apply a step.
const MIGRATION_LOCK: i64 = 0x7472_6573_746c_6501;

impl PgPool {
    /// A pool for `url` (`[store] url`), checked by connecting once. An unreachable server
    /// is an error naming `store.url` and the address (never the URL: it may hold a
    /// password).
    pub fn open(url: &str, size: usize) -> anyhow::Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("store.url: not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let address = address(&config);
        let mut pool = PgPool {
            config,
            address,
            idle: Mutex::new(Vec::new()),
            size: size.max(1),
            migrated: Mutex::new(std::collections::HashMap::new()),
        };
        let first = pool.connect()?;
        pool.idle = Mutex::new(vec![first]);
        Ok(pool)
    }

    /// `host:port` of the server, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn connect(&self) -> anyhow::Result<Client> {
        self.config.connect(NoTls).map_err(|e| {
            // The client's message is general ("error connecting to server"); its cause says
            // what happened (refused, timed out, authentication).
            let cause = std::error::Error::source(&e)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "store.url: cannot connect to PostgreSQL at {}: {e}{cause}",
                self.address
            )
        })
    }

    /// Runs `f` on a pooled connection; a connection that broke is not kept.
    pub fn with<T>(&self, f: impl FnOnce(&mut Client) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        let out = f(&mut client);
        if !client.is_closed()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.size
        {
            idle.push(client);
        }
        out
    }

    /// Brings `component`'s tables up to date: applies the `steps` (version, SQL) newer than
    /// the version recorded in `schema_version`, in one transaction under an advisory lock,
    /// so gateways starting together apply each step once. A step is never changed once
    /// released; a later one is added. Returns the component's version.
    pub fn migrate(&self, component: &str, steps: &[(i32, &str)]) -> anyhow::Result<i32> {
        if let Some(v) = self
            .migrated
            .lock()
            .ok()
            .and_then(|m| m.get(component).copied())
        {
            return Ok(v);
        }
        let version = self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                     component TEXT PRIMARY KEY,
                     version INTEGER NOT NULL,
                     applied_at_ms BIGINT NOT NULL)",
            )?;
            let current: i32 = tx
                .query_opt(
                    "SELECT version FROM schema_version WHERE component = $1",
                    &[&component],
                )?
                .map(|r| r.get(0))
                .unwrap_or(0);
            let mut version = current;
            for (step, sql) in steps.iter().filter(|(v, _)| *v > current) {
                tracing::info!("PostgreSQL: {component}: applying migration {step}");
                tx.batch_execute(sql)
                    .map_err(|e| anyhow::anyhow!("{component} migration {step}: {e}"))?;
                version = *step;
            }
            if version != current {
                tx.execute(
                    "INSERT INTO schema_version (component, version, applied_at_ms) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (component) DO UPDATE SET version = $2, applied_at_ms = $3",
                    &[&component, &version, &crate::store::now_ms()],
                )?;
            }
            tx.commit()?;
            Ok(version)
        })?;
        if let Ok(mut m) = self.migrated.lock() {
            m.insert(component.to_string(), version);
        }
        Ok(version)
    }
}

/// Brings every component's tables up to date (`trestle migrate`), and says which version
/// each is at.
pub fn migrate_all(pool: &PgPool) -> anyhow::Result<Vec<(&'static str, i32)>> {
    Ok(vec![
        ("traces", crate::store::PostgresStore::migrate_on(pool)?),
        ("keys", crate::keys::store::migrate(pool)?),
        ("feedback", crate::feedback::store::migrate(pool)?),
        ("review", crate::review::migrate(pool)?),
        ("prompts", crate::prompts::labels::migrate(pool)?),
        ("experiments", crate::experiments::stops::migrate(pool)?),
        ("drift", crate::drift::alerts::migrate(pool)?),
        ("online_evals", crate::evals::scores::migrate(pool)?),
        ("cache", crate::cache::persist::store::migrate(pool)?),
        ("eval_runs", crate::evals::runs::migrate(pool)?),
    ])
}

/// Runs `f` where the synchronous PostgreSQL client may run: on a thread of its own when
/// called from inside the async runtime (the client would start a runtime in a runtime),
/// directly otherwise.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// `host:port` of the first host a config names, for messages.
fn address(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Places for tests: a fresh SQLite file, a fresh PostgreSQL database, and
/// [`on_both_backends!`](crate::db::testing::on_both_backends) to run one test body on each.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Db, PgPool};

    /// A new SQLite file in a folder of its own.
    pub(crate) fn sqlite(name: &str) -> Db {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trestle-db-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Db::Sqlite(dir.join("t.db"))
    }

    /// A new database on the test PostgreSQL server; `None` when TRESTLE_SKIP_POSTGRES=1.
    pub(crate) fn postgres() -> Option<Db> {
        let url = crate::store::pg_server::database()?;
        Some(Db::Postgres(Arc::new(PgPool::open(&url, 2).unwrap())))
    }

    /// For each named `fn(Db)`, a module with a `sqlite` and a `postgres` test running it.
    macro_rules! on_both_backends {
        ($($test:ident),* $(,)?) => {$(
            mod $test {
                #[test]
                fn sqlite() {
                    super::$test($crate::db::testing::sqlite(stringify!($test)));
                }
                #[test]
                fn postgres() {
                    if let Some(db) = $crate::db::testing::postgres() {
                        super::$test(db);
                    }
                }
            }
        )*};
    }
    pub(crate) use on_both_backends;
}
