//! What one instance's store may allocate (wasmtime's `StoreLimits`), and whether a call
//! was refused memory: a guest that outgrows `memory` traps at once
//! (`trap_on_grow_failure`), and that trap is counted as a `memory` fault, not a `trap`.

use wasmtime::{ResourceLimiter, StoreLimits};

pub struct Limits {
    inner: StoreLimits,
    /// A growth was refused since the call in progress began.
    pub refused: bool,
}

impl Limits {
    pub fn new(memory: usize) -> Limits {
        Limits {
            inner: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            refused: false,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.inner.memory_growing(current, desired, maximum);
        self.refused |= !matches!(grown, Ok(true));
        grown
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
