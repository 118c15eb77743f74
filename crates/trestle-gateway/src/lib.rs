//! The Trestle gateway: the request pipeline, provider adapters, trace store and the
//! placeholder model, served over an OpenAI-compatible HTTP API.

pub mod cache;
pub mod error;
pub mod evals;
#[cfg(test)]
mod fuzz;
pub mod guard;
pub mod metrics;
pub mod mock;
pub mod pipeline;
pub mod providers;
pub mod resilience;
pub mod runtime;
pub mod server;
pub mod state;
pub mod store;
