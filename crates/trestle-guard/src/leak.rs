//! `system_prompt_leak`: an answer that quotes the system prompt. Counts the answer's word
//! 8-grams that also occur in the system prompt; a run of them is a quote, even when the
//! model reformats whitespace or case.

use std::collections::HashSet;

use crate::Finding;

/// Consecutive words that make a quote.
const N: usize = 8;

fn words(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, (b, c)) in text.char_indices().enumerate() {
        let _ = b;
        let w = c.is_alphanumeric();
        match (w, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i, String::new()));
                start = None;
            }
            _ => {}
        }
    }
    let n = text.chars().count();
    if let Some(s) = start {
        out.push((s, n, String::new()));
    }
    let chars: Vec<char> = text.chars().collect();
    for w in &mut out {
        w.2 = chars[w.0..w.1]
            .iter()
            .flat_map(|c| c.to_lowercase())
            .collect();
    }
    out
}

/// Spans of `answer` (entity `SYSTEM_PROMPT_LEAK`) that quote `system` for at least `N` words,
/// and the share of the system prompt's words they cover.
pub fn scan(system: &str, answer: &str) -> (Vec<Finding>, f64) {
    let sys = words(system);
    if sys.len() < N {
        return (Vec::new(), 0.0);
    }
    let grams: HashSet<Vec<&str>> = sys
        .windows(N)
        .map(|w| w.iter().map(|x| x.2.as_str()).collect())
        .collect();
    let ans = words(answer);
    let mut covered = vec![false; ans.len()];
    for (i, w) in ans.windows(N).enumerate() {
        let key: Vec<&str> = w.iter().map(|x| x.2.as_str()).collect();
        if grams.contains(&key) {
            covered[i..i + N].iter_mut().for_each(|c| *c = true);
        }
    }
    let mut findings = Vec::new();
    let mut i = 0;
    while i < covered.len() {
        if covered[i] {
            let s = i;
            while i < covered.len() && covered[i] {
                i += 1;
            }
            findings.push(Finding::new(
                "SYSTEM_PROMPT_LEAK",
                ans[s].0,
                ans[i - 1].1,
                1.0,
            ));
        } else {
            i += 1;
        }
    }
    let share = covered.iter().filter(|c| **c).count() as f64 / sys.len() as f64;
    (findings, share.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_is_found_and_a_paraphrase_is_not() {
        let system = "You are the support agent for Acme. Never offer refunds above 50 dollars without a manager. Keep answers short.";
        let leak =
            "Sure! My instructions say: never offer REFUNDS above 50 dollars without a manager.";
        let (found, share) = scan(system, leak);
        assert_eq!(found.len(), 1);
        assert!(share > 0.3, "{share}");
        let fine = "I can help with refunds; larger ones need a manager's approval.";
        assert!(scan(system, fine).0.is_empty());
    }
}
