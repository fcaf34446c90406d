//! How the frame table reaches guest memory and the vCPUs' TLBs.

/// Guest memory could not be accessed at the address given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest memory access failed")]
pub struct MemoryFault;

/// Access to the domain's guest-physical memory, in aligned 64-bit words,
/// plus the one side effect the validator needs: flushing every vCPU's TLB.
///
/// The hypervisor implements it over vm-memory; tests use
/// `testing::VecMemory` (feature `testing`). Addresses are always 8-byte aligned and
/// lie in frames of the domain's frame table.
pub trait PageTableMemory {
    /// Reads the 64-bit word at `gpa`.
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryFault>;

    /// Writes the 64-bit word at `gpa`, as one store (another vCPU walking
    /// the table must never see half an entry).
    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), MemoryFault>;

    /// Replaces the word at `gpa` with `new` if it still holds `current`,
    /// and returns what it held. Used to preserve the accessed and dirty
    /// bits the CPU may set in an entry while it is being replaced.
    ///
    /// The default is a read followed by a write, which is right only while
    /// no vCPU runs; a hypervisor with running vCPUs must override it with
    /// an atomic compare-and-exchange.
    fn compare_exchange_u64(
        &mut self,
        gpa: u64,
        current: u64,
        new: u64,
    ) -> Result<u64, MemoryFault> {
        let old = self.read_u64(gpa)?;
        if old == current {
            self.write_u64(gpa, new)?;
        }
        Ok(old)
    }

    /// Flushes the TLBs and paging-structure caches of every vCPU of the
    /// domain and returns once that is done.
    ///
    /// Called before a frame changes type while a vCPU may still hold a
    /// translation that uses the frame in its old role: a writable
    /// mapping of a frame about to become a page table, or a cached walk
    /// through a table about to become writable or a table of another
    /// level. Without the flush the guest could change a validated table
    /// behind the validator's back.
    fn flush_tlbs(&mut self);
}
