//! Ward: runs untrusted WebAssembly task actions as sandboxed, durable
//! executions.
//!
//! Modules follow the way data flows: `api` and `cli` call `runtime`, which
//! calls `sandbox` and `store`; `model` is the vocabulary they share, and
//! `telemetry` the metrics and `traces` the spans any of them records. Nothing points back.

pub mod api;
pub mod cli;
pub mod model;
pub mod runtime;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod traces;
