//! Pass-through streaming: an OpenAI-compatible upstream's SSE bytes relayed as they arrived,
//! for requests where no stage after inference reads the chunks.
//!
//! The events are split on bytes. A run of events already in the form the gateway sends
//! (`data: PAYLOAD\n\n`, the payload without surrounding whitespace) goes out as one slice of
//! the upstream's read, not copied. Other shapes (`\r\n` line endings, comments such as
//! `: ping`, `event:` lines, several `data:` lines, an event split across reads) are parsed
//! as the SSE spec says and sent in that form, exactly as the parsed relay sends them. Only
//! the chunks a stage reads are parsed into structs: the first (it commits the stream and
//! names the answer's id and model), any carrying usage (cost, budgets, and whether a
//! usage-only chunk is relayed), the first carrying a `system_fingerprint`, and anything that
//! is not plainly a chunk (an error, `[DONE]`, a payload that is not JSON).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use trestle_core::openai::ChatChunk;

use super::super::http;
use super::super::{Chunk, ProviderError};
use super::template::{Template, Text, only_text};

/// The relayed stream over the upstream's body bytes; it ends at `[DONE]`, at the end of the
/// body, or after the first error.
pub fn relay(
    bytes: BoxStream<'static, Result<Bytes, ProviderError>>,
) -> BoxStream<'static, Result<Chunk, ProviderError>> {
    Box::pin(Relay::new(bytes))
}

struct Relay {
    inner: BoxStream<'static, Result<Bytes, ProviderError>>,
    /// The start of an event whose end has not arrived yet.
    pending: BytesMut,
    /// Items ready to go out, in order.
    out: VecDeque<Result<Chunk, ProviderError>>,
    /// The first bytes were seen (a leading byte-order mark is skipped there).
    started: bool,
    /// The first chunk went out, parsed.
    first: bool,
    /// A chunk with a `system_fingerprint` was parsed.
    fingerprint: bool,
    /// `[DONE]`, an error, or the end of the body: nothing more is read.
    ended: bool,
    /// The bytes around the text of the last plain chunk whose text had no escapes (a copy):
    /// a chunk that repeats them with another text is plain without a parse (`template.rs`).
    template: Option<Template<Bytes>>,
}

impl Stream for Relay {
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.feed(bytes),
                Poll::Ready(Some(Err(e))) => {
                    this.out.push_back(Err(e));
                    this.ended = true;
                }
                // An event cut off by the end of the body is dropped, as the SSE spec says.
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a payload needs.
enum Kind {
    /// Relayed as it is.
    Plain,
    /// Parsed: a stage reads it, or it is not plainly a chunk.
    Parse,
}

impl Relay {
    fn new(inner: BoxStream<'static, Result<Bytes, ProviderError>>) -> Self {
        Relay {
            inner,
            pending: BytesMut::new(),
            out: VecDeque::new(),
            started: false,
            first: false,
            fingerprint: false,
            ended: false,
            template: None,
        }
    }

    /// Takes one read of the body: every whole event in it becomes output.
    fn feed(&mut self, bytes: Bytes) {
        let data = if self.pending.is_empty() {
            bytes
        } else {
            self.pending.extend_from_slice(&bytes);
            self.pending.split().freeze()
        };
        let mut pos = 0;
        if !self.started && !data.is_empty() {
            self.started = true;
            if data.starts_with("\u{feff}".as_bytes()) {
                pos = 3;
            }
        }
        // The run of plain frames since `run`, relayed as one slice.
        let mut run = pos;
        while pos < data.len() && !self.ended {
            if let Some(len) = canonical_len(&data[pos..]) {
                let payload = data.slice(pos + 6..pos + len - 2);
                if let Kind::Plain = self.kind(&payload) {
                    pos += len;
                    continue;
                }
                self.flush(&data, run, pos);
                self.parse(payload);
                pos += len;
                run = pos;
                continue;
            }
            let Some((used, payload)) = event(&data[pos..]) else {
                break; // the rest of the event is still to come
            };
            self.flush(&data, run, pos);
            pos += used;
            run = pos;
            if let Some(payload) = payload {
                self.spec_event(payload);
            }
        }
        self.flush(&data, run, pos);
        if pos < data.len() && !self.ended {
            self.pending.extend_from_slice(&data[pos..]);
        }
    }

