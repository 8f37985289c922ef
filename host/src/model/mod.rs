//! The domain model shared by store, runtime, sandbox and API: tasks,
//! executions, task runs, attempts, attempt reports, events, the state
//! machines, the transition planner, the retry rule and the clock.
//!
//! The leaf: it depends on nothing else of Ward, so every layer can use it
//! without pointing back. Nothing here does I/O.

pub mod clock;
pub mod execution;
pub mod plan;
pub mod report;
pub mod retry;
pub mod state;
pub mod task;

/// Now, as RFC 3339 with microseconds (sortable as text).
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
