//! Client keys, tenants and budgets (docs/configuration.md, "Keys and tenants").
//!
//! A key is `tk_<id>_<secret>`: the id is public (it is on traces), the whole key is kept
//! only as its SHA-256. Keys live in the store's `api_keys` table, made by `trestle keys`;
//! the gateway holds them in memory ([`Keys`]), re-read every `[auth] refresh_ms`, so a
//! lookup is a hash and a map probe, and a revocation takes effect within the refresh.
//! Each key's usage ([`Usage`]: requests and tokens in the last minute, spend in the budget
//! period) is in memory, started from the store's traces when the key is first seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::limiter::{Limiter, Refusal};
use crate::resilience::window::Window;

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

/// A spending budget: so many USD per UTC day or calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub period: Period,
    pub usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The start of the period `now_ms` is in, and the start of the next, in Unix ms (UTC).
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        let day = now_ms.div_euclid(DAY);
        match self {
            Period::Day => (day * DAY, (day + 1) * DAY),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1) * DAY;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1) * DAY)
            }
        }
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil-from-days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds as RFC 3339 in UTC, to the second: `2026-12-01T00:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Midnight UTC of a `YYYY-MM-DD` date, in Unix milliseconds.
pub fn date_ms(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 2027-02-31 is not a date: it would come back as another day.
    (civil_from_days(days) == (y, m, d)).then_some(days * 86_400_000)
}

/// `day:5` or `month:100` (USD, a plain decimal number).
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    let (period, amount) = text
        .split_once(':')
        .ok_or_else(|| format!("budget `{text}`: write PERIOD:USD, like day:5 or month:250.50"))?;
    let period = match period.trim().to_ascii_lowercase().as_str() {
        "day" | "daily" => Period::Day,
        "month" | "monthly" => Period::Month,
        other => {
            return Err(format!(
                "budget `{text}`: the period `{other}` is day or month"
            ));
        }
    };
    let amount = amount.trim().trim_start_matches('$');
    let valid = !amount.is_empty()
        && amount.chars().all(|c| c.is_ascii_digit() || c == '.')
        && amount.matches('.').count() <= 1
        && amount
            .split('.')
            .nth(1)
            .is_none_or(|cents| cents.len() <= 6);
    let usd: f64 = amount
        .parse()
        .ok()
        .filter(|v: &f64| valid && v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            format!(
                "budget `{text}`: the amount `{amount}` is not a positive number of USD like 5 or 250.50 (no currency sign or thousands separator)"
            )
        })?;
    Ok(Budget { period, usd })
}

/// One key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    #[serde(skip)]
    pub hash: String,
    pub name: String,
    pub tenant: String,
    /// The routes it may call; `None` is all.
    pub routes: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<Budget>,
    pub admin: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub rotated_from: Option<String>,
}

impl KeyRecord {
    pub fn active(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| e > now_ms)
    }

    pub fn allows_route(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == route))
    }
}

/// What `trestle keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub tenant: String,
    pub routes: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<Budget>,
    pub admin: bool,
    pub expires_at_ms: Option<i64>,
}

fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_text(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The key's id, if it has the shape of a key: `tk_` + 12 + `_` + 40 characters of
/// `[a-z0-9]`.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("tk_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    (ok(id, 12) && ok(secret, 40)).then_some(id)
}

/// The key store: `api_keys` in the trace store's database.
pub struct KeyStore {
    conn: Connection,
}

