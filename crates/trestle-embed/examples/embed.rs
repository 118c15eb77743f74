//! Embeds each line of standard input and prints the vectors as one JSON array of arrays, for
//! comparing against a reference implementation (`bench/mpnet_reference.py`).
//! `cargo run -p trestle-embed --example embed -- MODEL_DIR < sentences.txt`

use std::io::Read;
use std::path::PathBuf;

use trestle_embed::SentenceEncoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: embed MODEL_DIR < sentences.txt")?;
    let model = SentenceEncoder::load(&dir)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let texts: Vec<&str> = input.lines().collect();
    // One at a time, as the cache embeds a query; the reference does the same.
    let mut vectors = Vec::with_capacity(texts.len());
    for text in &texts {
        vectors.extend(model.embed(&[text])?);
    }
    println!("{}", serde_json::to_string(&vectors)?);
    eprintln!("{}: {} texts", model.describe(), texts.len());
    Ok(())
}
