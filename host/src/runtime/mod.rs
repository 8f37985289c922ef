//! The runtime: runs task runs as sequences of attempts on the sandbox,
//! with retries, checkpoint hand-over, a dispatcher, control requests and
//! crash recovery. What follows what is the model's planner's decision,
//! applied by the store; the runtime schedules what the plans ask for.
//!
//! Calls `sandbox` and `store`; knows nothing of HTTP or the command line.

pub mod access;
mod catalog;
pub mod config;
mod dispatch;
pub mod error;
pub mod follow;
mod leases;
pub mod local;
mod reads;
mod schedules;
pub mod secrets;
pub mod service;
mod spans;
mod subflow;
mod worker;
