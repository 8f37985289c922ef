//! Prometheus metrics: every metric Ward exports, named and recorded here,
//! rendered at `GET /metrics`.
//!
//! Recording goes through the `metrics` facade, like logging through
//! `tracing`: any module may call the functions below, and without an
//! installed recorder (tests, `ward run`) they cost an atomic load. The
//! exporter keeps values in atomics and renders text only when scraped,
//! so the hot path never formats anything. Depends on nothing in Ward but
//! the model's names.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::report::AttemptReport;
use crate::model::state::ExecutionState;

/// Executions by their current state (gauge).
pub const EXECUTIONS: &str = "ward_executions";
/// Attempts ended, by outcome and error kind (counter).
pub const ATTEMPTS: &str = "ward_attempts_total";
/// How long attempts ran (histogram, seconds).
pub const ATTEMPT_SECONDS: &str = "ward_attempt_duration_seconds";
/// How long a runnable task run waited for a slot (histogram, seconds).
pub const QUEUE_WAIT_SECONDS: &str = "ward_queue_wait_seconds";
/// Fuel the guests consumed (counter).
pub const FUEL: &str = "ward_fuel_consumed_total";
/// Task runs waiting on this host, by queue (gauge, at scrape).
pub const QUEUE_DEPTH: &str = "ward_queue_depth";
/// Attempt slots in use and in all (gauges, at scrape).
pub const SLOTS_BUSY: &str = "ward_slots_busy";
pub const SLOTS: &str = "ward_slots";
/// Writes per store commit (histogram) and the commits' time (seconds).
pub const COMMIT_BATCH: &str = "ward_store_commit_batch_size";
pub const COMMIT_SECONDS: &str = "ward_store_commit_seconds";
/// HTTP requests, by route and status (counter), and their time.
pub const HTTP_REQUESTS: &str = "ward_http_requests_total";
pub const HTTP_SECONDS: &str = "ward_http_request_duration_seconds";

/// Buckets for times, from a no-op attempt (~10 µs) to a long one.
const SECONDS_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle, and a recorder installed elsewhere first leaves
/// metrics unrecorded rather than failing).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS)
            })
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// The text exposition of every metric, or `None` when none is installed.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(EXECUTIONS, "Executions by their current state.");
    describe_counter!(ATTEMPTS, "Attempts ended, by outcome and error kind.");
    describe_histogram!(ATTEMPT_SECONDS, Unit::Seconds, "How long attempts ran.");
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "How long a runnable task run waited for a slot."
    );
    describe_counter!(FUEL, "Fuel the guests consumed.");
    describe_gauge!(QUEUE_DEPTH, "Task runs waiting on this host, by queue.");
    describe_gauge!(SLOTS_BUSY, "Attempt slots in use.");
    describe_gauge!(SLOTS, "Attempt slots on this host.");
    describe_histogram!(COMMIT_BATCH, "Writes per store commit.");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Time per store commit.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route and status.");
    describe_histogram!(HTTP_SECONDS, Unit::Seconds, "Time per HTTP request.");
}

/// The executions counted in each state when the service starts.
pub fn executions_at_start(counts: &[(ExecutionState, u64)]) {
    for state in ExecutionState::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        gauge!(EXECUTIONS, "state" => state.as_str()).set(n as f64);
    }
}

/// An execution moved from `from` (none when it was created) to `to`.
pub fn execution_moved(from: Option<ExecutionState>, to: ExecutionState) {
    if let Some(from) = from {
        gauge!(EXECUTIONS, "state" => from.as_str()).decrement(1.0);
    }
    gauge!(EXECUTIONS, "state" => to.as_str()).increment(1.0);
}

/// An attempt ended with `report`.
pub fn attempt_ended(report: &AttemptReport) {
    let kind = report.error.as_ref().map_or("none", |e| e.kind.as_str());
    counter!(ATTEMPTS, "outcome" => report.status.as_str(), "error_kind" => kind).increment(1);
    histogram!(ATTEMPT_SECONDS).record(report.usage.wall_ms / 1000.0);
    counter!(FUEL).increment(report.usage.fuel_consumed);
}

/// A task run waited `waited` between being runnable and its attempt's start.
pub fn queue_waited(waited: Duration) {
    histogram!(QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
}

/// The dispatcher's figures, set just before a scrape; a queue seen
/// before and empty now reads 0.
pub fn dispatch_now(busy: usize, slots: usize, queues: &std::collections::BTreeMap<String, usize>) {
    static SEEN: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    gauge!(SLOTS_BUSY).set(busy as f64);
    gauge!(SLOTS).set(slots as f64);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.extend(queues.keys().cloned());
    for queue in seen.iter() {
        let n = queues.get(queue).copied().unwrap_or(0);
        gauge!(QUEUE_DEPTH, "queue" => queue.clone()).set(n as f64);
    }
}

/// The store committed `writes` writes in `took`.
pub fn committed(writes: usize, took: Duration) {
    histogram!(COMMIT_BATCH).record(writes as f64);
    histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
}

/// An HTTP request to `route` (the matched pattern, not the path) ended.
pub fn http_request(method: &str, route: String, status: u16, took: Duration) {
    counter!(HTTP_REQUESTS, "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_SECONDS, "route" => route).record(took.as_secs_f64());
}
