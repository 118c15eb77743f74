//! `trestle dataset`: golden sets ingested, validated and versioned; failure mining from the
//! trace store. See docs/evals.md.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::Value;
use trestle_core::Config;
use trestle_eval::dataset::{self, Dataset, content_text, normalize};
use trestle_eval::mine::MineOptions;
use trestle_eval::store::utc;
use trestle_gateway::cache::embed::Embedder;
use trestle_gateway::guard::Guardrail;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;

use super::gateway::DbArgs;

/// Cosine similarity at which two inputs count as near-duplicates (by embedding).
const NEAR_EMBEDDING: f32 = 0.95;
/// Word-set Jaccard similarity at which two inputs count as near-duplicates (no embedder).
const NEAR_JACCARD: f32 = 0.8;

fn read(path: &PathBuf) -> anyhow::Result<Result<Dataset, dataset::DatasetError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(Dataset::parse(&text))
}

/// What a config offers a dataset command: its guardrails and embedders.
struct Tools {
    runtime: Option<Runtime>,
}

impl Tools {
    fn new(config: Option<Config>) -> anyhow::Result<Tools> {
        let runtime = match config {
            None => None,
            Some(c) => {
                let registry = Arc::new(Registry::new(&c.cache));
                Some(Runtime::build(c, registry)?)
            }
        };
        Ok(Tools { runtime })
    }

    /// The guardrail that scrubs PII: the one named, else the config's first `pii` one.
    fn scrubber(&self, name: Option<&str>) -> anyhow::Result<Option<Arc<Guardrail>>> {
        let Some(rt) = &self.runtime else {
            return match name {
                Some(n) => Err(anyhow::anyhow!(
                    "--scrub {n} needs --config with [guardrails.{n}]"
                )),
                None => Ok(None),
            };
        };
        match name {
            Some(n) => rt
                .guardrails
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("no [guardrails.{n}] in the config")),
            None => {
                let mut pii: Vec<(&String, &Arc<Guardrail>)> = rt
                    .guardrails
                    .iter()
                    .filter(|(_, g)| g.kind.as_str() == "pii")
                    .collect();
                pii.sort_by(|a, b| a.0.cmp(b.0));
                Ok(pii.first().map(|(_, g)| (*g).clone()))
            }
        }
    }

    fn embedder(&self) -> Option<Embedder> {
        let rt = self.runtime.as_ref()?;
        let mut names: Vec<&String> = rt.embedders.keys().collect();
        names.sort();
        names.first().and_then(|n| rt.embedders.get(*n).cloned())
    }
}

/// Duplicate and near-duplicate pairs, printed; by embedding when an embedder is at hand.
async fn report_duplicates(d: &Dataset, embedder: Option<&Embedder>) -> usize {
    let exact = d.exact_duplicates();
    for (a, b) in &exact {
        println!("duplicate: {b} has the same input as {a}");
    }
    let exact_set: HashSet<(&str, &str)> = exact
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let ids: Vec<&str> = d.cases.iter().map(|c| c.id.as_str()).collect();
    let near = match embedder {
        Some(e) => {
            let texts: Vec<String> = d.cases.iter().map(|c| c.input_text()).collect();
            match e.embed_many(texts).await {
                Ok(v) => dataset::near_duplicates(&ids, &v, NEAR_EMBEDDING)
                    .into_iter()
                    .map(|(a, b, s)| (a, b, format!("cosine {s:.3} by {}", e.describe())))
                    .collect(),
                Err(err) => {
                    println!(
                        "note: embedder failed ({err}); near-duplicates by shared words instead"
                    );
                    jaccard_pairs(d)
                }
            }
        }
        None => jaccard_pairs(d),
    };
    let mut n = exact.len();
    for (a, b, how) in near {
        if !exact_set.contains(&(a.as_str(), b.as_str())) {
            println!("near-duplicate: {b} and {a} ({how})");
            n += 1;
        }
    }
    n
}

fn jaccard_pairs(d: &Dataset) -> Vec<(String, String, String)> {
    let norm: Vec<String> = d.cases.iter().map(|c| normalize(&c.input_text())).collect();
    let mut out = Vec::new();
    // Quadratic, and fine for golden sets (thousands of cases); embeddings scale the same.
    for i in 0..norm.len() {
        for j in (i + 1)..norm.len() {
            let s = dataset::jaccard(&norm[i], &norm[j]);
            if s >= NEAR_JACCARD && norm[i] != norm[j] {
                out.push((
                    d.cases[i].id.clone(),
                    d.cases[j].id.clone(),
                    format!("{:.0}% shared words", s * 100.0),
                ));
            }
        }
    }
    out
}

fn print_balance(d: &Dataset) {
    let total = d.cases.len().max(1);
    for (cat, n) in d.balance() {
        println!(
            "  {cat:<24} {n:>6}  {:>5.1}%",
            n as f64 / total as f64 * 100.0
        );
    }
}

