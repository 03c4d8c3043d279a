//! The guest's resource limiter: the memory, table and instance caps of a call.

use crate::config::Limits;
use wasmtime::ResourceLimiter;

/// Enforces the memory, table and instance caps of [`Limits`] and remembers which one was
/// hit, so the trap it causes is classified (`memory_limit`, or `trap` naming the limit)
/// rather than reported as a generic trap.
pub(super) struct GuestLimiter {
    pub(super) limits: Limits,
    pub(super) hit: Option<LimitHit>,
    /// Linear memory the instance holds now, all memories together.
    pub(super) memory_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitHit {
    Memory,
    TableElements,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.hit = Some(LimitHit::Memory);
            wasmtime::bail!(
                "memory limit exceeded: the guest asked for {desired} bytes, the cap is {} bytes",
                self.limits.memory_bytes
            );
        }
        self.memory_bytes += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.hit = Some(LimitHit::TableElements);
            wasmtime::bail!(
                "limit `table_elements` of {} exceeded: the guest asked for a table of {desired} elements",
                self.limits.table_elements
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}