    /// Sends `data[from..to]`, whole plain frames, as one item.
    fn flush(&mut self, data: &Bytes, from: usize, to: usize) {
        if from < to && !self.ended {
            self.out.push_back(Ok(Chunk::frames(data.slice(from..to))));
        }
    }

    /// Whether a payload can go out unread.
    fn kind(&mut self, payload: &Bytes) -> Kind {
        if !self.first {
            return Kind::Parse;
        }
        // The last plain chunk again with another text: plain too. Its bytes around the text
        // carry no usage, fingerprint or error, and the text holds no quote to add one.
        if self
            .template
            .as_ref()
            .is_some_and(|t| t.text(payload).is_some())
        {
            return Kind::Plain;
        }
        if payload.as_ref() == b"[DONE]"
            || payload.starts_with(b"{\"error\"")
            || carries(payload, b"\"usage\"")
            || (!self.fingerprint && carries(payload, b"\"system_fingerprint\""))
        {
            return Kind::Parse;
        }
        // Not a chunk's shape (or not UTF-8): parsed, so it fails as the parsed relay fails.
        let Ok(text) = std::str::from_utf8(payload) else {
            return Kind::Parse;
        };
        match serde_json::from_str::<Shape<'_>>(text) {
            Ok(shape) => {
                if let Some(text) = shape.text() {
                    self.template = Template::learn(&payload[..], text).map(|t| t.to_owned());
                }
                Kind::Plain
            }
            Err(_) => Kind::Parse,
        }
    }

    /// An event in another shape than the gateway's: its data, trimmed, goes out in the
    /// gateway's form.
    fn spec_event(&mut self, data: String) {
        let trimmed = data.trim();
        let payload = Bytes::copy_from_slice(trimmed.as_bytes());
        match self.kind(&payload) {
            Kind::Plain => {
                let mut frame = BytesMut::with_capacity(payload.len() + 8);
                frame.put_slice(b"data: ");
                frame.put_slice(&payload);
                frame.put_slice(b"\n\n");
                self.out.push_back(Ok(Chunk::frames(frame.freeze())));
            }
            Kind::Parse => self.parse(payload),
        }
    }

    /// Parses a payload as the parsed relay does ([`super::parse_chunk`]).
    fn parse(&mut self, payload: Bytes) {
        if payload.as_ref() == b"[DONE]" {
            self.ended = true;
            return;
        }
        if payload.starts_with(b"{\"error\"") {
            self.out
                .push_back(Err(ProviderError::Stream(http::error_message(&payload))));
            self.ended = true;
            return;
        }
        let text = match std::str::from_utf8(&payload) {
            Ok(t) => t,
            Err(e) => {
                self.out
                    .push_back(Err(ProviderError::Stream(format!("UTF8 error: {e}"))));
                self.ended = true;
                return;
            }
        };
        match serde_json::from_str::<ChatChunk>(text) {
            Ok(chunk) => {
                self.first = true;
                if !self.fingerprint {
                    self.fingerprint = chunk
                        .extra
                        .get("system_fingerprint")
                        .and_then(|v| v.as_str())
                        .is_some_and(|f| !f.is_empty());
                }
                self.out.push_back(Ok(Chunk {
                    chunk,
                    raw: Some(payload),
                    frames: false,
                }));
            }
            Err(e) => {
                self.out
                    .push_back(Err(ProviderError::Malformed(format!("stream chunk: {e}"))));
                self.ended = true;
            }
        }
    }
}

