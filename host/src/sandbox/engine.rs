//! The process-wide wasmtime `Engine`: component model, fuel, epoch
//! interruption with one ticker thread, and the pooling allocator sized from
//! config.
//!
//! Owns engine settings only; per-attempt limits are applied to each `Store`
//! by `sandbox::runner`. Sizing and tuning follow measurements made for
//! wasmtime 48 (see BENCHMARKS.md): default pooling settings scale badly
//! across threads (madvise per instance), so memory, tables and stacks are
//! kept resident and the kernel's pagemap scan is used where available.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

const MIB: usize = 1024 * 1024;

/// Engine-wide settings. The defaults hold at least 1,000 concurrent Rust
/// attempts (a Rust `wasm32-wasip2` component: 1 component instance, a few
/// core instances, 1 memory) and 100 Python ones (componentize-py: 14 core
/// instances, ~5,700 table elements, 12.4 MiB of memory at start) at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Component instances alive at once: the number of concurrent attempts.
    pub max_concurrent_attempts: u32,
    /// Core instances alive at once, across all attempts.
    pub total_core_instances: u32,
    /// Linear memories alive at once, across all attempts.
    pub total_memories: u32,
    /// Tables alive at once, across all attempts.
    pub total_tables: u32,
    /// Elements per table.
    pub table_elements: usize,
    /// The largest memory limit any attempt may be given (bytes).
    pub max_memory_bytes: u64,
    /// How often the epoch advances; the granularity of timeouts and of
    /// cancelling a spinning guest.
    #[serde(with = "super::limits::humantime_serde_compat")]
    pub epoch_tick: Duration,
    /// A running guest yields to the async runtime every this many units of
    /// fuel, so that a spinning guest cannot starve other attempts.
    pub fuel_yield_interval: u64,
    /// Where compiled components are cached, keyed by digest and engine
    /// settings; `None` compiles in memory on every process start.
    pub cache_dir: Option<PathBuf>,
    /// Linear memory all attempts may hold at once (bytes): each attempt
    /// reserves its memory limit before it starts and waits while the
    /// budget is spent, so that no mix of guests can push the host into the
    /// OOM killer. Default: three quarters of the machine's memory.
    pub memory_budget_bytes: u64,
    /// Disk all scratch dirs may hold at once (bytes): each attempt with a
    /// scratch dir reserves its quota first. Default: half the free space
    /// of the temporary directory at start.
    pub scratch_budget_bytes: u64,
}

/// Three quarters of the machine's memory (Linux: `/proc/meminfo`), else 4 GiB.
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    match total {
        Some(kib) => kib * 1024 / 4 * 3,
        None => 4 << 30,
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_attempts: 1_200,
            // 1,000 Rust attempts × 4 + 100 Python × 14, with room to spare.
            total_core_instances: 6_000,
            total_memories: 2_000,
            total_tables: 4_000,
            table_elements: 20_000,
            max_memory_bytes: 4 * 1024 * MIB as u64,
            epoch_tick: Duration::from_millis(10),
            fuel_yield_interval: 1_000_000,
            cache_dir: None,
            memory_budget_bytes: default_memory_budget(),
            scratch_budget_bytes: super::scratch::default_budget(&std::env::temp_dir()),
        }
    }
}

impl EngineConfig {
    /// A small pool for tests and tools that run a handful of attempts.
    pub fn small() -> Self {
        EngineConfig {
            max_concurrent_attempts: 64,
            total_core_instances: 1_024,
            total_memories: 128,
            total_tables: 256,
            ..EngineConfig::default()
        }
    }
}

/// Builds the engine. One per process: it owns the instance pool.
pub fn build_engine(cfg: &EngineConfig) -> anyhow::Result<Engine> {
    Ok(Engine::new(&wasmtime_config(cfg)?)?)
}

/// The wasmtime settings Ward runs with (benchmarks build variants of it).
pub fn wasmtime_config(cfg: &EngineConfig) -> anyhow::Result<Config> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(cfg.max_concurrent_attempts)
        .total_core_instances(cfg.total_core_instances)
        .total_memories(cfg.total_memories)
        .total_tables(cfg.total_tables)
        .total_stacks(cfg.max_concurrent_attempts)
        .table_elements(cfg.table_elements)
        .max_memory_size(usize::try_from(cfg.max_memory_bytes)?)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        // Python components have large vmctx regions (many functions/globals).
        .max_core_instance_size(2 * MIB)
        .max_component_instance_size(2 * MIB)
        .linear_memory_keep_resident(4 * MIB)
        .table_keep_resident(MIB)
        .async_stack_keep_resident(256 * 1024)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MIB)
        .async_stack_size(2 * MIB)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

/// Identifies the engine settings a precompiled artifact depends on, for the
/// on-disk cache key: an artifact from other settings would be rejected.
pub fn settings_fingerprint(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Advances the engine's epoch every `tick` on one thread for the life of
/// the engine. One ticker per engine, never one per attempt (a per-request
/// ticker cost `wasmtime serve` orders of magnitude: wasmtime issue #11814).
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("ward-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
