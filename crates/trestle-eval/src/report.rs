//! What a run reports: the summary (stored with the run, written by `--json`), the table
//! printed at the end, and one self-contained HTML page (`--html`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::run::{CaseResult, clip};
use crate::stats::{ALL, CategoryStats, GateResult, Paired};
use crate::store::{RunInfo, utc};

/// A case whose result differs from the baseline's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub category: String,
    /// `win` (failed before, passes now) or `loss`.
    pub change: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub id: String,
    pub categories: BTreeMap<String, CategoryStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run: RunInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_version: Option<String>,
    /// What the judge's calls cost (the cases' own cost is in `categories`).
    #[serde(default)]
    pub judge_cost_usd: f64,
    pub categories: BTreeMap<String, CategoryStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Win/tie/loss against the baseline per category, with the sign test.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paired: BTreeMap<String, Paired>,
    /// The pairwise judge's win/tie/loss against the baseline's answers (both orders).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pairwise: BTreeMap<String, Paired>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    pub gates: Vec<GateResult>,
    /// Every gate held.
    pub passed: bool,
}

/// The table printed after a run.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let base = s.baseline.as_ref();
    let _ = writeln!(
        out,
        "{:<20} {:>6} {:>6} {:>7} {:>8} {:>12} {:>7} {:>8} {:>10}",
        "category", "cases", "passed", "rate", "vs base", "win/tie/loss", "p", "p90 ms", "cost $"
    );
    let mut rows: Vec<(&String, &CategoryStats)> =
        s.categories.iter().filter(|(c, _)| *c != ALL).collect();
    if let Some(all) = s.categories.get_key_value(ALL) {
        rows.push(all);
    }
    for (cat, c) in rows {
        let delta = base
            .and_then(|b| b.categories.get(cat))
            .map_or("—".to_string(), |b| {
                format!("{:+.1}", (c.pass_rate - b.pass_rate) * 100.0)
            });
        let (wtl, p) = s
            .paired
            .get(cat)
            .map_or(("—".to_string(), "—".to_string()), |p| {
                (
                    format!("{}/{}/{}", p.wins, p.ties, p.losses),
                    format!("{:.3}", p.p_value),
                )
            });
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>6} {:>6.1}% {:>8} {:>12} {:>7} {:>8} {:>10.6}",
            clip(cat, 20),
            c.cases,
            c.passed,
            c.pass_rate * 100.0,
            delta,
            wtl,
            p,
            c.latency_p90_ms,
            c.cost_usd
        );
    }
    if !s.pairwise.is_empty() {
        let _ = writeln!(
            out,
            "\npairwise judge against the baseline's answers (both orders):"
        );
        for (cat, p) in &s.pairwise {
            let _ = writeln!(
                out,
                "  {cat:<20} win/tie/loss {}/{}/{}  p {:.3}",
                p.wins, p.ties, p.losses, p.p_value
            );
        }
    }
    if !s.gates.is_empty() {
        let _ = writeln!(out);
    }
    for g in &s.gates {
        let mark = if g.held { "ok  " } else { "FAIL" };
        let rate = g
            .pass_rate
            .map_or("—".to_string(), |r| format!("{:.1}%", r * 100.0));
        let _ = write!(out, "{mark} gate {}: {rate}", g.category);
        if !g.reason.is_empty() {
            let _ = write!(out, " ({})", g.reason);
        }
        let _ = writeln!(out);
    }
    out
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

