//! A trace filter as a `WHERE` clause over `requests`, once for both stores: the clauses
//! are the same, only a few SQL spellings differ (placeholders, JSON, arrays, booleans).

use super::TraceFilter;
use super::sqlite::time_bound;

/// A bound value.
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The SQL spellings that differ between the stores.
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn placeholder(&self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// `WHERE …` (empty when nothing is filtered) and its arguments in placeholder order.
/// `has_feedback` says whether a `feedback` table exists: without one, a feedback filter
/// matches nothing.
pub(super) fn where_clause(
    dialect: Dialect,
    filter: &TraceFilter,
    now: i64,
    has_feedback: bool,
) -> anyhow::Result<(String, Vec<Arg>)> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let mut arg = |v: Arg| {
        args.push(v);
        dialect.placeholder(args.len())
    };
    for (column, value) in [
        ("trace_id", &filter.trace_id),
        ("conversation_id", &filter.conversation_id),
        ("user_id", &filter.user_id),
        ("route", &filter.route),
        ("outcome", &filter.outcome),
        ("fallback_level", &filter.fallback_level),
        ("experiment", &filter.experiment),
        ("prompt_version", &filter.prompt_version),
        ("tenant", &filter.tenant),
    ] {
        if let Some(v) = given(value) {
            let p = arg(Arg::Text(v.to_string()));
            clauses.push(format!("{column} = {p}"));
        }
    }
    if let Some(since) = given(&filter.since) {
        let p = arg(Arg::Int(time_bound("since", since, now)?));
        clauses.push(format!("started_at_ms >= {p}"));
    }
    if let Some(until) = given(&filter.until) {
        let p = arg(Arg::Int(time_bound("until", until, now)?));
        clauses.push(format!("started_at_ms < {p}"));
    }
    if let Some(g) = given(&filter.guardrail) {
        let (each, outcome, name) = match dialect {
            Dialect::Sqlite => (
                "json_each(requests.guardrails) g",
                "json_extract(g.value, '$.outcome')",
                "json_extract(g.value, '$.guardrail')",
            ),
            Dialect::Postgres => (
                "jsonb_array_elements(requests.guardrails) g",
                "g->>'outcome'",
                "g->>'guardrail'",
            ),
        };
        let mut clause = format!("EXISTS (SELECT 1 FROM {each} WHERE {outcome} != 'pass'");
        if g != "any" {
            let p = arg(Arg::Text(g.to_string()));
            clause.push_str(&format!(" AND {name} = {p}"));
        }
        clauses.push(clause + ")");
    }
    if let Some(flag) = given(&filter.flag) {
        if flag == "any" {
            clauses.push("flags IS NOT NULL".into());
        } else {
            match dialect {
                // Comma-separated text.
                Dialect::Sqlite => {
                    let p = arg(Arg::Text(format!("%,{flag},%")));
                    clauses.push(format!("(',' || flags || ',') LIKE {p}"));
                }
                Dialect::Postgres => {
                    let p = arg(Arg::Text(flag.to_string()));
                    clauses.push(format!("{p} = ANY(flags)"));
                }
            }
        }
    }
    if let Some(fb) = given(&filter.feedback) {
        let which = match fb {
            "negative" => " AND f.negative",
            "positive" => " AND NOT f.negative",
            "any" => "",
            other => anyhow::bail!("feedback `{other}`: use negative, positive or any"),
        };
        clauses.push(if has_feedback {
            format!("EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = requests.trace_id{which})")
        } else {
            // No feedback was ever given: nothing matches.
            "1 = 0".into()
        });
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    Ok((sql, args))
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}
