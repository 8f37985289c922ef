//! The attempt report: what one attempt did, in the JSON shape that
//! `ward run --json` prints and the HTTP API serves.
//!
//! Types only, shared by every layer; the sandbox's runner fills them in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an attempt ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum AttemptStatus {
    /// `run` returned a JSON result and no warning was recorded.
    Success,
    /// `run` returned a JSON result and the guest recorded warnings.
    Warning,
    /// The attempt failed; `error` says how.
    Failed,
    /// The attempt was cancelled while it ran.
    Killed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Success or warning.
    pub fn is_ok(self) -> bool {
        matches!(self, AttemptStatus::Success | AttemptStatus::Warning)
    }
}

/// Why an attempt failed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// The attempt used up its fuel.
    FuelExhausted,
    /// The attempt ran past its wall-clock timeout.
    Timeout,
    /// A memory growth past the limit was denied and the guest then trapped.
    MemoryLimit,
    /// The guest overflowed its stack.
    StackOverflow,
    /// Any other trap (a panic, `unreachable`, a bad memory access…).
    Trap,
    /// The action returned `action-error.retryable`.
    ActionRetryable,
    /// The action returned `action-error.fatal`.
    ActionFatal,
    /// The action returned `action-error.invalid-input`.
    InvalidInput,
    /// The action returned text that is not JSON, or too much of it.
    InvalidResult,
    /// The attempt was cancelled.
    Cancelled,
    /// The component could not be loaded or instantiated.
    LoadFailed,
    /// The host running the attempt died before it finished.
    HostCrash,
    /// A flow step's template (`input`, `if`, `save`) or the task's
    /// `outputs` could not be rendered.
    TemplateError,
    /// The attempt's scratch dir grew past its quota.
    DiskLimit,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A failed attempt's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptError {
    pub kind: ErrorKind,
    pub message: String,
}

/// One metric series' aggregate for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Metric {
    /// Sum of the deltas added to the counter.
    Counter {
        name: String,
        tags: BTreeMap<String, String>,
        value: i64,
    },
    /// Observations of a duration.
    Duration {
        name: String,
        tags: BTreeMap<String, String>,
        count: u64,
        sum_ns: u64,
        min_ns: u64,
        max_ns: u64,
    },
}

impl Metric {
    pub fn name(&self) -> &str {
        match self {
            Metric::Counter { name, .. } | Metric::Duration { name, .. } => name,
        }
    }
}

/// A stored media object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaInfo {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub url: String,
}

/// Where a log line came from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogSource {
    /// `host.log` (and notes the host adds, like the truncation marker).
    Host,
    /// The guest's standard output, one entry per line.
    Stdout,
    /// The guest's standard error, one entry per line.
    Stderr,
    /// An outbound request through `wasi:http`: method, host, status,
    /// bytes and time, one line each.
    Http,
}

/// Log levels, as in the WIT `level` enum.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 time the line was written.
    pub ts: String,
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

/// What the attempt consumed.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub fuel_consumed: u64,
    pub wall_ms: f64,
    pub memory_peak_bytes: u64,
}

/// One outbound HTTP request of an attempt (granted or refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpCall {
    pub method: String,
    /// `host:port` as the guest asked for it.
    pub host: String,
    /// The response's code, or `denied` (the grant refused it) or `failed`.
    pub status: String,
    /// Body bytes sent and received.
    pub bytes: u64,
    pub ms: f64,
}

/// Everything one attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub status: AttemptStatus,
    pub attempt: u32,
    /// The parsed result for a successful attempt, else `null`.
    pub result: Option<Value>,
    pub error: Option<AttemptError>,
    pub outputs: BTreeMap<String, Value>,
    pub metrics: Vec<Metric>,
    pub media: Vec<MediaInfo>,
    pub logs: Vec<LogLine>,
    /// The last checkpoint this attempt stored, if any.
    pub checkpoint: Option<Value>,
    pub warnings: Vec<String>,
    pub usage: Usage,
    /// Its outbound HTTP requests, in the order they ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpCall>,
}

impl AttemptReport {
    /// A report for an attempt that never ran its guest (e.g. `load_failed`).
    pub fn failed_before_start(attempt: u32, kind: ErrorKind, message: String) -> Self {
        AttemptReport {
            status: if kind == ErrorKind::Cancelled {
                AttemptStatus::Killed
            } else {
                AttemptStatus::Failed
            },
            attempt,
            result: None,
            error: Some(AttemptError { kind, message }),
            outputs: BTreeMap::new(),
            metrics: Vec::new(),
            media: Vec::new(),
            logs: Vec::new(),
            checkpoint: None,
            warnings: Vec::new(),
            usage: Usage::default(),
            http: Vec::new(),
        }
    }

    /// The error kind, if the attempt failed.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn report_serializes_to_the_documented_shape() {
        let mut r = AttemptReport::failed_before_start(2, ErrorKind::FuelExhausted, "out".into());
        r.metrics.push(Metric::Counter {
            name: "rows".into(),
            tags: [("k".to_string(), "v".to_string())].into(),
            value: 3,
        });
        r.metrics.push(Metric::Duration {
            name: "work".into(),
            tags: BTreeMap::new(),
            count: 1,
            sum_ns: 1_500_000,
            min_ns: 1_500_000,
            max_ns: 1_500_000,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["result"], Value::Null);
        assert_eq!(v["error"]["kind"], "fuel_exhausted");
        assert_eq!(v["metrics"][0]["kind"], "counter");
        assert_eq!(v["metrics"][0]["tags"]["k"], "v");
        assert_eq!(v["metrics"][1]["kind"], "duration");
        assert_eq!(v["metrics"][1]["sum_ns"], 1_500_000);
        assert_eq!(v["checkpoint"], Value::Null);
        for key in ["outputs", "media", "logs", "warnings"] {
            assert!(v[key].is_array() || v[key].is_object(), "{key}");
        }
        assert_eq!(v["usage"]["wall_ms"], 0.0);
        let back: AttemptReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    /// Serde and strum spell each name on their own: they must agree.
    fn same_name_both_ways<T>(values: &[T])
    where
        T: Copy + Serialize + fmt::Display + std::str::FromStr + PartialEq + fmt::Debug,
    {
        for &v in values {
            let wire = serde_json::to_value(v).unwrap();
            assert_eq!(wire, v.to_string(), "{v:?}");
            assert!(v.to_string().parse::<T>().ok() == Some(v), "{v:?}");
        }
    }

    #[test]
    fn enum_names_are_the_wire_names() {
        use ErrorKind as K;
        same_name_both_ways(&[
            AttemptStatus::Success,
            AttemptStatus::Warning,
            AttemptStatus::Failed,
            AttemptStatus::Killed,
        ]);
        same_name_both_ways(&[
            K::FuelExhausted,
            K::Timeout,
            K::MemoryLimit,
            K::StackOverflow,
            K::Trap,
            K::ActionRetryable,
            K::ActionFatal,
            K::InvalidInput,
            K::InvalidResult,
            K::Cancelled,
            K::LoadFailed,
            K::HostCrash,
        ]);
        same_name_both_ways(&[LogSource::Host, LogSource::Stdout, LogSource::Stderr]);
        same_name_both_ways(&[
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ]);
        assert_eq!(K::FuelExhausted.as_str(), "fuel_exhausted");
        assert_eq!(K::HostCrash.to_string(), "host_crash");
        assert_eq!(AttemptStatus::Killed.as_str(), "killed");
        assert_eq!(LogLevel::Warn.as_str(), "warn");
        assert_eq!(LogSource::Stderr.as_str(), "stderr");
    }
}
