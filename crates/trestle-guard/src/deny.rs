//! `deny_terms`: words or phrases that must not appear (competitor names, internal code
//! names), matched case- and accent-insensitively on word boundaries: "Müller" is denied as
//! "muller" and "MULLER", "ACME" does not match inside "acmeology".

use unicode_normalization::UnicodeNormalization;

use crate::Finding;

/// A compiled list of denied terms.
#[derive(Debug, Clone)]
pub struct DenyTerms {
    /// Each term folded, as words.
    terms: Vec<(String, Vec<String>)>,
}

/// Lower case without diacritics: "Crème Brûlée" → "creme brulee".
pub fn fold(text: &str) -> String {
    text.nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

impl DenyTerms {
    pub fn new(terms: &[String]) -> Self {
        DenyTerms {
            terms: terms
                .iter()
                .map(|t| {
                    (
                        t.clone(),
                        fold(t).split_whitespace().map(str::to_string).collect(),
                    )
                })
                .filter(|(_, words): &(String, Vec<String>)| !words.is_empty())
                .collect(),
        }
    }

    /// Every occurrence of a denied term, as `DENIED_TERM` findings (character offsets).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        // Words of the text with their character spans, folded one by one so offsets stay
        // those of the original text.
        let mut words: Vec<(usize, usize, String)> = Vec::new();
        let mut start = None;
        let chars: Vec<char> = text.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            let word_char = c.is_alphanumeric() || *c == '\'' || *c == '’';
            match (word_char, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    words.push((s, i, fold(&chars[s..i].iter().collect::<String>())));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            words.push((s, chars.len(), fold(&chars[s..].iter().collect::<String>())));
        }
        let mut out = Vec::new();
        for (_, term) in &self.terms {
            let n = term.len();
            for (i, window) in words.windows(n).enumerate() {
                if window.iter().zip(term).all(|(w, t)| w.2 == *t) {
                    out.push(Finding::new(
                        "DENIED_TERM",
                        words[i].0,
                        words[i + n - 1].1,
                        1.0,
                    ));
                }
            }
        }
        out.sort_by_key(|f| f.start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_accent_and_word_bounded() {
        let deny = DenyTerms::new(&["Müller Shop".into(), "acme".into()]);
        let text = "Try MULLER shop or ACME, not acmeology. Also müller  SHOP!";
        let found = deny.find(text);
        let spans: Vec<String> = found
            .iter()
            .map(|f| text.chars().skip(f.start).take(f.end - f.start).collect())
            .collect();
        assert_eq!(spans, ["MULLER shop", "ACME", "müller  SHOP"]);
    }
}
