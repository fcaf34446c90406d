//! Random batches of `mmu_update` and `mmuext_op` requests, guest writes to
//! non-table frames and hypervisor class changes, run through the frame
//! table and the reference model side by side.
//!
//! Fails (panics) when the frame table panics, when it and the model
//! disagree on a request, a count or a word of memory, when its invariants
//! break, when a frame changes role while a stale translation may still
//! use the old one, or when teardown leaves a reference behind. See
//! `pvmm::testing::fuzz_batches` for the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvmm::testing::fuzz_batches(data);
});
