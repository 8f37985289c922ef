//! The sandbox: runs one attempt of a task action in a fresh wasmtime
//! instance, under limits and quotas, and returns its report.
//!
//! Owns the engine, the linker, loaded components and the per-attempt store.
//! It knows nothing of tasks, executions or the store: callers hand it an
//! [`AttemptSpec`] (with sinks for checkpoints and live logs) and get an
//! [`AttemptReport`] back. The runtime and `ward run` are its callers.

mod bindings;
pub mod capabilities;
pub mod component;
pub mod engine;
mod host;
pub mod limits;
pub mod redact;
// The report types are the model's vocabulary; the sandbox fills them in.
pub use crate::model::report;
mod runner;
pub mod scratch;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use capabilities::checkpoints::CheckpointSink;
pub use capabilities::logs::LogObserver;
pub use capabilities::media::{MediaStore, MediaUrls};
pub use component::{LoadError, LoadedAction};
pub use engine::EngineConfig;
pub use limits::{Limits, Quotas};
pub use report::{AttemptReport, AttemptStatus, ErrorKind};

use component::ComponentCache;
use state::AttemptState;

/// What one attempt is asked to do (the WIT `invocation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// JSON text.
    pub input: String,
    pub execution_id: String,
    pub task_id: String,
    pub step: String,
    pub attempt: u32,
}

/// Everything one attempt needs besides the component.
#[derive(Clone)]
pub struct AttemptSpec {
    pub invocation: Invocation,
    pub limits: Limits,
    pub quotas: Quotas,
    /// Variables the task grants; `get-variable` sees only these.
    pub variables: BTreeMap<String, String>,
    /// Values that must never leave the attempt: each is replaced by
    /// `[secret]` in its logs (as they are written), outputs, result, error
    /// and warnings.
    pub secrets: Vec<String>,
    /// Whether the attempt gets a fresh scratch dir at `/scratch`.
    pub scratch: bool,
    /// Outbound HTTP; every request is denied without it.
    pub http: Option<crate::model::net::HttpGrant>,
    /// The task run's last checkpoint, from an earlier attempt.
    pub last_checkpoint: Option<String>,
    /// Where media go.
    pub media: Arc<MediaStore>,
    /// Stores checkpoints durably; `None` keeps them in the report only.
    pub checkpoint_sink: Option<Arc<dyn CheckpointSink>>,
    /// Sees each log line as it is written.
    pub log_observer: Option<Arc<dyn LogObserver>>,
    /// Cancels the attempt: a running guest stops within an epoch tick or,
    /// if blocked in a host call, at once.
    pub cancel: CancellationToken,
}

impl AttemptSpec {
    /// A spec with default limits and quotas and no grants.
    pub fn new(invocation: Invocation, media: Arc<MediaStore>) -> Self {
        AttemptSpec {
            invocation,
            limits: Limits::default(),
            quotas: Quotas::default(),
            variables: BTreeMap::new(),
            secrets: Vec::new(),
            scratch: false,
            http: None,
            last_checkpoint: None,
            media,
            checkpoint_sink: None,
            log_observer: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// The attempt runner. One per process: it owns the engine and its pool.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<AttemptState>,
    components: ComponentCache,
    /// Core-instance slots of the pool; an attempt waits here for its share
    /// instead of failing when the pool is busy.
    admission: Arc<Semaphore>,
    /// The host's memory budget in MiB; an attempt reserves its memory
    /// limit here before it starts.
    memory_budget: Arc<Semaphore>,
    /// The host's scratch disk budget in MiB; an attempt with a scratch
    /// dir reserves its quota here.
    scratch_budget: Arc<Semaphore>,
    config: EngineConfig,
    scratch_root: PathBuf,
}

/// The memory budget in whole MiB (at least one attempt of 1 MiB).
fn budget_mib(config: &EngineConfig) -> u32 {
    mib(config.memory_budget_bytes)
}

/// A budget in whole MiB, as a semaphore holds it (at least 1).
fn mib(bytes: u64) -> u32 {
    u32::try_from(bytes >> 20)
        .unwrap_or(u32::MAX >> 3)
        .clamp(1, Semaphore::MAX_PERMITS as u32 >> 1)
}

impl Sandbox {
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let engine = engine::build_engine(&config)?;
        let mut linker = Linker::<AttemptState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every attempt may import wasi:http; only a grant lets a request out.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Action::add_to_linker::<AttemptState, HasSelf<AttemptState>>(&mut linker, |s| s)?;
        engine::start_epoch_ticker(&engine, config.epoch_tick);
        let components = ComponentCache::new(
            config.cache_dir.clone(),
            engine::settings_fingerprint(&engine),
        )?;
        Ok(Sandbox {
            admission: Arc::new(Semaphore::new(config.total_core_instances as usize)),
            memory_budget: Arc::new(Semaphore::new(budget_mib(&config) as usize)),
            scratch_budget: Arc::new(Semaphore::new(mib(config.scratch_budget_bytes) as usize)),
            engine,
            linker,
            components,
            scratch_root: std::env::temp_dir(),
            config,
        })
    }

    /// Where scratch dirs are created (default: the system temp dir).
    pub fn set_scratch_root(&mut self, root: PathBuf) {
        self.scratch_root = root;
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads a component from its bytes (compiling it once per digest).
    /// Compiling takes tens of milliseconds: call it off the async runtime's
    /// worker threads for a component not yet loaded.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedAction>, LoadError> {
        self.components.load(&self.engine, &self.linker, bytes)
    }

    /// Loads a component file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedAction>, LoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
        self.load(&bytes)
    }

    /// A component already loaded, by digest.
    pub fn loaded(&self, digest: &str) -> Option<Arc<LoadedAction>> {
        self.components.get(digest)
    }

    /// Runs one attempt and reports how it went. Never panics or returns an
    /// error for anything the guest does.
    pub async fn run(&self, action: &LoadedAction, spec: AttemptSpec) -> AttemptReport {
        runner::run(self, action, spec).await
    }
}
