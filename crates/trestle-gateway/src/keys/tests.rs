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

// The same behaviour on both backends: each test below runs once on a SQLite file and once
// on a fresh PostgreSQL database (`NAME::sqlite`, `NAME::postgres`).

use crate::db::PgPool;
use crate::store::{PostgresStore, SqliteStore, TraceStore};

use crate::db::testing::{on_both_backends, postgres};

on_both_backends!(
    keys_authenticate_by_hash_and_refuse_the_rest,
    keys_are_created_listed_revoked_and_rotated,
    spend_is_summed_from_the_stored_traces_of_a_key,
    budgets_start_from_the_stored_spend_of_the_period,
);

/// Traces written by the trace store of the same place, as a gateway would.
fn store_traces(db: &Db, traces: &[crate::store::Trace]) {
    match db {
        Db::Sqlite(path) => SqliteStore::open(path)
            .unwrap()
            .write_batch(traces)
            .unwrap(),
        Db::Postgres(pool) => PostgresStore::on(pool.clone())
            .unwrap()
            .write_batch(traces)
            .unwrap(),
    }
}

/// A gateway starts its tenant and route budgets from this period's stored spend.
fn budgets_start_from_the_stored_spend_of_the_period(db: Db) {
    let cfg: trestle_core::config::Config = toml::from_str(
        "[routes.chat]\ntargets = [\"local/echo\"]\nbudget_usd = \"month:2\"\n[tenants.acme]\nbudget_usd = \"day:1\"\n",
    )
    .unwrap();
    let now = crate::store::now_ms();
    let trace = |id: &str, at: i64, cost: f64| {
        let mut t = crate::store::sample_trace(id, "s", "c");
        t.route = "chat".into();
        t.tenant = Some("acme".into());
        t.started_at_ms = at;
        t.cost_usd = cost;
        t
    };
    let last_month = Period::Month.bounds(now).0 - 1;
    store_traces(&db, &[trace("b1", now, 1.5), trace("b2", last_month, 9.0)]);
    let keys = Keys::new(Some(db));
    keys.seed_budgets(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The tenant spent 1.5 of 1 today, the route 1.5 of 2 this month.
    let e = rt
        .block_on(keys.budgets.reserve(&cfg, Some("acme"), "other", 0.0))
        .unwrap_err();
    let message = e.body().error.message;
    assert!(message.contains("tenant acme spent $1.5000"), "{message}");
    let e = rt
        .block_on(keys.budgets.reserve(&cfg, None, "chat", 0.6))
        .unwrap_err();
    let message = e.body().error.message;
    assert!(message.contains("route chat has $0.5000 left"), "{message}");
    rt.block_on(keys.budgets.reserve(&cfg, None, "chat", 0.4))
        .unwrap();
}

fn new_key(name: &str, tenant: &str) -> NewKey {
    NewKey {
        name: name.into(),
        tenant: tenant.into(),
        ..Default::default()
    }
}

fn keys_are_created_listed_revoked_and_rotated(db: Db) {
    let store = KeyStore::on(&db).unwrap();
    assert!(store.all().unwrap().is_empty());
    let full = NewKey {
        name: "app".into(),
        tenant: "acme".into(),
        routes: Some(vec!["chat".into(), "summarize".into()]),
        rpm: Some(60),
        tpm: Some(u64::MAX / 2),
        budget: Some(parse_budget("month:250.5").unwrap()),
        admin: true,
        expires_at_ms: Some(2_000_000_000_000),
    };
    let (secret, made) = store.create(&full, 1_000).unwrap();
    let (_, plain) = store.create(&new_key("plain", "beta"), 2_000).unwrap();
    // Every field reads back as written, oldest first; the hash is of the secret.
    let all = store.all().unwrap();
    assert_eq!(all, vec![made.clone(), plain.clone()]);
    assert_eq!(all[0].hash, sha256_hex(&secret));
    assert_eq!(all[0].routes.as_deref().unwrap(), ["chat", "summarize"]);
    assert_eq!(all[0].budget.unwrap().period, Period::Month);
    assert_eq!(all[1].routes, None);
    assert_eq!(all[1].budget, None);
    assert!(!all[1].admin);
    // Bad input says what to give.
    let e = store.create(&new_key(" ", "t"), 0).unwrap_err();
    assert!(e.to_string().contains("--name"), "{e}");
    let e = store.revoke("nobody", 0).unwrap_err();
    assert!(e.to_string().contains("trestle keys list"), "{e}");
    // Two active keys of one name: the id is needed.
    store.create(&new_key("plain", "beta"), 3_000).unwrap();
    let e = store.revoke("plain", 0).unwrap_err();
    assert!(e.to_string().contains("give the id"), "{e}");
    // Revoking by id, then again.
    let revoked = store.revoke(&plain.id, 4_000).unwrap();
    assert_eq!(revoked.id, plain.id);
    let e = store.revoke(&plain.id, 5_000).unwrap_err();
    assert!(e.to_string().contains("revoked already"), "{e}");
    // Rotating by name: same name, tenant and limits, the old one revoked at that time.
    let (new_secret, rotated) = store.rotate("app", 6_000).unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.rotated_from.as_deref(), Some(made.id.as_str()));
    let all = store.all().unwrap();
    let old = all.iter().find(|k| k.id == made.id).unwrap();
    assert_eq!(old.revoked_at_ms, Some(6_000));
    let new = all.iter().find(|k| k.id == rotated.id).unwrap();
    assert_eq!(
        (
            &new.tenant,
            &new.routes,
            new.rpm,
            new.tpm,
            new.budget,
            new.admin
        ),
        (
            &made.tenant,
            &made.routes,
            made.rpm,
            made.tpm,
            made.budget,
            made.admin
        )
    );
    assert!(new.active(6_000) && !old.active(6_000));
    let e = store.rotate(&made.id, 7_000).unwrap_err();
    assert!(e.to_string().contains("create a new one"), "{e}");
    // The store opened again (another process) sees the same keys.
    assert_eq!(KeyStore::on(&db).unwrap().all().unwrap(), all);
}