impl KeyStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(KeyStore { conn })
    }

    /// Makes a key; the secret is returned once and kept only hashed.
    pub fn create(&self, new: &NewKey, now_ms: i64) -> anyhow::Result<(String, KeyRecord)> {
        self.insert(new, now_ms, None)
    }

    fn insert(
        &self,
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
            id: id.clone(),
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
        self.conn.execute(
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
        Ok((secret, record))
    }

    pub fn all(&self) -> anyhow::Result<Vec<KeyRecord>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, hash, name, tenant, routes, rpm, tpm, budget_period, budget_usd, admin, created_at_ms, expires_at_ms, revoked_at_ms, rotated_from \
             FROM api_keys ORDER BY created_at_ms, id",
        )?;
        let rows = st.query_map([], |r| {
            let period: Option<String> = r.get(7)?;
            let usd: Option<f64> = r.get(8)?;
            Ok(KeyRecord {
                id: r.get(0)?,
                hash: r.get(1)?,
                name: r.get(2)?,
                tenant: r.get(3)?,
                routes: r
                    .get::<_, Option<String>>(4)?
                    .map(|t| t.split(',').map(str::to_string).collect()),
                rpm: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                tpm: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                budget: match (period.as_deref(), usd) {
                    (Some("day"), Some(usd)) => Some(Budget {
                        period: Period::Day,
                        usd,
                    }),
                    (Some("month"), Some(usd)) => Some(Budget {
                        period: Period::Month,
                        usd,
                    }),
                    _ => None,
                },
                admin: r.get(9)?,
                created_at_ms: r.get(10)?,
                expires_at_ms: r.get(11)?,
                revoked_at_ms: r.get(12)?,
                rotated_from: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        self.conn.execute(
            "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1",
            params![key.id, now_ms],
        )?;
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
        let made = self.insert(&new, now_ms, Some(&old.id))?;
        self.conn.execute(
            "UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1",
            params![old.id, now_ms],
        )?;
        Ok(made)
    }

    /// What each key spent since `since_ms` (from the trace store's requests).
    pub fn spent_since(&self, key_id: &str, since_ms: i64) -> anyhow::Result<f64> {
        if !self.has_key_column()? {
            return Ok(0.0);
        }
        Ok(self
            .conn
            .query_row(
                "SELECT SUM(cost_usd) FROM requests WHERE key_id = ?1 AND started_at_ms >= ?2",
                params![key_id, since_ms],
                |r| r.get::<_, Option<f64>>(0),
            )
            .optional()?
            .flatten()
            .unwrap_or(0.0))
    }

    fn has_key_column(&self) -> rusqlite::Result<bool> {
        self.conn
            .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'key_id'")?
            .exists([])
    }
}

/// A key's use in memory: requests and tokens in the last minute, spend in its period.
#[derive(Debug)]
pub struct Usage {
    minute: Mutex<Window>,
    /// Micro-USD spent in the period that starts at `period_start_ms`.
    spent_micro: AtomicU64,
    period_start_ms: AtomicI64,
}

impl Usage {
    pub fn new(spent_usd: f64, period_start_ms: i64) -> Self {
        Usage {
            minute: Mutex::new(Window::new(
                Duration::from_secs(60),
                12,
                tokio::time::Instant::now(),
            )),
            spent_micro: AtomicU64::new((spent_usd * 1e6).round() as u64),
            period_start_ms: AtomicI64::new(period_start_ms),
        }
    }

    /// Spend in the period `now` falls in (a new period starts at zero).
    pub fn spent_usd(&self, budget: &Budget, now_ms: i64) -> f64 {
        let (start, _) = budget.period.bounds(now_ms);
        if self.period_start_ms.load(Ordering::Relaxed) < start {
            self.period_start_ms.store(start, Ordering::Relaxed);
            self.spent_micro.store(0, Ordering::Relaxed);
        }
        self.spent_micro.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Adds a finished request's cost and tokens.
    pub fn settle(&self, cost_usd: f64, tokens: u64) {
        self.spent_micro
            .fetch_add((cost_usd.max(0.0) * 1e6).round() as u64, Ordering::Relaxed);
        if let Ok(mut w) = self.minute.lock() {
            w.add(tokio::time::Instant::now(), 0, tokens);
        }
    }

    /// Counts a request against the minute if these limits allow it.
    pub(crate) fn admit(&self, rpm: Option<u64>, tpm: Option<u64>) -> Result<(), Refusal> {
        let now = tokio::time::Instant::now();
        let Ok(mut w) = self.minute.lock() else {
            return Ok(());
        };
        let [requests, tokens] = w.sum(now);
        if let Some(limit) = rpm
            && requests >= limit
        {
            return Err(Refusal::Requests { limit });
        }
        if let Some(limit) = tpm
            && tokens >= limit
        {
            return Err(Refusal::Tokens { limit });
        }
        w.add(now, 1, 0);
        Ok(())
    }

    /// Counts a request that was admitted elsewhere (the shared state).
    pub(crate) fn count_request(&self) {
        if let Ok(mut w) = self.minute.lock() {
            w.add(tokio::time::Instant::now(), 1, 0);
        }
    }
}

/// The caller of a request: its key and that key's usage. Set by [`authorize`] on the
/// request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<KeyRecord>,
    pub usage: Arc<Usage>,
}

impl Caller {
    /// The tenant whose data this caller may read; `None` for an admin key (everything).
    pub fn scope(&self) -> Option<&str> {
        (!self.key.admin).then_some(self.key.tenant.as_str())
    }
}

/// The tenant scope of an optional caller.
pub fn scope(caller: Option<&Caller>) -> Option<String> {
    caller.and_then(Caller::scope).map(str::to_string)
}

struct KeySet {
    by_id: HashMap<String, Arc<KeyRecord>>,
    any_active: bool,
}

/// Keys in memory, refreshed from the store.
pub struct Keys {
    db: Option<PathBuf>,
    set: ArcSwap<KeySet>,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    loaded: AtomicBool,
    /// Where limits and budgets are decided (`[state]`).
    limiter: Arc<dyn Limiter>,
}

impl Keys {
    /// Keys with their limits in this process.
    pub fn new(db: Option<PathBuf>) -> Self {
        Keys::with_limiter(db, Arc::new(crate::limiter::memory::Memory::new(1)))
    }

    pub fn with_limiter(db: Option<PathBuf>, limiter: Arc<dyn Limiter>) -> Self {
        let keys = Keys {
            limiter,
            db,
            set: ArcSwap::from_pointee(KeySet {
                by_id: HashMap::new(),
                any_active: false,
            }),
            usage: Mutex::new(HashMap::new()),
            loaded: AtomicBool::new(false),
        };
        if let Err(e) = keys.refresh() {
            tracing::warn!("cannot read the keys: {e:#}");
        }
        keys
    }

    /// Re-reads the keys (blocking: call from a blocking thread).
    pub fn refresh(&self) -> anyhow::Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let store = KeyStore::open(db)?;
        let now = crate::store::now_ms();
        let all = store.all()?;
        let any_active = all.iter().any(|k| k.active(now));
        // Usage for keys seen for the first time starts from what they spent.
        let fresh: Vec<&KeyRecord> = {
            let usage = self
                .usage
                .lock()
                .map_err(|_| anyhow::anyhow!("key usage poisoned"))?;
            all.iter().filter(|k| !usage.contains_key(&k.id)).collect()
        };
        let mut started = Vec::with_capacity(fresh.len());
        for k in fresh {
            let start = k.budget.map_or(now, |b| b.period.bounds(now).0);
            let spent = match k.budget {
                Some(_) => store.spent_since(&k.id, start)?,
                None => 0.0,
            };
            started.push((k.id.clone(), Arc::new(Usage::new(spent, start))));
        }
        if let Ok(mut usage) = self.usage.lock() {
            for (id, u) in started {
                usage.entry(id).or_insert(u);
            }
        }
        self.set.store(Arc::new(KeySet {
            by_id: all
                .into_iter()
                .map(|k| (k.id.clone(), Arc::new(k)))
                .collect(),
            any_active,
        }));
        self.loaded.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether keys are required: the config says so, or any key exists.
    pub fn required(&self, config: &trestle_core::config::AuthConfig) -> bool {
        config
            .required
            .unwrap_or_else(|| self.set.load().any_active)
    }

    /// The caller a key belongs to, or why it is refused.
    pub fn authenticate(&self, key: &str) -> Result<Caller, GatewayError> {
        let Some(id) = key_id(key) else {
            return Err(GatewayError::Unauthorized(
                "malformed API key: Trestle keys look like tk_<12 characters>_<40 characters> (trestle keys create)".into(),
            ));
        };
        let set = self.set.load();
        let record = set
            .by_id
            .get(id)
            .filter(|k| constant_time_eq(k.hash.as_bytes(), sha256_hex(key).as_bytes()))
            .ok_or_else(|| GatewayError::Unauthorized("invalid API key".into()))?;
        let now = crate::store::now_ms();
        if record.revoked_at_ms.is_some() {
            return Err(GatewayError::Unauthorized(format!(
                "API key {} is revoked",
                record.id
            )));
        }
        if record.expires_at_ms.is_some_and(|e| e <= now) {
            return Err(GatewayError::Unauthorized(format!(
                "API key {} has expired",
                record.id
            )));
        }
        let usage = {
            let mut map = self
                .usage
                .lock()
                .map_err(|_| GatewayError::Internal("key usage poisoned".into()))?;
            map.entry(record.id.clone())
                .or_insert_with(|| {
                    let start = record.budget.map_or(now, |b| b.period.bounds(now).0);
                    Arc::new(Usage::new(0.0, start))
                })
                .clone()
        };
        Ok(Caller {
            key: record.clone(),
            usage,
        })
    }

    /// Checks a caller's minute limits and budget before a request is served, and counts
    /// the request.
    pub async fn admit(&self, caller: &Caller) -> Result<(), GatewayError> {
        self.limiter
            .admit(&caller.key, &caller.usage)
            .await
            .map_err(|r| refusal(&caller.key, r))
    }

    /// Adds a finished request's cost and tokens (to the shared state off the request's
    /// task).
    pub fn settle(&self, caller: &Caller, cost_usd: f64, tokens: u64) {
        let limiter = self.limiter.clone();
        let caller = caller.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    limiter
                        .settle(&caller.key, &caller.usage, cost_usd, tokens)
                        .await;
                });
            }
            Err(_) => caller.usage.settle(cost_usd, tokens),
        }
    }

    /// The state backend's health, for `GET /ready`.
    pub fn state(&self) -> crate::limiter::Status {
        self.limiter.status()
    }

    /// Every key with its usage, for `GET /v1/keys`.
    pub fn report(&self) -> serde_json::Value {
        let now = crate::store::now_ms();
        let set = self.set.load();
        let usage = self.usage.lock().map(|u| u.clone()).unwrap_or_default();
        let mut tenants: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
        let keys: Vec<serde_json::Value> = set
            .by_id
            .values()
            .map(|k| {
                let spent = match (k.budget, usage.get(&k.id)) {
                    (Some(b), Some(u)) => Some(u.spent_usd(&b, now)),
                    _ => None,
                };
                let t = tenants.entry(k.tenant.clone()).or_default();
                t.0 += spent.unwrap_or(0.0);
                t.1 += usize::from(k.active(now));
                let mut v = serde_json::to_value(k.as_ref()).unwrap_or_default();
                v["active"] = k.active(now).into();
                v["spent_usd"] = spent.into();
                v
            })
            .collect();
        serde_json::json!({
            "object": "list",
            "data": keys,
            "tenants": tenants.into_iter().map(|(t, (spent, active))| serde_json::json!({"tenant": t, "spent_usd": spent, "active_keys": active})).collect::<Vec<_>>(),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a caller's minute limits and budget in this process (the memory backend's
/// decision, made at once).
pub fn admit(caller: &Caller) -> Result<(), GatewayError> {
    crate::limiter::memory::Memory::new(1)
        .decide(&caller.key, &caller.usage)
        .map_err(|r| refusal(&caller.key, r))
}

/// The error a refusal is answered with.
fn refusal(key: &KeyRecord, refusal: Refusal) -> GatewayError {
    let limit = match refusal {
        Refusal::Budget {
            spent_usd,
            limit_usd,
        } => {
            let now = crate::store::now_ms();
            let period = key.budget.map_or(Period::Day, |b| b.period);
            let (_, next) = period.bounds(now);
            let reset = rfc3339(next);
            return GatewayError::BudgetExceeded {
                message: format!(
                    "API key {} spent ${spent_usd:.4} of its ${limit_usd:.2} {} budget; it resets at {reset}",
                    key.id,
                    match period {
                        Period::Day => "daily",
                        Period::Month => "monthly",
                    }
                ),
                retry_after_s: ((next - now) / 1000).max(1) as u64,
                reset_at: reset,
            };
        }
        Refusal::Requests { limit } => format!("{limit} requests per minute"),
        Refusal::Tokens { limit } => format!("{limit} tokens per minute"),
    };
    GatewayError::RateLimited {
        message: format!("API key {} is over its {limit}; retry shortly", key.id),
        retry_after_s: crate::limiter::RETRY_AFTER_S,
    }
}

/// Re-reads keys every `[auth] refresh_ms` until shutdown.
pub fn spawn_refresh(state: crate::state::SharedState) {
    tokio::spawn(async move {
        loop {
            let every = Duration::from_millis(state.runtime().config.auth.refresh_ms.max(50));
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = state.hard_stop.cancelled() => return,
            }
            let s = state.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.keys.refresh()).await {
                tracing::warn!("cannot re-read the keys: {e:#}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-11-26T23:06:17Z
        let now = 1_795_734_377_000;
        let (d0, d1) = Period::Day.bounds(now);
        assert_eq!(d1 - d0, 86_400_000);
        assert_eq!(rfc3339(d0), "2026-11-26T00:00:00Z");
        assert_eq!(rfc3339(now), "2026-11-26T23:06:17Z");
        let (m0, m1) = Period::Month.bounds(now);
        assert_eq!(rfc3339(m0), "2026-11-01T00:00:00Z");
        assert_eq!(rfc3339(m1), "2026-12-01T00:00:00Z");
        let (_, dec_end) = Period::Month.bounds(m1 + 1);
        assert_eq!(rfc3339(dec_end), "2027-01-01T00:00:00Z");
        assert_eq!(date_ms("2027-01-31"), Some(1_801_353_600_000));
        assert_eq!(date_ms("2027-02-31"), None);
    }

    #[test]
    fn budgets_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            parse_budget("month:250.50"),
            Ok(Budget {
                period: Period::Month,
                usd: 250.5
            })
        );
        assert_eq!(parse_budget("DAY:$5").map(|b| b.usd), Ok(5.0));
        assert!(parse_budget("5").unwrap_err().contains("PERIOD:USD"));
        assert!(parse_budget("week:5").unwrap_err().contains("day or month"));
        assert!(
            parse_budget("day:5,00")
                .unwrap_err()
                .contains("not a positive number")
        );
        assert!(parse_budget("day:1,000").unwrap_err().contains("thousands"));
        assert!(parse_budget("day:-3").is_err());
        assert!(parse_budget("day:0").is_err());
        assert!(parse_budget("day:5€").is_err());
    }

    #[test]
    fn keys_authenticate_by_hash_and_refuse_the_rest() {
        let dir = std::env::temp_dir().join(format!("trestle-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("k.db");
        let store = KeyStore::open(&db).unwrap();
        let now = crate::store::now_ms();
        let (secret, rec) = store
            .create(
                &NewKey {
                    name: "app".into(),
                    tenant: "acme".into(),
                    routes: Some(vec!["chat".into()]),
                    rpm: Some(2),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(key_id(&secret), Some(rec.id.as_str()));
        let keys = Keys::new(Some(db.clone()));
        assert!(keys.required(&Default::default()));
        let caller = keys.authenticate(&secret).unwrap();
        assert_eq!(caller.key.tenant, "acme");
        assert!(caller.key.allows_route("chat") && !caller.key.allows_route("other"));
        // Two requests a minute, then 429.
        admit(&caller).unwrap();
        admit(&caller).unwrap();
        assert_eq!(admit(&caller).unwrap_err().status(), 429);
        // A wrong secret with the right id, a malformed key.
        let forged = format!("tk_{}_{}", rec.id, "a".repeat(40));
        assert_eq!(keys.authenticate(&forged).unwrap_err().status(), 401);
        let bad = keys.authenticate("sk-123").unwrap_err();
        assert!(bad.to_string().contains("malformed"));
        // Revoked: refused once the keys are re-read.
        store.revoke(&rec.id, now).unwrap();
        keys.refresh().unwrap();
        assert!(
            keys.authenticate(&secret)
                .unwrap_err()
                .to_string()
                .contains("revoked")
        );
        assert!(!keys.required(&Default::default()));
        // Rotation: a new secret, the old one revoked.
        let (other, _) = store
            .create(
                &NewKey {
                    name: "b".into(),
                    tenant: "beta".into(),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let (rotated, rec2) = store.rotate("b", now).unwrap();
        keys.refresh().unwrap();
        assert!(keys.authenticate(&other).is_err());
        assert_eq!(keys.authenticate(&rotated).unwrap().key.id, rec2.id);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_spent_budget_refuses_until_the_period_resets() {
        let usage = Arc::new(Usage::new(0.0, 0));
        let caller = Caller {
            key: Arc::new(KeyRecord {
                id: "k".into(),
                hash: String::new(),
                name: "k".into(),
                tenant: "t".into(),
                routes: None,
                rpm: None,
                tpm: None,
                budget: Some(Budget {
                    period: Period::Day,
                    usd: 0.01,
                }),
                admin: false,
                created_at_ms: 0,
                expires_at_ms: None,
                revoked_at_ms: None,
                rotated_from: None,
            }),
            usage: usage.clone(),
        };
        admit(&caller).unwrap();
        usage.settle(0.02, 10);
        let e = admit(&caller).unwrap_err();
        assert_eq!(e.status(), 429);
        assert_eq!(e.body().error.kind, "budget_exceeded");
        assert!(e.to_string().contains("resets at"));
    }
}
