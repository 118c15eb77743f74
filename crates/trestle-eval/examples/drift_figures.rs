//! Trestle's drift figures for windows given as JSON on stdin, for comparison with Evidently
//! (bench/drift-evidently/compare.py):
//!
//! ```text
//! {"numbers": [{"name": "...", "reference": [..], "current": [..]}],
//!  "texts":   [{"name": "...", "reference": ["..."], "current": ["..."]}]}
//! ```
//!
//! prints `{"numbers": [{"name", "psi", "wasserstein_normed", "psi_drifted",
//! "wasserstein_drifted"}], "texts": [{"name", "auc", "random_p95"}]}` (the verdicts are the
//! drift report's: threshold 0.1 and the permutation check).

use std::io::Read;

use serde_json::{Value, json};
use trestle_eval::drift;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let v: Value = serde_json::from_str(&input)?;
    let floats = |x: &Value| -> Vec<f64> {
        x.as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let strings = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut numbers = Vec::new();
    for pair in v["numbers"].as_array().into_iter().flatten() {
        let (r, c) = (floats(&pair["reference"]), floats(&pair["current"]));
        // The report's verdicts: the threshold (0.1) and the permutation check.
        let verdict = |stat: fn(&[f64], &[f64]) -> Option<f64>| {
            drift::distance("x", "x", "x", (&r, &c), stat, 0.1, 30, String::new()).drifted()
        };
        numbers.push(json!({
            "name": pair["name"],
            "psi": drift::psi(&r, &c),
            "wasserstein_normed": drift::wasserstein_normed(&r, &c),
            "psi_drifted": verdict(drift::psi),
            "wasserstein_drifted": verdict(drift::wasserstein_normed),
        }));
    }
    let mut texts = Vec::new();
    for pair in v["texts"].as_array().into_iter().flatten() {
        let (r, c) = (strings(&pair["reference"]), strings(&pair["current"]));
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let dc = drift::domain_classifier_texts(&r, &c, 42);
        texts.push(json!({
            "name": pair["name"],
            "auc": dc.as_ref().map(|d| d.auc),
            "random_p95": dc.as_ref().map(|d| d.random_p95),
        }));
    }
    println!("{}", json!({"numbers": numbers, "texts": texts}));
    Ok(())
}
