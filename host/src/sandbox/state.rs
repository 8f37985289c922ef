//! The data of one attempt's `Store`: WASI context, resource table, memory
//! limiter and each host capability's state.
//!
//! Built fresh for every attempt by `sandbox::runner`; nothing in it is
//! shared with another attempt except the media folder and the sinks the
//! caller hands in.

use std::collections::BTreeMap;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capabilities::{
    checkpoints::Checkpoints, http::Http, logs::Logs, media::Media, metrics::Metrics,
    outputs::Outputs, warnings::Warnings,
};
use super::limits::MemoryLimiter;

/// Why the epoch callback stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Timeout,
    Cancelled,
    /// The scratch dir went over its quota (`sandbox::scratch`).
    DiskLimit,
}

pub struct AttemptState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub logs: Logs,
    pub outputs: Outputs,
    pub metrics: Metrics,
    pub media: Media,
    pub checkpoints: Checkpoints,
    pub variables: BTreeMap<String, String>,
    pub warnings: Warnings,
    /// Outbound HTTP (`wasi:http`), as the task grants it.
    pub http: Http,
    pub interrupt: Option<Interrupt>,
    /// Host-call spans this attempt may still make (see `sandbox::host`).
    pub host_spans: u32,
}

/// Host calls of one attempt traced as spans; later calls are not, so that
/// a guest calling in a loop cannot flood the trace exporter's queue and
/// push out other executions' spans.
pub const MAX_HOST_SPANS: u32 = 128;

impl wasmtime_wasi_http::WasiHttpView for AttemptState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

impl WasiView for AttemptState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
