//! Quick look at the PII detector on the labelled set: `cargo run -p trestle-guard --example
//! pii_eval [FILE]` (the CLI's `trestle guard eval` is the full report).

use trestle_guard::eval;
use trestle_guard::pii::{Entity, Pii};

fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/pii-eval/texts.jsonl".into());
    let rows = eval::parse_set(&std::fs::read_to_string(&path).map_err(|e| e.to_string())?)?;
    let pii = Pii::new(&[], None).map_err(|e| e.to_string())?;
    let counts = eval::score(&rows, &Entity::NAMES, |t| pii.find(t));
    for (entity, c) in &counts {
        let s = c.scores();
        println!(
            "{entity:14} P {:.3} R {:.3} F2 {:.3}  (tp {} fp {} fn {} exact {})",
            s.precision,
            s.recall,
            s.f2,
            c.true_positives,
            c.false_positives,
            c.false_negatives,
            c.exact
        );
    }
    let s = eval::overall(&counts).scores();
    println!(
        "{:14} P {:.3} R {:.3} F2 {:.3}",
        "overall", s.precision, s.recall, s.f2
    );
    if std::env::var("SHOW").is_ok() {
        for row in &rows {
            let found = pii.find(&row.text);
            for f in &found {
                let gold = row
                    .entities
                    .iter()
                    .any(|g| g.entity == f.entity && g.start < f.end && f.start < g.end);
                if !gold {
                    let span: String = row
                        .text
                        .chars()
                        .skip(f.start)
                        .take(f.end - f.start)
                        .collect();
                    println!("FP {} {} {:?}", row.id, f.entity, span);
                }
            }
            for g in &row.entities {
                let hit = found
                    .iter()
                    .any(|f| g.entity == f.entity && g.start < f.end && f.start < g.end);
                if !hit {
                    let span: String = row
                        .text
                        .chars()
                        .skip(g.start)
                        .take(g.end - g.start)
                        .collect();
                    println!("FN {} {} {:?}", row.id, g.entity, span);
                }
            }
        }
    }
    Ok(())
}
