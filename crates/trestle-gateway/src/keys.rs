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

pub mod budgets;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use self::store::{KeyStore, Spender};
use crate::db::Db;
use crate::error::GatewayError;
use crate::limiter::{Limiter, Refusal};
use crate::resilience::window::Window;
pub use trestle_core::spend::{Budget, Period, date_ms, parse_budget, rfc3339};

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
    /// Micro-USD spent in the period that starts at `period_start_ms`, with what running
    /// requests reserved (a settlement's correction can take it below zero for a moment:
    /// read as zero).
    spent_micro: AtomicI64,
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
            spent_micro: AtomicI64::new(micro_usd(spent_usd.max(0.0))),
            period_start_ms: AtomicI64::new(period_start_ms),
        }
    }

    /// Spend in the period `now` falls in (a new period starts at zero).
    pub fn spent_usd(&self, budget: &Budget, now_ms: i64) -> f64 {
        self.roll(budget, now_ms);
        self.spent_micro.load(Ordering::Relaxed).max(0) as f64 / 1e6
    }

    /// Starts a new period at zero when `now` is past the current one.
    fn roll(&self, budget: &Budget, now_ms: i64) {
        let (start, _) = budget.period.bounds(now_ms);
        if self.period_start_ms.load(Ordering::Relaxed) < start {
            self.period_start_ms.store(start, Ordering::Relaxed);
            self.spent_micro.store(0, Ordering::Relaxed);
        }
    }

    /// Adds a finished request's cost and tokens.
    pub fn settle(&self, cost_usd: f64, tokens: u64) {
        self.settle_reserved(cost_usd, 0.0, tokens);
    }

    /// Adds a finished request's cost less what was reserved for it before the call, and
    /// its tokens.
    pub fn settle_reserved(&self, cost_usd: f64, reserved_usd: f64, tokens: u64) {
        let delta = micro_usd(cost_usd.max(0.0)) - micro_usd(reserved_usd.max(0.0));
        self.spent_micro.fetch_add(delta, Ordering::Relaxed);
        if tokens > 0
            && let Ok(mut w) = self.minute.lock()
        {
            w.add(tokio::time::Instant::now(), 0, tokens);
        }
    }

    /// Reserves a request's estimated cost when the period's spend and it stay within
    /// `limit_usd`; otherwise returns what is spent.
    pub(crate) fn reserve(
        &self,
        budget: &Budget,
        limit_usd: f64,
        estimate_usd: f64,
        now_ms: i64,
    ) -> Result<(), f64> {
        self.roll(budget, now_ms);
        let (limit, estimate) = (micro_usd(limit_usd), micro_usd(estimate_usd.max(0.0)));
        self.spent_micro
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |spent| {
                let spent_now = spent.max(0);
                (spent_now < limit && spent_now + estimate <= limit).then_some(spent + estimate)
            })
            .map(drop)
            .map_err(|spent| spent.max(0) as f64 / 1e6)
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
    /// Tenant and route budgets, and soft alerts.
    pub budgets: budgets::Budgets,
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
            budgets: budgets::Budgets::new(limiter.clone()),
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
                Some(_) => store.spent_since(Spender::Key(&k.id), start)?,
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

    /// Starts tenant and route budgets' spend from the stored traces ([`budgets::Budgets::seed`];
    /// blocking: call from a blocking thread).
    pub fn seed_budgets(&self, config: &trestle_core::config::Config) -> anyhow::Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        if !config.has_budgets() {
            return Ok(());
        }
        self.budgets.seed(config, &self.store(db)?)
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

    /// Reserves a request's estimated cost (`estimate_usd`) on the caller's key, its tenant
    /// and the route, where each has a budget: refused when the period's spend and the
    /// estimate would pass one (what was reserved on the others is given back). Returns
    /// what was reserved, to settle with the real cost.
    pub async fn reserve(
        &self,
        config: &trestle_core::config::Config,
        caller: Option<&Caller>,
        route: &str,
        estimate_usd: f64,
    ) -> Result<f64, GatewayError> {
        let keyed = caller.filter(|c| c.key.budget.is_some() && estimate_usd > 0.0);
        if let Some(c) = keyed {
            self.limiter
                .reserve(&c.key, &c.usage, estimate_usd)
                .await
                .map_err(|r| refusal(&c.key, r))?;
        }
        let tenant = caller.map(|c| c.key.tenant.as_str());
        match self
            .budgets
            .reserve(config, tenant, route, estimate_usd)
            .await
        {
            Ok(()) => Ok(estimate_usd),
            Err(e) => {
                if let Some(c) = keyed {
                    self.limiter
                        .settle(&c.key, &c.usage, 0.0, estimate_usd, 0)
                        .await;
                }
                Err(e)
            }
        }
    }

    /// Settles a finished request: its cost and tokens on the caller's key, its cost on the
    /// key's tenant and on the route (each less the `reserved_usd` that
    /// [`Keys::reserve`] added before the call), and the soft alerts that crosses. Awaited
    /// on a task of its own, off the request path.
    pub async fn settle_request(
        &self,
        config: &trestle_core::config::Config,
        caller: Option<&Caller>,
        route: Option<&str>,
        cost_usd: f64,
        reserved_usd: f64,
        tokens: u64,
    ) {
        if let Some(c) = caller {
            let reserved = if c.key.budget.is_some() {
                reserved_usd
            } else {
                0.0
            };
            self.limiter
                .settle(&c.key, &c.usage, cost_usd, reserved, tokens)
                .await;
        }
        if cost_usd > 0.0 || reserved_usd > 0.0 {
            self.budgets
                .settle(config, caller, route, cost_usd, reserved_usd)
                .await;
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

/// USD as integer micro-USD, the unit spend is counted in.
pub(crate) fn micro_usd(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
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
            estimate_usd,
        } => {
            let period = key.budget.map_or(Period::Day, |b| b.period);
            return budgets::exceeded(
                budgets::Scope::Key,
                &key.id,
                period,
                budgets::Spend {
                    spent_usd,
                    limit_usd,
                    estimate_usd,
                },
            );
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
            let refreshed = tokio::task::spawn_blocking(move || {
                s.keys.refresh()?;
                s.keys.seed_budgets(&s.runtime().config)
            });
            if let Ok(Err(e)) = refreshed.await {
                tracing::warn!("cannot re-read the keys: {e:#}");
            }
        }
    });
}

#[cfg(test)]
mod tests;
