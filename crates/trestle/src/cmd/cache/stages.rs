//! `trestle cache eval`'s per-stage report: similarity alone, + lexical guard, + attribute
//! rule, + learned thresholds, + judge, within 2% and 5% false hits. The judge is a model
//! over HTTP (`--judge` in `--config`, or `--judge-url` and `--judge-model`), asked about
//! every pair the guard passes from `--judge-from` up with the gateway's own prompt, parser
//! and timeout; or a simulated judge (`--simulated-judge 0.95,0.9`) that answers from the
//! labels with the stated accuracy, labelled as such. A verifier (`--verifier` in
//! `--config`, or `--verifier-dir`) scores every pair the guard passes from
//! `--verifier-from` up, and the lookup with verification is timed query by query.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use trestle_core::Config;
use trestle_gateway::cache::embed::{self, Embedder};
use trestle_gateway::cache::eval::stages::{self, Scored, Stage};
use trestle_gateway::cache::eval::{Pair, StageRun};
use trestle_gateway::cache::judge::{Verdict, Verdicts};
use trestle_gateway::cache::verify;
use trestle_gateway::resilience::Registry;
use trestle_gateway::runtime::{Runtime, Target};

/// The target false-hit rates the stages are reported at.
pub const TARGETS: [f64; 2] = [0.02, 0.05];

/// A real judge's verdicts on the pairs it was asked about, and its latency.
pub struct Judged {
    pub name: String,
    pub verdicts: Vec<Option<bool>>,
    pub asked: usize,
    pub timeouts: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub accuracy: f64,
}

/// The judge's target: a route or `provider/model` in `config`, or an OpenAI-compatible
/// `url` and `model`.
pub fn judge_target(
    config: Option<&Config>,
    name: Option<&str>,
    url: Option<&str>,
    model: Option<&str>,
) -> anyhow::Result<Option<(String, Arc<Target>)>> {
    let (config, name) = match (config, name, url, model) {
        (Some(c), Some(n), None, _) => (c.clone(), n.to_string()),
        (_, None, Some(url), Some(model)) => {
            let text = format!(
                "[providers.judge]\nkind = \"openai\"\nbase_url = {url:?}\napi_key = \"none\"\n"
            );
            (
                Config::parse(&text, &|_| None)?.config,
                format!("judge/{model}"),
            )
        }
        (_, None, None, None) => return Ok(None),
        (None, Some(_), _, _) => anyhow::bail!("--judge needs --config (or use --judge-url)"),
        _ => anyhow::bail!("--judge-url needs --judge-model, and goes without --judge"),
    };
    let registry = Arc::new(Registry::new(&config.cache));
    let runtime = Runtime::build(config, registry)?;
    let route = runtime.resolve(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = route
        .targets
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("`{name}` has no target"))?;
    Ok(Some((name, target)))
}

/// Asks `target` about every pair the guard passes from `from` up, four at a time.
pub async fn ask(
    name: String,
    target: Arc<Target>,
    pairs: &[Pair],
    scores: &[Scored],
    from: f32,
    timeout: Duration,
) -> Judged {
    let verdicts = Verdicts::new();
    let asked: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.lexical && s.attributes && s.similarity >= from)
        .map(|(i, _)| i)
        .collect();
    let answers: Vec<(usize, Verdict, Option<Duration>)> =
        futures_util::stream::iter(asked.iter().map(|&i| {
            let (verdicts, target) = (&verdicts, target.clone());
            async move {
                let a = verdicts
                    .ask(&target, &pairs[i].a, &pairs[i].b, timeout)
                    .await;
                (i, a.verdict, a.took)
            }
        }))
        .buffer_unordered(4)
        .collect()
        .await;
    let mut out = vec![None; pairs.len()];
    let mut times: Vec<f64> = Vec::new();
    let (mut timeouts, mut errors, mut right) = (0, 0, 0);
    for (i, verdict, took) in &answers {
        times.extend(took.map(|t| t.as_secs_f64() * 1000.0));
        match verdict {
            Verdict::Same | Verdict::Different => {
                let same = *verdict == Verdict::Same;
                out[*i] = Some(same);
                right += usize::from(same == pairs[*i].same);
            }
            Verdict::Timeout => timeouts += 1,
            Verdict::Unclear | Verdict::Error => errors += 1,
        }
    }
    let (p50_ms, p99_ms) = p50_p99(times);
    Judged {
        name,
        verdicts: out,
        asked: asked.len(),
        timeouts,
        errors,
        p50_ms,
        p99_ms,
        accuracy: right as f64 / asked.len().max(1) as f64,
    }
}

