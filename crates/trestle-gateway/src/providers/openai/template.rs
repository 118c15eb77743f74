//! Chunk templates: an OpenAI-compatible stream's chunks repeat each other byte for byte
//! except for their text (`{"id":"…","object":"chat.completion.chunk",…,"delta":{"content":"TEXT"},…}`).
//! Once one chunk has been parsed, a later one with the same bytes around a different text is
//! that chunk with that text, and is known without being parsed again: two comparisons and a
//! scan of the text instead of a JSON parse. The pass-through relay uses this to check a
//! frame's shape (`relay.rs`), and the trace writer to assemble the answer
//! (`pipeline::assemble_frames`); see docs/architecture.md, "The hot path".

use std::borrow::Cow;

/// A JSON string, borrowed from the payload when it holds no escapes. serde borrows a
/// `Cow<str>` only when it is a field itself, never inside an `Option`: this one borrows
/// wherever it is, which is what a template is learned from (and an allocation less).
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// The text of a parsed chunk's only choice (`content` picks it out), when the parser
/// borrowed it from the payload: what a template is learned from.
pub(crate) fn only_text<'a, C>(
    choices: &[C],
    content: impl Fn(&C) -> Option<&Text<'a>>,
) -> Option<&'a str> {
    match choices {
        [one] => match content(one)? {
            Text(Cow::Borrowed(text)) => Some(text),
            Text(Cow::Owned(_)) => None,
        },
        _ => None,
    }
}

/// A parsed chunk's payload, with where its text's string begins and ends.
pub(crate) struct Template<B> {
    payload: B,
    /// The text's bytes, inside its quotes.
    start: usize,
    end: usize,
}

impl<B: AsRef<[u8]>> Template<B> {
    /// The template of `payload`, a chunk that parsed, whose text `text` was borrowed from it
    /// by the parser (so it is a string inside `payload` without escapes). `None` when `text`
    /// does not lie inside `payload` between quotes.
    pub fn learn(payload: B, text: &str) -> Option<Self> {
        let bytes = payload.as_ref();
        let base = bytes.as_ptr() as usize;
        let at = text.as_ptr() as usize;
        if at <= base || at + text.len() >= base + bytes.len() {
            return None;
        }
        let (start, end) = (at - base, at - base + text.len());
        (bytes[start - 1] == b'"' && bytes[end] == b'"').then_some(Template {
            payload,
            start,
            end,
        })
    }

    /// The template with its own copy of the payload's bytes: a template kept for a whole
    /// stream must not hold a slice of a read buffer, which would pin all of it.
    pub fn to_owned(&self) -> Template<bytes::Bytes> {
        Template {
            payload: bytes::Bytes::copy_from_slice(self.payload.as_ref()),
            start: self.start,
            end: self.end,
        }
    }

    /// The text of `payload` when it is this template's chunk with another text: the bytes
    /// before and after the text are the same, and the new text is a JSON string's contents
    /// that needs no unescaping (no quote, backslash or control character; valid UTF-8).
    /// Such a payload parses exactly as the template's chunk with that text would.
    pub fn text<'p>(&self, payload: &'p [u8]) -> Option<&'p str> {
        let bytes = self.payload.as_ref();
        let (head, tail) = (&bytes[..self.start], &bytes[self.end..]);
        if payload.len() < head.len() + tail.len()
            || !payload.starts_with(head)
            || !payload.ends_with(tail)
        {
            return None;
        }
        let text = &payload[head.len()..payload.len() - tail.len()];
        if text.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        content: Option<Text<'a>>,
    }

    fn learned(payload: &str) -> Option<Template<&[u8]>> {
        let parsed: Delta<'_> = serde_json::from_str(payload).unwrap();
        match parsed.content {
            Some(Text(Cow::Borrowed(text))) => Template::learn(payload.as_bytes(), text),
            _ => None,
        }
    }

    #[test]
    fn the_same_bytes_around_another_text_give_that_text() {
        let t = learned(r#"{"content":"Aute","x":1}"#).unwrap();
        assert_eq!(
            t.text(br#"{"content":"irure dolor","x":1}"#),
            Some("irure dolor")
        );
        assert_eq!(t.text(br#"{"content":"","x":1}"#), Some(""));
        assert_eq!(
            t.text("{\"content\":\"Grüße ✓\",\"x\":1}".as_bytes()),
            Some("Grüße ✓")
        );
    }

    #[test]
    fn anything_else_is_left_to_the_parser() {
        let t = learned(r#"{"content":"Aute","x":1}"#).unwrap();
        for other in [
            &br#"{"content":"Aute","x":2}"#[..],
            br#"{"content":"a","b":"c","x":1}"#,
            br#"{"content":"a\"b","x":1}"#,
            br#"{"content":"a\nb","x":1}"#,
            b"{\"content\":\"a\tb\",\"x\":1}",
            b"{\"content\":\"\xff\",\"x\":1}",
            br#"{"content":","x":1}"#,
            br#"{"content":"x":1}"#,
        ] {
            assert_eq!(t.text(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_text_with_escapes_or_from_elsewhere_teaches_nothing() {
        assert!(learned(r#"{"content":"a\"b"}"#).is_none());
        let payload = br#"{"content":"Aute"}"#;
        assert!(Template::learn(&payload[..], "Aute").is_none());
        assert!(
            Template::learn(&payload[..], std::str::from_utf8(&payload[1..8]).unwrap()).is_none()
        );
    }
}
