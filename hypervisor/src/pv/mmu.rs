//! Direct paging in the hypervisor: the domain's frame table
//! ([`pvmm::FrameTable`], pure logic) connected to guest memory and to the
//! vCPUs' TLBs.
//!
//! What this enforces, and what it cannot: the guest's page-table updates
//! made through `mmu_update` / `mmuext_op` are validated exactly as Xen's
//! PV MMU does (ownership, per-level flags, type exclusivity: a page table
//! is never writably mapped). Isolation *between* domains does not rest on
//! it: each domain is a KVM VM whose memory is confined by EPT/NPT (or
//! kvm_pvm's shadow paging). Under hardware-assisted KVM a guest kernel can
//! still load CR3 or write a table itself; a guest that bypasses the
//! hypercalls only loses the validator's guarantees for itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pvmm::{MemoryFault, PageTableMemory};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest memory as the frame table sees it: aligned 64-bit words, written
/// with single atomic stores (a vCPU may walk the table meanwhile).
pub struct GuestTables<'a> {
    memory: &'a GuestMemoryMmap,
    flush: &'a mut dyn FnMut(),
}

impl<'a> GuestTables<'a> {
    /// `flush` flushes every vCPU's TLB and returns when that is done.
    pub fn new(memory: &'a GuestMemoryMmap, flush: &'a mut dyn FnMut()) -> GuestTables<'a> {
        GuestTables { memory, flush }
    }

    fn word(&self, gpa: u64) -> Result<&AtomicU64, MemoryFault> {
        if gpa % 8 != 0 {
            return Err(MemoryFault);
        }
        // The word must lie in one region; get_host_address checks the
        // address, the alignment keeps the 8 bytes within its page.
        let host = self.memory.get_host_address(GuestAddress(gpa)).map_err(|_| MemoryFault)?;
        // SAFETY: `host` points into the domain's guest memory mapping,
        // which lives as long as `self.memory`; it is 8-byte aligned (the
        // mapping is page aligned and gpa is a multiple of 8), and guest
        // memory is only ever accessed as plain or atomic integers, never
        // through Rust references to other types.
        Ok(unsafe { AtomicU64::from_ptr(host.cast::<u64>()) })
    }
}

impl PageTableMemory for GuestTables<'_> {
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryFault> {
        self.memory.read_obj::<u64>(GuestAddress(gpa)).map_err(|_| MemoryFault)
    }

    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), MemoryFault> {
        self.word(gpa)?.store(value, Ordering::SeqCst);
        Ok(())
    }

    fn compare_exchange_u64(&mut self, gpa: u64, current: u64, new: u64) -> Result<u64, MemoryFault> {
        Ok(match self.word(gpa)?.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(old) | Err(old) => old,
        })
    }

    fn flush_tlbs(&mut self) {
        (self.flush)();
    }
}

mod ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::{ioctl_ioc_nr, ioctl_iow_nr};
    #[allow(unused_imports)]
    use ioctl_ioc_nr as _;
    // include/uapi/linux/kvm.h: _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region).
    ioctl_iow_nr!(KVM_SET_USER_MEMORY_REGION, kvm_bindings::KVMIO, 0x46, kvm_bindings::kvm_userspace_memory_region);
}

/// Makes a shadow-paging KVM (kvm_pvm) forget what it derived from the
/// guest's page tables.
///
/// A shadow MMU learns of page-table changes by write-protecting the
/// guest's own mappings of its tables; our validated writes go through the
/// hypervisor's mapping of guest memory, which it never sees, and a TLB
/// flush (a CR3 or CR4 reload) does not make it re-read tables it believes
/// unchanged (measured: a stale writable translation survived INVLPG, a CR3
/// reload and every flush hypercall). Deleting a memory slot makes x86 KVM
/// zap every shadow page of the VM (KVM_X86_QUIRK_SLOT_ZAP_ALL, on by
/// default), so after a batch that changed entries the hypervisor adds and
/// deletes a one-page slot of its own at [`pvabi::layout::SHADOW_SYNC_GPA`],
/// in the MMIO hole where the guest has nothing. Every later access
/// re-reads the guest's tables. Costly (the guest refaults its mappings),
/// but only on kvm_pvm: with EPT/NPT the hardware walks the guest's tables
/// itself and a TLB flush suffices.
pub struct ShadowSync {
    vm: std::fs::File,
    page: vm_memory::MmapRegion,
    slot: u32,
}

