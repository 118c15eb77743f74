//! Limits counted in this process ([`Usage`]): the whole limits with `[state] kind =
//! "memory"`, a share of them (divided by `[state] instances`) while Redis is unreachable.

use crate::keys::{KeyRecord, Usage};

use super::{Decision, Limiter, Refusal, Settled, Status};

pub struct Memory {
    /// The limits are divided by this (1: the whole limits).
    share: u32,
    since_ms: i64,
}

impl Memory {
    pub fn new(share: u32) -> Self {
        Memory {
            share: share.max(1),
            since_ms: crate::store::now_ms(),
        }
    }

    /// The decision, made at once.
    pub fn decide(&self, key: &KeyRecord, usage: &Usage) -> Result<(), Refusal> {
        let share = u64::from(self.share);
        if let Some(budget) = key.budget {
            let limit_usd = budget.usd / f64::from(self.share);
            let spent_usd = usage.spent_usd(&budget, crate::store::now_ms());
            if spent_usd >= limit_usd {
                return Err(Refusal::Budget {
                    spent_usd,
                    limit_usd,
                    estimate_usd: 0.0,
                });
            }
        }
        let part = |limit: Option<u64>| limit.map(|l| (l / share).max(1));
        usage.admit(part(key.rpm), part(key.tpm))
    }

    /// The reservation, made at once.
    pub fn hold(&self, key: &KeyRecord, usage: &Usage, estimate_usd: f64) -> Result<(), Refusal> {
        let Some(budget) = key.budget else {
            return Ok(());
        };
        let limit_usd = budget.usd / f64::from(self.share);
        usage
            .reserve(&budget, limit_usd, estimate_usd, crate::store::now_ms())
            .map_err(|spent_usd| Refusal::Budget {
                spent_usd,
                limit_usd,
                estimate_usd,
            })
    }
}

impl Limiter for Memory {
    fn admit<'a>(&'a self, key: &'a KeyRecord, usage: &'a Usage) -> Decision<'a> {
        let decision = self.decide(key, usage);
        Box::pin(async move { decision })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a KeyRecord,
        usage: &'a Usage,
        estimate_usd: f64,
    ) -> Decision<'a> {
        let decision = self.hold(key, usage, estimate_usd);
        Box::pin(async move { decision })
    }

    fn settle<'a>(
        &'a self,
        _key: &'a KeyRecord,
        usage: &'a Usage,
        cost_usd: f64,
        reserved_usd: f64,
        tokens: u64,
    ) -> Settled<'a> {
        usage.settle_reserved(cost_usd, reserved_usd, tokens);
        Box::pin(async {})
    }

    fn status(&self) -> Status {
        Status {
            kind: "memory",
            healthy: true,
            since_ms: self.since_ms,
        }
    }
}