#[derive(Args)]
pub struct ValidateArgs {
    file: PathBuf,
    #[command(flatten)]
    db: DbArgs,
}

pub async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    match read(&args.file)? {
        Err(e) => {
            for line in &e.0 {
                println!("{}: {line}", args.file.display());
            }
            println!("{}: {} problem(s)", args.file.display(), e.0.len());
            Ok(ExitCode::FAILURE)
        }
        Ok(d) => {
            println!(
                "{}: ok, {} cases, version {}",
                args.file.display(),
                d.cases.len(),
                d.version()
            );
            print_balance(&d);
            let tools = Tools::new(args.db.load_config()?)?;
            report_duplicates(&d, tools.embedder().as_ref()).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct ImportArgs {
    file: PathBuf,
    /// The dataset's name (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Scrub PII with this guardrail of --config (default: the config's first `pii` one).
    #[arg(long)]
    scrub: Option<String>,
    /// Keep the text as it is, even with a `pii` guardrail configured.
    #[arg(long, conflicts_with = "scrub")]
    no_scrub: bool,
    #[command(flatten)]
    db: DbArgs,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut d = match read(&args.file)? {
        Ok(d) => d,
        Err(e) => {
            for line in &e.0 {
                println!("{}: {line}", args.file.display());
            }
            println!(
                "{}: {} problem(s); nothing imported",
                args.file.display(),
                e.0.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = args.db.load_config()?;
    let tools = Tools::new(config)?;
    if !args.no_scrub
        && let Some(g) = tools.scrubber(args.scrub.as_deref())?
    {
        let n = scrub(&mut d, &g).await?;
        println!("scrubbed {n} finding(s) with guardrail `{}`", g.name);
    }
    report_duplicates(&d, tools.embedder().as_ref()).await;
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let store = args.db.eval_store()?;
    let (version, new) = store
        .put_dataset(&name, &d, &args.file.display().to_string())
        .map_err(anyhow::Error::msg)?;
    println!(
        "{} {name}@{version}: {} cases",
        if new { "imported" } else { "already stored:" },
        d.cases.len()
    );
    print_balance(&d);
    Ok(ExitCode::SUCCESS)
}

/// Redacts PII in every message text and the expected answer.
async fn scrub(d: &mut Dataset, g: &Guardrail) -> anyhow::Result<usize> {
    let ctx = trestle_gateway::guard::Context::default();
    let mut n = 0;
    let mut clean = async |text: &mut String| -> anyhow::Result<()> {
        let v = g
            .check(text, &ctx)
            .await
            .map_err(|e| anyhow::anyhow!("guardrail {}: {e}", g.name))?;
        if !v.findings.is_empty() {
            n += v.findings.len();
            *text = trestle_guard::redact(text, &v.findings);
        }
        Ok(())
    };
    for c in &mut d.cases {
        for m in &mut c.messages {
            match &mut m["content"] {
                Value::String(s) => clean(s).await?,
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(Value::String(s)) = p.get_mut("text") {
                            clean(s).await?;
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(e) = &mut c.expected {
            clean(e).await?;
        }
    }
    Ok(n)
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: DbArgs,
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.eval_store()?;
    let all = store.datasets().map_err(anyhow::Error::msg)?;
    if all.is_empty() {
        println!("no datasets yet (trestle dataset import FILE)");
    }
    for d in all {
        println!(
            "{}@{}  {}  {:>6} cases  {} categories  from {}",
            d.name,
            d.version,
            utc(d.created_at),
            d.cases,
            d.balance.len(),
            d.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ShowArgs {
    /// NAME or NAME@VERSION.
    dataset: String,
    /// Print the cases (JSON Lines).
    #[arg(long)]
    cases: bool,
    #[command(flatten)]
    db: DbArgs,
}

fn split(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    }
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.eval_store()?;
    let (name, version) = split(&args.dataset);
    let (info, d) = store
        .dataset(name, version)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| {
            anyhow::anyhow!("no dataset `{}` (see `trestle dataset list`)", args.dataset)
        })?;
    if args.cases {
        print!("{}", d.to_jsonl());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}@{}: {} cases, imported {} UTC from {}",
        info.name,
        info.version,
        info.cases,
        utc(info.created_at),
        info.source
    );
    print_balance(&d);
    let asserted = d.cases.iter().filter(|c| !c.asserts.is_empty()).count();
    let expected = d.cases.iter().filter(|c| c.expected.is_some()).count();
    println!("{asserted} cases with assertions, {expected} with an expected answer");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DiffArgs {
    /// The old version: a file, NAME or NAME@VERSION.
    old: String,
    /// The new version.
    new: String,
    #[command(flatten)]
    db: DbArgs,
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.eval_store()?;
    let load = |spec: &str| -> anyhow::Result<Dataset> {
        let path = PathBuf::from(spec);
        if path.is_file() {
            return read(&path)?
                .map_err(|e| anyhow::anyhow!("{spec} is not a valid dataset:\n{e}"));
        }
        let (name, version) = split(spec);
        Ok(store
            .dataset(name, version)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("`{spec}` is neither a file nor a stored dataset"))?
            .1)
    };
    let (old, new) = (load(&args.old)?, load(&args.new)?);
    let d = dataset::diff(&old, &new);
    for id in &d.added {
        println!("+ {id}");
    }
    for id in &d.removed {
        println!("- {id}");
    }
    for id in &d.changed {
        println!("~ {id}");
    }
    println!(
        "{} added, {} removed, {} changed, {} unchanged",
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.unchanged
    );
    let (before, after) = (old.balance(), new.balance());
    let cats: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for c in cats {
        let (b, a) = (
            before.get(c).copied().unwrap_or(0),
            after.get(c).copied().unwrap_or(0),
        );
        if a != b {
            println!("  {c}: {b} → {a}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MineArgs {
    /// Where to write the candidates (JSON Lines, for review before they join the set).
    #[arg(long, short)]
    out: PathBuf,
    /// How far back: `90m`, `24h`, `7d`.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Only this route.
    #[arg(long)]
    route: Option<String>,
    /// Answers with a mean token probability under this are candidates.
    #[arg(long, default_value_t = 0.5)]
    min_confidence: f64,
    /// Leave out candidates that duplicate a case of this dataset (NAME, NAME@VERSION or a file).
    #[arg(long)]
    against: Option<String>,
    /// At most this many candidates, newest first.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// The trace store (default: the config's `[store]`, SQLite or PostgreSQL, else
    /// .trestle/trestle.db).
    #[command(flatten)]
    db: DbArgs,
}

/// `90m`, `24h`, `7d`, `3600s` in milliseconds.
fn window_ms(s: &str) -> anyhow::Result<i64> {
    trestle_core::window::window_ms(s).map_err(|e| anyhow::anyhow!("--since {e}"))
}

pub fn mine_cmd(args: MineArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.place()?;
    let now_ms = trestle_eval::store::now_s() * 1000;
    let opts = MineOptions {
        since_ms: now_ms - window_ms(&args.since)?,
        min_confidence: args.min_confidence,
        route: args.route.clone(),
        limit: args.limit,
    };
    let found = trestle_gateway::evals::mining::mine(&db, &opts).map_err(anyhow::Error::msg)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut existing: Vec<String> = Vec::new();
    if let Some(spec) = &args.against {
        let path = PathBuf::from(spec);
        let d = if path.is_file() {
            read(&path)?.map_err(|e| anyhow::anyhow!("{spec} is not a valid dataset:\n{e}"))?
        } else {
            let store = trestle_gateway::evals::runs::open(&db).map_err(anyhow::Error::msg)?;
            let (name, version) = split(spec);
            store
                .dataset(name, version)
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| anyhow::anyhow!("no dataset `{spec}`"))?
                .1
        };
        existing = d.cases.iter().map(|c| normalize(&c.input_text())).collect();
        seen.extend(existing.iter().cloned());
    }
    let mut kept = Vec::new();
    let (mut dup_existing, mut dup_mined) = (0, 0);
    for c in found {
        let key = normalize(
            &c.messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(content_text)
                .unwrap_or_default(),
        );
        let near_existing = existing
            .iter()
            .any(|e| *e == key || dataset::jaccard(e, &key) >= NEAR_JACCARD);
        if near_existing {
            dup_existing += 1;
            continue;
        }
        if !seen.insert(key.clone())
            || kept
                .iter()
                .any(|(k, _): &(String, _)| dataset::jaccard(k, &key) >= NEAR_JACCARD)
        {
            dup_mined += 1;
            continue;
        }
        kept.push((key, c));
    }
    let mut out = String::new();
    for (_, c) in &kept {
        out.push_str(&serde_json::to_string(&c.to_case())?);
        out.push('\n');
    }
    std::fs::write(&args.out, out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    let mut by_reason: std::collections::BTreeMap<String, usize> =
        std::collections::BTreeMap::new();
    for (_, c) in &kept {
        for r in &c.reasons {
            let head = r.split([':', '(']).next().unwrap_or(r).trim().to_string();
            *by_reason.entry(head).or_default() += 1;
        }
    }
    println!(
        "{} candidate(s) written to {} ({dup_mined} near-duplicates of each other and {dup_existing} of the existing set left out)",
        kept.len(),
        args.out.display()
    );
    for (r, n) in by_reason {
        println!("  {r:<32} {n}");
    }
    println!(
        "review them (add assertions or an expected answer), then append to the golden set and `trestle dataset import` it"
    );
    Ok(ExitCode::SUCCESS)
}
