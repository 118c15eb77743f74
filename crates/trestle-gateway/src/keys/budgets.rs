//! Tenant and route budgets, and the soft alerts of every budget (docs/configuration.md,
//! "Budgets").
//!
//! `[tenants.NAME] budget_usd` is the spend of all the tenant's keys together, and
//! `[routes.NAME] budget_usd` the spend of every request on the route, keyed or not. Each is
//! decided by the same [`Limiter`] as a key's budget, as a budget-only record of its own
//! (`tenant:NAME`, `route:NAME`): in this process, or shared on Redis under that name. Before
//! the call a request reserves its estimated cost (its input and output cap at the chain's
//! dearest price, `pipeline::estimate_cost`) and is refused when that would pass a budget;
//! when it ends the real cost replaces the reservation. A gateway starts each period's spend
//! from the stored traces ([`Budgets::seed`]).
//!
//! With `alert_at` (and `[auth] budget_alert_at` for keys), the first settlement that takes
//! a period's spend past that share of the budget POSTs one alert to `[alerts] webhook`, off
//! the request path. The share is judged on the spend this instance knows (the whole spend
//! with memory state).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use trestle_core::config::Config;

use super::{Budget, Caller, KeyRecord, Period, Usage, rfc3339};
use crate::error::GatewayError;
use crate::limiter::{Limiter, Refusal};

/// What a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Key,
    Tenant,
    Route,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Tenant => "tenant",
            Scope::Route => "route",
        }
    }

    /// How a refusal names its subject: "tenant acme".
    fn subject(self, name: &str) -> String {
        match self {
            Scope::Key => format!("API key {name}"),
            Scope::Tenant => format!("tenant {name}"),
            Scope::Route => format!("route {name}"),
        }
    }
}

/// One budget that applies to a request.
#[derive(Debug, Clone)]
struct Applies {
    scope: Scope,
    name: String,
    budget: Budget,
    alert_at: Option<f64>,
}

impl Applies {
    /// The record the limiter decides on: a budget and no minute limits.
    fn record(&self) -> KeyRecord {
        KeyRecord {
            id: format!("{}:{}", self.scope.as_str(), self.name),
            hash: String::new(),
            name: self.name.clone(),
            tenant: self.name.clone(),
            routes: None,
            rpm: None,
            tpm: None,
            budget: Some(self.budget),
            admin: false,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            rotated_from: None,
        }
    }
}

/// The tenant's and the route's budgets, as the config sets them.
fn applying(config: &Config, tenant: Option<&str>, route: Option<&str>) -> Vec<Applies> {
    let tenant = tenant.and_then(|t| {
        let c = config.tenants.get(t)?;
        Some((Scope::Tenant, t, c.budget_usd.as_deref()?, c.alert_at))
    });
    let route = route.and_then(|r| {
        let c = config.routes.get(r)?;
        Some((Scope::Route, r, c.budget_usd.as_deref()?, c.alert_at))
    });
    [tenant, route]
        .into_iter()
        .flatten()
        // The config was checked when loaded: a budget that does not parse is not set.
        .filter_map(|(scope, name, text, alert_at)| {
            Some(Applies {
                scope,
                name: name.to_string(),
                budget: super::parse_budget(text).ok()?,
                alert_at,
            })
        })
        .collect()
}

/// A refused budget's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spend {
    pub spent_usd: f64,
    pub limit_usd: f64,
    /// The request's estimated cost (zero when not estimated).
    pub estimate_usd: f64,
}

/// The 429 of a spent budget: what spent how much of what, what the request would have
/// cost, and when it resets.
pub(crate) fn exceeded(scope: Scope, name: &str, period: Period, spend: Spend) -> GatewayError {
    let now = crate::store::now_ms();
    let (_, next) = period.bounds(now);
    let reset = rfc3339(next);
    let Spend {
        spent_usd,
        limit_usd,
        estimate_usd,
    } = spend;
    let which = match period {
        Period::Day => "daily",
        Period::Month => "monthly",
    };
    let subject = scope.subject(name);
    let message = if spent_usd < limit_usd && estimate_usd > 0.0 {
        format!(
            "{subject} has ${:.4} left of its ${limit_usd:.2} {which} budget and this request may cost up to ${estimate_usd:.4} (its input and max_tokens at the route's dearest price): lower max_tokens, or wait until it resets at {reset}",
            limit_usd - spent_usd
        )
    } else {
        format!(
            "{subject} spent ${spent_usd:.4} of its ${limit_usd:.2} {which} budget; it resets at {reset}"
        )
    };
    GatewayError::BudgetExceeded {
        message,
        retry_after_s: ((next - now) / 1000).max(1) as u64,
        reset_at: reset,
    }
}

