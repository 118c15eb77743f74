//! Token counting for route budgets (`max_input_tokens`): each target counts with its model
//! family's tokenizer — OpenAI's tiktoken encodings (compiled into the binary), a model's own
//! `tokenizer.json` (Hugging Face `tokenizers`, loaded once per file), or a word estimate
//! when neither is known.
//!
//! Chat messages are counted the way OpenAI documents for its chat models: every message
//! costs 3 tokens of framing plus its role and its text (a `name` adds its tokens and 1), and
//! the reply is primed with 3 more. Tool calls add their function name and arguments (+3
//! each); tool definitions count as their JSON. Images, audio and files are not counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use tiktoken_rs::CoreBPE;
use trestle_core::budget::{Encoding, TokenizerSpec};
use trestle_core::openai::{Content, ContentPart, Message, Tool};

/// Tokens of framing around every message.
pub const PER_MESSAGE: u64 = 3;
/// Tokens that prime the reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: u64 = 3;
/// Tokens of framing around each tool call an assistant message carries (an estimate: OpenAI
/// does not document it).
pub const PER_TOOL_CALL: u64 = 3;

/// How a target's tokens are counted. Cheap to clone.
#[derive(Clone)]
pub enum Tokenizer {
    /// An OpenAI encoding, built into the binary.
    Tiktoken(Encoding),
    /// A model's own `tokenizer.json`.
    File {
        /// The path as configured (what the trace shows).
        name: Arc<str>,
        tokenizer: Arc<tokenizers::Tokenizer>,
    },
    /// No tokenizer known: 4 tokens per 3 words, or 1 per 4 bytes when that is more.
    Estimate,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Tokenizer {
    /// The tokenizer of a model: its configured `tokenizer` (a file path relative to the
    /// config file's folder), else by its name's family, else the estimate.
    pub fn build(
        model: &str,
        spec: Option<&TokenizerSpec>,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Tokenizer, String> {
        match spec {
            Some(TokenizerSpec::Tiktoken(e)) => Ok(Tokenizer::Tiktoken(*e)),
            Some(TokenizerSpec::File(path)) => Ok(Tokenizer::File {
                name: path.display().to_string().into(),
                tokenizer: load_file(&resolve(path))?,
            }),
            None => Ok(Encoding::for_model(model).map_or(Tokenizer::Estimate, Tokenizer::Tiktoken)),
        }
    }

    /// What the trace calls it: `o200k_base`, `cl100k_base`, the file's path, `estimate`.
    pub fn name(&self) -> &str {
        match self {
            Tokenizer::Tiktoken(e) => e.as_str(),
            Tokenizer::File { name, .. } => name,
            Tokenizer::Estimate => "estimate",
        }
    }

    /// Builds the encoding's tables now (a few hundred milliseconds for o200k_base), so the
    /// first request that counts does not wait for them.
    pub fn warm(&self) {
        if let Tokenizer::Tiktoken(e) = self {
            let _ = bpe(*e);
        }
    }

    /// Tokens of a text, without special tokens.
    pub fn count(&self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        match self {
            Tokenizer::Tiktoken(e) => {
                let bpe = bpe(*e);
                segments(text, TIKTOKEN_SEGMENT)
                    .map(|s| bpe.encode_ordinary(s).len() as u64)
                    .sum()
            }
            Tokenizer::File { tokenizer, .. } => segments(text, FILE_SEGMENT)
                .map(|s| {
                    tokenizer
                        .encode_fast(s, false)
                        .map_or_else(|_| estimate(s), |e| e.len() as u64)
                })
                .sum(),
            Tokenizer::Estimate => estimate(text),
        }
    }

    /// Tokens of one chat message, framing included.
    pub fn message(&self, m: &Message) -> u64 {
        let mut n = PER_MESSAGE + self.count(m.role.as_str());
        match &m.content {
            None => {}
            Some(Content::Text(t)) => n += self.count(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    match p {
                        ContentPart::Text { text } => n += self.count(text),
                        ContentPart::Refusal { refusal } => n += self.count(refusal),
                        _ => {}
                    }
                }
            }
        }
        if let Some(name) = &m.name {
            n += self.count(name) + 1;
        }
        for call in m.tool_calls.iter().flatten() {
            n += PER_TOOL_CALL
                + self.count(&call.function.name)
                + self.count(&call.function.arguments);
        }
        n
    }

    /// Tokens of the request's tool definitions (their JSON).
    pub fn tools(&self, tools: &[Tool]) -> u64 {
        if tools.is_empty() {
            return 0;
        }
        self.count(&serde_json::to_string(tools).unwrap_or_default())
    }
}

/// The word estimate: the larger of 4 tokens per 3 words and 1 token per 4 bytes.
fn estimate(text: &str) -> u64 {
    let words = text.split_whitespace().count() as u64;
    (words * 4).div_ceil(3).max((text.len() as u64).div_ceil(4))
}

fn bpe(e: Encoding) -> &'static CoreBPE {
    match e {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// A tiktoken segment's target length in bytes.
const TIKTOKEN_SEGMENT: usize = 4096;
/// A tokenizer.json segment's target length: longer, because a cut there may cost a token.
const FILE_SEGMENT: usize = 16_384;
/// The longest run without a cut point that is counted in one piece. Longer runs (a wall of
/// one character, a huge blob without spaces) are cut here: byte-pair merging is quadratic in
/// a piece's length and the tokenizers' regex engine gives up on some long runs, which would
/// abort the process. A forced cut may change the count by a token.
const MAX_RUN: usize = 256;

/// Cuts text into pieces that are counted separately. A cut goes before a space that has a
/// non-space on both sides: no piece of OpenAI's pre-tokenizer patterns crosses such a point
/// (none ends with a space after a non-space), so tiktoken counts are exactly those of the
/// whole text. Runs without such a point are cut every [`MAX_RUN`] bytes.
fn segments(text: &str, target: usize) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let mut last_cut = start;
        let mut i = start;
        while i < text.len() {
            let b = bytes[i];
            let clean = b == b' '
                && i > start
                && !bytes[i - 1].is_ascii_whitespace()
                && bytes.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace());
            if clean {
                if i - start >= target {
                    break;
                }
                last_cut = i;
            } else if i - last_cut >= MAX_RUN && text.is_char_boundary(i) && i > start {
                break;
            }
            i += 1;
        }
        let piece = &text[start..i];
        start = i;
        Some(piece)
    })
}

