//! Ids Gemini does not give: completion and tool-call ids, and the tool-call id that carries a
//! Gemini thought signature through an OpenAI client and back.
//!
//! Gemini 3 answers 400 when a `functionCall` it produced comes back without its
//! `thoughtSignature`. An OpenAI tool call has no field for it, but clients echo tool-call ids
//! verbatim, so the signature rides in the id: `call_<hex>__ts_<signature>`, the signature in
//! URL-safe base64 without padding so the id stays within `[A-Za-z0-9_-]` (what Anthropic
//! demands of tool ids). Such ids are long (hundreds of characters).

use rand::Rng;

/// Separates a tool-call id from the thought signature it carries.
const SIGNATURE_MARK: &str = "__ts_";

/// The placeholder signature Google documents for function calls Gemini did not produce (or
/// whose signature was lost): it skips signature validation.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// A fresh `chatcmpl-…` id.
pub fn completion_id() -> String {
    format!("chatcmpl-{:024x}", rand::rng().random::<u128>() >> 32)
}

/// A fresh tool-call id, `call_<hex>`.
pub fn call_id() -> String {
    format!("call_{:016x}", rand::rng().random::<u64>())
}

/// The id of a tool call: Gemini's own `id` if it sent one, else a fresh one; with the thought
/// signature appended when there is one.
pub fn tool_call_id(gemini_id: Option<&str>, signature: Option<&str>) -> String {
    let base = gemini_id
        .filter(|s| !s.is_empty())
        .map_or_else(call_id, str::to_string);
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => format!("{base}{SIGNATURE_MARK}{}", to_url_safe(sig)),
        None => base,
    }
}

/// A tool-call id split into its plain part and the thought signature (standard base64, as
/// Gemini sent it) it carries, if any.
pub fn split_call_id(id: &str) -> (&str, Option<String>) {
    match id.split_once(SIGNATURE_MARK) {
        Some((base, sig)) if !sig.is_empty() => (base, Some(from_url_safe(sig))),
        _ => (id, None),
    }
}

fn to_url_safe(b64: &str) -> String {
    b64.chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

fn from_url_safe(b64: &str) -> String {
    let mut out: String = b64
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let padding = (4 - out.len() % 4) % 4;
    out.extend(std::iter::repeat_n('=', padding));
    out
}
