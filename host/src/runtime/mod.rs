//! The runtime: runs task runs as sequences of attempts on the sandbox,
//! with retries and checkpoint hand-over.
//!
//! Calls `sandbox`; knows nothing of HTTP or the command line.

pub mod local;
pub mod retry;
