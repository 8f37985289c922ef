//! OpenTelemetry traces, off unless `ward serve --otlp-endpoint` is given:
//! one trace per execution, exported over OTLP/HTTP (protobuf).
//!
//! A trace's spans are made at different times and may be made by
//! different processes (an execution outlives a restart), so their ids are
//! not random but derived from the records they stand for: the trace id is
//! the execution's UUID, the execution's and each task run's span ids are
//! hashes of their ids. An attempt's span, made live by the worker around
//! the sandbox run, thus names its task run's span as parent before that
//! span exists; the execution and task-run spans are made from the stored
//! record once the execution has ended (`runtime::spans`), with the
//! record's times. Host calls are `tracing` spans inside the attempt's, so
//! they become its children. Searching a tracing backend for an execution
//! id (without dashes) finds its trace; the same id is the `trace_id`
//! field on every log line written during an attempt.
//!
//! Like `telemetry`, any module may use this; it depends on nothing in
//! Ward but the model's records.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};
use tracing_subscriber::filter::Targets;

use crate::model::execution::{Execution, TaskRun};
use crate::model::report::{AttemptReport, AttemptStatus};
use crate::model::state::{ExecutionState, TaskRunState};

/// The `tracing` target of the attempt spans (shown on log lines too).
pub const ATTEMPT_TARGET: &str = "ward::span::attempt";
/// The `tracing` target of the host-call spans (exported, never logged).
pub const HOST_CALL_TARGET: &str = "ward::span::host";

/// The path OTLP/HTTP collectors take traces on, added to an endpoint
/// given without a path (as `OTEL_EXPORTER_OTLP_ENDPOINT` is).
const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The exporter, kept to flush what is buffered when the process ends.
#[must_use = "dropping it flushes and stops the exporter"]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Long enough for one export to finish or time out.
        if let Err(e) = self
            .provider
            .shutdown_with_timeout(EXPORT_TIMEOUT + Duration::from_secs(2))
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The traces URL for `endpoint`: as given when it has a path, else with
/// `/v1/traces` added. Only `http` and `https` are accepted.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("the OTLP endpoint must be an http:// or https:// URL, not {endpoint:?}")
        })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("the OTLP endpoint {endpoint:?} names no host"));
    }
    if path.trim_matches('/').is_empty() {
        let base = endpoint.trim_end_matches('/');
        Ok(format!("{base}{TRACES_PATH}"))
    } else {
        Ok(endpoint.to_string())
    }
}

/// The `tracing` layer that exports spans, with its filter.
pub type SpanLayer<S> = tracing_subscriber::filter::Filtered<
    tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>,
    Targets,
    S,
>;

/// Starts exporting to `endpoint` and returns the `tracing` layer that
/// turns attempt and host-call spans into OpenTelemetry spans, with the
/// filter that selects them.
pub fn start<S>(endpoint: &str, instance: &str) -> Result<(SpanLayer<S>, Exporter), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use tracing_subscriber::Layer;

    let url = traces_url(endpoint)?;
    let client = ExportClient::new().map_err(|e| format!("the OTLP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ward")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
        .build();
    // Every trace is kept: a ratio sampler would read the trace id's low
    // bits, fixed in part in a UUID v7, and children carry `SAMPLED` anyway.
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_id_generator(RecordIds)
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ward");
    let _ = TRACER.set(tracer.clone());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_filter(
            Targets::new()
                .with_target(ATTEMPT_TARGET, tracing::Level::INFO)
                .with_target(HOST_CALL_TARGET, tracing::Level::DEBUG),
        );
    Ok((layer, Exporter { provider }))
}

/// The trace id of an execution: its UUID's 128 bits (a hash of the id
/// for an id that is not a UUID).
pub fn trace_id(execution_id: &str) -> TraceId {
    match uuid::Uuid::parse_str(execution_id) {
        Ok(u) if !u.is_nil() => TraceId::from(u.as_u128()),
        _ => {
            let h = Sha256::digest(execution_id.as_bytes());
            TraceId::from(u128::from_be_bytes(h[..16].try_into().expect("16 bytes")))
        }
    }
}

/// The trace id as a tracing backend shows it: 32 lowercase hex digits.
pub fn trace_id_hex(execution_id: &str) -> String {
    trace_id(execution_id).to_string()
}

/// The span id of a record (`"execution"` or `"task_run"`, and its id):
/// the first 8 bytes of a hash, never zero.
pub fn span_id(kind: &str, id: &str) -> SpanId {
    let h = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    SpanId::from(n.max(1))
}

