//! Core types of Trestle: the OpenAI wire format the gateway speaks, its configuration and
//! pricing. No I/O lives here.

pub mod budget;
pub mod cache;
pub mod cloud;
pub mod config;
pub mod drift;
pub mod experiment;
pub mod guard;
pub mod openai;
pub mod otel;
pub mod price;
pub mod resilience;
pub mod spend;
pub mod store;
pub mod window;

pub use config::Config;
