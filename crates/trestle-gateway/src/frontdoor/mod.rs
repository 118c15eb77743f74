//! Front doors that speak another vendor's API to applications, translated into the
//! pipeline's OpenAI-shaped request at ingress and back at delivery, so every request is
//! served by the same pipeline (`crate::pipeline::chat`).

pub mod anthropic;
