//! `trestle eval`: run a suite through a gateway (in process with `--config`, or a running
//! one with `--url`), score, compare with a baseline, gate; list and show stored runs;
//! calibrate a judge against human labels. See docs/evals.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use trestle_eval::calibrate::{self, Label};
use trestle_eval::judge::{self, Judge};
use trestle_eval::report::{self, Baseline, Change, Summary};
use trestle_eval::run::{self, CaseResult, Checks, Services};
use trestle_eval::stats::{self, Paired, Weights};
use trestle_eval::store::{RunInfo, now_s, utc};
use trestle_eval::suite::{DatasetRef, Suite};
use trestle_eval::{Dataset, Observed};
use trestle_gateway::cache::embed::Embedder;

use super::gateway::Gateway;

/// Exit code for an error in the run itself (not a failed gate).
const RUN_ERROR: u8 = 2;

#[derive(Args)]
pub struct RunArgs {
    /// The suite file (TOML): dataset, route, assertions, judge, gates.
    suite: PathBuf,
    #[command(flatten)]
    target: super::gateway::TargetArgs,
    /// Compare with this run (an id, or a unique prefix). Default: the newest run of this
    /// suite labelled `production`, if any.
    #[arg(long)]
    baseline: Option<String>,
    /// Label this run (e.g. `production` once it ships, so later runs compare with it).
    #[arg(long)]
    label: Option<String>,
    /// Also ask the judge which answer is better, this run's or the baseline's, in both
    /// orders (needs a `[judge]` and a baseline).
    #[arg(long)]
    pairwise: bool,
    /// Override the suite's concurrency.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Write the summary and every result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// The gateway the cases go to, and what the assertions that need services use.
struct Live {
    client: reqwest::Client,
    base: String,
    embedder: Option<Embedder>,
    timeout: Duration,
    /// What the judge's calls cost, in millionths of a USD.
    judge_micro_usd: std::sync::atomic::AtomicU64,
}

impl Live {
    fn judge_cost(&self) -> f64 {
        self.judge_micro_usd
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e6
    }
}

impl Services for Live {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        match &self.embedder {
            Some(e) => e.embed_many(texts).await,
            None => Err("`similar` needs an embedder: set `embedder` in the suite to an [embedders.NAME] of --config (or build with local-embeddings and set TRESTLE_MINILM_DIR)".into()),
        }
    }

    async fn guardrail(&self, name: &str, text: &str) -> Result<Vec<String>, String> {
        let url = format!("{}/v1/guardrails/{name}/check", self.base);
        let r = self
            .client
            .post(&url)
            .json(&json!({"text": text}))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(v["error"]["message"]
                .as_str()
                .unwrap_or("error")
                .to_string());
        }
        let mut found: Vec<String> = v["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["entity"].as_str().map(String::from))
            .collect();
        if found.is_empty() && v["violated"] == true {
            found.push(v["detail"].as_str().unwrap_or("a violation").to_string());
        }
        Ok(found)
    }