/// [`ChatChunk`]'s shape, its fields' types checked the same way, with strings borrowed:
/// what tells a payload that parses as a chunk without building one.
#[derive(serde::Deserialize)]
struct Shape<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    object: Cow<'a, str>,
    #[serde(default)]
    #[allow(dead_code)]
    created: u64,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    model: Cow<'a, str>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    choices: Vec<ShapeChoice<'a>>,
}

impl<'a> Shape<'a> {
    /// The one choice's text, when it was borrowed (it had no escapes): a template's.
    fn text(&self) -> Option<&'a str> {
        only_text(&self.choices, |c| c.delta.content.as_ref())
    }
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ShapeChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: ShapeDelta<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(serde::Deserialize, Default)]
#[allow(dead_code)]
struct ShapeDelta<'a> {
    #[serde(default, borrow)]
    role: Option<Text<'a>>,
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ShapeToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ShapeToolCall<'a> {
    index: u32,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Text<'a>>,
    #[serde(default, borrow)]
    function: Option<ShapeFunction<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ShapeFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    arguments: Option<Text<'a>>,
}

/// The length of a `data: PAYLOAD\n\n` event at the start of `bytes`, when the whole event is
/// there and its payload is one line without surrounding whitespace.
fn canonical_len(bytes: &[u8]) -> Option<usize> {
    let rest = bytes.strip_prefix(b"data: ")?;
    let end = memchr::memchr2(b'\n', b'\r', rest)?;
    let payload = &rest[..end];
    let clean = |b: &u8| !b.is_ascii_whitespace() && b.is_ascii();
    if rest[end] != b'\n' || rest.get(end + 1) != Some(&b'\n') {
        return None;
    }
    (payload.first().is_some_and(clean) && payload.last().is_some_and(clean)).then_some(6 + end + 2)
}

/// Whether a payload holds `key` (quoted) with a value that is not `null` or `""`: a key,
/// since inside a JSON string its quotes would be escaped. A key nested deeper also counts
/// (the payload is then parsed, which settles it).
fn carries(payload: &[u8], key: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = memchr::memmem::find(&payload[at..], key) {
        at += found + key.len();
        let mut rest = payload[at..].iter().skip_while(|b| b.is_ascii_whitespace());
        if rest.next() == Some(&b':') {
            let value: Vec<u8> = rest
                .skip_while(|b| b.is_ascii_whitespace())
                .take(4)
                .copied()
                .collect();
            if value != b"null" && !value.starts_with(b"\"\"") {
                return true;
            }
        }
    }
    false
}

