//! Where keys are kept: `api_keys` in the SQLite file, or in the PostgreSQL database
//! several gateways share, with the same columns in each dialect's types. Spend is summed
//! from the trace store's `requests`, which is in the same place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Budget, KeyRecord, NewKey, Period, random_text, sha256_hex};
use crate::db::{Db, PgPool};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    routes TEXT,
    rpm INTEGER,
    tpm INTEGER,
    budget_period TEXT,
    budget_usd REAL,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    revoked_at_ms INTEGER,
    rotated_from TEXT
);
";

/// The key store: `api_keys` beside the traces, in the SQLite file or the PostgreSQL
/// database `[store]` names. Calls block: run them off the async runtime.
pub struct KeyStore {
    place: Place,
}

enum Place {
    Sqlite(Connection),
    Postgres(Arc<PgPool>),
}

impl KeyStore {
    /// The SQLite file at `path` (made with its folder).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(KeyStore {
            place: Place::Sqlite(conn),
        })
    }

    /// The store where `db` keeps things; on PostgreSQL `api_keys` is made or brought up to
    /// date first.
    pub fn on(db: &Db) -> anyhow::Result<Self> {
        match db {
            Db::Sqlite(path) => KeyStore::open(path),
            Db::Postgres(pool) => {
                pool.migrate("keys", pg::MIGRATIONS)?;
                Ok(KeyStore::migrated(pool.clone()))
            }
        }
    }

    /// The PostgreSQL store whose schema is known to be up to date.
    pub(super) fn migrated(pool: Arc<PgPool>) -> Self {
        KeyStore {
            place: Place::Postgres(pool),
        }
    }

    /// Makes a key; the secret is returned once and kept only hashed.
    pub fn create(&self, new: &NewKey, now_ms: i64) -> anyhow::Result<(String, KeyRecord)> {
        let (secret, record) = made(new, now_ms, None)?;
        match &self.place {
            Place::Sqlite(conn) => sqlite_insert(conn, &record)?,
            Place::Postgres(pool) => pool.with(|c| pg::insert(c, &record))?,
        }
        Ok((secret, record))
    }

    /// Every key, oldest first.
    pub fn all(&self) -> anyhow::Result<Vec<KeyRecord>> {
        match &self.place {
            Place::Sqlite(conn) => sqlite_all(conn),
            Place::Postgres(pool) => pool.with(pg::all),
        }
    }

    fn find(&self, id_or_name: &str) -> anyhow::Result<KeyRecord> {
        let all = self.all()?;
        let matches: Vec<_> = all
            .into_iter()
            .filter(|k| k.id == id_or_name || (k.name == id_or_name && k.revoked_at_ms.is_none()))
            .collect();
        match matches.len() {
            1 => Ok(matches
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no key"))?),
            0 => anyhow::bail!("no key `{id_or_name}` (give its id or name; `trestle keys list`)"),
            n => anyhow::bail!("{n} active keys are named `{id_or_name}`: give the id"),
        }
    }

    /// Revokes a key by id or name.
    pub fn revoke(&self, id_or_name: &str, now_ms: i64) -> anyhow::Result<KeyRecord> {
        let key = self.find(id_or_name)?;
        if key.revoked_at_ms.is_some() {
            anyhow::bail!("key {} was revoked already", key.id);
        }
        match &self.place {
            Place::Sqlite(conn) => {
                conn.execute(
                    "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1",
                    params![key.id, now_ms],
                )?;
            }
            Place::Postgres(pool) => pool.with(|c| pg::revoke(c, &key.id, now_ms))?,
        }
        Ok(key)
    }

    /// A new secret with the same name, tenant and limits; the old key is revoked.
    pub fn rotate(&self, id_or_name: &str, now_ms: i64) -> anyhow::Result<(String, KeyRecord)> {
        let old = self.find(id_or_name)?;
        if old.revoked_at_ms.is_some() {
            anyhow::bail!("key {} is revoked: create a new one", old.id);
        }
        let new = NewKey {
            name: old.name.clone(),
            tenant: old.tenant.clone(),
            routes: old.routes.clone(),
            rpm: old.rpm,
            tpm: old.tpm,
            budget: old.budget,
            admin: old.admin,
            expires_at_ms: old.expires_at_ms,
        };
        let (secret, record) = made(&new, now_ms, Some(&old.id))?;
        match &self.place {
            Place::Sqlite(conn) => {
                sqlite_insert(conn, &record)?;
                conn.execute(
                    "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1",
                    params![old.id, now_ms],
                )?;
            }
            Place::Postgres(pool) => pool.with(|c| pg::rotate(c, &record, &old.id, now_ms))?,
        }
        Ok((secret, record))
    }

    /// What a key, a tenant or a route spent since `since_ms` (from the trace store's
    /// requests; nothing when no trace was stored yet).
    pub fn spent_since(&self, who: Spender<'_>, since_ms: i64) -> anyhow::Result<f64> {
        match &self.place {
            Place::Sqlite(conn) => sqlite_spent_since(conn, who, since_ms),
            Place::Postgres(pool) => pool.with(|c| pg::spent_since(c, who, since_ms)),
        }
    }
}

