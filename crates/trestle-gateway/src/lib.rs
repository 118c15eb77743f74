//! The Trestle gateway: the request pipeline, provider adapters, trace store and the
//! placeholder model, served over an OpenAI-compatible HTTP API.

pub mod api;
pub mod cache;
pub mod error;
pub mod evals;
pub mod experiments;
pub mod feedback;
#[cfg(test)]
mod fuzz;
pub mod guard;
pub mod metrics;
pub mod mock;
pub mod otlp;
pub mod pipeline;
pub mod prompts;
pub mod providers;
pub mod resilience;
pub mod runtime;
pub mod server;
pub mod state;
pub mod store;