/// The stages without a judge, with a real one, and with each simulated judge (averaged
/// over `seeds` error patterns, each at its own best point).
pub fn runs(
    pairs: &[Pair],
    scores: &[Scored],
    judged: Option<&Judged>,
    simulated: &[f64],
    seeds: u64,
    verifier: Option<&str>,
) -> Vec<StageRun> {
    let mut runs = Vec::new();
    for target in TARGETS {
        let mut alone = stages::stages(pairs, scores, target, None);
        if let Some(name) = verifier {
            alone.extend(stages::verifier_stages(pairs, scores, target, name));
        }
        runs.push(StageRun {
            target_false_hits: target,
            judge: "none".into(),
            stages: alone,
        });
        if let Some(j) = judged {
            let with: Vec<Scored> = scores
                .iter()
                .zip(&j.verdicts)
                .map(|(s, v)| Scored { judge: *v, ..*s })
                .collect();
            let label = format!("model {}", j.name);
            runs.push(StageRun {
                target_false_hits: target,
                judge: label.clone(),
                stages: stages::stages(pairs, &with, target, Some(&label)),
            });
        }
        for &accuracy in simulated {
            let label = format!("simulated judge, {:.0}% accurate", accuracy * 100.0);
            let per_seed: Vec<Vec<Stage>> = (1..=seeds.max(1))
                .map(|seed| {
                    let verdicts = stages::simulated_judge(pairs, accuracy, seed);
                    let with: Vec<Scored> = scores
                        .iter()
                        .zip(verdicts)
                        .map(|(s, v)| Scored { judge: v, ..*s })
                        .collect();
                    stages::stages(pairs, &with, target, Some(&label))
                })
                .collect();
            runs.push(StageRun {
                target_false_hits: target,
                judge: label,
                stages: average(&per_seed),
            });
        }
    }
    runs
}

/// Stage by stage, the mean of several runs; the point says the range served.
fn average(runs: &[Vec<Stage>]) -> Vec<Stage> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let n = runs.len() as f64;
    (0..first.len())
        .map(|i| {
            let all: Vec<&Stage> = runs.iter().filter_map(|r| r.get(i)).collect();
            let served: Vec<f64> = all.iter().map(|s| s.served).collect();
            let (lo, hi) = served
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), s| (l.min(*s), h.max(*s)));
            let mut by_kind = first[i].by_kind.clone();
            for (k, v) in by_kind.iter_mut() {
                *v = all.iter().filter_map(|s| s.by_kind.get(k)).sum::<f64>() / n;
            }
            Stage {
                stage: first[i].stage.clone(),
                point: if lo == hi {
                    first[i].point.clone()
                } else {
                    format!(
                        "best per error pattern ({} patterns): served {:.1}–{:.1}%",
                        runs.len(),
                        lo * 100.0,
                        hi * 100.0
                    )
                },
                served: served.iter().sum::<f64>() / n,
                false_hits: all.iter().map(|s| s.false_hits).sum::<f64>() / n,
                by_kind,
            }
        })
        .collect()
}

/// Prints each run: a line per stage, then the share served per kind.
pub fn print(runs: &[StageRun], judged: Option<&Judged>) {
    if let Some(j) = judged {
        println!(
            "\njudge `{}`: asked about {} pairs (the guard passes, similarity from --judge-from up); \
             {} timed out, {} gave no yes/no; p50 {:.0} ms, p99 {:.0} ms; {:.1}% of its verdicts right.",
            j.name,
            j.asked,
            j.timeouts,
            j.errors,
            j.p50_ms,
            j.p99_ms,
            j.accuracy * 100.0
        );
    }
    for run in runs {
        println!(
            "\nstages within {:.0}% false hits; judge: {} (each stage at its best point on this set)",
            run.target_false_hits * 100.0,
            run.judge
        );
        let kinds: Vec<&String> = run
            .stages
            .first()
            .map(|s| s.by_kind.keys().collect())
            .unwrap_or_default();
        print!("  {:<46} {:>7} {:>7}", "stage", "served", "false");
        for k in &kinds {
            print!(" {:>9.9}", k);
        }
        println!("  point");
        for s in &run.stages {
            print!(
                "  {:<46} {:>6.1}% {:>6.1}%",
                s.stage,
                s.served * 100.0,
                s.false_hits * 100.0
            );
            for k in &kinds {
                print!(
                    " {:>8.1}%",
                    s.by_kind.get(*k).copied().unwrap_or(0.0) * 100.0
                );
            }
            println!("  {}", s.point);
        }
    }
}