/// One event at the start of `bytes`, read line by line as the SSE spec says (lines end in
/// `\r\n`, `\n` or `\r`; `:` starts a comment; only `data` matters here): the bytes it used
/// and its data, `None` for an event without data. `None` when its end has not arrived.
fn event(bytes: &[u8]) -> Option<(usize, Option<String>)> {
    let mut pos = 0;
    let mut data: Option<Vec<u8>> = None;
    loop {
        let rest = &bytes[pos..];
        let end = memchr::memchr2(b'\n', b'\r', rest)?;
        // A `\r` at the end of what has arrived may be the first half of `\r\n`.
        let eol = match (rest[end], rest.get(end + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => return None,
            _ => 1,
        };
        let line = &rest[..end];
        pos += end + eol;
        if line.is_empty() {
            let text = data.map(|mut d| {
                d.pop(); // the last line's `\n`
                String::from_utf8_lossy(&d).into_owned()
            });
            return Some((pos, text));
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let d = data.get_or_insert_with(Vec::new);
            d.extend_from_slice(value);
            d.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// What the client receives from the pass-through relay: frames as relayed, parsed chunks
    /// framed from their payload, the error's text.
    fn relayed(pieces: &[&[u8]]) -> (Vec<u8>, Vec<String>, Option<String>) {
        let owned: Vec<Result<Bytes, ProviderError>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        let items = futures_util::FutureExt::now_or_never(
            relay(futures_util::stream::iter(owned).boxed()).collect::<Vec<_>>(),
        )
        .expect("ready");
        let (mut out, mut parsed, mut error) = (Vec::new(), Vec::new(), None);
        for item in items {
            match item {
                Ok(c) if c.frames => out.extend_from_slice(c.raw.as_deref().unwrap_or_default()),
                Ok(c) => {
                    let raw = c.raw.unwrap_or_default();
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&raw);
                    out.extend_from_slice(b"\n\n");
                    parsed.push(String::from_utf8_lossy(&raw).into_owned());
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        (out, parsed, error)
    }

    /// What the parsed relay sends for the same bytes: every event's data, trimmed, framed.
    fn parsed_relay(whole: &[u8]) -> (Vec<u8>, Option<String>) {
        let stream = futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(whole))]);
        let events = futures_util::FutureExt::now_or_never(
            http::sse_parse(stream, 1 << 20, 1 << 20).collect::<Vec<_>>(),
        )
        .expect("ready");
        let mut out = Vec::new();
        for e in events {
            match e.and_then(|e| super::super::parse_chunk(&e.data)) {
                Ok(Some(c)) => {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&c.raw.unwrap_or_default());
                    out.extend_from_slice(b"\n\n");
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    const CHUNK_A: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"system_fingerprint":"fp_1","usage":null}"#;
    const CHUNK_B: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":[{"index":0,"delta":{"content":"Grüße, \"usage\": 1 ✓"},"finish_reason":null}],"system_fingerprint":"fp_1","usage":null}"#;
    const CHUNK_C: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
    const USAGE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    fn wire(nl: &str, extras: bool) -> String {
        let mut s = String::new();
        if extras {
            s.push_str(&format!(": ping{nl}{nl}"));
        }
        for (i, c) in [CHUNK_A, CHUNK_B, CHUNK_C, USAGE].iter().enumerate() {
            if extras && i == 1 {
                s.push_str(&format!("event: message{nl}id: 7{nl}"));
            }
            s.push_str(&format!("data: {c}{nl}{nl}"));
        }
        s.push_str(&format!("data: [DONE]{nl}{nl}data: {CHUNK_C}{nl}{nl}"));
        s
    }

    #[test]
    fn every_split_gives_what_the_parsed_relay_gives() {
        for (nl, extras) in [("\n", false), ("\r\n", false), ("\n", true), ("\r", true)] {
            let whole = wire(nl, extras);
            let bytes = whole.as_bytes();
            let (expected, expected_error) = parsed_relay(bytes);
            assert!(expected_error.is_none());
            // Every cut point, including inside the multi-byte characters of CHUNK_B.
            for cut in 0..bytes.len() {
                let (out, parsed, error) = relayed(&[&bytes[..cut], &bytes[cut..]]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "nl {nl:?} extras {extras} cut {cut}"
                );
                assert!(error.is_none());
                // The first chunk and the usage chunk are parsed; the rest is not.
                assert_eq!(parsed.first().map(String::as_str), Some(CHUNK_A));
                assert_eq!(parsed.last().map(String::as_str), Some(USAGE));
                assert_eq!(parsed.len(), 2, "{parsed:?}");
            }
            // Byte by byte.
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(relayed(&singles).0, expected);
        }
    }

    #[test]
    fn plain_frames_go_out_as_the_upstream_sent_them() {
        let whole = wire("\n", false);
        let (out, _, _) = relayed(&[whole.as_bytes()]);
        let done = whole.find("data: [DONE]").unwrap();
        assert_eq!(out, whole.as_bytes()[..done]);
    }

    #[test]
    fn errors_and_malformed_chunks_fail_as_the_parsed_relay_fails() {
        let error = format!(
            "data: {CHUNK_A}\n\ndata: {CHUNK_B}\n\ndata: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\n"
        );
        let malformed = format!("data: {CHUNK_A}\n\ndata: {CHUNK_B}\n\ndata: {{\"id\":\n\n");
        let wrong_type = format!("data: {CHUNK_A}\n\ndata: {{\"id\":7}}\n\n");
        let wrong_delta = format!(
            "data: {CHUNK_A}\n\ndata: {{\"id\":\"c1\",\"choices\":[{{\"delta\":{{\"content\":[1]}}}}]}}\n\n"
        );
        for whole in [error, malformed, wrong_type, wrong_delta] {
            let (expected, expected_error) = parsed_relay(whole.as_bytes());
            let (out, _, error) = relayed(&[whole.as_bytes()]);
            assert_eq!(out, expected);
            assert_eq!(error, expected_error);
            assert!(error.is_some());
        }
    }

    #[test]
    fn usage_keys_are_told_from_usage_in_text() {
        let usage = b"\"usage\"";
        assert!(carries(USAGE.as_bytes(), usage));
        assert!(carries(br#"{"usage" : {"prompt_tokens":1}}"#, usage));
        assert!(!carries(CHUNK_A.as_bytes(), usage));
        assert!(!carries(CHUNK_B.as_bytes(), usage));
        assert!(!carries(br#"{"usage": null}"#, usage));
        let fp = b"\"system_fingerprint\"";
        assert!(carries(CHUNK_A.as_bytes(), fp));
        assert!(!carries(br#"{"system_fingerprint":null,"x":1}"#, fp));
        assert!(!carries(br#"{"system_fingerprint": ""}"#, fp));
    }

    /// A chunk with this text, as upstreams send them: the same bytes around each text.
    fn text_chunk(text: &str) -> String {
        format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m1","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}],"system_fingerprint":"fp_1"}}"#,
            serde_json::to_string(text).unwrap()
        )
    }

    #[test]
    fn repeated_chunks_go_out_unparsed_after_the_first_plain_one() {
        let mut whole = format!("data: {CHUNK_A}\n\n");
        for text in ["Aute", " irure", " dolor", "", " ✓"] {
            whole.push_str(&format!("data: {}\n\n", text_chunk(text)));
        }
        whole.push_str(&format!("data: {USAGE}\n\ndata: [DONE]\n\n"));
        let (expected, _) = parsed_relay(whole.as_bytes());
        let (out, parsed, error) = relayed(&[whole.as_bytes()]);
        assert_eq!(out, expected);
        assert!(error.is_none());
        assert_eq!(parsed, [CHUNK_A, USAGE]);
        // The first plain chunk taught the template the others were checked against.
        let mut relay = Relay::new(futures_util::stream::empty().boxed());
        relay.feed(Bytes::from(whole));
        let template = relay.template.expect("a template");
        assert_eq!(template.text(text_chunk("x").as_bytes()), Some("x"));
    }

    proptest::proptest! {
        /// Chunks that repeat a plain chunk around another text relay as the parsed relay
        /// sends them, whatever the texts hold and wherever the read is cut; so do frames
        /// that only look alike (the text put in unescaped: a quote, a backslash or a control
        /// character makes them another shape, or not JSON).
        #[test]
        fn templated_chunks_relay_as_the_parsed_relay_does(
            texts in proptest::collection::vec("(\\PC|[\"\\\\\t\u{7f}\u{2028}é✓]){0,12}", 1..10),
            raw in proptest::collection::vec(proptest::prelude::any::<bool>(), 10),
            cut in 0usize..8192,
        ) {
            let mut whole = format!("data: {CHUNK_A}\n\n");
            for (i, text) in texts.iter().enumerate() {
                let json = if raw[i] {
                    text_chunk("\u{1}").replace("\\u0001", text)
                } else {
                    text_chunk(text)
                };
                whole.push_str(&format!("data: {json}\n\n"));
            }
            whole.push_str(&format!("data: {USAGE}\n\ndata: [DONE]\n\n"));
            let bytes = whole.as_bytes();
            let (expected, expected_error) = parsed_relay(bytes);
            let cut = cut % (bytes.len() + 1);
            let (out, _, error) = relayed(&[&bytes[..cut], &bytes[cut..]]);
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected)
            );
            proptest::prop_assert_eq!(error, expected_error);
        }
    }
}
