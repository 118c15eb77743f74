//! `trestle guard eval`: a `pii` guardrail on a labelled set (`data/pii-eval/texts.jsonl`):
//! precision, recall and F2 per entity and overall, and the time per 1 KB of text.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use trestle_core::Config;
use trestle_core::guard::GuardKind;
use trestle_guard::eval;
use trestle_guard::pii::{Entity, Pii};

#[derive(Args)]
pub struct EvalArgs {
    /// The labelled set (JSON Lines: id, text, entities with character offsets).
    #[arg(long, default_value = "data/pii-eval/texts.jsonl")]
    set: PathBuf,
    /// A config file whose `pii` guardrail to evaluate (with --guardrail); without it, every
    /// entity at the default threshold.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The guardrail's name in --config.
    #[arg(long)]
    guardrail: Option<String>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let pii = match (&args.config, &args.guardrail) {
        (Some(path), Some(name)) => {
            let config = Config::load(path)?.config;
            let g = config
                .guardrails
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("no [guardrails.{name}] in {}", path.display()))?;
            if g.kind != GuardKind::Pii {
                anyhow::bail!(
                    "guardrails.{name} is a `{}` guardrail, not `pii`",
                    g.kind.as_str()
                );
            }
            Pii::new(&g.entities, g.threshold)?
        }
        (Some(_), None) => anyhow::bail!("--config needs --guardrail NAME"),
        (None, _) => Pii::new(&[], None)?,
    };
    let text = std::fs::read_to_string(&args.set)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.set.display()))?;
    let rows =
        eval::parse_set(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.set.display()))?;
    let entities: Vec<&str> = pii.entities().iter().map(|e| e.name()).collect();

    // Time per KB: each text timed alone, scaled to 1,024 bytes, after one warm-up call
    // (patterns compile and the phone metadata loads on first use).
    let _ = pii.find("warm up: jane@example.com, +1 415 555 0132, Berlin");
    let mut per_kb_us: Vec<f64> = Vec::with_capacity(rows.len());
    let counts = eval::score(&rows, &entities, |t| {
        let started = Instant::now();
        let found = pii.find(t);
        let us = started.elapsed().as_secs_f64() * 1e6;
        per_kb_us.push(us * 1024.0 / t.len().max(1) as f64);
        found
    });
    per_kb_us.sort_by(f64::total_cmp);
    let pct = |p: f64| per_kb_us[((per_kb_us.len() - 1) as f64 * p).round() as usize];
    let overall = eval::overall(&counts).scores();

    println!(
        "{} texts, {} labelled spans ({})",
        rows.len(),
        rows.iter().map(|r| r.entities.len()).sum::<usize>(),
        args.set.display()
    );
    println!(
        "{:<15} {:>9} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}",
        "entity", "precision", "recall", "F2", "support", "fp", "fn", "exact"
    );
    let mut report = serde_json::Map::new();
    for (entity, c) in &counts {
        if Entity::parse(entity).is_err() {
            continue;
        }
        let s = c.scores();
        println!(
            "{entity:<15} {:>9.3} {:>7.3} {:>7.3} {:>7} {:>6} {:>6} {:>6}",
            s.precision, s.recall, s.f2, s.support, c.false_positives, c.false_negatives, c.exact
        );
        report.insert(entity.clone(), json!({"scores": s, "counts": c}));
    }
    println!(
        "{:<15} {:>9.3} {:>7.3} {:>7.3} {:>7}",
        "overall", overall.precision, overall.recall, overall.f2, overall.support
    );
    println!(
        "time per 1 KB of text: p50 {:.0} µs, p99 {:.0} µs (recognizers and gazetteers, no model; build with --release for real figures)",
        pct(0.5),
        pct(0.99)
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "set": args.set.display().to_string(),
            "texts": rows.len(),
            "entities": report,
            "overall": overall,
            "per_kb_us": {"p50": pct(0.5), "p99": pct(0.99)},
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