/// The span context of a record's span, as a parent for its children.
fn record_context(execution_id: &str, kind: &str, id: &str) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id(execution_id),
        span_id(kind, id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The span of one attempt, a child of its task run's span in the
/// execution's trace, entered by the worker for the attempt's whole run.
/// Its one `tracing` field is the trace id, so that every log line written
/// inside it carries that (and nothing a guest wrote); the attributes
/// exported with it are set only when traces are on.
pub fn attempt_span(
    execution_id: &str,
    task_id: &str,
    task_run_id: &str,
    step: &str,
    number: u32,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: ATTEMPT_TARGET,
        "attempt",
        trace_id = %trace_id_hex(execution_id),
    );
    if enabled() && !span.is_disabled() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(record_context(execution_id, "task_run", task_run_id));
        span.set_attribute("ward.execution.id", execution_id.to_string());
        span.set_attribute("ward.task.id", task_id.to_string());
        span.set_attribute("ward.task_run.id", task_run_id.to_string());
        span.set_attribute("ward.step", step.to_string());
        span.set_attribute("ward.attempt", i64::from(number));
    }
    span
}

/// Longest error message kept on a span (a guest's message may be long).
const MAX_STATUS_MESSAGE: usize = 256;

/// The attempt's end on its span (the current one), when traces are on.
pub fn attempt_ended(report: &AttemptReport) {
    if !enabled() {
        return;
    }
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::Span::current();
    span.set_attribute("ward.outcome", report.status.as_str());
    if let Some(e) = &report.error {
        span.set_attribute("ward.error.kind", e.kind.as_str());
        if report.status == AttemptStatus::Failed {
            let message: String = e.message.chars().take(MAX_STATUS_MESSAGE).collect();
            span.set_status(Status::error(message));
        }
    }
}

/// Emits the spans of an ended execution and of its task runs, from its
/// stored record (with task runs and attempts). Does nothing when traces
/// are off or the execution has not ended.
pub fn execution_ended(execution: &Execution) {
    let Some(tracer) = TRACER.get() else {
        return;
    };
    if !execution.state.is_terminal() {
        return;
    }
    let start = time(&execution.created_at).unwrap_or_else(SystemTime::now);
    let end = execution
        .ended_at
        .as_deref()
        .and_then(time)
        .unwrap_or_else(SystemTime::now)
        .max(start);
    let mut attributes = vec![
        KeyValue::new("ward.execution.id", execution.id.clone()),
        KeyValue::new("ward.task.id", execution.task_id.clone()),
        KeyValue::new("ward.task.version", execution.task_version),
        KeyValue::new("ward.namespace", execution.namespace.clone()),
        KeyValue::new("ward.trigger", execution.trigger.as_str()),
        KeyValue::new("ward.state", execution.state.as_str()),
    ];
    if let Some(parent) = &execution.parent_id {
        attributes.push(KeyValue::new("ward.parent.id", parent.clone()));
    }
    if let Some(e) = &execution.error {
        attributes.push(KeyValue::new("ward.error.kind", e.kind.as_str()));
    }
    let status = match (&execution.state, &execution.error) {
        (ExecutionState::Failed, Some(e)) => Status::error(e.message.clone()),
        (ExecutionState::Failed, None) => Status::error("failed"),
        _ => Status::Ok,
    };
    let builder = tracer
        .span_builder("execution")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes);
    let mut span = with_ids(
        Some(trace_id(&execution.id)),
        span_id("execution", &execution.id),
        || tracer.build_with_context(builder, &Context::new()),
    );
    span.set_status(status);
    span.end_with_timestamp(end);

    let parent = record_context(&execution.id, "execution", &execution.id);
    for run in execution.task_runs.iter().flatten() {
        task_run_ended(tracer, &parent, execution, run, start, end);
    }
}

