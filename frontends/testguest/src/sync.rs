//! Shared mutable state without a lock, for data with a single writer phase.

use core::cell::UnsafeCell;

/// A `static` the guest writes through raw pointers.
///
/// Used for memory that is either written by exactly one vCPU before it is
/// published to the others with a release store (page tables, IDT), owned by
/// one vCPU by construction (its stack, its VIF page), or guarded by a lock
/// kept next to it (the UART state). Every access site states which.
#[repr(transparent)]
pub struct RacyCell<T>(UnsafeCell<T>);

// SAFETY: `RacyCell` hands out only raw pointers; each user upholds one of
// the disciplines listed on the type, so no two vCPUs access the contents
// concurrently with a write.
unsafe impl<T> Sync for RacyCell<T> {}

impl<T> RacyCell<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        RacyCell(UnsafeCell::new(value))
    }

    /// Raw pointer to the contents.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
