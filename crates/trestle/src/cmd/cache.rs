//! `trestle cache eval`: semantic-cache quality on a labelled paraphrase set, per threshold,
//! and per stage (similarity, guard, attribute rule, learned thresholds, verifier, judge:
//! [`stages`]).

mod stages;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use trestle_core::Config;
use trestle_gateway::cache::embed::{self, Embedder};
use trestle_gateway::cache::eval::stages::Scored;
use trestle_gateway::cache::eval::{self, Latency, Report};
use trestle_gateway::cache::guard;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::Runtime;

#[derive(Args)]
pub struct EvalArgs {
    /// The labelled pairs (JSON Lines: a, b, same, kind).
    #[arg(long, default_value = "data/cache-eval/paraphrases.jsonl")]
    set: PathBuf,
    /// A config file whose `[embedders.NAME]` to evaluate (with --embedder).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The embedder's name in --config.
    #[arg(long)]
    embedder: Option<String>,
    /// Without --config: an in-process model's files (default: $TRESTLE_MINILM_DIR); its
    /// config.json says whether it is all-MiniLM-L6-v2 (BERT) or all-mpnet-base-v2 (MPNet).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Queries embedded one at a time for the latency figures (p50, p99).
    #[arg(long, default_value_t = 100)]
    latency_queries: usize,
    /// The threshold to break down by kind.
    #[arg(long, default_value_t = 0.85)]
    threshold: f32,
    /// Also write the whole report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A judge for the judge stage: a route or `provider/model` in --config.
    #[arg(long)]
    judge: Option<String>,
    /// A judge for the judge stage: any OpenAI-compatible base URL (e.g.
    /// http://127.0.0.1:8080/v1), with --judge-model.
    #[arg(long)]
    judge_url: Option<String>,
    /// The model to ask at --judge-url.
    #[arg(long)]
    judge_model: Option<String>,
    /// The judge's time per question; later is a miss, as in the gateway.
    #[arg(long, default_value_t = 300)]
    judge_timeout_ms: u64,
    /// The lowest similarity the judge is asked about (pairs the guard passes).
    #[arg(long, default_value_t = 0.5)]
    judge_from: f32,
    /// Simulated judges, by accuracy (e.g. 0.95,0.9): they answer from the labels, wrong at
    /// random with the stated rate. Reported as simulated, never as a model.
    #[arg(long, value_delimiter = ',')]
    simulated_judge: Vec<f64>,
    /// Error patterns each simulated judge is averaged over.
    #[arg(long, default_value_t = 10)]
    judge_seeds: u64,
    /// A verifier for the verifier stages: an `[embedders.NAME]` in --config (a
    /// `cross_encoder`, or a sentence encoder whose cosine is the score).
    #[arg(long)]
    verifier: Option<String>,
    /// A verifier for the verifier stages: a model folder (a BERT sequence classifier is
    /// run as a cross-encoder; a sentence encoder's cosine is the score).
    #[arg(long)]
    verifier_dir: Option<PathBuf>,
    /// The lowest similarity the verifier is asked about (pairs the guard passes).
    #[arg(long, default_value_t = 0.5)]
    verifier_from: f32,
}