fn task_run_ended(
    tracer: &SdkTracer,
    parent: &Context,
    execution: &Execution,
    run: &TaskRun,
    execution_start: SystemTime,
    execution_end: SystemTime,
) {
    let starts = run.attempts.iter().filter_map(|a| time(&a.started_at));
    let ends = run
        .attempts
        .iter()
        .filter_map(|a| a.ended_at.as_deref().and_then(time));
    let start = starts.min().unwrap_or(execution_start);
    let end = ends.max().unwrap_or(execution_end).max(start);
    let last_error = run.attempts.iter().rev().find_map(|a| a.error.as_ref());
    let mut attributes = vec![
        KeyValue::new("ward.execution.id", execution.id.clone()),
        KeyValue::new("ward.task_run.id", run.id.clone()),
        KeyValue::new("ward.step", run.step.clone()),
        KeyValue::new("ward.state", run.state.as_str()),
        KeyValue::new("ward.attempts", run.attempts.len() as i64),
    ];
    if let Some(e) = last_error {
        attributes.push(KeyValue::new("ward.error.kind", e.kind.as_str()));
    }
    let builder = tracer
        .span_builder("task_run")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes);
    let mut span = with_ids(None, span_id("task_run", &run.id), || {
        tracer.build_with_context(builder, parent)
    });
    span.set_status(match (run.state, last_error) {
        (TaskRunState::Failed, Some(e)) => Status::error(e.message.clone()),
        (TaskRunState::Failed, None) => Status::error("failed"),
        _ => Status::Ok,
    });
    span.end_with_timestamp(end);
}

/// A stored time (RFC 3339, UTC, as the store writes them).
fn time(rfc3339: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(rfc3339)
        .or_else(|_| humantime::parse_rfc3339_weak(rfc3339))
        .ok()
}

thread_local! {
    /// The ids the next span built on this thread takes (record spans).
    static NEXT_IDS: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Builds a span with the given ids: the SDK's span builder takes no ids,
/// its id generator does, so they are handed to it through this thread.
fn with_ids<T>(trace: Option<TraceId>, span: SpanId, build: impl FnOnce() -> T) -> T {
    NEXT_IDS.with(|ids| ids.set((trace, Some(span))));
    let built = build();
    NEXT_IDS.with(|ids| ids.set((None, None)));
    built
}

/// Random ids, except for the one span being built by [`with_ids`].
#[derive(Debug)]
struct RecordIds;

impl IdGenerator for RecordIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .with(|ids| {
                let (trace, span) = ids.get();
                ids.set((None, span));
                trace
            })
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .with(|ids| {
                let (trace, span) = ids.get();
                ids.set((trace, None));
                span
            })
            .unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
    }
}

/// Posts OTLP requests with the reqwest client Ward already has. The SDK
/// exports from a thread of its own, outside any async runtime, so the
/// request runs on a one-thread runtime owned by this client.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ExportClient {
    fn new() -> Result<ExportClient, String> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ward-otlp")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ExportClient { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let request = reqwest::Request::try_from(request)?;
        // `execute` arms its timeout at once: call it on the runtime.
        let client = self.client.clone();
        let response = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let mut response = opentelemetry_http::Response::builder().status(r.status());
                if let Some(headers) = response.headers_mut() {
                    *headers = r.headers().clone();
                }
                let body = r.bytes().await?;
                Ok::<_, opentelemetry_http::HttpError>(response.body(body)?)
            })
            .await??;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_path_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces").unwrap(),
            "https://c.example/otlp/v1/traces"
        );
        for bad in ["collector:4318", "ftp://c/", "http://", "http:///v1/traces"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_execution_id_is_its_trace_id() {
        let id = "019ad6a2-7d3e-7c11-9f0e-5a4b3c2d1e0f";
        assert_eq!(trace_id_hex(id), "019ad6a27d3e7c119f0e5a4b3c2d1e0f");
        // Not a UUID: still a valid id, and always the same one.
        assert_eq!(trace_id("abc"), trace_id("abc"));
        assert_ne!(trace_id("abc"), TraceId::INVALID);
    }

    #[test]
    fn record_span_ids_are_stable_and_kept_apart_by_kind() {
        let a = span_id("task_run", "r1");
        assert_eq!(a, span_id("task_run", "r1"));
        assert_ne!(a, span_id("execution", "r1"));
        assert_ne!(a, span_id("task_run", "r2"));
        assert_ne!(a, SpanId::INVALID);
    }

    #[test]
    fn handed_ids_are_taken_once_then_ids_are_random_again() {
        let gen_ = RecordIds;
        let (t, s) = (TraceId::from(7u128), SpanId::from(9u64));
        let (trace, span) = with_ids(Some(t), s, || (gen_.new_trace_id(), gen_.new_span_id()));
        assert_eq!((trace, span), (t, s));
        assert_ne!(gen_.new_span_id(), s);
        assert_ne!(gen_.new_trace_id(), t);
    }
}
