//! `grounding`: for an answer to a request that carried context (system or tool messages),
//! the numbers, names and quoted phrases in the answer that appear nowhere in that context
//! nor in the question are flagged as possibly made up (`UNGROUNDED_NUMBER`,
//! `UNGROUNDED_NAME`, `UNGROUNDED_QUOTE`). A number matches whatever its formatting ("1,299"
//! and "1299"); a name matches case-insensitively.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::{CharIndex, Finding};

static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d[\d,.]*\d|\d").unwrap_or_else(|e| unreachable!("{e}")));
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\p{Lu}[\p{Ll}\p{Lu}'’\-]*\p{Ll}(?:\s+\p{Lu}[\p{Ll}\p{Lu}'’\-]*\p{Ll})*")
        .unwrap_or_else(|e| unreachable!("{e}"))
});
static QUOTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""([^"\n]{12,200})"|“([^”\n]{12,200})”"#).unwrap_or_else(|e| unreachable!("{e}"))
});

fn digits(s: &str) -> String {
    let s = s.trim_end_matches(['.', ',']);
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Words capitalized for other reasons than being names (sentence starts, everyday nouns):
/// the list the `PERSON` recognizer uses, less days and months.
fn common(word: &str) -> bool {
    // Days and months are facts in an answer ("ships on 12 May"): they are checked.
    crate::pii::not_a_name(word) && !crate::pii::day_or_month(word)
}

/// Possibly made-up facts in `answer`, given the `context` it should rest on.
pub fn scan(context: &str, answer: &str) -> Vec<Finding> {
    let lower_context = context.to_lowercase();
    let numbers: HashSet<String> = NUMBER
        .find_iter(context)
        .map(|m| digits(m.as_str()))
        .collect();
    let index = CharIndex::new(answer);
    let mut out = Vec::new();
    let mut push = |entity: &str, start: usize, end: usize, score: f64| {
        out.push(Finding::new(
            entity,
            index.char_at(start),
            index.char_at(end),
            score,
        ));
    };
    for m in NUMBER.find_iter(answer) {
        let d = digits(m.as_str());
        // Single digits ("1 day", list numbering) say little.
        if d.len() > 1 && !numbers.contains(&d) {
            push("UNGROUNDED_NUMBER", m.start(), m.end(), 0.7);
        }
    }
    for m in NAME.find_iter(answer) {
        // Leading words capitalized for other reasons ("However Berlin") are not the name.
        let mut start = m.start();
        for word in m.as_str().split_whitespace() {
            if !common(word) {
                break;
            }
            start =
                m.start() + m.as_str()[start - m.start()..].find(word).unwrap_or(0) + word.len();
            start += answer[start..m.end()].len() - answer[start..m.end()].trim_start().len();
        }
        let name = &answer[start..m.end()];
        if !name.is_empty() && !lower_context.contains(&name.to_lowercase()) {
            push("UNGROUNDED_NAME", start, m.end(), 0.5);
        }
    }
    for c in QUOTE.captures_iter(answer) {
        let Some(m) = c.get(1).or_else(|| c.get(2)) else {
            continue;
        };
        if !lower_context.contains(&m.as_str().to_lowercase()) {
            push("UNGROUNDED_QUOTE", m.start(), m.end(), 0.8);
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_numbers_names_and_quotes_are_flagged() {
        let context =
            "Order 48213 ships from Rotterdam on 12 March. Price: $1,299. Contact: Ana Lima.";
        let answer = "Your order 48213 costs $1299 and ships from Rotterdam; Ana Lima said \"it will arrive in two days\". It costs 15% less at Berlin.";
        let found = scan(context, answer);
        let what: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.entity.as_str(), &answer[f.start..f.end]))
            .collect();
        assert!(what.contains(&("UNGROUNDED_NUMBER", "15")), "{what:?}");
        assert!(what.contains(&("UNGROUNDED_NAME", "Berlin")), "{what:?}");
        assert!(
            what.contains(&("UNGROUNDED_QUOTE", "it will arrive in two days")),
            "{what:?}"
        );
        assert!(
            !what
                .iter()
                .any(|(_, s)| *s == "48213" || *s == "1299" || *s == "Rotterdam"),
            "{what:?}"
        );
    }
}
