//! Trestle's guardrail detectors (DESIGN.md §5, the base of the quality pyramid): what finds
//! PII, denied terms, prompt-injection attempts, system-prompt leaks and unsupported facts in
//! a text. Plain functions over text, no I/O: the gateway runs them on requests and answers
//! (streamed or not), `trestle guard eval` measures them, and evals reuse them.
//!
//! Every detector reports [`Finding`]s with **character** offsets (Unicode scalar values, as
//! Presidio and most non-Rust clients count), and [`redact`] replaces findings with
//! `<ENTITY>`.

pub mod deny;
pub mod eval;
pub mod grounding;
pub mod injection;
pub mod leak;
pub mod pii;
pub mod schema;
mod text;

pub use text::{CharIndex, redact};

use serde::Serialize;

/// Something a detector found: what, where (character offsets, end exclusive) and how sure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub entity: String,
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

impl Finding {
    pub fn new(entity: impl Into<String>, start: usize, end: usize, score: f64) -> Self {
        Finding {
            entity: entity.into(),
            start,
            end,
            score,
        }
    }
}

/// A problem in a guardrail's settings, found when the config is checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown entity `{0}`: use {list}", list = pii::Entity::NAMES.join(", "))]
    UnknownEntity(String),
    #[error("the pattern does not compile: {0}")]
    BadPattern(String),
}
