//! Measuring a detector on a labelled set (`data/pii-eval/texts.jsonl`): precision, recall and
//! F2 per entity and overall. A prediction matches a labelled span of the same entity when
//! they overlap; each labelled span matches at most one prediction. F2 weighs recall twice
//! as much as precision: a missed card number costs more than a redacted order number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Finding;

/// One labelled row.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub id: String,
    pub text: String,
    pub entities: Vec<Span>,
    #[serde(default)]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    pub entity: String,
    pub start: usize,
    pub end: usize,
}

/// Counts for one entity.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    /// True positives whose span is exactly the labelled one.
    pub exact: u64,
}

/// Precision, recall and F2 of a count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f2: f64,
    pub support: u64,
}

impl Counts {
    pub fn scores(&self) -> Scores {
        let tp = self.true_positives as f64;
        let p = ratio(tp, tp + self.false_positives as f64);
        let r = ratio(tp, tp + self.false_negatives as f64);
        Scores {
            precision: p,
            recall: r,
            f2: ratio(5.0 * p * r, 4.0 * p + r),
            support: self.true_positives + self.false_negatives,
        }
    }

    fn add(&mut self, other: &Counts) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
        self.exact += other.exact;
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Parses a JSON Lines set; an error names the line.
pub fn parse_set(text: &str) -> Result<Vec<Row>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Compares predictions with labels, per entity; only `entities` are scored.
pub fn score(
    rows: &[Row],
    entities: &[&str],
    mut detect: impl FnMut(&str) -> Vec<Finding>,
) -> BTreeMap<String, Counts> {
    let mut by_entity: BTreeMap<String, Counts> = entities
        .iter()
        .map(|e| (e.to_string(), Counts::default()))
        .collect();
    for row in rows {
        let predicted: Vec<Finding> = detect(&row.text)
            .into_iter()
            .filter(|f| entities.contains(&f.entity.as_str()))
            .collect();
        let mut used = vec![false; predicted.len()];
        for gold in row
            .entities
            .iter()
            .filter(|g| entities.contains(&g.entity.as_str()))
        {
            let c = by_entity.entry(gold.entity.clone()).or_default();
            let found = predicted.iter().enumerate().find(|(i, p)| {
                !used[*i] && p.entity == gold.entity && p.start < gold.end && gold.start < p.end
            });
            match found {
                Some((i, p)) => {
                    used[i] = true;
                    c.true_positives += 1;
                    if p.start == gold.start && p.end == gold.end {
                        c.exact += 1;
                    }
                }
                None => c.false_negatives += 1,
            }
        }
        for (p, _) in predicted.iter().zip(&used).filter(|(_, u)| !**u) {
            by_entity
                .entry(p.entity.clone())
                .or_default()
                .false_positives += 1;
        }
    }
    by_entity
}

/// The counts of every entity together.
pub fn overall(by_entity: &BTreeMap<String, Counts>) -> Counts {
    let mut all = Counts::default();
    for c in by_entity.values() {
        all.add(c);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_matching_and_f2() {
        let rows = parse_set(
            r#"{"id":"1","text":"mail a@b.co or call 555","entities":[{"entity":"EMAIL_ADDRESS","start":5,"end":11},{"entity":"PHONE_NUMBER","start":20,"end":23}]}"#,
        )
        .unwrap_or_default();
        let counts = score(&rows, &["EMAIL_ADDRESS", "PHONE_NUMBER"], |_| {
            vec![
                Finding::new("EMAIL_ADDRESS", 5, 11, 1.0),
                Finding::new("EMAIL_ADDRESS", 0, 4, 1.0),
            ]
        });
        let email = counts["EMAIL_ADDRESS"];
        assert_eq!(
            (email.true_positives, email.false_positives, email.exact),
            (1, 1, 1)
        );
        assert_eq!(counts["PHONE_NUMBER"].false_negatives, 1);
        let s = overall(&counts).scores();
        assert!((s.precision - 0.5).abs() < 1e-9 && (s.recall - 0.5).abs() < 1e-9);
        assert!((s.f2 - 0.5).abs() < 1e-9);
        assert!(parse_set("{not json}").unwrap_err().starts_with("line 1"));
    }
}