/// The webhook's body of a soft alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: &'static str,
    pub scope: Scope,
    pub name: String,
    pub period: Period,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub share: f64,
    pub reset_at: String,
}

/// Tenant and route spend, and which soft alerts went out this period.
pub struct Budgets {
    limiter: Arc<dyn Limiter>,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    /// Per `scope:name`, the start of the period whose alert went out.
    alerted: Mutex<HashMap<String, i64>>,
    /// Built with the first alert.
    client: std::sync::OnceLock<reqwest::Client>,
}

impl Budgets {
    pub fn new(limiter: Arc<dyn Limiter>) -> Self {
        Budgets {
            limiter,
            usage: Mutex::new(HashMap::new()),
            alerted: Mutex::new(HashMap::new()),
            client: std::sync::OnceLock::new(),
        }
    }

    fn usage(&self, id: &str, budget: &Budget) -> Arc<Usage> {
        let Ok(mut map) = self.usage.lock() else {
            return Arc::new(Usage::new(0.0, 0));
        };
        map.entry(id.to_string())
            .or_insert_with(|| {
                let start = budget.period.bounds(crate::store::now_ms()).0;
                Arc::new(Usage::new(0.0, start))
            })
            .clone()
    }

    /// Reserves a request's estimated cost on its tenant's and route's budgets: refused
    /// (and what was reserved given back) when the period's spend has reached a budget, or
    /// the estimate would pass it.
    pub async fn reserve(
        &self,
        config: &Config,
        tenant: Option<&str>,
        route: &str,
        estimate_usd: f64,
    ) -> Result<(), GatewayError> {
        let applying = applying(config, tenant, Some(route));
        for (i, a) in applying.iter().enumerate() {
            let record = a.record();
            let usage = self.usage(&record.id, &a.budget);
            let Err(Refusal::Budget {
                spent_usd,
                limit_usd,
                estimate_usd,
            }) = self.limiter.reserve(&record, &usage, estimate_usd).await
            else {
                continue;
            };
            for given_back in &applying[..i] {
                let record = given_back.record();
                let usage = self.usage(&record.id, &given_back.budget);
                self.limiter
                    .settle(&record, &usage, 0.0, estimate_usd, 0)
                    .await;
            }
            metrics::counter!("trestle_budget_refusals_total", "scope" => a.scope.as_str())
                .increment(1);
            return Err(exceeded(
                a.scope,
                &a.name,
                a.budget.period,
                Spend {
                    spent_usd,
                    limit_usd,
                    estimate_usd,
                },
            ));
        }
        Ok(())
    }

    /// Adds a finished request's real cost to its tenant's and route's spend, in place of
    /// the `reserved_usd` its reservation added, and sends the soft alerts it crosses (the
    /// key's too, when `caller`'s key has a budget).
    pub async fn settle(
        &self,
        config: &Config,
        caller: Option<&Caller>,
        route: Option<&str>,
        cost_usd: f64,
        reserved_usd: f64,
    ) {
        let tenant = caller.map(|c| c.key.tenant.as_str());
        for a in applying(config, tenant, route) {
            let record = a.record();
            let usage = self.usage(&record.id, &a.budget);
            self.limiter
                .settle(&record, &usage, cost_usd, reserved_usd, 0)
                .await;
            if let Some(share) = a.alert_at {
                self.alert(config, &a, share, &usage).await;
            }
        }
        if let (Some(c), Some(share)) = (caller, config.auth.budget_alert_at)
            && let Some(budget) = c.key.budget
        {
            let a = Applies {
                scope: Scope::Key,
                name: c.key.id.clone(),
                budget,
                alert_at: Some(share),
            };
            self.alert(config, &a, share, &c.usage).await;
        }
    }

    /// Starts the spend of each tenant and route budget in `config` not seen yet from what
    /// the stored traces say it spent this period (blocking: call from a blocking thread).
    /// A gateway does this before it serves, and with each refresh of the keys (a budget
    /// a reload adds is read within `[auth] refresh_ms`, unless a request reaches it first).
    pub fn seed(&self, config: &Config, store: &super::KeyStore) -> anyhow::Result<()> {
        let now = crate::store::now_ms();
        let tenants = config
            .tenants
            .iter()
            .filter_map(|(name, t)| Some((Scope::Tenant, name, t.budget_usd.as_deref()?)));
        let routes = config
            .routes
            .iter()
            .filter_map(|(name, r)| Some((Scope::Route, name, r.budget_usd.as_deref()?)));
        for (scope, name, text) in tenants.chain(routes) {
            let Ok(budget) = super::parse_budget(text) else {
                continue;
            };
            let id = format!("{}:{name}", scope.as_str());
            let start = budget.period.bounds(now).0;
            let known = self
                .usage
                .lock()
                .map_err(|_| anyhow::anyhow!("budget usage poisoned"))?
                .contains_key(&id);
            if known {
                continue;
            }
            let who = match scope {
                Scope::Tenant => super::Spender::Tenant(name),
                _ => super::Spender::Route(name),
            };
            let spent = store.spent_since(who, start)?;
            if let Ok(mut usage) = self.usage.lock() {
                usage.insert(id, Arc::new(Usage::new(spent, start)));
            }
        }
        Ok(())
    }

