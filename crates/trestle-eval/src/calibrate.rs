//! Judge calibration: the judge's scores set against people's on the same answers.
//! Agreement, Cohen's kappa (plain, and weighted for ordinal scales) and a confusion matrix,
//! overall, per criterion and per category, and whether agreement reaches the target.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::stats::{Weights, agreement, confusion, kappa};

/// One rating: who scored which answer on which criterion. `id` is a case id or a trace id
/// (`case_id` and `trace_id` are accepted too), so labels from any review tool can come in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    #[serde(alias = "case_id", alias = "trace_id")]
    pub id: String,
    pub criterion: String,
    pub score: f64,
    #[serde(default)]
    pub rater: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

/// Reads labels from JSON Lines; errors name the line.
pub fn read_labels(text: &str) -> Result<Vec<Label>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        let label: Label = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            format!("line {}: field `{path}`: {}", i + 1, e.into_inner())
        })?;
        out.push(label);
    }
    Ok(out)
}

/// Figures for one slice of the pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub pairs: usize,
    /// Share of pairs with the same score.
    pub agreement: f64,
    /// Share within one point (for ordinal scales).
    pub within_one: f64,
    pub kappa: Option<f64>,
    pub weighted_kappa: Option<f64>,
    pub labels: Vec<i64>,
    /// Rows: people's scores; columns: the judge's.
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub target: f64,
    pub weights: Weights,
    pub overall: Agreement,
    pub meets_target: bool,
    pub by_criterion: BTreeMap<String, Agreement>,
    pub by_category: BTreeMap<String, Agreement>,
    /// Human labels with no judge score for the same id and criterion.
    pub unmatched: usize,
}

/// Pairs each human label with the judge's score for the same id and criterion.
pub fn calibrate(
    human: &[Label],
    judge: &[Label],
    weights: Weights,
    target: f64,
) -> Result<Calibration, String> {
    let by_key: HashMap<(&str, &str), &Label> = judge
        .iter()
        .map(|l| ((l.id.as_str(), l.criterion.as_str()), l))
        .collect();
    let mut all: Vec<(i64, i64)> = Vec::new();
    let mut crit: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut cat: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut unmatched = 0;
    for h in human {
        let Some(j) = by_key.get(&(h.id.as_str(), h.criterion.as_str())) else {
            unmatched += 1;
            continue;
        };
        let pair = (h.score.round() as i64, j.score.round() as i64);
        all.push(pair);
        crit.entry(h.criterion.clone()).or_default().push(pair);
        if let Some(c) = h.category.as_ref().or(j.category.as_ref()) {
            cat.entry(c.clone()).or_default().push(pair);
        }
    }
    if all.is_empty() {
        return Err(format!(
            "no human label matches a judge score ({} human labels, {} judge scores): ids and criteria must be the same",
            human.len(),
            judge.len()
        ));
    }
    let figures = |pairs: &[(i64, i64)]| {
        let (a, b): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        let (labels, confusion) = confusion(&a, &b);
        Agreement {
            pairs: pairs.len(),
            agreement: agreement(&a, &b),
            within_one: pairs.iter().filter(|(x, y)| x.abs_diff(*y) <= 1).count() as f64
                / pairs.len() as f64,
            kappa: kappa(&a, &b, Weights::None),
            weighted_kappa: kappa(&a, &b, weights),
            labels,
            confusion,
        }
    };
    let overall = figures(&all);
    Ok(Calibration {
        target,
        weights,
        meets_target: overall.agreement + 1e-12 >= target,
        overall,
        by_criterion: crit.iter().map(|(k, v)| (k.clone(), figures(v))).collect(),
        by_category: cat.iter().map(|(k, v)| (k.clone(), figures(v))).collect(),
        unmatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(id: usize, criterion: &str, score: f64) -> Label {
        Label {
            id: format!("c{id}"),
            criterion: criterion.into(),
            score,
            rater: None,
            category: None,
        }
    }

    #[test]
    fn pairs_by_id_and_criterion() {
        let human = vec![
            label(1, "accuracy", 5.0),
            label(2, "accuracy", 2.0),
            label(3, "tone", 4.0),
            label(9, "tone", 1.0),
        ];
        let judge = vec![
            label(1, "accuracy", 5.0),
            label(2, "accuracy", 3.0),
            label(3, "tone", 4.0),
        ];
        let c = calibrate(&human, &judge, Weights::Quadratic, 0.85).unwrap();
        assert_eq!(c.overall.pairs, 3);
        assert_eq!(c.unmatched, 1);
        assert!((c.overall.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.overall.within_one, 1.0);
        assert!(!c.meets_target);
        assert_eq!(c.by_criterion["tone"].agreement, 1.0);
        assert!(calibrate(&human, &[label(7, "x", 1.0)], Weights::None, 0.85).is_err());
    }

    #[test]
    fn labels_from_any_tool() {
        let l = read_labels("{\"trace_id\": \"abc\", \"criterion\": \"accuracy\", \"score\": 4, \"rater\": \"ana\"}\n\n{\"case_id\": \"r-1\", \"criterion\": \"tone\", \"score\": 2.0}").unwrap();
        assert_eq!(l[0].id, "abc");
        assert_eq!(l[1].id, "r-1");
        let e =
            read_labels("{\"id\": \"a\", \"criterion\": \"x\", \"score\": \"high\"}").unwrap_err();
        assert!(e.contains("line 1") && e.contains("score"), "{e}");
    }
}