impl ShadowSync {
    /// For the VM behind `vm` (a duplicate of the VM file descriptor),
    /// using memory slot `slot`, which nothing else uses.
    pub fn new(vm: std::fs::File, slot: u32) -> std::io::Result<ShadowSync> {
        let page = vm_memory::MmapRegion::new(4096).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ShadowSync { vm, page, slot })
    }

    fn set_slot(&self, size: u64) -> i32 {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: self.slot,
            flags: 0,
            guest_phys_addr: pvabi::layout::SHADOW_SYNC_GPA,
            memory_size: size,
            userspace_addr: self.page.as_ptr() as u64,
        };
        // SAFETY: the region describes one page we own (`self.page`, alive
        // as long as `self`), at a guest-physical address no other slot
        // uses; size 0 deletes the slot again.
        unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.vm, ioctls::KVM_SET_USER_MEMORY_REGION(), &region) }
    }

    /// Drops every shadow page KVM holds for the VM.
    pub fn zap(&self) {
        if self.set_slot(4096) < 0 || self.set_slot(0) < 0 {
            tracing::warn!(
                "resyncing KVM's shadow page tables failed: {}; stale translations may survive a page-table update",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// How long a vCPU waits for the others to flush before it reports them.
const SHOOTDOWN_PATIENCE: Duration = Duration::from_secs(2);

/// Cross-vCPU TLB flushes. KVM has no ioctl to flush another vCPU's TLB,
/// and a vCPU's registers can only be set from its own thread, so each
/// vCPU flushes itself: the requester bumps the generation and kicks the
/// others out of KVM_RUN; each flushes before it runs guest code again and
/// acknowledges.
pub struct TlbShootdown {
    generation: AtomicU64,
    acked: Vec<AtomicU64>,
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    kick_signal: libc::c_int,
}

/// A vCPU that no longer runs guest code needs no flush.
const RETIRED: u64 = u64::MAX;

impl TlbShootdown {
    /// For `vcpus` vCPUs, kicked with `kick_signal`.
    pub fn new(vcpus: usize, kick_signal: libc::c_int) -> TlbShootdown {
        TlbShootdown {
            generation: AtomicU64::new(0),
            acked: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            threads: Mutex::new(vec![None; vcpus]),
            kick_signal,
        }
    }

    /// The number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.acked.len()
    }

    /// The thread of vCPU `index`, for kicks.
    pub fn register_thread(&self, index: usize, thread: libc::pthread_t) {
        if let Some(t) = self.threads.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
            *t = Some(thread);
        }
    }

    /// vCPU `index` stopped running guest code for good.
    pub fn retire(&self, index: usize) {
        if let Some(a) = self.acked.get(index) {
            a.store(RETIRED, Ordering::Release);
        }
    }

    /// The generation vCPU `index` must flush for, if it is behind.
    pub fn pending(&self, index: usize) -> Option<u64> {
        let g = self.generation.load(Ordering::Acquire);
        let a = self.acked.get(index)?.load(Ordering::Acquire);
        (a != RETIRED && a < g).then_some(g)
    }

    /// vCPU `index` flushed for generation `g`.
    pub fn ack(&self, index: usize, g: u64) {
        if let Some(a) = self.acked.get(index) {
            let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| (cur != RETIRED && cur < g).then_some(g));
        }
    }

    /// Asks every other vCPU to flush and waits until they have; the caller
    /// flushes itself. Returns the vCPUs that did not answer in time.
    pub fn flush_others(&self, me: usize) -> Vec<usize> {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.ack(me, g);
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (i, t) in threads.iter().enumerate() {
            if i != me && self.pending(i).is_some() {
                if let Some(t) = t {
                    // SAFETY: pthread_kill on a vCPU thread of this domain,
                    // which is joined only after the domain stops and its
                    // kick handler is installed before any vCPU runs.
                    unsafe { libc::pthread_kill(*t, self.kick_signal) };
                }
            }
        }
        let deadline = Instant::now() + SHOOTDOWN_PATIENCE;
        loop {
            let late: Vec<usize> = (0..self.acked.len()).filter(|&i| i != me && self.pending(i).is_some_and(|p| p <= g)).collect();
            if late.is_empty() || Instant::now() >= deadline {
                return late;
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shootdown_generations() {
        let s = TlbShootdown::new(3, vmm_sys_util::signal::SIGRTMIN());
        assert_eq!(s.pending(1), None);
        s.retire(2);
        let waiter = std::thread::scope(|sc| {
            let h = sc.spawn(|| s.flush_others(0));
            // vCPU 1 notices and acknowledges; vCPU 2 is retired.
            let g = loop {
                if let Some(g) = s.pending(1) {
                    break g;
                }
                std::thread::yield_now();
            };
            s.ack(1, g);
            h.join().unwrap()
        });
        assert!(waiter.is_empty());
        assert_eq!(s.pending(0), None, "the caller acked itself");
        assert_eq!(s.pending(2), None, "retired vCPUs never need a flush");
    }

    #[test]
    fn guest_tables_use_atomic_words() {
        let ram = crate::vstate::memory::GuestRam::new(c"mmu-test", 8 << 20).unwrap();
        let mut flushed = 0;
        let mut flush = || flushed += 1;
        {
            let mut t = GuestTables::new(ram.memory(), &mut flush);
            t.write_u64(0x20_0008, 0x1234_5007).unwrap();
            assert_eq!(t.read_u64(0x20_0008).unwrap(), 0x1234_5007);
            assert_eq!(t.compare_exchange_u64(0x20_0008, 0x1234_5007, 0x1234_5067).unwrap(), 0x1234_5007);
            assert_eq!(t.compare_exchange_u64(0x20_0008, 0, 9).unwrap(), 0x1234_5067, "a failed exchange reports the current value");
            assert!(t.write_u64(0x20_0004, 0).is_err(), "misaligned");
            assert!(t.read_u64(0xD000_0000).is_err(), "not RAM");
            t.flush_tlbs();
        }
        assert_eq!(flushed, 1);
    }
}
