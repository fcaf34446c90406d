//! The paravirtual interface: the hypercall page and the hypercalls.
//!
//! A guest installs the hypercall page by writing its address to
//! [`pvabi::hypercall::MSR_HYPERCALL_PAGE`] (trapped with a KVM MSR filter);
//! each stub enters the hypervisor through a port write of the hypercall
//! number, and the vCPU loop hands the call to [`hypercall::dispatch`] with
//! the arguments read from KVM's sync regs. Dispatch is pure logic over
//! guest memory and the domain's PV state, tested without /dev/kvm.

pub mod audit;
pub mod console;
pub mod guard;
pub mod hypercall;
pub mod mmu;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pvabi::hypercall::{STUB_COUNT, STUB_SIZE};
use pvmm::{FrameClass, FrameTable, Gfn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{is_ram, RamRange};
pub use console::PvConsole;
use mmu::TlbShootdown;

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

/// What the frame table of a domain must know of its guest-physical map
/// besides RAM: whether the ISA range below 1 MiB is ordinary RAM to the
/// guest, and its I/O ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameLayout {
    /// The frames below 1 MiB are `Ram`: Linux maps the whole ISA range
    /// read-write in its direct map (and may use it as memory). Otherwise
    /// they are `ReadOnly`: our freestanding guests' boot structures
    /// (start info, memory map, boot tables), which the guest reads only.
    pub low_mem_ram: bool,
    /// Device register pages the guest may map from L1 entries (with cache
    /// attributes), as `(guest-physical address, bytes)`, page-aligned.
    pub io_ranges: Vec<(u64, u64)>,
    /// Every present entry must carry the U/S bit: on kvm_pvm, where the
    /// vCPU livelocks on page faults without it.
    pub user_bit_required: bool,
}

impl FrameLayout {
    /// The layout of a freestanding guest: the boot area read-only, no I/O
    /// ranges (it maps no device through validated tables).
    pub fn freestanding() -> FrameLayout {
        FrameLayout::default()
    }

    /// The layout of a Linux guest with `virtio_slots` used virtio-mmio
    /// slots (slots `0..virtio_slots`): RAM below 1 MiB (the ISA hole
    /// 0xA0000..0x100000 is RAM in our layout, not an I/O range), and as I/O
    /// ranges the used virtio-mmio slots, the power GED page, the I/O APIC
    /// page and the local APIC page.
    pub fn linux(virtio_slots: u32) -> FrameLayout {
        use pvabi::layout::{APIC_MMIO_LEN, IOAPIC_MMIO_BASE, LAPIC_MMIO_BASE};
        let mut io_ranges = Vec::new();
        if virtio_slots > 0 {
            io_ranges.push((pvabi::virtio::MMIO_BASE, u64::from(virtio_slots) * pvabi::virtio::MMIO_STRIDE));
        }
        io_ranges.push((pvabi::power::GED_MMIO_BASE, pvabi::power::GED_MMIO_LEN));
        io_ranges.push((IOAPIC_MMIO_BASE, APIC_MMIO_LEN));
        io_ranges.push((LAPIC_MMIO_BASE, APIC_MMIO_LEN));
        FrameLayout { low_mem_ram: true, io_ranges, user_bit_required: false }
    }

    /// The same, with U/S required in every present entry if `pvm` (the
    /// host is kvm_pvm).
    pub fn on_pvm(self, pvm: bool) -> FrameLayout {
        FrameLayout { user_bit_required: pvm, ..self }
    }
}

