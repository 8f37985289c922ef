//! Host capabilities, one module each: its quota, its per-attempt state and
//! the logic behind its WIT functions. `sandbox::host` maps the generated
//! `Host` trait onto these; nothing here knows about wasmtime bindings
//! (but `http`, which implements wasmtime-wasi-http's hooks).

pub mod checkpoints;
pub mod http;
pub mod logs;
pub mod media;
pub mod metrics;
pub mod outputs;
pub mod warnings;
