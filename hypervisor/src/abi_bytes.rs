//! Guest-ABI structs read from and written to guest memory as raw bytes.
//!
//! pvabi is `no_std` without dependencies, so vm-memory's `ByteValued`
//! cannot be implemented there; it is implemented here, once, on a
//! transparent wrapper, for every ABI struct the hypervisor exchanges with
//! guests.

use pvabi::boot::{MemMapEntry, StartInfo};
use pvabi::hypercall::MulticallEntry;
use pvabi::{memory, sched};
use vm_memory::ByteValued;

/// An ABI struct as plain bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
pub struct Plain<T>(pub T);

macro_rules! plain {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: a repr(C) pvabi struct made only of integers (and
            // integer arrays) with explicit padding fields, so it has no
            // implicit padding (its size is asserted in pvabi and checked
            // field by field against the C header) and every byte pattern
            // is a valid value.
            unsafe impl ByteValued for Plain<$t> {}
        )*
    };
}

plain!(StartInfo, MemMapEntry, MulticallEntry, sched::Shutdown, memory::MemoryMap, memory::Reservation);
