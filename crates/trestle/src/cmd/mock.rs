//! `trestle mock`: flags for the placeholder upstream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use trestle_core::config::{Dist, DistSpec, PlaceholderConfig, TextMode};
use trestle_gateway::mock::{Fault, MockOptions};
use trestle_gateway::server;

#[derive(Args)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:9101")]
    listen: String,
    /// What the model writes: echo, lorem, fixed (--text), file (--file).
    #[arg(long, default_value = "echo")]
    mode: TextMode,
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, default_value_t = 48)]
    lorem_words: u32,
    /// Median time to first token, ms.
    #[arg(long, default_value_t = 0.0)]
    ttft_ms: f64,
    /// Spread of the time to first token (log-normal sigma); 0 = fixed.
    #[arg(long, default_value_t = 0.0)]
    ttft_sigma: f64,
    /// Streaming speed; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    tokens_per_sec: f64,
    /// Share of requests that get a fault (0..1).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Faults to draw from, comma-separated: 500, 429 (with Retry-After), 429-bare (without),
    /// 503 (with Retry-After), hang, slow, slow-ttft (first token after --slow-ttft-ms),
    /// stall (half the answer, then silence), malformed, disconnect (mid-answer), reset
    /// (TCP reset before any answer).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,429,hang,slow,malformed,disconnect"
    )]
    faults: Vec<Fault>,
    /// Retry-After seconds sent with 429 and 503.
    #[arg(long, visible_alias = "retry-after-s", default_value_t = 1.0)]
    retry_after: f64,
    /// Time to first token of the `slow-ttft` fault, ms.
    #[arg(long, default_value_t = 3000.0)]
    slow_ttft_ms: f64,
    /// Tokens per second of the `slow` fault.
    #[arg(long, default_value_t = 5.0)]
    slow_tokens_per_sec: f64,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long, env = "TRESTLE_MOCK_KEY")]
    api_key: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The `system_fingerprint` answers carry ("" for none); `POST /mock/fingerprint`
    /// changes it while running.
    #[arg(long, default_value = "fp_mock_1")]
    system_fingerprint: String,
}

pub async fn run(args: MockArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        anyhow::bail!("--fault-rate must be between 0 and 1");
    }
    let ttft_ms = if args.ttft_sigma > 0.0 && args.ttft_ms > 0.0 {
        Dist::Spec(DistSpec::Lognormal {
            median: args.ttft_ms,
            sigma: args.ttft_sigma,
        })
    } else {
        Dist::Fixed(args.ttft_ms.max(0.0))
    };
    let options = MockOptions {
        model: PlaceholderConfig {
            mode: args.mode,
            text: args.text,
            file: args.file,
            lorem_words: args.lorem_words,
            ttft_ms,
            tokens_per_sec: Dist::Fixed(args.tokens_per_sec.max(0.0)),
            seed: args.seed,
        },
        fault_rate: args.fault_rate,
        faults: args.faults,
        retry_after_secs: args.retry_after,
        slow_tokens_per_sec: args.slow_tokens_per_sec,
        slow_ttft_ms: args.slow_ttft_ms,
        api_key: args.api_key,
        system_fingerprint: args.system_fingerprint,
    };
    let listener = server::bind(&args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, fault_rate = options.fault_rate, "trestle mock is serving");
    let app = trestle_gateway::mock::router(options)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        on_signal.cancel();
    });
    let options = server::ConnOptions {
        header_read_timeout: std::time::Duration::from_secs(30),
        killable: true,
        admin: false,
    };
    server::serve_router(listener, app, options, stop).await;
    Ok(ExitCode::SUCCESS)
}