    async fn complete(&self, route: &str, messages: Vec<Value>) -> Result<String, String> {
        let body = json!({"model": route, "messages": messages, "temperature": 0});
        let (status, v, headers) = self.post(&body, None).await.map_err(|e| e.to_string())?;
        if let Some(c) = headers
            .get("x-trestle-cost-usd")
            .and_then(|h| h.to_str().ok()?.parse::<f64>().ok())
        {
            self.judge_micro_usd.fetch_add(
                (c * 1e6).round() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if status >= 400 {
            return Err(v["error"]["message"]
                .as_str()
                .unwrap_or("error")
                .to_string());
        }
        Ok(answer_text(&v))
    }
}

impl Live {
    /// One chat completion; a transport error is `Err` (the run cannot be trusted), an HTTP
    /// error is an answer with its status.
    async fn post(
        &self,
        body: &Value,
        run_id: Option<&str>,
    ) -> Result<(u16, Value, reqwest::header::HeaderMap), reqwest::Error> {
        let mut req = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(body)
            .timeout(self.timeout);
        if let Some(id) = run_id {
            // Every trace of a run shares a conversation id, so `/v1/traces?conversation_id=`
            // finds them.
            req = req.header("x-trestle-conversation-id", format!("eval-{id}"));
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let v: Value = r.json().await.unwrap_or_else(
            |e| json!({"error": {"message": format!("the answer was not JSON: {e}")}}),
        );
        Ok((status, v, headers))
    }
}

fn answer_text(v: &Value) -> String {
    let msg = &v["choices"][0]["message"];
    match &msg["content"] {
        Value::String(s) => s.clone(),
        Value::Null if msg["tool_calls"].is_array() => msg["tool_calls"].to_string(),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

/// What the run loop needs per case, shared by its tasks.
struct Ctx {
    live: Live,
    judge: Option<Judge>,
    suite: Suite,
    run_id: String,
    baseline_answers: Option<HashMap<String, String>>,
}

/// Sends one case, scores it, and (with `--pairwise`) asks the judge about it against the
/// baseline's answer. `Err` is a transport error.
async fn run_case(
    ctx: &Ctx,
    case: &trestle_eval::Case,
    checks: Checks,
) -> Result<(CaseResult, Option<std::cmp::Ordering>), String> {
    let mut body = json!({"model": ctx.suite.route, "messages": case.messages});
    for (k, v) in &ctx.suite.params {
        body[k] = v.clone();
    }
    if let Some(p) = &ctx.suite.prompt {
        body["prompt_version"] = json!(p);
    }
    if let Some(vars) = case.metadata.get("prompt_variables") {
        body["prompt_variables"] = vars.clone();
    }
    let started = Instant::now();
    let (status, v, headers) = ctx
        .live
        .post(&body, Some(&ctx.run_id))
        .await
        .map_err(|e| format!("case {}: {e}", case.id))?;
    let latency_ms = started.elapsed().as_millis() as u64;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(String::from)
    };
    let seen = Observed {
        text: answer_text(&v),
        latency_ms,
        cost_usd: header("x-trestle-cost-usd").and_then(|c| c.parse().ok()),
    };
    let error = (status >= 400).then(|| {
        v["error"]["message"]
            .as_str()
            .unwrap_or("error")
            .to_string()
    });
    let outcomes = if error.is_some() {
        Vec::new()
    } else {
        run::score(&ctx.live, ctx.judge.as_ref(), case, &checks, &seen).await
    };
    let pass = error.is_none() && outcomes.iter().all(|o| o.pass);
    let mut preference = None;
    if let (Some(j), Some(base)) = (&ctx.judge, &ctx.baseline_answers)
        && let Some(before) = base.get(&case.id)
        && error.is_none()
    {
        let q = case.input_text();
        let first = ctx
            .live
            .complete(&j.route, judge::pairwise_messages(&q, &seen.text, before))
            .await
            .ok();
        let second = ctx
            .live
            .complete(&j.route, judge::pairwise_messages(&q, before, &seen.text))
            .await
            .ok();
        preference = judge::combine_orders(
            first.as_deref().and_then(judge::parse_preference),
            second.as_deref().and_then(judge::parse_preference),
        );
    }
    Ok((
        CaseResult {
            id: case.id.clone(),
            category: case.category.clone(),
            pass,
            input: case.input_text(),
            expected: case.expected.clone(),
            answer: seen.text,
            error,
            status,
            latency_ms,
            cost_usd: seen.cost_usd,
            trace_id: header("x-trestle-trace-id"),
            fallback_level: header("x-trestle-fallback-level"),
            outcomes,
        },
        preference,
    ))
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match run_inner(args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(RUN_ERROR))
        }
    }
}

async fn run_inner(args: RunArgs) -> Result<ExitCode, String> {
    let (mut suite, dir) = Suite::load(&args.suite)?;
    if let Some(c) = args.concurrency {
        suite.concurrency = c.clamp(1, 1024);
    }
    let suite_name = suite.name.clone().unwrap_or_else(|| {
        args.suite
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let gateway = Gateway::start(&args.target).await?;
    let mut store = trestle_gateway::evals::runs::open(&gateway.db)?;

    // The dataset: a file (imported as a version under its stem), or a stored version.
    let (dataset_name, version, dataset) = match suite.dataset_ref(&dir) {
        DatasetRef::File(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read dataset {}: {e}", path.display()))?;
            let d = Dataset::parse(&text)
                .map_err(|e| format!("{} is not a valid dataset:\n{e}", path.display()))?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (version, _) = store.put_dataset(&name, &d, &path.display().to_string())?;
            (name, version, d)
        }
        DatasetRef::Stored { name, version } => {
            let (info, d) = store.dataset(&name, version.as_deref())?.ok_or_else(|| {
                format!(
                    "no dataset `{}` (import one with `trestle dataset import`)",
                    suite.dataset
                )
            })?;
            (name, info.version, d)
        }
    };
    if dataset.cases.is_empty() {
        return Err("the dataset has no cases".into());
    }
    let asserted = || {
        dataset
            .cases
            .iter()
            .flat_map(|c| &c.asserts)
            .chain(&suite.asserts)
    };
    let needs_judge = asserted().any(|a| matches!(a, trestle_eval::Assertion::Judge { .. }));
    let needs_embedder = asserted().any(|a| matches!(a, trestle_eval::Assertion::Similar { .. }));
    let judge = suite.judge(&dir)?;
    if judge.is_none() && needs_judge {
        return Err("a case asserts `judge` but the suite has no [judge] (route, criteria)".into());
    }
    if let Some(j) = &judge {
        for case in &dataset.cases {
            for assertion in &case.asserts {
                if let trestle_eval::Assertion::Judge { criteria, .. } = assertion {
                    let unknown = j.unknown(criteria);
                    if !unknown.is_empty() {
                        return Err(format!(
                            "case {}: judge criteria {} are not in the rubric",
                            case.id,
                            unknown.join(", ")
                        ));
                    }
                }
            }
        }
    }
    let embedder = gateway.embedder(suite.embedder.as_deref(), needs_embedder)?;

    // The baseline: named, or the newest `production` run of this suite.
    let baseline = match &args.baseline {
        Some(id) => Some(
            store
                .run(id)?
                .ok_or_else(|| format!("no eval run `{id}` (see `trestle eval list`)"))?,
        ),
        None => store
            .last_labelled("production", &suite_name)?
            .and_then(|r| store.run(&r.id).ok().flatten()),
    };
    let baseline_passes = match &baseline {
        Some((b, _)) => Some(store.passes(&b.id)?),
        None => None,
    };
    if args.pairwise && (judge.is_none() || baseline.is_none()) {
        return Err("--pairwise needs a [judge] in the suite and a baseline run".into());
    }
    let baseline_answers = match (&baseline, args.pairwise) {
        (Some((b, _)), true) => Some(store.answers(&b.id)?),
        _ => None,
    };

    let run_id = new_run_id();
    let info = RunInfo {
        id: run_id.clone(),
        created_at: now_s(),
        suite: suite_name,
        label: args.label.clone(),
        dataset: dataset_name,
        dataset_version: version,
        route: match &suite.prompt {
            Some(p) => format!("{} with {p}", suite.route),
            None => suite.route.clone(),
        },
        target: gateway.describe.clone(),
        cases: 0,
        passed: 0,
        cost_usd: 0.0,
        status: "running".into(),
    };
    store.start_run(&info)?;
    eprintln!(
        "run {run_id}: {} cases of {}@{} against `{}` on {}, concurrency {}{}",
        dataset.cases.len(),
        info.dataset,
        info.dataset_version,
        info.route,
        info.target,
        suite.concurrency,
        baseline
            .as_ref()
            .map_or(String::new(), |(b, _)| format!(", baseline {}", b.id))
    );

    let ctx = Arc::new(Ctx {
        live: Live {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(suite.concurrency)
                .build()
                .map_err(|e| e.to_string())?,
            base: gateway.url.clone(),
            embedder,
            timeout: Duration::from_millis(suite.timeout_ms),
            judge_micro_usd: Default::default(),
        },
        judge,
        suite: suite.clone(),
        run_id: run_id.clone(),
        baseline_answers,
    });
    let bar = ProgressBar::new(dataset.cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}, ~{eta} left]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let mut scored = Vec::with_capacity(dataset.cases.len());
    let mut failing = Vec::new();
    let mut batch = Vec::new();
    let mut transport_errors = Vec::new();
    let mut pairwise: HashMap<String, Paired> = HashMap::new();
    let (mut passed, mut cost) = (0usize, 0.0f64);
    // Cases wait as compact JSON, each parsed and its assertions compiled when its turn
    // comes: memory does not grow with what a case holds (bench/eval-throughput.sh).
    let cases: Vec<Box<str>> = dataset
        .cases
        .iter()
        .map(|c| {
            serde_json::to_string(c)
                .unwrap_or_default()
                .into_boxed_str()
        })
        .collect();
    drop(dataset);
    let suite_asserts = Arc::new(suite.asserts.clone());
    let mut results = futures_util::stream::iter(cases)
        .map(|line| {
            let ctx = ctx.clone();
            let asserts = suite_asserts.clone();
            async move {
                let case: trestle_eval::Case =
                    serde_json::from_str(&line).map_err(|e| e.to_string())?;
                let checks = Checks::new(&case, &asserts)?;
                run_case(&ctx, &case, checks).await
            }
        })
        .buffer_unordered(suite.concurrency);
    while let Some(result) = results.next().await {
        bar.inc(1);
        let (r, preference) = match result {
            Ok(r) => r,
            Err(e) => {
                transport_errors.push(e);
                continue;
            }
        };
        passed += usize::from(r.pass);
        cost += r.cost_usd.unwrap_or(0.0);
        if let Some(p) = preference {
            for cat in [r.category.as_str(), stats::ALL] {
                let e = pairwise.entry(cat.to_string()).or_default();
                match p {
                    std::cmp::Ordering::Greater => e.wins += 1,
                    std::cmp::Ordering::Less => e.losses += 1,
                    std::cmp::Ordering::Equal => e.ties += 1,
                }
            }
        }
        scored.push(r.scored());
        if !r.pass && failing.len() < 500 {
            failing.push(r.clone());
        }
        batch.push(r);
        if batch.len() >= 256 {
            tokio::task::block_in_place(|| store.put_results(&run_id, &batch))?;
            batch.clear();
        }
        let done = scored.len().max(1);
        bar.set_message(format!(
            "pass {:.1}% · ${:.4}",
            passed as f64 / done as f64 * 100.0,
            cost + ctx.live.judge_cost()
        ));
    }
    drop(results);
    bar.finish_and_clear();
    tokio::task::block_in_place(|| store.put_results(&run_id, &batch))?;
    let elapsed = started.elapsed();

    let categories = stats::summarize(&scored);
    let baseline_summary: Option<Baseline> = baseline.as_ref().and_then(|(b, s)| {
        let cats = s.as_ref()?.get("categories")?.clone();
        Some(Baseline {
            id: b.id.clone(),
            categories: serde_json::from_value(cats).ok()?,
        })
    });
    let paired = baseline_passes
        .as_ref()
        .map(|b| stats::paired(&scored, b))
        .unwrap_or_default();
    let changes: Vec<Change> = baseline_passes
        .as_ref()
        .map(|b| {
            scored
                .iter()
                .filter_map(|s| {
                    let before = *b.get(&s.id)?;
                    (before != s.pass).then(|| Change {
                        id: s.id.clone(),
                        category: s.category.clone(),
                        change: if s.pass { "win" } else { "loss" }.into(),
                    })
                })
                .take(500)
                .collect()
        })
        .unwrap_or_default();
    let gates = stats::check_gates(
        &categories,
        baseline_summary.as_ref().map(|b| &b.categories),
        &suite.gates,
    );
    let all_hold = gates.iter().all(|g| g.held);
    let mut pairwise: std::collections::BTreeMap<String, Paired> = pairwise.into_iter().collect();
    for p in pairwise.values_mut() {
        p.p_value = stats::sign_test(p.wins, p.losses);
    }
    let status = if !transport_errors.is_empty() {
        "error"
    } else if all_hold {
        "passed"
    } else {
        "failed"
    };
    let mut info = info;
    info.cases = scored.len();
    info.passed = passed;
    info.cost_usd = cost;
    info.status = status.into();
    let summary = Summary {
        run: info,
        judge_version: ctx.judge.as_ref().map(Judge::version),
        judge_cost_usd: ctx.live.judge_cost(),
        categories,
        baseline: baseline_summary,
        paired,
        pairwise,
        changes,
        gates,
        passed: all_hold,
    };
    let summary_json = serde_json::to_value(&summary).map_err(|e| e.to_string())?;
    store.finish_run(&run_id, scored.len(), passed, cost, status, &summary_json)?;
    gateway.stop().await;

    print!("{}", report::table(&summary));
    println!(
        "\n{} cases in {:.1} s ({:.0}/s), {} failing; answers ${cost:.6}, judge ${:.6}; run {run_id}",
        scored.len(),
        elapsed.as_secs_f64(),
        scored.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        scored.len() - passed,
        summary.judge_cost_usd
    );
    if let Some(path) = &args.json {
        let all = store.results(&run_id, false, usize::MAX >> 1)?;
        let doc = json!({"summary": summary_json, "results": all});
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&summary, &failing))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !transport_errors.is_empty() {
        eprintln!(
            "error: {} case(s) never reached the gateway, so the figures cannot be trusted; the first: {}",
            transport_errors.len(),
            transport_errors[0]
        );
        return Ok(ExitCode::from(RUN_ERROR));
    }
    if all_hold {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<String> = summary
            .gates
            .iter()
            .filter(|g| !g.held)
            .map(|g| format!("{} ({})", g.category, g.reason))
            .collect();
        eprintln!("gate failed: {}", failed.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!(
        "run-{}-{:06x}",
        utc(now_s()).replace(['-', ':'], "").replace(' ', "-"),
        mix & 0xff_ffff
    )
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: super::gateway::DbArgs,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.eval_store()?;
    let runs = store.runs(args.limit).map_err(anyhow::Error::msg)?;
    if runs.is_empty() {
        println!("no eval runs yet (trestle eval run SUITE.toml)");
    }
    for r in runs {
        println!(
            "{}  {}  {:<7} {:<16} {}@{} → {}  {}/{} passed  ${:.4}{}",
            r.id,
            utc(r.created_at),
            r.status,
            r.suite,
            r.dataset,
            r.dataset_version,
            r.route,
            r.passed,
            r.cases,
            r.cost_usd,
            r.label.map_or(String::new(), |l| format!("  [{l}]"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ShowArgs {
    /// The run id (or a unique prefix).
    id: String,
    #[command(flatten)]
    db: super::gateway::DbArgs,
    /// Also list each failing case with its reasons.
    #[arg(long)]
    failing: bool,
    /// Write a self-contained HTML report of the run.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.eval_store()?;
    let (info, summary) = store
        .run(&args.id)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("no eval run `{}` (see `trestle eval list`)", args.id))?;
    let summary: Summary = summary
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or_else(|| anyhow::anyhow!("run {} has no summary (it did not finish)", info.id))?;
    println!(
        "run {} · {} UTC · {} · {}@{} → {}",
        info.id,
        utc(info.created_at),
        info.status,
        info.dataset,
        info.dataset_version,
        info.route
    );
    print!("{}", report::table(&summary));
    let failing = store
        .results(&info.id, true, 500)
        .map_err(anyhow::Error::msg)?;
    if args.failing {
        for r in &failing {
            println!(
                "\n✗ {} [{}] trace {}",
                r.id,
                r.category,
                r.trace_id.as_deref().unwrap_or("-")
            );
            println!("  input:  {}", run::clip(&r.input, 200));
            println!("  answer: {}", run::clip(&r.answer, 200));
            if let Some(e) = &r.error {
                println!("  error:  {e}");
            }
            for o in r.outcomes.iter().filter(|o| !o.pass) {
                println!("  {}: {}", o.kind, o.reason);
            }
        }
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&summary, &failing))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WeightArg {
    None,
    Linear,
    Quadratic,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// The judge's scores: an eval run id (its judge verdicts), or a JSON Lines file of
    /// labels (id, criterion, score).
    #[arg(long)]
    judge: String,
    /// People's labels: JSON Lines with id (case or trace), criterion, score, rater.
    #[arg(long)]
    labels: PathBuf,
    /// Disagreement weights for the weighted kappa (ordinal scales).
    #[arg(long, value_enum, default_value = "quadratic")]
    weights: WeightArg,
    /// The agreement the judge must reach.
    #[arg(long, default_value_t = 0.85)]
    target: f64,
    #[command(flatten)]
    db: super::gateway::DbArgs,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn calibrate(args: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &Path| -> anyhow::Result<Vec<Label>> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        calibrate::read_labels(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let human = read(&args.labels)?;
    let judge_labels = if Path::new(&args.judge).is_file() {
        read(Path::new(&args.judge))?
    } else {
        let store = args.db.eval_store()?;
        let (info, _) = store
            .run(&args.judge)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| {
                anyhow::anyhow!("--judge `{}` is neither a file nor an eval run", args.judge)
            })?;
        let mut out = Vec::new();
        for r in store
            .results(&info.id, false, usize::MAX >> 1)
            .map_err(anyhow::Error::msg)?
        {
            for (criterion, score) in r.judge_scores() {
                for id in [Some(r.id.clone()), r.trace_id.clone()]
                    .into_iter()
                    .flatten()
                {
                    out.push(Label {
                        id,
                        criterion: criterion.clone(),
                        score,
                        rater: Some("judge".into()),
                        category: Some(r.category.clone()),
                    });
                }
            }
        }
        if out.is_empty() {
            anyhow::bail!(
                "run {} has no judge scores (does its suite assert `judge`?)",
                info.id
            );
        }
        out
    };
    let weights = match args.weights {
        WeightArg::None => Weights::None,
        WeightArg::Linear => Weights::Linear,
        WeightArg::Quadratic => Weights::Quadratic,
    };
    let c = calibrate::calibrate(&human, &judge_labels, weights, args.target)
        .map_err(anyhow::Error::msg)?;
    let fmt_k = |k: Option<f64>| k.map_or("—".to_string(), |k| format!("{k:.3}"));
    println!(
        "{:<16} {:>6} {:>9} {:>8} {:>7} {:>9}",
        "slice", "pairs", "agreement", "within 1", "kappa", "weighted"
    );
    let row = |name: &str, a: &calibrate::Agreement| {
        println!(
            "{:<16} {:>6} {:>8.1}% {:>7.1}% {:>7} {:>9}",
            run::clip(name, 16),
            a.pairs,
            a.agreement * 100.0,
            a.within_one * 100.0,
            fmt_k(a.kappa),
            fmt_k(a.weighted_kappa)
        );
    };
    row("all", &c.overall);
    for (k, a) in &c.by_criterion {
        row(&format!("criterion {k}"), a);
    }
    for (k, a) in &c.by_category {
        row(&format!("category {k}"), a);
    }
    println!(
        "\nconfusion (rows: people, columns: judge), scores {:?}:",
        c.overall.labels
    );
    for (label, row) in c.overall.labels.iter().zip(&c.overall.confusion) {
        println!(
            "  {label:>3} | {}",
            row.iter().map(|n| format!("{n:>5}")).collect::<String>()
        );
    }
    if c.unmatched > 0 {
        println!(
            "\n{} human label(s) had no judge score for the same id and criterion",
            c.unmatched
        );
    }
    println!(
        "\nagreement {:.1}% against a target of {:.0}%: {}",
        c.overall.agreement * 100.0,
        c.target * 100.0,
        if c.meets_target {
            "the judge can be trusted on this rubric"
        } else {
            "NOT met: fix the rubric or the judge prompt before gating on it"
        }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&c)?)?;
    }
    Ok(if c.meets_target {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
