//! One attempt, start to end: admission into the instance pool, a fresh
//! `Store` with fuel, epoch deadline, memory limiter and an async timeout,
//! the call to `run`, and the classification of how it ended.
//!
//! Owns the mapping from traps and results to `ErrorKind`; the capabilities
//! own their own quotas.

use std::time::{Duration, Instant};

use tokio::time::sleep_until;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::bindings::{self, ActionError};
use super::capabilities::{
    checkpoints::Checkpoints, logs::Logs, media::Media, metrics::Metrics, outputs::Outputs,
    warnings::Warnings,
};
use super::limits::{MemoryLimiter, bytes_display, shorten};
use super::report::{AttemptError, AttemptReport, AttemptStatus, ErrorKind, LogSource, Usage};
use super::state::{AttemptState, Interrupt};
use super::{AttemptSpec, LoadedAction, Sandbox};

/// How long past its deadline an attempt blocked in a host call is given
/// before it is abandoned; a spinning guest is stopped by the epoch first.
const BLOCKED_GRACE: Duration = Duration::from_millis(20);
/// Error and guest messages are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 16 * 1024;

enum Outcome {
    Returned(wasmtime::Result<Result<String, ActionError>>),
    Cancelled,
    TimedOut,
    /// The scratch dir went over its quota; why.
    DiskLimit(String),
}

pub(super) async fn run(
    sandbox: &Sandbox,
    action: &LoadedAction,
    spec: AttemptSpec,
) -> AttemptReport {
    let inv = &spec.invocation;
    let span = tracing::info_span!(
        "attempt",
        execution_id = %inv.execution_id,
        task_id = %inv.task_id,
        step = %inv.step,
        attempt = inv.attempt,
        component = %&action.digest[..12],
    );
    let report = run_attempt(sandbox, action, spec)
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::debug!(
            status = %report.status,
            error = report.error_kind().map(|k| k.as_str()),
            wall_ms = report.usage.wall_ms,
            "attempt finished"
        )
    });
    report
}

