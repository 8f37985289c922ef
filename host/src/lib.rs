//! Ward: runs untrusted WebAssembly task actions as sandboxed, durable
//! executions.
//!
//! Modules follow the way data flows: `cli` calls `runtime`, which calls
//! `sandbox`; nothing points back.

pub mod cli;
pub mod runtime;
pub mod sandbox;
