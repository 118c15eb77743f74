//! `trestle`: the command line — serve the gateway, run the mock upstream, check a config,
//! read a trace.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, not the system allocator: a request's blocks are often freed on another
/// thread than the one that made them (a trace on the writer thread, a body on the other
/// worker). glibc's allocator took the owning arena's lock for each such free, and the
/// trace writer slept on it hundreds of times a second at saturation; mimalloc hands the
/// block back to its page without a lock. The gateway spent 14% less CPU per request with
/// tracing on and 22% less with it off, for 1.3 MiB more idle memory. Version 2 without
/// transparent huge pages (`features = ["v2", "no_thp"]`): v3 with them idled at 34 MiB,
/// this one at 19.4–20.7 (BENCHMARKS.md, "Sixth session"; docs/architecture.md, "The hot
/// path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trestle",
    version,
    about = "The production layer between an application and its language models."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no config: the built-in placeholder model under route `default`).
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8787, or server.listen from the config).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the placeholder model as a standalone OpenAI-compatible server with injected faults.
    Mock(cmd::mock::MockArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make a running gateway re-read its config (as SIGHUP does); a bad config is rejected
    /// and the old one keeps serving.
    Reload {
        /// The gateway to ask.
        #[arg(long, default_value = "http://127.0.0.1:8787", env = "TRESTLE_URL")]
        url: String,
    },
    /// Cache tools.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Guardrail tools.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
    /// Golden datasets: validate, import (versioned), list, show, diff, mine from traces.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Evals: run a suite and gate on it, list and show runs, calibrate a judge.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Prompts as code: list, show, diff, render, promote.
    Prompt {
        #[command(subcommand)]
        command: cmd::prompt::PromptCommand,
    },
    /// Experiments: the Bayesian readout, shipping a winner.
    Experiment {
        #[command(subcommand)]
        command: cmd::experiment::ExperimentCommand,
    },
    /// Client keys: create, list, revoke, rotate (docs/configuration.md, "Keys and tenants").
    Keys {
        #[command(subcommand)]
        command: cmd::keys::KeysCommand,
    },
    /// Drift: compare recent traffic with a reference window.
    Drift {
        #[command(subcommand)]
        command: cmd::drift::DriftCommand,
    },
    /// Bring the trace store `[store]` names up to date (tables, indexes) and exit.
    Migrate(cmd::migrate::MigrateArgs),
    /// Read traces.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; report every problem with its line and key.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Measure the semantic cache on a labelled paraphrase set: hit rate, false-hit rate and
    /// precision per threshold, and a threshold per target false-hit rate.
    Eval(cmd::cache::EvalArgs),
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Measure a `pii` guardrail on a labelled set: precision, recall and F2 per entity, and
    /// the time per 1 KB of text.
    Eval(cmd::guard::EvalArgs),
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Check a JSON Lines file: every problem with its line and field, the category
    /// balance, duplicates and near-duplicates.
    Validate(cmd::dataset::ValidateArgs),
    /// Validate, scrub PII (with the config's `pii` guardrail), and store as an immutable,
    /// content-addressed version.
    Import(cmd::dataset::ImportArgs),
    /// The stored datasets and their versions.
    List(cmd::dataset::ListArgs),
    /// One version: its balance of categories (or its cases with --cases).
    Show(cmd::dataset::ShowArgs),
    /// Cases added, removed and changed between two versions or files.
    Diff(cmd::dataset::DiffArgs),
    /// Candidate cases from production traces: negative feedback and corrections, guardrail
    /// findings, fallback answers, errors, low confidence, failed online evals.
    Mine(cmd::dataset::MineArgs),
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Run a suite through the gateway, score it, compare with the baseline and gate:
    /// exit 0 when every gate holds, 1 when one fails, 2 when the run itself failed.
    Run(cmd::eval::RunArgs),
    /// Stored runs, newest first.
    List(cmd::eval::ListArgs),
    /// One stored run: its table, gates and failing cases.
    Show(cmd::eval::ShowArgs),
    /// Compare a judge's scores with human labels: agreement, Cohen's kappa, confusion.
    Calibrate(cmd::eval::CalibrateArgs),
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Print a trace as a waterfall.
    Show {
        /// The trace id (x-trestle-trace-id).
        id: String,
        /// The gateway to ask.
        #[arg(long, default_value = "http://127.0.0.1:8787", env = "TRESTLE_URL")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    trestle_gateway::providers::install_tls();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRESTLE_LOG").unwrap_or_else(|_| {
        // Evals and dataset tools start a gateway in process; its lifecycle logs would
        // drown their own output.
        let quiet = matches!(cli.command, Command::Eval { .. } | Command::Dataset { .. });
        tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
    });
    // Logs go to stderr: what a command prints on stdout (a new key, a report) stays clean
    // for scripts.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => cmd::config_check(&file),
        Command::Guard {
            command: GuardCommand::Eval(args),
        } => cmd::guard::eval(args),
        Command::Dataset {
            command: DatasetCommand::List(args),
        } => cmd::dataset::list(args),
        Command::Dataset {
            command: DatasetCommand::Show(args),
        } => cmd::dataset::show(args),
        Command::Dataset {
            command: DatasetCommand::Diff(args),
        } => cmd::dataset::diff(args),
        Command::Dataset {
            command: DatasetCommand::Mine(args),
        } => cmd::dataset::mine_cmd(args),
        Command::Prompt { command } => cmd::prompt::run(command),
        Command::Keys { command } => cmd::keys::run(command),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Eval {
            command: EvalCommand::List(args),
        } => cmd::eval::list(args),
        Command::Eval {
            command: EvalCommand::Show(args),
        } => cmd::eval::show(args),
        Command::Eval {
            command: EvalCommand::Calibrate(args),
        } => cmd::eval::calibrate(args),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                match command {
                    Command::Serve { config, listen } => cmd::serve(config, listen).await,
                    Command::Mock(args) => cmd::mock::run(args).await,
                    Command::Reload { url } => cmd::reload(&url).await,
                    Command::Cache {
                        command: CacheCommand::Eval(args),
                    } => cmd::cache::eval(args).await,
                    Command::Trace {
                        command: TraceCommand::Show { id, url },
                    } => cmd::trace_show(&url, &id).await,
                    Command::Dataset {
                        command: DatasetCommand::Validate(args),
                    } => cmd::dataset::validate(args).await,
                    Command::Dataset {
                        command: DatasetCommand::Import(args),
                    } => cmd::dataset::import(args).await,
                    Command::Eval {
                        command: EvalCommand::Run(args),
                    } => cmd::eval::run(args).await,
                    Command::Experiment { command } => cmd::experiment::run(command).await,
                    Command::Drift { command } => cmd::drift::run(command).await,
                    Command::Config { .. }
                    | Command::Prompt { .. }
                    | Command::Guard { .. }
                    | Command::Dataset { .. }
                    | Command::Eval { .. }
                    | Command::Keys { .. }
                    | Command::Migrate(_) => Ok(ExitCode::SUCCESS),
                }
            }),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