/// Whose spend [`KeyStore::spent_since`] sums.
#[derive(Debug, Clone, Copy)]
pub enum Spender<'a> {
    Key(&'a str),
    Tenant(&'a str),
    Route(&'a str),
}

impl<'a> Spender<'a> {
    /// The `requests` column that names it, and the name.
    fn column(self) -> (&'static str, &'a str) {
        match self {
            Spender::Key(id) => ("key_id", id),
            Spender::Tenant(t) => ("tenant", t),
            Spender::Route(r) => ("route", r),
        }
    }
}

/// A new key's secret and record, checked.
fn made(
    new: &NewKey,
    now_ms: i64,
    rotated_from: Option<&str>,
) -> anyhow::Result<(String, KeyRecord)> {
    if new.name.trim().is_empty() {
        anyhow::bail!("--name: give the key a name");
    }
    if new.tenant.trim().is_empty() {
        anyhow::bail!("--tenant: give the key a tenant");
    }
    let id = random_text(12);
    let secret = format!("tk_{id}_{}", random_text(40));
    let record = KeyRecord {
        id,
        hash: sha256_hex(&secret),
        name: new.name.clone(),
        tenant: new.tenant.clone(),
        routes: new.routes.clone(),
        rpm: new.rpm,
        tpm: new.tpm,
        budget: new.budget,
        admin: new.admin,
        created_at_ms: now_ms,
        expires_at_ms: new.expires_at_ms,
        revoked_at_ms: None,
        rotated_from: rotated_from.map(str::to_string),
    };
    Ok((secret, record))
}

/// A stored budget: both columns set and the period known, else none.
fn stored_budget(period: Option<&str>, usd: Option<f64>) -> Option<Budget> {
    let period = match period? {
        "day" => Period::Day,
        "month" => Period::Month,
        _ => return None,
    };
    Some(Budget { period, usd: usd? })
}

/// Routes are stored comma-separated; none is every route.
fn stored_routes(text: Option<String>) -> Option<Vec<String>> {
    text.map(|t| t.split(',').map(str::to_string).collect())
}

/// The columns a key is read back with, in this order, on both backends.
const KEY_COLUMNS: &str = "id, hash, name, tenant, routes, rpm, tpm, budget_period, budget_usd, \
     admin, created_at_ms, expires_at_ms, revoked_at_ms, rotated_from";

fn sqlite_insert(conn: &Connection, record: &KeyRecord) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, hash, name, tenant, routes, rpm, tpm, budget_period, budget_usd, admin, created_at_ms, expires_at_ms, rotated_from) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            record.id,
            record.hash,
            record.name,
            record.tenant,
            record.routes.as_ref().map(|r| r.join(",")),
            record.rpm.map(|v| v as i64),
            record.tpm.map(|v| v as i64),
            record.budget.map(|b| b.period.as_str()),
            record.budget.map(|b| b.usd),
            record.admin,
            record.created_at_ms,
            record.expires_at_ms,
            record.rotated_from,
        ],
    )?;
    Ok(())
}