fn embedder(args: &EvalArgs) -> anyhow::Result<(String, Embedder, Config)> {
    let (config, name) = match (&args.config, &args.embedder) {
        (Some(path), Some(name)) => (Config::load(path)?.config, name.clone()),
        (Some(_), None) => anyhow::bail!("--config needs --embedder NAME"),
        (None, _) => {
            let mut config = Config::default();
            config
                .embedders
                .insert("local".into(), embed::local_config(args.model_dir.clone()));
            (config, "local".to_string())
        }
    };
    let registry = Arc::new(Registry::new(&config.cache));
    let runtime = Runtime::build(config.clone(), registry)?;
    let embedder = runtime
        .embedders
        .get(&name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no [embedders.{name}] in the config"))?;
    Ok((name, embedder, config))
}

pub async fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.set)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.set.display()))?;
    let pairs =
        eval::read_pairs(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.set.display()))?;
    let (name, embedder, config) = embedder(&args)?;
    let judge = stages::judge_target(
        args.config.as_ref().map(|_| &config),
        args.judge.as_deref(),
        args.judge_url.as_deref(),
        args.judge_model.as_deref(),
    )?;
    let verifier = stages::verifier(
        args.config.as_ref().map(|_| &config),
        args.verifier.as_deref(),
        args.verifier_dir.as_deref(),
    )?;
    println!(
        "{} pairs from {}; embedder: {}",
        pairs.len(),
        args.set.display(),
        embedder.describe()
    );

    // One query at a time, as the cache embeds on a request (after one to warm up).
    let queries: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .cycle()
        .take(args.latency_queries.max(1) + 1)
        .collect();
    let mut single = Vec::with_capacity(queries.len());
    for query in queries {
        let t = Instant::now();
        embedder.embed(query).await.map_err(anyhow::Error::msg)?;
        single.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    single.remove(0);
    single.sort_by(f64::total_cmp);
    let started = Instant::now();
    let mut similarity = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(32) {
        let texts: Vec<String> = chunk
            .iter()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect();
        let vectors = embedder
            .embed_many(texts)
            .await
            .map_err(anyhow::Error::msg)?;
        for two in vectors.chunks(2) {
            if let [a, b] = two {
                similarity.push(eval::cosine(a, b));
            }
        }
    }
    let batch_ms = started.elapsed().as_secs_f64() * 1000.0 / (2 * pairs.len()) as f64;
    anyhow::ensure!(
        similarity.len() == pairs.len(),
        "the embedder returned {} vectors for {} texts",
        similarity.len() * 2,
        pairs.len() * 2
    );
    let timed = Instant::now();
    let passes: Vec<bool> = pairs
        .iter()
        .map(|p| guard::compatible(&p.a, &p.b))
        .collect();
    println!(
        "guard (lexical checks and attribute rule): {:.1} µs per pair",
        timed.elapsed().as_secs_f64() * 1e6 / pairs.len().max(1) as f64
    );
    let mut report = eval::evaluate(&pairs, &similarity, &passes, args.threshold);
    let scored: Vec<Scored> = pairs
        .iter()
        .zip(&similarity)
        .map(|(p, s)| Scored {
            similarity: *s,
            lexical: guard::lexically_compatible(&p.a, &p.b),
            attributes: guard::attributes::differ(&p.a, &p.b).is_none(),
            judge: None,
            verifier: None,
        })
        .collect();
    let (scored, verified) = match &verifier {
        Some((name, v)) => {
            let (scored, timing) = stages::verify(
                name,
                &embedder,
                v,
                &pairs,
                scored,
                args.verifier_from,
                args.latency_queries,
            )
            .await?;
            (scored, Some(timing))
        }
        None => (scored, None),
    };
    let judged = match judge {
        Some((judge_name, target)) => Some(
            stages::ask(
                judge_name,
                target,
                &pairs,
                &scored,
                args.judge_from,
                Duration::from_millis(args.judge_timeout_ms),
            )
            .await,
        ),
        None => None,
    };
    report.stages = stages::runs(
        &pairs,
        &scored,
        judged.as_ref(),
        &args.simulated_judge,
        args.judge_seeds,
        verified.as_ref().map(|v| v.name.as_str()),
    );
    report.latency = Some(Latency {
        queries: single.len(),
        p50_ms: single[single.len() / 2],
        p99_ms: single[(single.len() * 99).div_ceil(100) - 1],
        batched_ms_per_text: batch_ms,
    });
    print_report(&report, &name);
    if let Some(v) = &verified {
        stages::print_verifier(v);
    }
    stages::print(&report.stages, judged.as_ref());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report, name: &str) {
    println!(
        "{} pairs: {} should share an answer, {} should not.",
        r.pairs, r.same, r.different
    );
    if let Some(l) = &r.latency {
        println!(
            "Embedder `{name}`: one query p50 {:.2} ms, p99 {:.2} ms ({} queries); batched {:.2} ms per text.",
            l.p50_ms, l.p99_ms, l.queries, l.batched_ms_per_text
        );
    }
    println!("\n           embedding alone                  as served (similarity + guard)");
    println!("threshold  hit rate  false hits  precision   hit rate  false hits  precision");
    let even = |t: f32| ((t * 100.0).round() as u32).is_multiple_of(2) && t >= 0.6;
    for (s, raw) in r
        .sweep
        .iter()
        .zip(&r.sweep_raw)
        .filter(|(s, _)| even(s.threshold))
    {
        println!(
            "{:>9.2}  {:>7.1}%  {:>9.1}%  {:>8.1}%   {:>7.1}%  {:>9.1}%  {:>8.1}%",
            s.threshold,
            raw.hit_rate * 100.0,
            raw.false_hit_rate * 100.0,
            raw.precision * 100.0,
            s.hit_rate * 100.0,
            s.false_hit_rate * 100.0,
            s.precision * 100.0
        );
    }
    println!("\nrecommended threshold per target false-hit rate (as served):");
    for (target, s) in &r.recommended {
        let target = format!("{:.0}%", target * 100.0);
        println!(
            "  false hits <= {target:>3}: threshold {:.2} (hit rate {:.1}%, false-hit rate {:.1}%)",
            s.threshold,
            s.hit_rate * 100.0,
            s.false_hit_rate * 100.0
        );
    }
    println!(
        "\nserved from the cache at threshold {:.2}, by kind:",
        r.default_threshold
    );
    for (kind, share) in &r.served_by_kind {
        println!("  {kind:<18} {:>5.1}%", share * 100.0);
    }
}