/// One self-contained page: per-category bars, the gates, each failing case with its input,
/// answer, expected answer and reasons (the judge's included), and the changes against the
/// baseline.
pub fn html(s: &Summary, failing: &[CaseResult]) -> String {
    let mut h = String::new();
    let r = &s.run;
    let verdict = if s.passed {
        "<b class=ok>gates hold</b>"
    } else {
        "<b class=bad>a gate failed</b>"
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><title>eval {id}</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em;max-width:70em;color:#222}}\
table{{border-collapse:collapse}}td,th{{padding:.25em .6em;text-align:right}}th{{border-bottom:1px solid #999}}\
td:first-child,th:first-child{{text-align:left}}.bar{{background:#eee;width:16em;height:.9em;display:inline-block}}\
.bar i{{display:block;height:100%;background:#3a7}}.bar i.low{{background:#c44}}.ok{{color:#272}}.bad{{color:#b22}}\
details{{border:1px solid #ddd;margin:.4em 0;padding:.3em .6em}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:.4em;margin:.2em 0}}\
</style></head><body><h1>Eval run {id}</h1><p>{when} UTC · suite <code>{suite}</code> · dataset <code>{ds}@{dv}</code> · route <code>{route}</code> via {target}{label} · {verdict}</p>",
        id = esc(&r.id),
        when = utc(r.created_at),
        suite = esc(&r.suite),
        ds = esc(&r.dataset),
        dv = esc(&r.dataset_version),
        route = esc(&r.route),
        target = esc(&r.target),
        label = r.label.as_ref().map_or(String::new(), |l| format!(
            " · label <code>{}</code>",
            esc(l)
        )),
    );
    if let Some(v) = &s.judge_version {
        let _ = write!(h, "<p>judge prompt version <code>{}</code></p>", esc(v));
    }
    let _ = write!(
        h,
        "<h2>Categories</h2><table><tr><th>category</th><th>cases</th><th>pass rate</th><th></th><th>vs baseline</th><th>win/tie/loss</th><th>p</th><th>p90 ms</th><th>cost $</th></tr>"
    );
    let gate_of: BTreeMap<&str, &GateResult> =
        s.gates.iter().map(|g| (g.category.as_str(), g)).collect();
    for (cat, c) in &s.categories {
        let failed = gate_of.get(cat.as_str()).is_some_and(|g| !g.held);
        let delta = s
            .baseline
            .as_ref()
            .and_then(|b| b.categories.get(cat))
            .map_or("—".to_string(), |b| {
                format!("{:+.1}", (c.pass_rate - b.pass_rate) * 100.0)
            });
        let (wtl, p) = s.paired.get(cat).map_or(("—".into(), "—".into()), |p| {
            (
                format!("{}/{}/{}", p.wins, p.ties, p.losses),
                format!("{:.3}", p.p_value),
            )
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td{}>{:.1}%</td><td><span class=bar><i class='{}' style='width:{:.1}%'></i></span></td><td>{delta}</td><td>{wtl}</td><td>{p}</td><td>{}</td><td>{:.6}</td></tr>",
            esc(cat),
            c.cases,
            if failed { " class=bad" } else { "" },
            c.pass_rate * 100.0,
            if failed { "low" } else { "" },
            c.pass_rate * 100.0,
            c.latency_p90_ms,
            c.cost_usd
        );
    }
    let _ = write!(h, "</table><h2>Gates</h2><ul>");
    for g in &s.gates {
        let _ = write!(
            h,
            "<li class={}>{} <b>{}</b> {}</li>",
            if g.held { "ok" } else { "bad" },
            if g.held { "held" } else { "FAILED" },
            esc(&g.category),
            esc(&g.reason)
        );
    }
    let _ = write!(h, "</ul>");
    if !s.changes.is_empty() {
        let _ = write!(
            h,
            "<h2>Against baseline {}</h2><ul>",
            esc(s.baseline.as_ref().map_or("", |b| b.id.as_str()))
        );
        for c in &s.changes {
            let _ = write!(
                h,
                "<li class={}>{} <code>{}</code> ({})</li>",
                if c.change == "win" { "ok" } else { "bad" },
                esc(&c.change),
                esc(&c.id),
                esc(&c.category)
            );
        }
        let _ = write!(h, "</ul>");
    }
    let _ = write!(h, "<h2>Failing cases ({})</h2>", failing.len());
    for c in failing {
        let _ = write!(
            h,
            "<details><summary><code>{}</code> · {} · {}</summary><p>input</p><pre>{}</pre><p>answer</p><pre>{}</pre>",
            esc(&c.id),
            esc(&c.category),
            c.trace_id
                .as_ref()
                .map_or(String::new(), |t| format!("trace <code>{}</code>", esc(t))),
            esc(&c.input),
            esc(&c.answer)
        );
        if let Some(e) = &c.expected {
            let _ = write!(h, "<p>expected</p><pre>{}</pre>", esc(e));
        }
        if let Some(e) = &c.error {
            let _ = write!(h, "<p class=bad>error: {}</p>", esc(e));
        }
        let _ = write!(h, "<ul>");
        for o in &c.outcomes {
            let scores: Vec<String> = o.scores.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(
                h,
                "<li class={}>{} {}{}</li>",
                if o.pass { "ok" } else { "bad" },
                esc(&o.kind),
                esc(&o.reason),
                if scores.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", esc(&scores.join(", ")))
                }
            );
        }
        let _ = write!(h, "</ul></details>");
    }
    h.push_str("</body></html>\n");
    h
}
