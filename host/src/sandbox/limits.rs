//! The `ResourceLimiter` that enforces an attempt's memory limit. The
//! limits and quotas themselves are the model's (`model::limits`),
//! re-exported here for the sandbox's callers.

pub use crate::model::limits::*;

/// Caps linear memory and tables for one attempt, and remembers whether a
/// growth was denied so that the trap that usually follows (an allocator
/// abort) is reported as `memory_limit`, and the peak for the usage report.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    /// Current size of each memory seen, by order of creation; the sum is
    /// what the attempt holds.
    in_use: usize,
    peak: usize,
    denied: bool,
    table_elements: usize,
}

impl MemoryLimiter {
    pub fn new(limit_bytes: u64, table_elements: usize) -> Self {
        MemoryLimiter {
            limit: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            in_use: 0,
            peak: 0,
            denied: false,
            table_elements,
        }
    }

    /// The most linear memory the attempt held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak as u64
    }

    /// Whether a memory growth was refused.
    pub fn denied(&self) -> bool {
        self.denied
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let after = self.in_use.saturating_add(grow);
        if after > self.limit {
            self.denied = true;
            return Ok(false);
        }
        self.in_use = after;
        self.peak = self.peak.max(after);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.denied = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        // A componentize-py component creates 14 core instances; leave room.
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn limiter_denies_growth_past_the_limit_and_tracks_the_peak() {
        let mut l = MemoryLimiter::new(10 * MIB, 1000);
        assert!(l.memory_growing(0, 4 * MIB as usize, None).unwrap());
        assert!(
            l.memory_growing(4 * MIB as usize, 8 * MIB as usize, None)
                .unwrap()
        );
        assert!(!l.denied());
        assert!(
            !l.memory_growing(8 * MIB as usize, 12 * MIB as usize, None)
                .unwrap()
        );
        assert!(l.denied());
        assert_eq!(l.peak_bytes(), 8 * MIB);
        assert!(!l.table_growing(0, 1001, None).unwrap());
    }
}
