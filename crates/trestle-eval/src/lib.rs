//! Trestle's evals (docs/architecture.md, "Evals"): golden datasets that are validated and
//! versioned by content, assertions and an LLM judge with a rubric, figures and gates per
//! category, a paired comparison with a baseline, judge calibration against human labels,
//! and the store runs are kept in (SQLite here; PostgreSQL through the same trait in the
//! gateway). The runner that sends cases through a gateway lives in the `trestle` binary;
//! everything here is testable without one.

pub mod assertion;
pub mod bayes;
pub mod calibrate;
pub mod dataset;
pub mod drift;
pub mod judge;
pub mod mine;
pub mod online;
pub mod report;
pub mod run;
pub mod stats;
pub mod store;
pub mod suite;

pub use assertion::{Assertion, Observed, Outcome};
pub use dataset::{Case, Dataset};
pub use run::CaseResult;
pub use suite::Suite;
