//! Offsets and redaction. Detectors match on bytes (the `regex` crate's offsets); findings
//! are reported in characters, so a client in any language can slice the text with them.

use crate::Finding;

/// Maps byte offsets of one text to character offsets.
pub struct CharIndex<'a> {
    text: &'a str,
    ascii: bool,
}

impl<'a> CharIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        CharIndex {
            text,
            ascii: text.is_ascii(),
        }
    }

    /// The character offset of byte offset `byte` (a char boundary).
    pub fn char_at(&self, byte: usize) -> usize {
        if self.ascii {
            byte
        } else {
            self.text
                .get(..byte)
                .map_or_else(|| self.text.chars().count(), |s| s.chars().count())
        }
    }

    /// The byte offset of character offset `ch`.
    pub fn byte_at(&self, ch: usize) -> usize {
        if self.ascii {
            return ch.min(self.text.len());
        }
        self.text
            .char_indices()
            .nth(ch)
            .map_or(self.text.len(), |(b, _)| b)
    }
}

/// The text with every finding replaced by `<ENTITY>`. Overlapping findings merge into the
/// first one's placeholder.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    if findings.is_empty() {
        return text.to_string();
    }
    let index = CharIndex::new(text);
    let mut spans: Vec<(usize, usize, &str)> = findings
        .iter()
        .map(|f| {
            (
                index.byte_at(f.start),
                index.byte_at(f.end),
                f.entity.as_str(),
            )
        })
        .collect();
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, entity) in spans {
        if end <= at {
            continue;
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push('<');
            out.push_str(entity);
            out.push('>');
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_characters_and_redaction_uses_them() {
        let text = "Grüße an jürgen@example.de, bitte";
        let index = CharIndex::new(text);
        let byte = text.find("jürgen").unwrap();
        let ch = index.char_at(byte);
        assert_eq!(ch, 9);
        assert_eq!(index.byte_at(ch), byte);
        let f = Finding::new("EMAIL_ADDRESS", 9, 26, 1.0);
        assert_eq!(redact(text, &[f]), "Grüße an <EMAIL_ADDRESS>, bitte");
    }

    #[test]
    fn overlapping_findings_merge() {
        let text = "call 555-0100 now";
        let a = Finding::new("PHONE_NUMBER", 5, 13, 0.7);
        let b = Finding::new("US_SSN", 9, 13, 0.4);
        assert_eq!(redact(text, &[b, a]), "call <PHONE_NUMBER> now");
    }
}