fn sqlite_all(conn: &Connection) -> anyhow::Result<Vec<KeyRecord>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_ms, id"
    ))?;
    let rows = st.query_map([], |r| {
        Ok(KeyRecord {
            id: r.get(0)?,
            hash: r.get(1)?,
            name: r.get(2)?,
            tenant: r.get(3)?,
            routes: stored_routes(r.get(4)?),
            rpm: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            tpm: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            budget: stored_budget(r.get::<_, Option<String>>(7)?.as_deref(), r.get(8)?),
            admin: r.get(9)?,
            created_at_ms: r.get(10)?,
            expires_at_ms: r.get(11)?,
            revoked_at_ms: r.get(12)?,
            rotated_from: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn sqlite_spent_since(conn: &Connection, who: Spender<'_>, since_ms: i64) -> anyhow::Result<f64> {
    let (column, name) = who.column();
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = ?1")?
        .exists([column])?;
    if !has_column {
        return Ok(0.0);
    }
    Ok(conn
        .query_row(
            &format!(
                "SELECT SUM(cost_usd) FROM requests WHERE {column} = ?1 AND started_at_ms >= ?2"
            ),
            params![name, since_ms],
            |r| r.get::<_, Option<f64>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or(0.0))
}

/// Brings the `keys` tables in PostgreSQL up to date (`trestle migrate`).
pub fn migrate(pool: &crate::db::PgPool) -> anyhow::Result<i32> {
    pool.migrate("keys", pg::MIGRATIONS)
}

/// `api_keys` on PostgreSQL: the SQLite table's columns, in PostgreSQL's types.
mod pg {
    use postgres::GenericClient;
    use postgres::error::SqlState;

    use super::{KEY_COLUMNS, KeyRecord, Spender, stored_budget, stored_routes};

    /// Each step brings the table from the version before it; a released step is never
    /// changed, a later one is added.
    pub(super) const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1)];

    const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    routes TEXT,
    rpm BIGINT,
    tpm BIGINT,
    budget_period TEXT,
    budget_usd DOUBLE PRECISION,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT,
    rotated_from TEXT
);
";

    pub(super) fn insert(c: &mut impl GenericClient, record: &KeyRecord) -> anyhow::Result<()> {
        c.execute(
            "INSERT INTO api_keys (id, hash, name, tenant, routes, rpm, tpm, budget_period, budget_usd, admin, created_at_ms, expires_at_ms, rotated_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &record.id,
                &record.hash,
                &record.name,
                &record.tenant,
                &record.routes.as_ref().map(|r| r.join(",")),
                &record.rpm.map(|v| v as i64),
                &record.tpm.map(|v| v as i64),
                &record.budget.map(|b| b.period.as_str()),
                &record.budget.map(|b| b.usd),
                &record.admin,
                &record.created_at_ms,
                &record.expires_at_ms,
                &record.rotated_from,
            ],
        )?;
        Ok(())
    }

    pub(super) fn all(c: &mut postgres::Client) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = c.query(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_ms, id"),
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(KeyRecord {
                    id: r.try_get(0)?,
                    hash: r.try_get(1)?,
                    name: r.try_get(2)?,
                    tenant: r.try_get(3)?,
                    routes: stored_routes(r.try_get(4)?),
                    rpm: r.try_get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    tpm: r.try_get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    budget: stored_budget(r.try_get(7)?, r.try_get(8)?),
                    admin: r.try_get(9)?,
                    created_at_ms: r.try_get(10)?,
                    expires_at_ms: r.try_get(11)?,
                    revoked_at_ms: r.try_get(12)?,
                    rotated_from: r.try_get(13)?,
                })
            })
            .collect()
    }

    /// Revokes `id` if no one did meanwhile (another gateway's operator, say).
    pub(super) fn revoke(c: &mut impl GenericClient, id: &str, now_ms: i64) -> anyhow::Result<()> {
        let n = c.execute(
            "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
            &[&id, &now_ms],
        )?;
        anyhow::ensure!(
            n == 1,
            "key {id} was revoked meanwhile: see `trestle keys list`"
        );
        Ok(())
    }

    /// The new key and the old one's revocation, together or not at all.
    pub(super) fn rotate(
        c: &mut postgres::Client,
        record: &KeyRecord,
        old_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let mut tx = c.transaction()?;
        insert(&mut tx, record)?;
        revoke(&mut tx, old_id, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn spent_since(
        c: &mut postgres::Client,
        who: Spender<'_>,
        since_ms: i64,
    ) -> anyhow::Result<f64> {
        let (column, name) = who.column();
        let row = c.query_one(
            &format!(
                "SELECT SUM(cost_usd) FROM requests WHERE {column} = $1 AND started_at_ms >= $2"
            ),
            &[&name, &since_ms],
        );
        match row {
            Ok(row) => Ok(row.try_get::<_, Option<f64>>(0)?.unwrap_or(0.0)),
            // No trace was stored yet: nothing was spent.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0.0),
            Err(e) => Err(e.into()),
        }
    }
}