/// Loaded `tokenizer.json` files, by path, kept while the file is unchanged.
type FileCache = HashMap<PathBuf, (Option<SystemTime>, Arc<tokenizers::Tokenizer>)>;
static FILES: LazyLock<Mutex<FileCache>> = LazyLock::new(Mutex::default);

/// Loads a `tokenizer.json` once (again only when the file changes); truncation and padding
/// are turned off so every token counts.
fn load_file(path: &Path) -> Result<Arc<tokenizers::Tokenizer>, String> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .ok();
    if let Ok(cache) = FILES.lock()
        && let Some((at, tok)) = cache.get(path)
        && *at == modified
    {
        return Ok(tok.clone());
    }
    let mut tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| format!("cannot load tokenizer {}: {e}", path.display()))?;
    tok.with_truncation(None)
        .map_err(|e| format!("tokenizer {}: {e}", path.display()))?;
    tok.with_padding(None);
    let tok = Arc::new(tok);
    if let Ok(mut cache) = FILES.lock() {
        cache.insert(path.to_path_buf(), (modified, tok.clone()));
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trestle_core::openai::Role;

    // Expected counts were computed with OpenAI's Python `tiktoken` 0.14.0 (its encodings
    // checked against the SHA-256 it pins), independently of this crate:
    //   len(tiktoken.get_encoding("o200k_base").encode("Hello, world! How are you today?")) == 9
    #[test]
    fn tiktoken_counts_match_the_reference() {
        let o200k = Tokenizer::Tiktoken(Encoding::O200kBase);
        let cl100k = Tokenizer::Tiktoken(Encoding::Cl100kBase);
        for (text, o, c) in [
            ("Hello, world! How are you today?", 9, 9),
            ("The quick brown fox jumps over the lazy dog.", 10, 10),
            ("You are a helpful assistant.", 6, 6),
            ("Bonjour 🌍 — ça va?", 7, 8),
            ("user", 1, 1),
        ] {
            assert_eq!(o200k.count(text), o, "o200k_base: {text}");
            assert_eq!(cl100k.count(text), c, "cl100k_base: {text}");
        }
        // The cookbook's chat count: 3 per message + role + text, + 3 to prime the reply.
        let chat = [
            Message::new(Role::System, "You are a helpful assistant."),
            Message::new(Role::User, "Hello, world! How are you today?"),
        ];
        let n: u64 = chat.iter().map(|m| o200k.message(m)).sum::<u64>() + REPLY_PRIMING;
        assert_eq!(n, 26);
    }

    #[test]
    fn cutting_at_clean_spaces_keeps_tiktoken_counts_exact() {
        let o200k = Tokenizer::Tiktoken(Encoding::O200kBase);
        let bpe = bpe(Encoding::O200kBase);
        let paragraph = "It's the 3rd time:  the quick brown fox's 12345 jumps\n\n  over \"the\" \
                         lazy dog, héllo wörld — 東京 ok?!  \t end. ";
        let text = paragraph.repeat(200);
        assert!(segments(&text, TIKTOKEN_SEGMENT).count() > 3);
        assert_eq!(o200k.count(&text), bpe.encode_ordinary(&text).len() as u64);
        let joined: String = segments(&text, 64).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn a_huge_run_without_spaces_is_counted_without_blowing_up() {
        let o200k = Tokenizer::Tiktoken(Encoding::O200kBase);
        let wall = "^".repeat(300_000);
        let n = o200k.count(&wall);
        assert!(n > 0 && n < 300_000, "{n}");
        let spaces = " ".repeat(100_000) + "x";
        assert!(o200k.count(&spaces) > 0);
        let cjk = "東".repeat(10_000);
        assert!(segments(&cjk, TIKTOKEN_SEGMENT).all(|s| s.len() <= MAX_RUN + 3));
        assert!(o200k.count(&cjk) > 0);
    }

    #[test]
    fn models_pick_their_tokenizer_and_unknown_ones_are_estimated() {
        let none = |p: &Path| p.to_path_buf();
        let t = |m: &str| Tokenizer::build(m, None, none).unwrap().name().to_string();
        assert_eq!(t("gpt-4o-mini"), "o200k_base");
        assert_eq!(t("gpt-4-turbo"), "cl100k_base");
        assert_eq!(t("claude-sonnet-4-5"), "estimate");
        let forced = Tokenizer::build(
            "claude-sonnet-4-5",
            Some(&TokenizerSpec::Tiktoken(Encoding::Cl100kBase)),
            none,
        )
        .unwrap();
        assert_eq!(forced.name(), "cl100k_base");
        assert_eq!(Tokenizer::Estimate.count("one two three"), 4);
        assert_eq!(Tokenizer::Estimate.count(&"x".repeat(40)), 10);
    }

    /// A word-level tokenizer.json written here: one token per known word, `[UNK]` else.
    fn word_tokenizer(dir: &Path) -> PathBuf {
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0},
            "padding": null,
            "added_tokens": [],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "!": 3}, "unk_token": "[UNK]"}
        });
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    #[test]
    fn a_tokenizer_json_is_loaded_once_and_counts_every_token() {
        let dir = std::env::temp_dir().join(format!("trestle-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        word_tokenizer(&dir);
        let spec = TokenizerSpec::File("tokenizer.json".into());
        let build = || Tokenizer::build("llama-3", Some(&spec), |p| dir.join(p)).unwrap();
        let (a, b) = (build(), build());
        let (Tokenizer::File { tokenizer: ta, .. }, Tokenizer::File { tokenizer: tb, .. }) =
            (&a, &b)
        else {
            panic!("not a file tokenizer");
        };
        assert!(Arc::ptr_eq(ta, tb), "loaded twice");
        assert_eq!(a.name(), "tokenizer.json");
        // Truncation in the file (max_length 2) is off: all four words count.
        assert_eq!(a.count("Hello world! Goodbye"), 4);
        let missing = Tokenizer::build("m", Some(&spec), |p| dir.join("nope").join(p));
        assert!(missing.unwrap_err().contains("cannot load tokenizer"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
