//! Counters of what the frame table did and refused.

use crate::error::Reason;

/// Counters of one domain's frame table. They only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `mmu_update` requests applied, plain writes included.
    pub updates_applied: u64,
    /// Of those, plain writes: requests on a frame that is no page table
    /// (RAM or shared), stored without validation as the guest could have
    /// written the word itself.
    pub plain_writes: u64,
    /// `mmuext_op` requests done.
    pub ext_ops_done: u64,
    /// Frames validated as page tables (each time a frame took a table type).
    pub tables_validated: u64,
    /// Frames whose table type was dropped, releasing their entries.
    pub tables_released: u64,
    /// TLB flushes the frame table asked for before a frame changed type.
    pub retype_flushes: u64,
    /// Entries whose references could not be released because their table
    /// could no longer be read. The references leak, which is safe (the
    /// frames stay typed and cannot be reused); it never happens with a
    /// memory that keeps the domain's frames readable.
    pub leaked_entries: u64,
    rejected: [u64; Reason::COUNT],
}

impl Stats {
    /// Requests refused for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason as usize]
    }

    /// All requests refused.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Every reason with its count, in [`Reason::ALL`] order.
    pub fn rejections(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().map(|r| (*r, self.rejected[*r as usize]))
    }

    pub(crate) fn reject(&mut self, reason: Reason) {
        self.rejected[reason as usize] += 1;
    }
}
