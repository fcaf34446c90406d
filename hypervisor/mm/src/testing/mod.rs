//! Test support: a Vec-backed guest memory, a reference model of the
//! paging rules and a differential harness that drives both. Built for this
//! crate's tests and, with the `testing` feature, for the fuzz target and
//! the bench. Not for production use.

mod decode;
mod harness;
mod model;

pub use decode::{fuzz_batches, ops_from_bytes};
pub use harness::{Harness, Op};
pub use model::{Derived, Model, Refused};

use crate::entry::{entry_gpa, PAGE_SIZE};
use crate::frame::Gfn;
use crate::memory::{MemoryFault, PageTableMemory};

/// Guest memory as a vector of words, covering frames `0..nr_frames`, with
/// fault injection and a log of TLB flushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMemory {
    words: Vec<u64>,
    /// Reads of this frame fault.
    pub fault_reads: Option<Gfn>,
    /// Writes to this frame fault.
    pub fault_writes: Option<Gfn>,
    /// TLB flushes asked for.
    pub flushes: u64,
}

impl VecMemory {
    /// Zeroed memory of `nr_frames` frames.
    pub fn new(nr_frames: u64) -> VecMemory {
        VecMemory {
            words: vec![0; (nr_frames * PAGE_SIZE / 8) as usize],
            fault_reads: None,
            fault_writes: None,
            flushes: 0,
        }
    }

    /// Entry `idx` of frame `gfn`.
    pub fn entry(&self, gfn: Gfn, idx: usize) -> u64 {
        self.words[(entry_gpa(gfn, idx) / 8) as usize]
    }

    /// Sets entry `idx` of frame `gfn`, as the guest does through a
    /// writable mapping (no validation).
    pub fn set_entry(&mut self, gfn: Gfn, idx: usize, val: u64) {
        self.words[(entry_gpa(gfn, idx) / 8) as usize] = val;
    }

    fn slot(&self, gpa: u64, fault: Option<Gfn>) -> Result<usize, MemoryFault> {
        if gpa % 8 != 0 || fault == Some(Gfn(gpa / PAGE_SIZE)) {
            return Err(MemoryFault);
        }
        let i = usize::try_from(gpa / 8).map_err(|_| MemoryFault)?;
        if i < self.words.len() {
            Ok(i)
        } else {
            Err(MemoryFault)
        }
    }
}

impl PageTableMemory for VecMemory {
    #[inline]
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryFault> {
        Ok(self.words[self.slot(gpa, self.fault_reads)?])
    }

    #[inline]
    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), MemoryFault> {
        let i = self.slot(gpa, self.fault_writes)?;
        self.words[i] = value;
        Ok(())
    }

    fn flush_tlbs(&mut self) {
        self.flushes += 1;
    }
}
