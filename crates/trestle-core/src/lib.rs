//! Core types of Trestle: the OpenAI wire format the gateway speaks, its configuration and
//! pricing. No I/O lives here.

pub mod cache;
pub mod config;
pub mod experiment;
pub mod guard;
pub mod openai;
pub mod price;
pub mod resilience;

pub use config::Config;