async fn run_attempt(sandbox: &Sandbox, action: &LoadedAction, spec: AttemptSpec) -> AttemptReport {
    let attempt = spec.invocation.attempt;
    let limits = spec.limits;
    if limits.memory_bytes > sandbox.config.max_memory_bytes {
        return AttemptReport::failed_before_start(
            attempt,
            ErrorKind::LoadFailed,
            format!(
                "memory limit {} is over this host's maximum of {}",
                bytes_display(limits.memory_bytes),
                bytes_display(sandbox.config.max_memory_bytes)
            ),
        );
    }

    let budget_mib = super::budget_mib(&sandbox.config);
    let reserve_mib = u32::try_from(limits.memory_bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
    if reserve_mib > budget_mib {
        return AttemptReport::failed_before_start(
            attempt,
            ErrorKind::LoadFailed,
            format!(
                "memory limit {} is over this host's memory budget of {} for all attempts at once",
                bytes_display(limits.memory_bytes),
                bytes_display(u64::from(budget_mib) << 20)
            ),
        );
    }
    // Reserve the attempt's memory limit from the host's budget, waiting
    // while other attempts hold it.
    let _memory = tokio::select! {
        permit = sandbox.memory_budget.clone().acquire_many_owned(reserve_mib) => permit.expect("the memory budget is never closed"),
        _ = spec.cancel.cancelled() => {
            return AttemptReport::failed_before_start(attempt, ErrorKind::Cancelled, "cancelled before it started".into());
        }
    };

    // Wait for room in the instance pool rather than fail when it is busy.
    let wanted = action
        .core_instances
        .min(sandbox.config.total_core_instances);
    let _slots = tokio::select! {
        permit = sandbox.admission.clone().acquire_many_owned(wanted) => permit.expect("the admission semaphore is never closed"),
        _ = spec.cancel.cancelled() => {
            return AttemptReport::failed_before_start(attempt, ErrorKind::Cancelled, "cancelled before it started".into());
        }
    };

    let started = Instant::now();
    let deadline = started + limits.timeout;
    let redact = super::redact::Redactor::new(&spec.secrets);
    let logs =
        Logs::new(spec.quotas.log_bytes, spec.log_observer.clone()).redacting(redact.clone());

    // A scratch dir's quota comes out of the host's scratch budget first.
    let _disk = if spec.scratch {
        let want = super::mib(spec.quotas.scratch_bytes);
        let budget = super::mib(sandbox.config.scratch_budget_bytes);
        if want > budget {
            return AttemptReport::failed_before_start(
                attempt,
                ErrorKind::LoadFailed,
                format!(
                    "scratch quota {} is over this host's scratch budget of {} for all attempts at once",
                    bytes_display(spec.quotas.scratch_bytes),
                    bytes_display(u64::from(budget) << 20)
                ),
            );
        }
        tokio::select! {
            permit = sandbox.scratch_budget.clone().acquire_many_owned(want) => Some(permit.expect("the scratch budget is never closed")),
            _ = spec.cancel.cancelled() => {
                return AttemptReport::failed_before_start(attempt, ErrorKind::Cancelled, "cancelled before it started".into());
            }
        }
    } else {
        None
    };

    // A scratch dir only when granted: creating one costs 20-50 µs.
    let scratch = if spec.scratch {
        match tempfile::Builder::new()
            .prefix("ward-scratch-")
            .tempdir_in(&sandbox.scratch_root)
        {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::error!(error = %e, "creating a scratch dir failed");
                return AttemptReport::failed_before_start(
                    attempt,
                    ErrorKind::LoadFailed,
                    format!("the host could not create a scratch dir: {e}"),
                );
            }
        }
    } else {
        None
    };

    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(logs.stream(LogSource::Stdout))
        .stderr(logs.stream(LogSource::Stderr))
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if let Some(dir) = &scratch
        && let Err(e) = wasi.preopened_dir(dir.path(), "/scratch", FsPerms::ReadWrite)
    {
        return AttemptReport::failed_before_start(
            attempt,
            ErrorKind::LoadFailed,
            format!("the host could not open the scratch dir: {e}"),
        );
    }

    let state = AttemptState {
        wasi: wasi.build(),
        table: wasmtime::component::ResourceTable::new(),
        limiter: MemoryLimiter::new(limits.memory_bytes, sandbox.config.table_elements),
        logs: logs.clone(),
        outputs: Outputs::new(&spec.quotas),
        metrics: Metrics::new(spec.quotas.metric_series),
        media: Media::new(spec.media.clone(), &spec.quotas),
        checkpoints: Checkpoints::new(
            spec.last_checkpoint.clone(),
            spec.quotas.checkpoint_bytes,
            spec.checkpoint_sink.clone(),
        ),
        variables: spec.variables.clone(),
        warnings: Warnings::new(spec.quotas.warnings),
        http: super::capabilities::http::Http::new(spec.http.clone(), logs.clone()),
        interrupt: None,
        host_spans: super::state::MAX_HOST_SPANS,
    };
    let mut store = Store::new(&sandbox.engine, state);
    store.limiter(|s| &mut s.limiter);
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled on the engine");
    store
        .fuel_async_yield_interval(Some(sandbox.config.fuel_yield_interval))
        .expect("fuel and async are enabled on the engine");
    // The scratch dir's quota, watched while the guest runs.
    let watch = scratch.as_ref().map(|dir| {
        super::scratch::Watch::start(dir.path().to_path_buf(), spec.quotas.scratch_bytes)
    });
    let disk_over = watch.as_ref().map(|w| w.over.clone());
    let disk_tripped = watch.as_ref().map(|w| w.tripped.clone());

    // Check cancellation, the scratch quota and the deadline on every
    // epoch tick.
    let cancel = spec.cancel.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        let over = disk_over
            .as_ref()
            .is_some_and(|o| o.lock().is_ok_and(|o| o.is_some()));
        let why = if cancel.is_cancelled() {
            Interrupt::Cancelled
        } else if over {
            Interrupt::DiskLimit
        } else if Instant::now() >= deadline {
            Interrupt::Timeout
        } else {
            return Ok(UpdateDeadline::Continue(1));
        };
        ctx.data_mut().interrupt = Some(why);
        Ok(UpdateDeadline::Interrupt)
    });

    let invocation = bindings::Invocation {
        input: spec.invocation.input.clone(),
        execution_id: spec.invocation.execution_id.clone(),
        task_id: spec.invocation.task_id.clone(),
        step: spec.invocation.step.clone(),
        attempt,
    };
    let outcome = {
        let call = async {
            let instance = instantiate(action, &mut store).await?;
            instance.call_run(&mut store, &invocation).await
        };
        let tripped = async {
            match &disk_tripped {
                Some(t) => t.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = call => Outcome::Returned(r),
            _ = spec.cancel.cancelled() => Outcome::Cancelled,
            _ = tripped => Outcome::DiskLimit(String::new()),
            _ = sleep_until((deadline + BLOCKED_GRACE).into()) => Outcome::TimedOut,
        }
    };
    // Once more at the end: a guest that filled the dir between two looks
    // and returned is over its quota all the same.
    let outcome = match (&watch, &scratch) {
        (Some(w), Some(dir)) => {
            w.stop_now();
            let (bytes, entries) = super::scratch::usage(dir.path());
            let late = (bytes > spec.quotas.scratch_bytes || entries > super::scratch::MAX_ENTRIES)
                .then(|| {
                    format!(
                        "the scratch dir holds {} on disk and {entries} entries, over its quota of {} or {} entries",
                        bytes_display(bytes),
                        bytes_display(spec.quotas.scratch_bytes),
                        super::scratch::MAX_ENTRIES
                    )
                });
            match w.reason().or(late) {
                Some(why) => Outcome::DiskLimit(why),
                None => outcome,
            }
        }
        _ => outcome,
    };
    let wall = started.elapsed();
    let fuel_left = store.get_fuel().unwrap_or(0);
    let mut state = store.into_data();
    // Dropping the guest's resources ends its HTTP bodies, which records
    // their requests before the logs are finished.
    state.table = wasmtime::component::ResourceTable::new();
    let http = state.http.report(&mut state.metrics);
    let (status, result, error) = classify(outcome, &state, &spec, wall);
    drop(scratch);

    // Secrets the guest echoed stay in the attempt (logs were redacted as
    // they were written).
    let mut result = result;
    let mut error = error;
    let mut outputs = state.outputs.into_values();
    let mut warnings = state.warnings.into_list();
    if !redact.is_empty() {
        if let Some(r) = &mut result {
            redact.json(r);
        }
        if let Some(e) = &mut error {
            e.message = redact.text(std::mem::take(&mut e.message));
        }
        for v in outputs.values_mut() {
            redact.json(v);
        }
        for w in &mut warnings {
            *w = redact.text(std::mem::take(w));
        }
    }
    AttemptReport {
        status,
        attempt,
        result,
        error,
        usage: Usage {
            fuel_consumed: limits.fuel.saturating_sub(fuel_left),
            wall_ms: wall.as_secs_f64() * 1000.0,
            memory_peak_bytes: state.limiter.peak_bytes(),
        },
        outputs,
        metrics: state.metrics.into_report(),
        media: state.media.into_items(),
        logs: logs.finish(),
        checkpoint: state.checkpoints.into_written(),
        warnings,
        http,
    }
}

