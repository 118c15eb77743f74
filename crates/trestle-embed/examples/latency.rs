//! Prints load time and embedding latency (one short query, a batch of 32).
//! `TRESTLE_MINILM_DIR=… cargo run --release --example latency`

use std::time::{Duration, Instant};

use trestle_embed::{MiniLm, find_model_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = find_model_dir(None).ok_or("set TRESTLE_MINILM_DIR to the model folder")?;
    let start = Instant::now();
    let model = MiniLm::load(&dir)?;
    println!("load: {:.0} ms ({})", ms(start.elapsed()), dir.display());

    let query = ["How do I reset my password?"];
    let sentences: Vec<String> = (0..32)
        .map(|i| {
            format!("Customer question {i}: how can I change the email address on my account?")
        })
        .collect();
    let batch: Vec<&str> = sentences.iter().map(String::as_str).collect();
    model.embed(&query)?; // warm-up

    for (name, texts, runs) in [
        ("1 short query", &query[..], 50),
        ("batch of 32", &batch[..], 10),
    ] {
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            model.embed(texts)?;
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "{name}: median {:.2} ms, min {:.2} ms over {runs} runs",
            ms(times[runs / 2]),
            ms(times[0])
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
