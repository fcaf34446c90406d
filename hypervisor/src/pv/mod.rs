//! The paravirtual interface: the hypercall page and the hypercalls.
//!
//! A guest installs the hypercall page by writing its address to
//! [`pvabi::hypercall::MSR_HYPERCALL_PAGE`] (trapped with a KVM MSR filter);
//! each stub enters the hypervisor through a port write of the hypercall
//! number, and the vCPU loop hands the call to [`hypercall::dispatch`] with
//! the arguments read from KVM's sync regs. Dispatch is pure logic over
//! guest memory and the domain's PV state, tested without /dev/kvm.

pub mod console;
pub mod hypercall;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pvabi::hypercall::{STUB_COUNT, STUB_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{is_ram, RamRange};
pub use console::PvConsole;

/// Hypercall counters of a domain.
#[derive(Debug)]
pub struct HypercallCounters {
    by_number: Vec<AtomicU64>,
    unknown: AtomicU64,
    failed: AtomicU64,
}

impl Default for HypercallCounters {
    fn default() -> Self {
        HypercallCounters { by_number: (0..STUB_COUNT).map(|_| AtomicU64::new(0)).collect(), unknown: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }
}

impl HypercallCounters {
    /// Counts a call of `nr` that returned `result`.
    pub fn count(&self, nr: u32, result: i64) {
        match self.by_number.get(nr as usize).filter(|_| pvabi::hypercall::name(nr).is_some()) {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        if result < 0 {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Name/count pairs of every hypercall made, plus `unknown` and
    /// `failed` (returned an error).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = pvabi::hypercall::ALL
            .iter()
            .map(|(nr, name)| (name.to_string(), self.by_number[*nr as usize].load(Ordering::Relaxed)))
            .collect();
        v.push(("unknown".into(), self.unknown.load(Ordering::Relaxed)));
        v.push(("failed".into(), self.failed.load(Ordering::Relaxed)));
        v
    }
}

/// The PV state of one domain, shared by its vCPUs.
pub struct PvDomain {
    memory: GuestMemoryMmap,
    memfd: std::fs::File,
    ram: Vec<RamRange>,
    memory_map: Vec<pvabi::boot::MemMapEntry>,
    hypercall_page: Mutex<Option<u64>>,
    /// The console behind `console_io`.
    pub console: PvConsole,
    /// Hypercall counters.
    pub counters: HypercallCounters,
}

/// Why an MSR write was refused (the guest gets #GP).
#[derive(Debug, PartialEq, Eq)]
pub enum MsrRefused {
    /// Not a page-aligned address of a page of RAM.
    BadAddress,
}

impl PvDomain {
    /// PV state over `memory`.
    pub fn new(
        memory: GuestMemoryMmap,
        memfd: std::fs::File,
        ram: Vec<RamRange>,
        memory_map: Vec<pvabi::boot::MemMapEntry>,
        console: PvConsole,
    ) -> PvDomain {
        PvDomain { memory, memfd, ram, memory_map, hypercall_page: Mutex::new(None), console, counters: HypercallCounters::default() }
    }

    /// The guest's RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Frees the host memory behind the RAM page at `gpa` (it reads as
    /// zeros afterwards). Punching a hole in the memfd works on every host
    /// kernel, unlike madvise(MADV_REMOVE), which needs
    /// CONFIG_ADVISE_SYSCALLS.
    pub fn discard_page(&self, gpa: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let r = self.ram.iter().find(|r| r.contains(gpa, 4096)).ok_or(std::io::ErrorKind::InvalidInput)?;
        let offset = (r.file_offset + (gpa - r.gpa)) as libc::off_t;
        // SAFETY: fallocate on a file descriptor we own, with a range
        // inside the file; it changes the file's contents only (the
        // mapping stays valid and reads zeros there), no Rust memory.
        let ret = unsafe { libc::fallocate(self.memfd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, 4096) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Where RAM is.
    pub fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    /// The memory map `memory_op(MEMORY_MAP)` returns.
    pub fn memory_map(&self) -> &[pvabi::boot::MemMapEntry] {
        &self.memory_map
    }

    /// The hypercall page's address, once installed.
    pub fn hypercall_page(&self) -> Option<u64> {
        *self.hypercall_page.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guest wrote [`pvabi::hypercall::MSR_HYPERCALL_PAGE`]: fill the
    /// page with the stubs. Writing 0 is ignored.
    pub fn install_hypercall_page(&self, gpa: u64) -> Result<(), MsrRefused> {
        if gpa == 0 {
            return Ok(());
        }
        if gpa % 4096 != 0 || !is_ram(&self.ram, gpa, 4096) {
            return Err(MsrRefused::BadAddress);
        }
        let mut page = [0xccu8; 4096];
        for nr in 0..STUB_COUNT {
            page[nr * STUB_SIZE..(nr + 1) * STUB_SIZE].copy_from_slice(&pvabi::hypercall::stub(nr as u32));
        }
        self.memory.write_slice(&page, GuestAddress(gpa)).map_err(|_| MsrRefused::BadAddress)?;
        *self.hypercall_page.lock().unwrap_or_else(|p| p.into_inner()) = Some(gpa);
        Ok(())
    }
}
