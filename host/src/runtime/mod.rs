//! The runtime: runs task runs as sequences of attempts on the sandbox,
//! with retries, checkpoint hand-over, a dispatcher, control requests and
//! crash recovery.
//!
//! Calls `sandbox` and `store`; knows nothing of HTTP or the command line.

pub mod backoff;
pub mod config;
pub mod local;
pub mod retry;
pub mod service;
