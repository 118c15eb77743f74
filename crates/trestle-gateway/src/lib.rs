//! The Trestle gateway: the request pipeline, provider adapters, trace store and the
//! placeholder model, served over an OpenAI-compatible HTTP API.

pub mod anomaly;
pub mod api;
pub mod auth;
pub mod cache;
pub mod db;
pub mod drift;
pub mod error;
pub mod evals;
pub mod experiments;
pub mod feedback;
pub mod frontdoor;
#[cfg(test)]
mod fuzz;
pub mod guard;
pub mod keys;
pub mod limiter;
pub mod metrics;
pub mod mock;
pub mod otel;
pub mod otlp;
pub mod pipeline;
pub mod prompts;
pub mod providers;
pub mod repoll;
pub mod resilience;
pub mod review;
pub mod runtime;
pub mod server;
pub mod state;
pub mod store;
pub mod tokens;
pub mod ui;
