//! `[store]` backends: which database keeps traces, and the checks on its settings that
//! need no connection (the gateway reports an unreachable server when it opens the store).

use serde::Deserialize;

/// `[store] kind`: where traces are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded SQLite file at `[store] path`.
    #[default]
    Sqlite,
    /// A PostgreSQL server at `[store] url`.
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// What is wrong with the backend settings of `[store]`, as (key, message) pairs.
pub fn check(store: &crate::config::StoreConfig) -> Vec<(&'static str, String)> {
    let mut issues = Vec::new();
    if store.pool_size == 0 {
        issues.push(("store.pool_size", "must be at least 1".to_string()));
    }
    match (store.kind, store.url.as_deref()) {
        (StoreKind::Postgres, None) => issues.push((
            "store.url",
            "is required when kind = \"postgres\" (postgres://user@host:port/database)".into(),
        )),
        (StoreKind::Postgres, Some(url)) => {
            if let Err(message) = check_url(url) {
                issues.push(("store.url", message));
            }
        }
        (StoreKind::Sqlite, Some(_)) => issues.push((
            "store.url",
            "is for kind = \"postgres\"; the SQLite store uses `path`".into(),
        )),
        (StoreKind::Sqlite, None) => {}
    }
    issues
}

/// A PostgreSQL connection URL's shape: `postgres://[user[:password]@]host[:port][/database]`.
/// The message never repeats the URL (it may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("must start with postgres:// or postgresql://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err("has no host (postgres://user@host:port/database)".into());
    }
    // An IPv6 literal keeps its colons inside brackets.
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("port `{port}` is not a port number (1-65535)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_for_shape() {
        assert!(check_url("postgres://trestle@127.0.0.1:5432/traces").is_ok());
        assert!(check_url("postgresql://u:p@db/traces?sslmode=disable").is_ok());
        assert!(check_url("postgres://[::1]:5432/x").is_ok());
        assert!(check_url("mysql://db/x").is_err());
        assert!(check_url("postgres:///x").is_err());
        assert!(
            check_url("postgres://db:99999/x")
                .unwrap_err()
                .contains("99999")
        );
    }

    #[test]
    fn a_postgres_store_needs_a_well_formed_url() {
        let env = |_: &str| None;
        let parse = |text: &str| crate::Config::parse(text, &env).map(|l| l.config);
        let err = parse("[store]\nkind = \"postgres\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url") && err.contains("required"),
            "{err}"
        );
        let err = parse("[store]\nkind = \"postgres\"\nurl = \"http://db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url") && err.contains("postgres://"),
            "{err}"
        );
        let err = parse("[store]\npool_size = 0\n").unwrap_err().to_string();
        assert!(err.contains("store.pool_size"), "{err}");
        let c =
            parse("[store]\nkind = \"postgres\"\nurl = \"postgres://t@127.0.0.1:5/x\"\n").unwrap();
        assert_eq!(c.store.kind, StoreKind::Postgres);
        assert_eq!(c.store.pool_size, 4);
        assert_eq!(parse("").unwrap().store.kind, StoreKind::Sqlite);
    }
}
