//! Client keys, tenants and budgets (docs/configuration.md, "Keys and tenants").
//!
//! A key is `tk_<id>_<secret>`: the id is public (it is on traces), the whole key is kept
//! only as its SHA-256. Keys live in the store's `api_keys` table ([`KeyStore`]: the SQLite
//! file, or the PostgreSQL database several gateways share), made by `trestle keys`; the
//! gateway holds them in memory ([`Keys`]), re-read every `[auth] refresh_ms`, so a lookup
//! is a hash and a map probe, and a revocation takes effect within the refresh (on every
//! gateway sharing the database).
//! Each key's usage ([`Usage`]: requests and tokens in the last minute, spend in the budget
//! period) is in memory, started from the store's traces when the key is first seen.

pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::store::KeyStore;
use crate::db::Db;
use crate::error::GatewayError;
use crate::limiter::{Limiter, Refusal};
use crate::resilience::window::Window;

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
    db: Option<Db>,
    /// PostgreSQL's `api_keys` was migrated once: refreshes (every second by default) skip
    /// the migration's lock and round trips.
    migrated: AtomicBool,
    set: ArcSwap<KeySet>,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    loaded: AtomicBool,
    /// Where limits and budgets are decided (`[state]`).
    limiter: Arc<dyn Limiter>,
}

impl Keys {
    /// Keys with their limits in this process.
    pub fn new(db: Option<Db>) -> Self {
        Keys::with_limiter(db, Arc::new(crate::limiter::memory::Memory::new(1)))
    }

    /// Keys read from `db` (none: no keys), with limits and budgets decided by `limiter`.
    /// May be called from inside the async runtime: the first read runs on a thread of its
    /// own when the keys are in PostgreSQL.
    pub fn with_limiter(db: Option<Db>, limiter: Arc<dyn Limiter>) -> Self {
        let keys = Keys {
            limiter,
            db,
            migrated: AtomicBool::new(false),
            set: ArcSwap::from_pointee(KeySet {
                by_id: HashMap::new(),
                any_active: false,
            }),
            usage: Mutex::new(HashMap::new()),
            loaded: AtomicBool::new(false),
        };
        let first = match &keys.db {
            // The PostgreSQL client must not run on an async task's thread.
            Some(Db::Postgres(_)) => std::thread::scope(|s| s.spawn(|| keys.refresh()).join())
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reading the keys panicked"))),
            _ => keys.refresh(),
        };
        if let Err(e) = first {
            tracing::warn!("cannot read the keys: {e:#}");
        }
        keys
    }

    /// Re-reads the keys (blocking: call from a blocking thread).
    pub fn refresh(&self) -> anyhow::Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let store = self.store(db)?;
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

    /// The key store, migrated on the first read from PostgreSQL only.
    fn store(&self, db: &Db) -> anyhow::Result<KeyStore> {
        match db {
            Db::Postgres(pool) if self.migrated.load(Ordering::Relaxed) => {
                Ok(KeyStore::migrated(pool.clone()))
            }
            _ => {
                let store = KeyStore::on(db)?;
                self.migrated.store(true, Ordering::Relaxed);
                Ok(store)
            }
        }
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
mod tests;