/// Instantiates, waiting for a free pool slot if the pool is exhausted
/// (admission control makes this rare: components can hold more tables or
/// memories than their core-instance share suggests).
async fn instantiate(
    action: &LoadedAction,
    store: &mut Store<AttemptState>,
) -> wasmtime::Result<bindings::Action> {
    loop {
        match action.pre.instantiate_async(&mut *store).await {
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                tracing::debug!(error = %e, "instance pool busy; waiting for a slot");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => return other,
        }
    }
}

type Classified = (
    AttemptStatus,
    Option<serde_json::Value>,
    Option<AttemptError>,
);

fn failed(kind: ErrorKind, message: String) -> Classified {
    let status = if kind == ErrorKind::Cancelled {
        AttemptStatus::Killed
    } else {
        AttemptStatus::Failed
    };
    (status, None, Some(AttemptError { kind, message }))
}

fn classify(
    outcome: Outcome,
    state: &AttemptState,
    spec: &AttemptSpec,
    wall: Duration,
) -> Classified {
    let limits = &spec.limits;
    let timeout_message = || {
        format!(
            "wall-clock timeout of {} reached",
            humantime::format_duration(limits.timeout)
        )
    };
    match outcome {
        Outcome::Cancelled => failed(ErrorKind::Cancelled, "cancelled while running".into()),
        Outcome::DiskLimit(why) => failed(ErrorKind::DiskLimit, why),
        Outcome::TimedOut => failed(
            ErrorKind::Timeout,
            format!(
                "{} (the guest was blocked in a host call)",
                timeout_message()
            ),
        ),
        Outcome::Returned(Err(e)) => {
            if state.interrupt == Some(Interrupt::Cancelled) {
                return failed(ErrorKind::Cancelled, "cancelled while running".into());
            }
            match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => failed(
                    ErrorKind::FuelExhausted,
                    format!("fuel limit of {} exhausted", limits.fuel),
                ),
                Some(Trap::Interrupt) => failed(ErrorKind::Timeout, timeout_message()),
                Some(Trap::StackOverflow) => failed(
                    ErrorKind::StackOverflow,
                    "the guest overflowed its stack".into(),
                ),
                _ if state.limiter.denied() => failed(
                    ErrorKind::MemoryLimit,
                    format!(
                        "memory limit of {} reached: a memory growth was denied, then the guest stopped: {}",
                        bytes_display(limits.memory_bytes),
                        first_line(&e)
                    ),
                ),
                _ => {
                    // The guest's own words (a panic message) come first.
                    let tail = state.logs.stderr_tail();
                    let tail = tail.trim_start();
                    let message = if tail.is_empty() {
                        trap_text(&e)
                    } else {
                        format!(
                            "{}\nstderr:\n{tail}\n{}",
                            first_line(&e),
                            trap_text(&e).split_once('\n').map_or("", |(_, bt)| bt)
                        )
                    };
                    failed(ErrorKind::Trap, shorten(&message, MAX_MESSAGE_CHARS))
                }
            }
        }
        Outcome::Returned(Ok(Err(err))) => {
            let (kind, msg) = match err {
                ActionError::Retryable(m) => (ErrorKind::ActionRetryable, m),
                ActionError::Fatal(m) => (ErrorKind::ActionFatal, m),
                ActionError::InvalidInput(m) => (ErrorKind::InvalidInput, m),
            };
            failed(kind, shorten(&msg, MAX_MESSAGE_CHARS))
        }
        Outcome::Returned(Ok(Ok(text))) => {
            let _ = wall;
            if text.len() as u64 > spec.quotas.result_bytes {
                return failed(
                    ErrorKind::InvalidResult,
                    format!(
                        "result is {}, over the {} quota",
                        bytes_display(text.len() as u64),
                        bytes_display(spec.quotas.result_bytes)
                    ),
                );
            }
            match serde_json::from_str(&text) {
                Ok(value) => {
                    let status = if state.warnings.is_empty() {
                        AttemptStatus::Success
                    } else {
                        AttemptStatus::Warning
                    };
                    (status, Some(value), None)
                }
                Err(e) => failed(
                    ErrorKind::InvalidResult,
                    format!("result is not JSON ({e}): {:?}", shorten(&text, 200)),
                ),
            }
        }
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

/// The trap and a short wasm backtrace, for a plugin author to act on.
fn trap_text(e: &wasmtime::Error) -> String {
    let mut text = first_line(e);
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = bt
            .to_string()
            .lines()
            .filter(|l| !l.starts_with("error while executing"))
            .take(12)
            .map(str::to_string)
            .collect();
        if !frames.is_empty() {
            text.push_str("\nwasm backtrace:\n");
            text.push_str(&frames.join("\n"));
        }
    }
    text
}