/// The PV state of one domain, shared by its vCPUs.
pub struct PvDomain {
    memory: GuestMemoryMmap,
    memfd: std::fs::File,
    ram: Vec<RamRange>,
    memory_map: Vec<pvabi::boot::MemMapEntry>,
    hypercall_page: Mutex<Option<u64>>,
    /// The domain's frame table (direct paging), if it could be built.
    pub frames: Option<Mutex<FrameTable>>,
    /// Cross-vCPU TLB flushes.
    pub shootdown: TlbShootdown,
    /// On a shadow-paging KVM: how to make it re-read the guest's tables.
    pub shadow: Option<mmu::ShadowSync>,
    /// The console behind `console_io`.
    pub console: PvConsole,
    /// Hypercall counters.
    pub counters: HypercallCounters,
    /// The CR3 and CR0.WP checks, in direct-paging mode.
    pub guard: Option<guard::PagingGuard>,
    /// Paging audits run (`audit::audit`).
    pub audits: AtomicU64,
    /// Paging audits that found something.
    pub audit_failures: AtomicU64,
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
        vcpus: usize,
        layout: &FrameLayout,
    ) -> PvDomain {
        let frames = match frame_table(&ram, vcpus, layout) {
            Ok(t) => Some(Mutex::new(t)),
            Err(e) => {
                tracing::warn!("direct paging is unavailable for this domain: {e}");
                None
            }
        };
        let shootdown = TlbShootdown::new(vcpus, crate::vstate::vcpu::kick_signal());
        PvDomain {
            memory,
            memfd,
            ram,
            memory_map,
            hypercall_page: Mutex::new(None),
            frames,
            shootdown,
            shadow: None,
            console,
            counters: HypercallCounters::default(),
            guard: None,
            audits: AtomicU64::new(0),
            audit_failures: AtomicU64::new(0),
        }
    }

    /// Checks the vCPUs' CR3 and CR0.WP (direct-paging mode) with `policy`.
    pub fn with_guard(mut self, policy: guard::ViolationPolicy) -> PvDomain {
        self.guard = Some(guard::PagingGuard::new(self.shootdown.vcpus(), policy));
        self
    }

    /// Uses `shadow` to resync a shadow-paging KVM after page-table writes.
    pub fn with_shadow_sync(mut self, shadow: Option<mmu::ShadowSync>) -> PvDomain {
        self.shadow = shadow;
        self
    }

    /// Changes the class of frame `gfn` in the frame table, if there is one.
    pub fn set_frame_class(&self, gfn: u64, class: FrameClass) -> Result<(), pvmm::Error> {
        match &self.frames {
            Some(t) => {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                let r = t.set_frame_class(Gfn(gfn), class);
                if let Some(g) = &self.guard {
                    g.table_changed();
                }
                r
            }
            None => Ok(()),
        }
    }

    /// Direct-paging counters: validated updates and operations, and
    /// rejections by reason.
    pub fn paging_stats(&self) -> Vec<(String, u64)> {
        let Some(t) = &self.frames else { return Vec::new() };
        let t = t.lock().unwrap_or_else(|p| p.into_inner());
        let s = t.stats();
        let mut v = vec![
            ("updates_applied".to_string(), s.updates_applied),
            ("plain_writes".to_string(), s.plain_writes),
            ("ext_ops_done".to_string(), s.ext_ops_done),
            ("tables_validated".to_string(), s.tables_validated),
            ("tables_released".to_string(), s.tables_released),
            ("retype_flushes".to_string(), s.retype_flushes),
        ];
        v.extend(s.rejections().filter(|(_, n)| *n > 0).map(|(r, n)| (format!("rejected_{}", r.name()), n)));
        if let Some(g) = &self.guard {
            let (cr3, wp) = g.counts();
            v.push(("cr3_violations".to_string(), cr3));
            v.push(("wp_violations".to_string(), wp));
        }
        v.push(("audits".to_string(), self.audits.load(Ordering::Relaxed)));
        v.push(("audit_failures".to_string(), self.audit_failures.load(Ordering::Relaxed)));
        v
    }

    /// `(carried out, refused)` paging requests: `mmu_update` requests
    /// plus `mmuext_op` operations done, and every rejection.
    pub fn paging_rates(&self) -> (u64, u64) {
        let Some(t) = &self.frames else { return (0, 0) };
        let t = t.lock().unwrap_or_else(|p| p.into_inner());
        let s = t.stats();
        (s.updates_applied + s.ext_ops_done, s.rejected_total())
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
        // The page may be mapped read-only (and executed), never writable
        // nor used as a page table; a frame already mapped writable cannot
        // become it.
        if self.set_frame_class(gpa >> 12, FrameClass::ReadOnly).is_err() {
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

/// The frame table of a domain with `ram`: frames in holes are absent; the
/// boot area below 1 MiB (boot structures, start info) can be mapped
/// read-only only unless `layout` makes it RAM; `layout`'s I/O ranges are
/// added, and its U/S requirement set.
pub fn frame_table(ram: &[RamRange], vcpus: usize, layout: &FrameLayout) -> Result<FrameTable, pvmm::Error> {
    let end = ram.iter().map(RamRange::end).max().unwrap_or(0);
    let mut config = pvmm::Config::new(end / 4096, vcpus);
    if layout.user_bit_required {
        config.required_bits = pvmm::PTE_US;
    }
    let mut t = FrameTable::new(config)?;
    let mut at = 0;
    for r in ram {
        if r.gpa > at {
            t.set_frame_class_range(Gfn(at / 4096), (r.gpa - at) / 4096, FrameClass::Absent)?;
        }
        at = r.end();
    }
    if !layout.low_mem_ram {
        t.set_frame_class_range(Gfn(0), pvabi::boot::LOAD_MIN / 4096, FrameClass::ReadOnly)?;
    }
    for (gpa, len) in &layout.io_ranges {
        t.add_io_range(Gfn(gpa / 4096), len.div_ceil(4096))?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ram_ranges;

    fn table(mem: u64, layout: &FrameLayout) -> FrameTable {
        frame_table(&ram_ranges(mem), 1, layout).unwrap()
    }

    #[test]
    fn freestanding_guests_get_a_read_only_boot_area_and_no_io() {
        let t = table(64 << 20, &FrameLayout::freestanding());
        assert_eq!(t.frame(Gfn(0)).unwrap().class, FrameClass::ReadOnly);
        assert_eq!(t.frame(Gfn(0xff)).unwrap().class, FrameClass::ReadOnly);
        assert_eq!(t.frame(Gfn(0x100)).unwrap().class, FrameClass::Ram);
        assert_eq!(t.io_ranges().count(), 0);
    }

    #[test]
    fn linux_guests_get_ram_below_1_mib_and_their_device_pages_as_io() {
        for mem in [64u64 << 20, 5 << 30] {
            let t = table(mem, &FrameLayout::linux(2));
            for g in [0, 0xa0, 0xff] {
                assert_eq!(t.frame(Gfn(g)).unwrap().class, FrameClass::Ram, "{g:#x}, {mem} bytes");
            }
            let io = |gpa: u64| t.is_io_frame(Gfn(gpa >> 12));
            assert!(io(pvabi::virtio::MMIO_BASE) && io(pvabi::virtio::MMIO_BASE + pvabi::virtio::MMIO_STRIDE));
            assert!(!io(pvabi::virtio::MMIO_BASE + 2 * pvabi::virtio::MMIO_STRIDE), "an unused slot");
            assert!(io(pvabi::power::GED_MMIO_BASE));
            assert!(io(pvabi::layout::IOAPIC_MMIO_BASE) && io(pvabi::layout::LAPIC_MMIO_BASE));
            assert!(!io(pvabi::layout::UNBACKED_MMIO_PROBE) && !io(0xa0000));
        }
        assert_eq!(FrameLayout::linux(0).io_ranges.len(), 3, "no virtio range without devices");
        assert_eq!(table(64 << 20, &FrameLayout::linux(0).on_pvm(true)).config().required_bits, pvmm::PTE_US);
        assert_eq!(table(64 << 20, &FrameLayout::freestanding()).config().required_bits, 0);
    }
}
