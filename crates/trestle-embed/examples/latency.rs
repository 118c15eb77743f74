//! Prints load time and embedding latency (one short query, p50 and p99; a batch of 32).
//! `cargo run --release -p trestle-embed --example latency [MODEL_DIR]`
//! (default: `$TRESTLE_MINILM_DIR`; an all-mpnet-base-v2 folder works the same way).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use trestle_embed::{SentenceEncoder, find_model_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let explicit = std::env::args_os().nth(1).map(PathBuf::from);
    let dir = find_model_dir(explicit.as_deref())
        .ok_or("pass a model folder or set TRESTLE_MINILM_DIR")?;
    let start = Instant::now();
    let model = SentenceEncoder::load(&dir)?;
    println!(
        "load: {:.0} ms ({}: {})",
        ms(start.elapsed()),
        model.describe(),
        dir.display()
    );

    let query = ["How do I reset my password?"];
    let sentences: Vec<String> = (0..32)
        .map(|i| {
            format!("Customer question {i}: how can I change the email address on my account?")
        })
        .collect();
    let batch: Vec<&str> = sentences.iter().map(String::as_str).collect();
    model.embed(&query)?; // warm-up

    for (name, texts, runs) in [
        ("1 short query", &query[..], 100),
        ("batch of 32", &batch[..], 10),
    ] {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            model.embed(texts)?;
            times.push(start.elapsed());
        }
        times.sort();
        let p99 = times[(runs * 99).div_ceil(100) - 1];
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, min {:.2} ms over {runs} runs",
            ms(times[runs / 2]),
            ms(p99),
            ms(times[0])
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