    /// The alert a settlement crosses, once per period: `None` below the share or when it
    /// already went out.
    fn crossed(&self, a: &Applies, share: f64, usage: &Usage, now_ms: i64) -> Option<Alert> {
        let spent_usd = usage.spent_usd(&a.budget, now_ms);
        if spent_usd < share * a.budget.usd {
            return None;
        }
        let (start, end) = a.budget.period.bounds(now_ms);
        let id = format!("{}:{}", a.scope.as_str(), a.name);
        let mut alerted = self.alerted.lock().ok()?;
        if alerted.get(&id) == Some(&start) {
            return None;
        }
        alerted.insert(id, start);
        Some(Alert {
            kind: "budget",
            scope: a.scope,
            name: a.name.clone(),
            period: a.budget.period,
            spent_usd,
            limit_usd: a.budget.usd,
            share,
            reset_at: rfc3339(end),
        })
    }

    async fn alert(&self, config: &Config, a: &Applies, share: f64, usage: &Usage) {
        let Some(alert) = self.crossed(a, share, usage, crate::store::now_ms()) else {
            return;
        };
        tracing::warn!(
            scope = alert.scope.as_str(),
            name = %alert.name,
            period = alert.period.as_str(),
            spent_usd = alert.spent_usd,
            limit_usd = alert.limit_usd,
            share,
            "budget alert: spend passed {:.0}% of the budget",
            share * 100.0
        );
        let Some(url) = &config.alerts.webhook else {
            return;
        };
        let timeout = Duration::from_millis(config.alerts.timeout_ms.clamp(100, 5_000));
        let client = self.client.get_or_init(|| {
            crate::providers::http::install_tls();
            reqwest::Client::new()
        });
        let sent = client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_string(&alert).unwrap_or_default())
            .send()
            .await;
        let delivered = match sent {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(
                    url,
                    status = r.status().as_u16(),
                    "budget alert webhook refused the alert"
                );
                false
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "budget alert webhook unreachable");
                false
            }
        };
        metrics::counter!(
            "trestle_budget_alerts_total",
            "scope" => alert.scope.as_str(),
            "delivered" => if delivered { "true" } else { "false" }
        )
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::memory::Memory;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    fn a_key() -> KeyRecord {
        Applies {
            scope: Scope::Key,
            name: "k1".into(),
            budget: Budget {
                period: Period::Day,
                usd: 100.0,
            },
            alert_at: None,
        }
        .record()
    }

    #[tokio::test]
    async fn tenant_and_route_budgets_refuse_once_spent() {
        let cfg = config(
            r#"
[tenants.acme]
budget_usd = "day:1"
[routes.chat]
targets = ["local/echo"]
budget_usd = "month:3"
"#,
        );
        let b = Budgets::new(Arc::new(Memory::new(1)));
        b.reserve(&cfg, Some("acme"), "chat", 0.0).await.unwrap();
        b.settle(&cfg, None, Some("chat"), 0.6, 0.0).await;
        // A tenant's spend comes from its keys only.
        b.reserve(&cfg, Some("acme"), "chat", 0.0).await.unwrap();
        let mut record = a_key();
        record.tenant = "acme".into();
        let key = Caller {
            key: Arc::new(record),
            usage: Arc::new(Usage::new(0.0, 0)),
        };
        b.settle(&cfg, Some(&key), Some("chat"), 1.0, 0.0).await;
        let e = b
            .reserve(&cfg, Some("acme"), "chat", 0.0)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 429);
        assert_eq!(e.code(), "budget_exceeded");
        let message = e.body().error.message;
        assert!(message.contains("tenant acme"), "{message}");
        assert!(message.contains("daily"), "{message}");
        // Another tenant is not touched; the route has spent 1.6 of 3.
        b.reserve(&cfg, Some("other"), "chat", 0.0).await.unwrap();
        b.reserve(&cfg, None, "chat", 0.0).await.unwrap();
        b.settle(&cfg, None, Some("chat"), 2.0, 0.0).await;
        let e = b.reserve(&cfg, None, "chat", 0.0).await.unwrap_err();
        assert!(e.body().error.message.contains("route chat"));
        // A route without a budget, and a direct target, are free.
        b.reserve(&cfg, None, "local/echo", 0.0).await.unwrap();
    }

    #[tokio::test]
    async fn on_redis_a_budget_spent_on_one_instance_is_spent_on_the_other() {
        use crate::limiter::{redis::RedisLimiter, testing};
        let Some(server) = testing::RedisServer::start() else {
            return;
        };
        let state = testing::state(&server.url(), 2);
        let a = Budgets::new(RedisLimiter::on(testing::link(&state).await));
        let b = Budgets::new(RedisLimiter::on(testing::link(&state).await));
        let cfg = config(
            "[tenants.acme]\nbudget_usd = \"day:1\"\n[routes.chat]\ntargets = [\"local/echo\"]\nbudget_usd = \"day:2\"\n",
        );
        a.reserve(&cfg, None, "chat", 0.0).await.unwrap();
        a.settle(&cfg, None, Some("chat"), 2.5, 0.0).await;
        let e = b.reserve(&cfg, None, "chat", 0.0).await.unwrap_err();
        assert!(e.body().error.message.contains("route chat"));
        // The tenant's spend is its own, also shared.
        let mut record = a_key();
        record.tenant = "acme".into();
        let caller = Caller {
            key: Arc::new(record),
            usage: Arc::new(Usage::new(0.0, 0)),
        };
        a.settle(&cfg, Some(&caller), None, 1.0, 0.0).await;
        let e = b
            .reserve(&cfg, Some("acme"), "other", 0.0)
            .await
            .unwrap_err();
        assert!(e.body().error.message.contains("tenant acme"));
    }

    #[tokio::test]
    async fn an_estimate_that_would_pass_a_budget_is_refused_and_says_what_to_do() {
        let cfg = config(
            "[routes.chat]\ntargets = [\"local/echo\"]\nbudget_usd = \"day:1\"\n[tenants.acme]\nbudget_usd = \"day:5\"\n",
        );
        let b = Budgets::new(Arc::new(Memory::new(1)));
        b.reserve(&cfg, Some("acme"), "chat", 0.7).await.unwrap();
        let e = b
            .reserve(&cfg, Some("acme"), "chat", 0.5)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 429);
        let message = e.body().error.message;
        assert!(message.contains("route chat has $0.3000 left"), "{message}");
        assert!(message.contains("may cost up to $0.5000"), "{message}");
        assert!(message.contains("lower max_tokens"), "{message}");
        // The tenant's reservation was given back: 0.7 held there, not 1.2.
        let tenant = b.usage("tenant:acme", &super::super::parse_budget("day:5").unwrap());
        let spent = tenant.spent_usd(
            &super::super::parse_budget("day:5").unwrap(),
            crate::store::now_ms(),
        );
        assert!((spent - 0.7).abs() < 1e-9, "{spent}");
        // The request cost 0.2: 0.2 spent, room for 0.8 more.
        b.settle(&cfg, None, Some("chat"), 0.2, 0.7).await;
        b.reserve(&cfg, None, "chat", 0.8).await.unwrap();
    }

    #[tokio::test]
    async fn an_alert_crosses_once_per_period() {
        let b = Budgets::new(Arc::new(Memory::new(1)));
        let a = Applies {
            scope: Scope::Route,
            name: "chat".into(),
            budget: Budget {
                period: Period::Month,
                usd: 10.0,
            },
            alert_at: Some(0.8),
        };
        let now = crate::store::now_ms();
        let u = Usage::new(0.0, a.budget.period.bounds(now).0);
        u.settle(7.9, 0);
        assert_eq!(b.crossed(&a, 0.8, &u, now), None);
        u.settle(0.2, 0);
        let alert = b.crossed(&a, 0.8, &u, now).unwrap();
        assert_eq!(alert.scope, Scope::Route);
        assert!((alert.spent_usd - 8.1).abs() < 1e-9);
        assert_eq!(alert.reset_at, rfc3339(a.budget.period.bounds(now).1));
        let body = serde_json::to_value(&alert).unwrap();
        assert_eq!(body["kind"], "budget");
        assert_eq!(body["scope"], "route");
        assert_eq!(body["period"], "month");
        u.settle(1.0, 0);
        assert_eq!(b.crossed(&a, 0.8, &u, now), None);
        // The next period alerts again.
        let next = a.budget.period.bounds(now).1 + 1;
        let u2 = Usage::new(9.0, a.budget.period.bounds(next).0);
        assert!(b.crossed(&a, 0.8, &u2, next).is_some());
    }
}
