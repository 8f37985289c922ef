//! The domain model shared by store, runtime and API: tasks, executions,
//! task runs, attempts, events and the state machines that govern them.
//!
//! A leaf module: it depends on nothing of Ward but the sandbox's report
//! types, so every layer can use it without pointing back.

pub mod execution;
pub mod state;
pub mod task;

/// Now, as RFC 3339 with microseconds (sortable as text).
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