/// The verifier: an `[embedders.NAME]` in `config`, or the model in `dir` (a BERT sequence
/// classifier as a cross-encoder, else a sentence encoder).
pub fn verifier(
    config: Option<&Config>,
    name: Option<&str>,
    dir: Option<&Path>,
) -> anyhow::Result<Option<(String, Embedder)>> {
    let (config, name) = match (config, name, dir) {
        (_, None, None) => return Ok(None),
        (Some(c), Some(n), None) => (c.clone(), n.to_string()),
        (None, Some(_), None) => anyhow::bail!("--verifier needs --config (or use --verifier-dir)"),
        (_, Some(_), Some(_)) => anyhow::bail!("--verifier and --verifier-dir: one or the other"),
        (_, None, Some(dir)) => {
            let classifier = std::fs::read_to_string(dir.join("config.json"))
                .is_ok_and(|t| t.contains("ForSequenceClassification"));
            let ec = if classifier {
                trestle_core::config::EmbedderConfig::CrossEncoder {
                    path: dir.to_path_buf(),
                }
            } else {
                embed::local_config(Some(dir.to_path_buf()))
            };
            let mut config = Config::default();
            let name = dir
                .file_name()
                .map_or("verifier".into(), |n| n.to_string_lossy().into_owned());
            config.embedders.insert(name.clone(), ec);
            (config, name)
        }
    };
    let registry = Arc::new(Registry::new(&config.cache));
    let runtime = Runtime::build(config, registry)?;
    let v = runtime
        .embedders
        .get(&name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no [embedders.{name}] for --verifier"))?;
    Ok(Some((name, v)))
}

/// What the verifier stage measured.
pub struct Verified {
    /// The verifier's name (its `[embedders.NAME]`, or its folder's).
    pub name: String,
    /// What it is.
    pub what: String,
    /// Pairs scored.
    pub asked: usize,
    /// One pair at a time: the verifier alone, and the lookup with verification (the
    /// query's embedding, then the verifier on the query and its candidate).
    pub verifier_ms: (f64, f64),
    pub lookup_ms: (f64, f64),
    pub queries: usize,
}

fn p50_p99(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: usize| {
        times
            .get((times.len() * q).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    (at(50), at(99))
}

/// Scores every pair the guard passes from `from` up with `verifier` (batched), then times
/// `queries` lookups with verification one at a time, after one to warm up.
pub async fn verify(
    name: &str,
    embedder: &Embedder,
    verifier: &Embedder,
    pairs: &[Pair],
    mut scores: Vec<Scored>,
    from: f32,
    queries: usize,
) -> anyhow::Result<(Vec<Scored>, Verified)> {
    let asked: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.lexical && s.attributes && s.similarity >= from)
        .map(|(i, _)| i)
        .collect();
    for chunk in asked.chunks(32) {
        let texts: Vec<(String, String)> = chunk
            .iter()
            .map(|&i| (pairs[i].a.clone(), pairs[i].b.clone()))
            .collect();
        let got = verify::score_many(verifier, texts)
            .await
            .map_err(anyhow::Error::msg)?;
        for (&i, v) in chunk.iter().zip(got) {
            scores[i].verifier = Some(v);
        }
    }
    let timed: Vec<&Pair> = pairs.iter().cycle().take(queries.max(1) + 1).collect();
    let (mut alone, mut lookup) = (Vec::new(), Vec::new());
    for p in timed {
        let t = Instant::now();
        embedder.embed(&p.b).await.map_err(anyhow::Error::msg)?;
        let v = Instant::now();
        let (asked, _) = verify::ask(verifier, &p.a, &p.b, 0.5).await;
        if let Some(e) = asked.error {
            anyhow::bail!("verifier {name}: {e}");
        }
        alone.push(v.elapsed().as_secs_f64() * 1000.0);
        lookup.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    alone.remove(0);
    lookup.remove(0);
    let queries = alone.len();
    Ok((
        scores,
        Verified {
            name: name.to_string(),
            what: verifier.describe(),
            asked: asked.len(),
            verifier_ms: p50_p99(alone),
            lookup_ms: p50_p99(lookup),
            queries,
        },
    ))
}

pub fn print_verifier(v: &Verified) {
    println!(
        "\nverifier `{}` ({}): scored {} pairs (the guard passes, similarity from --verifier-from up). \
         One pair at a time ({} queries): verifier p50 {:.2} ms, p99 {:.2} ms; lookup with \
         verification (embedding + verifier) p50 {:.2} ms, p99 {:.2} ms.",
        v.name,
        v.what,
        v.asked,
        v.queries,
        v.verifier_ms.0,
        v.verifier_ms.1,
        v.lookup_ms.0,
        v.lookup_ms.1
    );
}
