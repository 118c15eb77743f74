//! `trestle`: the command line — serve the gateway, run the mock upstream, check a config,
//! read a trace.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRESTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => cmd::config_check(&file),
        Command::Guard {
            command: GuardCommand::Eval(args),
        } => cmd::guard::eval(args),
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
                    Command::Config { .. } | Command::Guard { .. } => Ok(ExitCode::SUCCESS),
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