fn spend_is_summed_from_the_stored_traces_of_a_key(db: Db) {
    let store = KeyStore::on(&db).unwrap();
    // No trace stored yet: nothing spent (no `requests` table at all).
    assert_eq!(store.spent_since(Spender::Key("k1"), 0).unwrap(), 0.0);
    let now = crate::store::now_ms();
    let (secret, key) = store
        .create(
            &NewKey {
                budget: Some(parse_budget("day:1").unwrap()),
                ..new_key("budgeted", "acme")
            },
            now,
        )
        .unwrap();
    let (day_start, _) = Period::Day.bounds(now);
    let trace = |id: &str, key_id: &str, at: i64, cost: f64| {
        let mut t = crate::store::sample_trace(id, "s", "c");
        t.key_id = Some(key_id.into());
        t.started_at_ms = at;
        t.cost_usd = cost;
        t
    };
    store_traces(
        &db,
        &[
            trace("t1", &key.id, now, 0.25),
            trace("t2", &key.id, now, 0.5),
            trace("t3", &key.id, day_start - 1, 9.0),
            trace("t4", "someone-else", now, 7.0),
        ],
    );
    assert_eq!(
        store.spent_since(Spender::Key(&key.id), day_start).unwrap(),
        0.75
    );
    assert_eq!(store.spent_since(Spender::Key(&key.id), 0).unwrap(), 9.75);
    assert_eq!(store.spent_since(Spender::Key("nobody"), 0).unwrap(), 0.0);
    // A gateway reading the keys starts the key's usage from what it spent today.
    let keys = Keys::new(Some(db.clone()));
    let caller = keys.authenticate(&secret).unwrap();
    let spent = caller.usage.spent_usd(&key.budget.unwrap(), now);
    assert!((spent - 0.75).abs() < 1e-9, "{spent}");
}

#[test]
fn on_postgres_keys_migrate_once_and_gateways_sharing_the_database_see_the_same_keys() {
    let Some(url) = crate::store::pg_server::database() else {
        return;
    };
    let open = || Db::Postgres(Arc::new(PgPool::open(&url, 1).unwrap()));
    let (a, b) = (open(), open());
    let store = KeyStore::on(&a).unwrap();
    let (secret, key) = store.create(&new_key("app", "acme"), 1).unwrap();
    // The other gateway (its own pool) authenticates the key, and refuses it once revoked.
    let gateway_b = Keys::new(Some(b.clone()));
    assert_eq!(gateway_b.authenticate(&secret).unwrap().key.id, key.id);
    KeyStore::on(&b).unwrap().revoke("app", 2).unwrap();
    gateway_b.refresh().unwrap();
    assert!(gateway_b.authenticate(&secret).is_err());
    let Db::Postgres(pool) = &a else {
        unreachable!()
    };
    let versions: Vec<i32> = pool
        .with(|c| {
            Ok(c.query(
                "SELECT version FROM schema_version WHERE component = 'keys'",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
        .unwrap();
    assert_eq!(versions, [1]);
}

/// `build_state` runs inside the async runtime (`trestle serve`): the PostgreSQL client
/// must not run on the runtime's threads, so the first read goes to a thread of its own.
#[test]
fn on_postgres_keys_are_first_read_from_inside_the_async_runtime() {
    let Some(db) = postgres() else {
        return;
    };
    let (secret, _) = KeyStore::on(&db)
        .unwrap()
        .create(&new_key("app", "acme"), 1)
        .unwrap();
    for rt in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        let keys = rt.block_on(async { Keys::new(Some(db.clone())) });
        assert!(keys.authenticate(&secret).is_ok());
        // And refreshes, as `spawn_refresh` runs them.
        let keys = Arc::new(keys);
        let k = keys.clone();
        rt.block_on(async move { tokio::task::spawn_blocking(move || k.refresh()).await })
            .unwrap()
            .unwrap();
    }
}

fn keys_authenticate_by_hash_and_refuse_the_rest(db: Db) {
    let store = KeyStore::on(&db).unwrap();
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
}
