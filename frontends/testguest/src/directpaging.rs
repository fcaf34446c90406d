//! Direct paging from inside: the `mmu_update` and `mmuext_op`
//! hypercalls (`pvabi::mm`), and the workloads that use them.
//!
//! The boot page tables (paging.rs) are written directly and never shown
//! to the hypervisor's validator, so they are not validated tables: the
//! guest cannot switch back to them with `NEW_BASEPTR`. Both workloads
//! therefore build a new address space from a pool of frames in `.bss`
//! and switch to it:
//! - the identity map of the guest image, in 4 KiB pages with each
//!   segment's permissions (text read-only and executable, rodata
//!   read-only, data and bss writable; the hypercall page read-only and
//!   executable; the page-table pool read-only, since a frame that is a
//!   page table may never be mapped writable). Its tables are written
//!   directly while still unvalidated (the boot map is loaded, and maps
//!   the pool writable) and then pinned, which validates each whole;
//! - a window at [`WINDOW_VA`], in a PML4 slot of its own, whose empty
//!   tables are pinned first and then filled with `mmu_update` only;
//! - a second L4 that shares the identity map but not the window.
//!
//! After `NEW_BASEPTR` the guest never writes a page-table frame
//! directly; every change goes through `mmu_update`. On a kvm_pvm host
//! (CPUID `HOST_PVM`) every present entry carries the U/S bit, which the
//! hypervisor requires there.
//!
//! `pv-paging` uses all of it as intended; `pv-paging-hostile` makes
//! requests the hypervisor must refuse with the documented errno and checks
//! that the domain's address space still works afterwards. Both print
//! `testguest: paging: <check> = <result> ok` (or `FAILED: expected X got
//! Y`) per check and a summary, and exit with SUCCESS iff all passed.

use core::fmt::{self, Display};

use pvabi::boot::START_INFO;
use pvabi::cpuid::{features, LEAF_FEATURES};
use pvabi::errno::{E2BIG, EBUSY, EFAULT, EINVAL, ENOSYS, EPERM};
use pvabi::hypercall::{MMUEXT_OP, MMU_UPDATE};
use pvabi::layout::{self, MMIO_HOLE_START};
use pvabi::mm::{
    MmuUpdate, MmuextOp, MAX_BATCH, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE,
    MMUEXT_PIN_L3_TABLE, MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_ALL, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE,
    MMU_MACHPHYS_UPDATE, MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD,
};
use pvabi::DOMID_SELF;

use crate::arch;
use crate::hypercall::{decode, gpa, gpa_mut, Errno, Hypercalls};
use crate::paging::Page;
use crate::pv::{self, Checks, Shown};
use crate::sync::RacyCell;
use crate::paging::{PAGE_SIZE, PTE_ADDRESS_MASK, PTE_NO_EXECUTE, PTE_PRESENT, PTE_WRITABLE};
use crate::traps::{self, CaughtFault, VECTOR_PF};
use crate::BootParameters;

const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
/// PAT in an L1 entry, PS (superpage) in an L2 or L3 entry.
const PTE_PAT_PS: u64 = 1 << 7;
/// The first of the bits available to software.
const PTE_AVAIL9: u64 = 1 << 9;
/// The lowest of bits 52–62, which the hypervisor keeps for itself.
const PTE_PKEY59: u64 = 1 << 59;

/// #PF error code bits: the page was present; the access was a write.
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;

/// The window: PML4 slot 160, clear of the identity map (slot 0), the user
/// window (slot 128) and `paging::UNMAPPED_ADDRESS` (slot 255). Its L3, L2
/// and L1 use entry 0, so it spans 2 MiB.
pub const WINDOW_VA: u64 = 0x0000_5000_0000_0000;
const WINDOW_L4_SLOT: usize = (WINDOW_VA >> 39) as usize & 511;
const _: () = assert!(WINDOW_VA & ((1 << 39) - 1) == 0 && WINDOW_L4_SLOT != 0 && WINDOW_L4_SLOT != 128 && WINDOW_L4_SLOT != 255);

/// Most 2 MiB regions the image may span (an L1 table each).
const MAX_IMAGE_L1: usize = 8;
/// Frames of the pool: L4, L3 and L2 of the identity map, its L1s, the
/// window's three tables, the second L4 and a spare (`pv-paging-hostile`).
const POOL_FRAMES: usize = 3 + MAX_IMAGE_L1 + 3 + 1 + 1;

/// Page-table frames, handed out in order by [`Pool`] on the boot vCPU.
/// Zeroed `.bss`; written directly only before they are validated (while
/// the boot map, which maps them writable, is loaded); afterwards only the
/// hypervisor writes them, and the new address space maps them read-only.
static TABLE_POOL: RacyCell<[Page; POOL_FRAMES]> = RacyCell::new([const { Page::ZEROED }; POOL_FRAMES]);

/// Data pages shown through the window; they hold only test patterns.
static DATA_PAGES: RacyCell<[Page; 2]> = RacyCell::new([const { Page::ZEROED }; 2]);

// Bounds of the image and of its segments, from the linker script.
extern "C" {
    static __image_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __image_end: u8;
}

/// Makes an `mmu_update` call: requests at `list`, `count` of them, the
/// done count to `done` (0: none), for domain `domain`.
///
/// # Safety
/// `list` must be readable for `count` requests and `done` (if not 0) a
/// writable u32, or lie outside RAM; the hypervisor carries out what it
/// accepts, so every valid request must be harmless to the guest (see
/// [`mmu_update`]).
pub unsafe fn mmu_update_raw(hc: Hypercalls, list: u64, count: u64, done: u64, domain: u32) -> i64 {
    // SAFETY: the caller answers for the pointers and the requests.
    unsafe { hc.call(MMU_UPDATE, [list, count, done, u64::from(domain), 0]) }
}

/// Makes an `mmuext_op` call, as [`mmu_update_raw`].
///
/// # Safety
/// As for [`mmu_update_raw`], with operations (see [`mmuext_op`]).
pub unsafe fn mmuext_op_raw(hc: Hypercalls, list: u64, count: u64, done: u64, domain: u32) -> i64 {
    // SAFETY: the caller answers for the pointers and the operations.
    unsafe { hc.call(MMUEXT_OP, [list, count, done, u64::from(domain), 0]) }
}

/// `mmu_update(reqs, len, &done, DOMID_SELF)`: the raw result (0 or
/// `-errno`) and how many requests were done before the first failure.
///
/// # Safety
/// Every request the hypervisor accepts changes an address space: none
/// may unmap or remap memory the guest relies on at its current address,
/// nor make memory Rust code borrows reachable at a second, writable one
/// through which it is then written.
pub unsafe fn mmu_update(hc: Hypercalls, reqs: &[MmuUpdate]) -> (i64, u32) {
    let mut done = 0u32;
    // SAFETY: the hypervisor reads `reqs` (borrowed) and writes the u32
    // `done` (a local borrowed mutably here); the caller answers for what
    // the requests change.
    let result = unsafe { mmu_update_raw(hc, gpa(reqs), reqs.len() as u64, gpa_mut(&mut done), DOMID_SELF) };
    (result, done)
}

/// `mmuext_op(ops, len, &done, DOMID_SELF)`: the raw result and the done
/// count.
///
/// # Safety
/// As for [`mmu_update`]: a new base pointer must map everything the guest
/// uses at the same addresses, and unpinning must not release a table the
/// caller still updates.
pub unsafe fn mmuext_op(hc: Hypercalls, ops: &[MmuextOp]) -> (i64, u32) {
    let mut done = 0u32;
    // SAFETY: the hypervisor reads `ops` and writes `done`, as above; the
    // caller answers for the operations.
    let result = unsafe { mmuext_op_raw(hc, gpa(ops), ops.len() as u64, gpa_mut(&mut done), DOMID_SELF) };
    (result, done)
}

/// A normal update of entry `index` of table frame `table`.
fn normal(table: u64, index: usize, val: u64) -> MmuUpdate {
    MmuUpdate { ptr: entry_address(table, index) | MMU_NORMAL_PT_UPDATE, val }
}

/// An update of entry `index` of `table` that keeps the entry's A/D bits.
fn preserve_ad(table: u64, index: usize, val: u64) -> MmuUpdate {
    MmuUpdate { ptr: entry_address(table, index) | MMU_PT_UPDATE_PRESERVE_AD, val }
}

/// An `mmuext_op` with `cmd` and `arg1`.
fn op(cmd: u32, arg1: u64) -> MmuextOp {
    MmuextOp { cmd, pad: 0, arg1, arg2: 0 }
}

/// The guest-physical address of entry `index` of table frame `table`.
fn entry_address(table: u64, index: usize) -> u64 {
    (table << 12) + 8 * index as u64
}

/// Reads entry `index` of table frame `table`. Page-table frames are
/// identity-mapped (read-only in the new address space), so this works
/// before and after the switch.
fn read_entry(table: u64, index: usize) -> u64 {
    // SAFETY: the pool lies in the image, identity-mapped readable by the
    // boot map and by the new one; the entry is an aligned u64 inside its
    // frame (index < 512), which the hypervisor writes with single atomic
    // stores, so a volatile load sees an old or a new value, never a torn
    // one.
    unsafe { core::ptr::read_volatile(entry_address(table, index) as *const u64) }
}

/// What a paging hypercall returned: result and done count.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Outcome(i64, u32);

impl Outcome {
    /// Success with `done` requests done.
    const fn ok(done: u32) -> Outcome {
        Outcome(0, done)
    }

    /// Failure with `errno` after `done` requests.
    const fn err(errno: i64, done: u32) -> Outcome {
        Outcome(-errno, done)
    }
}

impl From<(i64, u32)> for Outcome {
    fn from((result, done): (i64, u32)) -> Outcome {
        Outcome(result, done)
    }
}

impl Display for Outcome {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}, done {}", Shown(decode(self.0)), self.1)
    }
}

/// Displays an optional fault: `#PF (…) cr2=…` or `no fault`.
struct Fault<T>(Result<T, CaughtFault>);

impl<T: Display> Display for Fault<T> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(value) => write!(out, "no fault ({value})"),
            Err(fault) => write!(out, "{fault} cr2={:#x}", fault.cr2),
        }
    }
}

/// Whether `result` is a #PF at `address` whose error code has exactly
/// the present and write bits of `error_bits` (of those two).
fn is_page_fault<T>(result: &Result<T, CaughtFault>, address: u64, error_bits: u64) -> bool {
    matches!(result, Err(fault) if fault.vector == VECTOR_PF && fault.cr2 == address
        && fault.error_code & (PF_PRESENT | PF_WRITE) == error_bits)
}

/// Records a paging hypercall's outcome against the expected one.
fn expect(checks: &mut Checks, check: impl Display, expected: Outcome, got: impl Into<Outcome>) {
    let got = got.into();
    checks.verdict(check, got == expected, expected, got);
}

/// Frames of the table pool, handed out in order.
struct Pool {
    next: usize,
}

impl Pool {
    /// A zeroed frame never handed out before, as a frame number.
    fn frame(&mut self) -> Option<u64> {
        if self.next == POOL_FRAMES {
            return None;
        }
        // SAFETY: only a pointer is formed; the index is in bounds.
        let page = unsafe { (&raw mut (*TABLE_POOL.get())[self.next]) as u64 };
        self.next += 1;
        Some(page >> 12)
    }
}

/// Writes entry `index` of `table` directly.
///
/// # Safety
/// `table` is a pool frame the hypervisor has not validated yet (not
/// pinned, not referenced by a validated table), and the boot map, which
/// maps the pool writable, is loaded.
unsafe fn write_unvalidated(table: u64, index: usize, val: u64) {
    // SAFETY: see above; the entry is an aligned u64 inside the frame.
    unsafe { core::ptr::write_volatile(entry_address(table, index) as *mut u64, val) };
}

/// The new address space: frame numbers of its tables.
struct Space {
    l4: u64,
    l3: u64,
    l2: u64,
    l1s: [u64; MAX_IMAGE_L1],
    l1_count: usize,
    window_l3: u64,
    window_l2: u64,
    window_l1: u64,
    /// The second L4: the identity map without the window.
    other_l4: u64,
    /// A pool frame that is no table yet (mapped read-only).
    spare: u64,
    /// [`PTE_US`] on kvm_pvm (required in every present entry), else 0.
    user: u64,
}

impl Space {
    /// Flags of a link to a lower table. U/S is set everywhere, harmless
    /// when the leaf lacks it (the CPU needs it at every level).
    const UPPER: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_US;

    /// A read-only, non-executable leaf for `address`.
    fn read_only(&self, address: u64) -> u64 {
        address | PTE_PRESENT | self.user | PTE_NO_EXECUTE
    }

    /// A writable, non-executable leaf for `address`.
    fn writable(&self, address: u64) -> u64 {
        address | PTE_PRESENT | PTE_WRITABLE | self.user | PTE_NO_EXECUTE
    }
}

/// The addresses of the statics the workloads map.
struct Frames {
    data: [u64; 2],
    pool_start: u64,
    pool_end: u64,
}

fn frames() -> Frames {
    let pool_start = TABLE_POOL.get() as u64;
    let data = DATA_PAGES.get().cast::<Page>();
    // SAFETY: only pointers are formed, within DATA_PAGES.
    let data = [data as u64, unsafe { data.add(1) } as u64];
    Frames { data, pool_start, pool_end: pool_start + POOL_FRAMES as u64 * PAGE_SIZE }
}

/// The leaf flags of image page `page` in the new identity map.
fn image_leaf(space: &Space, page: u64, hypercall_page: u64, frames: &Frames) -> u64 {
    let rodata_start = &raw const __rodata_start as u64;
    let data_start = &raw const __data_start as u64;
    if page < rodata_start || page == hypercall_page {
        // Code, and the stubs the hypervisor wrote: read-only, executable.
        page | PTE_PRESENT | space.user
    } else if page < data_start || (frames.pool_start..frames.pool_end).contains(&page) {
        // Read-only data, and the page-table pool, which may never be
        // mapped writable once its frames are tables.
        space.read_only(page)
    } else {
        space.writable(page)
    }
}

/// Whether the host is kvm_pvm, and direct paging is offered at all.
fn host_features() -> (bool, bool) {
    let eax = arch::cpuid(LEAF_FEATURES).eax;
    (eax & features::HOST_PVM != 0, eax & features::DIRECT_PAGING != 0)
}

/// Whether CPUID says the domain is in direct-paging mode
/// (`hypervisor run --paging direct`).
pub(crate) fn paging_direct_mode() -> bool {
    arch::cpuid(LEAF_FEATURES).eax & features::PAGING_DIRECT != 0
}

/// Builds the new address space (see the module docs), switches to it and
/// checks that CR3 is its L4. `None` if a step failed (the failure is
/// among the checks).
fn build_and_switch(checks: &mut Checks, hc: Hypercalls, host_pvm: bool) -> Option<Space> {
    let frames = frames();
    let image_start = &raw const __image_start as u64;
    let image_end = &raw const __image_end as u64;
    let first_region = image_start >> 21;
    let last_region = (image_end - 1) >> 21;
    let regions = (last_region - first_region + 1) as usize;
    if regions > MAX_IMAGE_L1 || last_region >= 512 {
        checks.verdict("the image fits the pool's L1s in the first GiB", false, format_args!("at most {MAX_IMAGE_L1} regions"), regions);
        return None;
    }
    let mut pool = Pool { next: 0 };
    // The pool holds exactly what is taken here (see POOL_FRAMES).
    let mut take = || pool.frame().expect("the page-table pool is sized for the image");
    let mut space = Space {
        l4: take(),
        l3: take(),
        l2: take(),
        l1s: [0; MAX_IMAGE_L1],
        l1_count: regions,
        window_l3: 0,
        window_l2: 0,
        window_l1: 0,
        other_l4: 0,
        spare: 0,
        user: if host_pvm { PTE_US } else { 0 },
    };
    for l1 in &mut space.l1s[..regions] {
        *l1 = take();
    }
    space.window_l3 = take();
    space.window_l2 = take();
    space.window_l1 = take();
    space.other_l4 = take();
    space.spare = take();

    // The identity map, written directly into frames the hypervisor has
    // not seen yet, then pinned level by level: each pin validates the
    // whole table, taking references on what its entries name.
    for (region_index, &l1) in space.l1s[..regions].iter().enumerate() {
        let region = first_region + region_index as u64;
        let start = image_start.max(region << 21);
        let end = image_end.min((region + 1) << 21);
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            // SAFETY: `l1` is a fresh pool frame, unvalidated; the boot map
            // is loaded.
            unsafe { write_unvalidated(l1, (page >> 12) as usize & 511, image_leaf(&space, page, hc.page(), &frames)) };
        }
        // SAFETY: as above, for the L2.
        unsafe { write_unvalidated(space.l2, region as usize, (l1 << 12) | Space::UPPER) };
    }
    let pins: [MmuextOp; MAX_IMAGE_L1] = core::array::from_fn(|index| op(MMUEXT_PIN_L1_TABLE, space.l1s[index]));
    // SAFETY: pinning validates tables without changing any mapping in use.
    let got = unsafe { mmuext_op(hc, &pins[..regions]) };
    expect(checks, format_args!("pin the identity L1s ({regions}, written directly)"), Outcome::ok(regions as u32), got);
    // SAFETY: fresh, unvalidated frames, boot map loaded.
    unsafe {
        write_unvalidated(space.l3, 0, (space.l2 << 12) | Space::UPPER);
        write_unvalidated(space.l4, 0, (space.l3 << 12) | Space::UPPER);
    }
    let pins = [op(MMUEXT_PIN_L2_TABLE, space.l2), op(MMUEXT_PIN_L3_TABLE, space.l3), op(MMUEXT_PIN_L4_TABLE, space.l4)];
    // SAFETY: as above.
    let got = unsafe { mmuext_op(hc, &pins) };
    expect(checks, "pin the identity L2, L3 and L4 (written directly)", Outcome::ok(3), got);

    // The window: empty tables pinned first (they validate trivially),
    // then linked with mmu_update only.
    let pins = [
        op(MMUEXT_PIN_L1_TABLE, space.window_l1),
        op(MMUEXT_PIN_L2_TABLE, space.window_l2),
        op(MMUEXT_PIN_L3_TABLE, space.window_l3),
    ];
    // SAFETY: as above.
    let got = unsafe { mmuext_op(hc, &pins) };
    expect(checks, "pin the window's empty L1, L2 and L3", Outcome::ok(3), got);
    let links = [
        normal(space.window_l2, 0, (space.window_l1 << 12) | Space::UPPER),
        normal(space.window_l3, 0, (space.window_l2 << 12) | Space::UPPER),
        normal(space.l4, WINDOW_L4_SLOT, (space.window_l3 << 12) | Space::UPPER),
    ];
    // SAFETY: the links add a PML4 slot no code uses yet, in an address
    // space not yet loaded.
    let got = unsafe { mmu_update(hc, &links) };
    expect(checks, "link the window's tables with mmu_update", Outcome::ok(3), got);
    let linked = read_entry(space.l4, WINDOW_L4_SLOT);
    checks.verdict(
        format_args!("L4 entry {WINDOW_L4_SLOT} reads back"),
        linked == links[2].val,
        format_args!("{:#x}", links[2].val),
        format_args!("{linked:#x}"),
    );

    // The second address space shares the identity L3.
    // SAFETY: a fresh, unvalidated frame, boot map loaded.
    unsafe { write_unvalidated(space.other_l4, 0, (space.l3 << 12) | Space::UPPER) };
    // SAFETY: as for the other pins.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_PIN_L4_TABLE, space.other_l4)]) };
    expect(checks, "pin a second L4 sharing the identity L3", Outcome::ok(1), got);
    if checks.failed() > 0 {
        return None;
    }

    // SAFETY: the new L4 maps the whole image (code, statics, stacks, the
    // hypercall page) at the addresses in use; nothing outside the image
    // is used from here on (the boot parameters were copied to the stack,
    // the console is port I/O).
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_NEW_BASEPTR, space.l4)]) };
    expect(checks, "NEW_BASEPTR to the new L4", Outcome::ok(1), got);
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    checks.verdict(
        "CR3 is the new L4, execution continues",
        cr3 == space.l4 << 12,
        format_args!("{:#x}", space.l4 << 12),
        format_args!("{cr3:#x}"),
    );
    (cr3 == space.l4 << 12).then_some(space)
}

/// Installs the hypercall page and checks that the host offers direct
/// paging; ends the workload if either is missing.
fn start(checks: &mut Checks) -> (Hypercalls, bool) {
    let hc = pv::install(checks);
    let (host_pvm, direct_paging) = host_features();
    checks.verdict(
        "CPUID announces DIRECT_PAGING",
        direct_paging,
        "the feature bit",
        format_args!("{}, host_pvm={host_pvm}, paging_direct={}", if direct_paging { "set" } else { "clear" }, paging_direct_mode()),
    );
    if !direct_paging {
        checks.finish()
    }
    (hc, host_pvm)
}

/// A value only the workloads write, for pattern checks.
const PATTERN: u64 = 0x5aa5_0f0f_dead_beef;

/// `pv-paging`: a new address space through the hypervisor, used as
/// intended.
pub fn workload(_boot: &BootParameters) -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let frames = frames();

    // The guest may not write its page tables itself any more: the frames
    // are mapped read-only. The store writes the value already there, so
    // it would change nothing should it go through.
    let l4_entry = entry_address(space.l4, 0);
    // SAFETY: see above.
    let result = unsafe { traps::try_write_u64(l4_entry, read_entry(space.l4, 0)) };
    checks.verdict(
        "a direct write to the L4 faults",
        is_page_fault(&result, l4_entry, PF_PRESENT | PF_WRITE),
        format_args!("#PF (present, write) cr2={l4_entry:#x}"),
        Fault(result.map(|()| "written")),
    );

    // A data page at the window, writable.
    let data0 = frames.data[0];
    // SAFETY: the window's VA is used by nothing else; DATA_PAGES holds
    // only patterns and is accessed through raw pointers only.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 0, space.writable(data0))]) };
    expect(&mut checks, format_args!("map data page {data0:#x} writable at {WINDOW_VA:#x}"), Outcome::ok(1), got);
    // SAFETY: mapped just now (if the check above passed; if not, the
    // probe catches the #PF).
    let written = unsafe { traps::try_write_u64(WINDOW_VA, PATTERN) };
    // SAFETY: the identity alias of the same page, in the image.
    let alias = unsafe { core::ptr::read_volatile(data0 as *const u64) };
    checks.verdict(
        "a write through the window reads back through the identity map",
        written.is_ok() && alias == PATTERN,
        format_args!("{PATTERN:#x}"),
        format_args!("{} then {alias:#x}", Fault(written.map(|()| "written"))),
    );

    // The CPU sets A and D in the L1 entry; MMU_PT_UPDATE_PRESERVE_AD
    // keeps them, a normal update replaces them.
    let entry = read_entry(space.window_l1, 0);
    checks.verdict("the CPU set A and D in the window's L1 entry", entry & (PTE_A | PTE_D) == PTE_A | PTE_D, "A|D set", format_args!("{entry:#x}"));
    let marked = space.writable(data0) | PTE_AVAIL9;
    // SAFETY: the same frame with a software bit added.
    let got = unsafe { mmu_update(hc, &[preserve_ad(space.window_l1, 0, marked)]) };
    expect(&mut checks, "MMU_PT_UPDATE_PRESERVE_AD adding a software bit", Outcome::ok(1), got);
    let entry = read_entry(space.window_l1, 0);
    checks.verdict(
        "the entry has the new bit and kept A and D",
        entry == marked | PTE_A | PTE_D,
        format_args!("{:#x}", marked | PTE_A | PTE_D),
        format_args!("{entry:#x}"),
    );
    // SAFETY: the same frame, as first mapped.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 0, space.writable(data0))]) };
    expect(&mut checks, "a normal update of the same entry", Outcome::ok(1), got);
    let entry = read_entry(space.window_l1, 0);
    checks.verdict(
        "the normal update replaced A and D",
        entry == space.writable(data0),
        format_args!("{:#x}", space.writable(data0)),
        format_args!("{entry:#x}"),
    );

    // Unmapped and invalidated, the window faults.
    // SAFETY: nothing uses the window but these checks.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 0, 0)]) };
    expect(&mut checks, "unmap the window page (entry 0)", Outcome::ok(1), got);
    // SAFETY: a TLB invalidation changes no mapping.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_INVLPG_LOCAL, WINDOW_VA)]) };
    expect(&mut checks, "INVLPG_LOCAL of the window", Outcome::ok(1), got);
    // SAFETY: reading the window's page is harmless whatever it maps.
    let result = unsafe { traps::try_read_u64(WINDOW_VA) };
    checks.verdict(
        "reading the unmapped window faults",
        is_page_fault(&result, WINDOW_VA, 0),
        format_args!("#PF (not present) cr2={WINDOW_VA:#x}"),
        Fault(result.map(Hex)),
    );

    // The second data page, read-only.
    let data1 = frames.data[1];
    // SAFETY: DATA_PAGES is accessed through raw pointers only.
    unsafe { core::ptr::write_volatile(data1 as *mut u64, !PATTERN) };
    // SAFETY: as for the first mapping; then flushes, which change no
    // mapping.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 0, space.read_only(data1))]) };
    expect(&mut checks, format_args!("map data page {data1:#x} read-only at the window"), Outcome::ok(1), got);
    // SAFETY: flushes change no mapping.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_TLB_FLUSH_LOCAL, 0), op(MMUEXT_TLB_FLUSH_ALL, 0)]) };
    expect(&mut checks, "TLB_FLUSH_LOCAL and TLB_FLUSH_ALL", Outcome::ok(2), got);
    // SAFETY: reading is harmless; the write stores what is there.
    let (read, write) = unsafe { (traps::try_read_u64(WINDOW_VA), traps::try_write_u64(WINDOW_VA, !PATTERN)) };
    checks.verdict(
        "the read-only window reads and refuses writes",
        matches!(read, Ok(value) if value == !PATTERN) && is_page_fault(&write, WINDOW_VA, PF_PRESENT | PF_WRITE),
        format_args!("{:#x}, then #PF (present, write)", !PATTERN),
        format_args!("{}, then {}", Fault(read.map(Hex)), Fault(write.map(|()| "written"))),
    );

    // The second address space has no window.
    // SAFETY: the other L4 maps the same image through the shared L3.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_NEW_BASEPTR, space.other_l4)]) };
    expect(&mut checks, "NEW_BASEPTR to the second L4", Outcome::ok(1), got);
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    // SAFETY: reading is harmless.
    let result = unsafe { traps::try_read_u64(WINDOW_VA) };
    checks.verdict(
        "in the second address space CR3 follows and the window faults",
        cr3 == space.other_l4 << 12 && is_page_fault(&result, WINDOW_VA, 0),
        format_args!("cr3={:#x}, #PF (not present)", space.other_l4 << 12),
        format_args!("cr3={cr3:#x}, {}", Fault(result.map(Hex))),
    );
    // SAFETY: back to the first L4, which maps everything in use.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_NEW_BASEPTR, space.l4)]) };
    expect(&mut checks, "NEW_BASEPTR back to the first L4", Outcome::ok(1), got);
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    // SAFETY: reading is harmless.
    let result = unsafe { traps::try_read_u64(WINDOW_VA) };
    checks.verdict(
        "back in the first address space the window maps again",
        cr3 == space.l4 << 12 && matches!(result, Ok(value) if value == !PATTERN),
        format_args!("cr3={:#x}, {:#x}", space.l4 << 12, !PATTERN),
        format_args!("cr3={cr3:#x}, {}", Fault(result.map(Hex))),
    );

    // Unpinned and no base pointer, the second L4 is no table any more.
    // SAFETY: the second L4 is not loaded on any vCPU.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_UNPIN_TABLE, space.other_l4)]) };
    expect(&mut checks, "unpin the second L4", Outcome::ok(1), got);
    // Released, the frame is ordinary RAM again: `mmu_update` of one of
    // its words is a plain store (Xen's writable-page case), not checked.
    // The value is not present, and nothing loads this L4.
    const PLAIN: u64 = 0x0010_dead_beef_0000;
    // SAFETY: the second L4 is loaded on no vCPU and linked nowhere.
    let got = unsafe { mmu_update(hc, &[normal(space.other_l4, 1, PLAIN)]) };
    let landed = read_entry(space.other_l4, 1);
    checks.verdict(
        "mmu_update on the unpinned second L4 (released) is a plain write that lands",
        Outcome::from(got) == Outcome::ok(1) && landed == PLAIN,
        format_args!("{}; {PLAIN:#x}", Outcome::ok(1)),
        format_args!("{}; {landed:#x}", Outcome::from(got)),
    );

    // Unpin every table of the loaded space: the base pointer keeps the
    // L4, and through it every table it links, validated.
    let mut unpins = [op(MMUEXT_UNPIN_TABLE, 0); 6 + MAX_IMAGE_L1];
    let tables = [space.window_l1, space.window_l2, space.window_l3, space.l2, space.l3, space.l4];
    let all = tables.iter().chain(&space.l1s[..space.l1_count]);
    let mut count = 0;
    for (slot, &table) in unpins.iter_mut().zip(all) {
        slot.arg1 = table;
        count += 1;
    }
    // SAFETY: unpinning changes no mapping; the base keeps the tables.
    let got = unsafe { mmuext_op(hc, &unpins[..count]) };
    expect(&mut checks, format_args!("unpin all {count} tables of the loaded space"), Outcome::ok(count as u32), got);
    // SAFETY: maps data page 0 at the window's second page, unused.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 1, space.writable(data0))]) };
    // SAFETY: reading is harmless.
    let result = unsafe { traps::try_read_u64(WINDOW_VA + PAGE_SIZE) };
    // SAFETY: the identity alias of data page 0.
    let alias = unsafe { core::ptr::read_volatile(data0 as *const u64) };
    checks.verdict(
        "the base pointer keeps them validated: mmu_update on the window's L1, read through it",
        Outcome::from(got) == Outcome::ok(1) && matches!(result, Ok(value) if value == alias),
        format_args!("{}; {alias:#x}", Outcome::ok(1)),
        format_args!("{}; {}", Outcome::from(got), Fault(result.map(Hex))),
    );
    checks.finish()
}

/// Displays a u64 in hex.
struct Hex(u64);

impl Display for Hex {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{:#x}", self.0)
    }
}

/// A guest-physical address that is never RAM.
const OUTSIDE_RAM: u64 = layout::UNBACKED_MMIO_PROBE;

/// `pv-paging-hostile`: requests the hypervisor must refuse, each with its
/// errno, after which the address space must still work.
pub fn hostile(boot: &BootParameters) -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-hostile");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let frames = frames();
    let data0 = frames.data[0];
    let l1 = space.window_l1;
    // Every refused request below names a window entry (unused by the
    // guest) or a table link nothing walks, so even a hypervisor that
    // wrongly accepted one would change no mapping the guest uses; the
    // guest clears such entries again where it matters for later checks.

    let nr_frames = boot.ram_end() / PAGE_SIZE;
    let beyond = nr_frames + 0x10;
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.read_only(beyond << 12))]) };
    expect(&mut checks, format_args!("map frame {beyond:#x}, beyond RAM"), Outcome::err(EINVAL, 0), got);

    // The hole is "not owned" when RAM continues above it, beyond the
    // frame table otherwise.
    let hole = MMIO_HOLE_START / PAGE_SIZE + 0x1000;
    let (expected, why) = if hole < nr_frames { (EPERM, "not owned") } else { (EINVAL, "beyond the frame table") };
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.read_only(hole << 12))]) };
    expect(&mut checks, format_args!("map frame {hole:#x} in the MMIO hole ({why})"), Outcome::err(expected, 0), got);

    // A batch whose second request maps a pinned table writable: the
    // first is done, the third never reached.
    let batch = [
        normal(l1, 3, space.read_only(data0)),
        normal(l1, 4, space.writable(l1 << 12)),
        normal(l1, 5, space.read_only(data0)),
    ];
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &batch) };
    expect(&mut checks, "batch [map data, map the pinned window L1 writable, map data]", Outcome::err(EBUSY, 1), got);
    let (e3, e4, e5) = (read_entry(l1, 3), read_entry(l1, 4), read_entry(l1, 5));
    checks.verdict(
        "only the request before the failing one took effect",
        e3 == batch[0].val && e4 == 0 && e5 == 0,
        format_args!("[{:#x}, 0x0, 0x0]", batch[0].val),
        format_args!("[{e3:#x}, {e4:#x}, {e5:#x}]"),
    );
    // SAFETY: clears the window entry the batch set.
    let got = unsafe { mmu_update(hc, &[normal(l1, 3, 0)]) };
    expect(&mut checks, "clear that entry again", Outcome::ok(1), got);

    // SAFETY: L2 entry 1 of the window covers VAs nothing uses.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l2, 1, (data0) | Space::UPPER)]) };
    expect(&mut checks, format_args!("L2 entry -> data page {data0:#x} (mapped writable, not an L1)"), Outcome::err(EBUSY, 0), got);
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l2, 1, (4 << 20) | PTE_PRESENT | PTE_US | PTE_PAT_PS)]) };
    expect(&mut checks, "L2 entry with PS (a 2 MiB superpage)", Outcome::err(EINVAL, 0), got);
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.read_only(data0) | PTE_PAT_PS)]) };
    expect(&mut checks, "L1 entry with the PAT bit (bit 7)", Outcome::err(EINVAL, 0), got);
    // SAFETY: see above.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.read_only(data0) | PTE_PKEY59)]) };
    expect(&mut checks, "L1 entry with protection-key bit 59", Outcome::err(EINVAL, 0), got);
    // SAFETY: a link of the L4 to itself, in a slot nothing uses.
    let got = unsafe { mmu_update(hc, &[normal(space.l4, 2, (space.l4 << 12) | Space::UPPER)]) };
    expect(&mut checks, "L4 entry -> the L4 itself (linear page table)", Outcome::err(EINVAL, 0), got);
    // SAFETY: the hypercall page, writable, at an unused window entry.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.writable(hc.page()))]) };
    expect(&mut checks, "map the hypercall page writable", Outcome::err(EPERM, 0), got);
    // SAFETY: the StartInfo's frame, below 1 MiB, writable, at an unused
    // window entry.
    let got = unsafe { mmu_update(hc, &[normal(l1, 2, space.writable(START_INFO))]) };
    expect(&mut checks, "map a boot-area frame (below 1 MiB) writable", Outcome::err(EPERM, 0), got);
    // A frame that is no page table: a plain store, unvalidated (the value
    // would be refused in a table: protection-key bit 59).
    const PLAIN: u64 = 0x0800_0000_0000_1003;
    // SAFETY: writes word 0 of data page 0, which holds only patterns.
    let got = unsafe { mmu_update(hc, &[normal(data0 >> 12, 0, PLAIN)]) };
    // SAFETY: the identity alias of data page 0.
    let landed = unsafe { core::ptr::read_volatile(data0 as *const u64) };
    checks.verdict(
        "mmu_update of a word in a data page (not a table) is a plain write that lands",
        Outcome::from(got) == Outcome::ok(1) && landed == PLAIN,
        format_args!("{}; {PLAIN:#x}", Outcome::ok(1)),
        format_args!("{}; {landed:#x}", Outcome::from(got)),
    );
    // SAFETY: refused, the hypercall page being a read-only frame; were it
    // accepted, it would clear the stub of hypercall 0, never called.
    let got = unsafe { mmu_update(hc, &[normal(hc.page() >> 12, 0, 0)]) };
    expect(&mut checks, "mmu_update of a word in the hypercall page (read-only frame)", Outcome::err(EPERM, 0), got);
    if host_pvm {
        // SAFETY: see above.
        let got = unsafe { mmu_update(hc, &[normal(l1, 2, (data0) | PTE_PRESENT | PTE_NO_EXECUTE)]) };
        expect(&mut checks, "a present entry without U/S on kvm_pvm", Outcome::err(EINVAL, 0), got);
    }

    // mmuext_op misuse.
    // SAFETY: pin and unpin of frames the guest does not rely on being
    // pinned (data page 0 cannot be, the window L1 is pinned already).
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_UNPIN_TABLE, data0 >> 12)]) };
    expect(&mut checks, "unpin a frame that is not pinned", Outcome::err(EINVAL, 0), got);
    // SAFETY: see above.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_PIN_L1_TABLE, l1)]) };
    expect(&mut checks, "pin the pinned window L1 again", Outcome::err(EINVAL, 0), got);
    // SAFETY: a refused base pointer changes nothing; an accepted one would
    // end the domain, which the test reports.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_NEW_BASEPTR, l1)]) };
    expect(&mut checks, "NEW_BASEPTR to the pinned window L1", Outcome::err(EBUSY, 0), got);
    // SAFETY: as above.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_NEW_BASEPTR, data0 >> 12)]) };
    expect(&mut checks, "NEW_BASEPTR to a data page mapped writable", Outcome::err(EBUSY, 0), got);
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    checks.verdict("CR3 is still the new L4", cr3 == space.l4 << 12, format_args!("{:#x}", space.l4 << 12), format_args!("{cr3:#x}"));
    // SAFETY: an unknown command changes nothing.
    let got = unsafe { mmuext_op(hc, &[op(99, 0)]) };
    expect(&mut checks, "unknown mmuext_op command 99", Outcome::err(ENOSYS, 0), got);
    // SAFETY: a refused invalidation changes nothing.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_INVLPG_LOCAL, 0x8000_0000_0000)]) };
    expect(&mut checks, "INVLPG_LOCAL of a non-canonical address", Outcome::err(EINVAL, 0), got);
    let machphys = MmuUpdate { ptr: entry_address(l1, 2) | MMU_MACHPHYS_UPDATE, val: space.read_only(data0) };
    // SAFETY: a refused command changes nothing.
    let got = unsafe { mmu_update(hc, &[machphys]) };
    expect(&mut checks, "mmu_update command 1 (MMU_MACHPHYS_UPDATE)", Outcome::err(ENOSYS, 0), got);

    // Pointers and sizes.
    let mut done = 0u32;
    // SAFETY: the list is outside RAM; `done` is a local.
    let result = unsafe { mmu_update_raw(hc, OUTSIDE_RAM, 1, gpa_mut(&mut done), DOMID_SELF) };
    expect(&mut checks, format_args!("mmu_update with its list at {OUTSIDE_RAM:#x} (outside RAM)"), Outcome::err(EFAULT, 0), (result, done));
    // SAFETY: as above.
    let result = unsafe { mmuext_op_raw(hc, OUTSIDE_RAM, 1, gpa_mut(&mut done), DOMID_SELF) };
    expect(&mut checks, format_args!("mmuext_op with its list at {OUTSIDE_RAM:#x} (outside RAM)"), Outcome::err(EFAULT, 0), (result, done));
    let valid = [normal(l1, 6, space.read_only(data0))];
    // SAFETY: the request maps data page 0 read-only at an unused window
    // entry; the done count would go outside RAM.
    let result = decode(unsafe { mmu_update_raw(hc, gpa(&valid), 1, OUTSIDE_RAM, DOMID_SELF) });
    let applied = read_entry(l1, 6) == valid[0].val;
    checks.verdict(
        "mmu_update with its done pointer outside RAM",
        result == Err(Errno(EFAULT)),
        Shown(Err(Errno(EFAULT))),
        format_args!("{} (the update itself was {})", Shown(result), if applied { "applied" } else { "not applied" }),
    );
    // SAFETY: clears the window entry again (a no-op if it was not set).
    let got = unsafe { mmu_update(hc, &[normal(l1, 6, 0)]) };
    expect(&mut checks, "clear that entry again", Outcome::ok(1), got);

    // A million requests: refused whole. The one real request in the list
    // would be refused too (an M2P update), so a hypervisor ignoring the
    // limit would stop right there.
    let first = [MmuUpdate { ptr: entry_address(l1, 2) | MMU_MACHPHYS_UPDATE, val: 0 }];
    let huge = 1_000_000u64;
    const _: () = assert!(1_000_000 > MAX_BATCH);
    let mut done = 0u32;
    // SAFETY: see above; `done` is a local.
    let result = unsafe { mmu_update_raw(hc, gpa(&first), huge, gpa_mut(&mut done), DOMID_SELF) };
    expect(&mut checks, format_args!("mmu_update of {huge} requests"), Outcome::err(E2BIG, 0), (result, done));
    let first_op = [op(99, 0)];
    // SAFETY: the one real operation is an unknown command.
    let result = unsafe { mmuext_op_raw(hc, gpa(&first_op), huge, gpa_mut(&mut done), DOMID_SELF) };
    expect(&mut checks, format_args!("mmuext_op of {huge} operations"), Outcome::err(E2BIG, 0), (result, done));

    // Another domain's tables.
    const UNTOUCHED: u32 = 0xdead;
    let mut done = UNTOUCHED;
    // SAFETY: the request would map data page 0 read-only at an unused
    // window entry.
    let result = unsafe { mmu_update_raw(hc, gpa(&valid), 1, gpa_mut(&mut done), 1) };
    checks.verdict(
        "mmu_update for domain 1 (foreign)",
        result == -EPERM && done == UNTOUCHED,
        format_args!("{}, done untouched", Shown(Err(Errno(EPERM)))),
        format_args!("{}, done {done:#x}", Shown(decode(result))),
    );
    // SAFETY: the operation is a local flush.
    let result = unsafe { mmuext_op_raw(hc, gpa(&[op(MMUEXT_TLB_FLUSH_LOCAL, 0)]), 1, 0, 1) };
    checks.result("mmuext_op for domain 1 (foreign)", Err(Errno(EPERM)), decode(result));

    stale_mapping_check(&mut checks, hc, &space);

    // The address space still works.
    // SAFETY: maps data page 0 at the window's first page, unused.
    let got = unsafe { mmu_update(hc, &[normal(l1, 0, space.writable(data0))]) };
    // SAFETY: just mapped; the probe catches a #PF otherwise. Data page 0
    // holds only patterns.
    let written = unsafe { traps::try_write_u64(WINDOW_VA, PATTERN) };
    // SAFETY: the identity alias of data page 0.
    let alias = unsafe { core::ptr::read_volatile(data0 as *const u64) };
    checks.verdict(
        "after all of the above, mmu_update maps the window and it works",
        Outcome::from(got) == Outcome::ok(1) && written.is_ok() && alias == PATTERN,
        format_args!("{}; {PATTERN:#x}", Outcome::ok(1)),
        format_args!("{}; {} then {alias:#x}", Outcome::from(got), Fault(written.map(|()| "written"))),
    );
    checks.finish()
}

/// A writable mapping removed with `mmu_update` and invalidated with
/// `INVLPG_LOCAL` must be gone before its frame may become a page table:
/// else the guest writes a validated table through the old translation.
/// The spare pool frame is mapped writable at window page 7, written
/// there (so a translation exists), unmapped, invalidated and pinned as an
/// L1; a store through the old address must then fault.
fn stale_mapping_check(checks: &mut Checks, hc: Hypercalls, space: &Space) {
    let va = WINDOW_VA + 7 * PAGE_SIZE;
    let spare = space.spare;
    // SAFETY: window page 7 is unused; the spare frame is no table and
    // holds nothing (zeros, which the store below keeps).
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 7, space.writable(spare << 12))]) };
    expect(checks, format_args!("map spare frame {spare:#x} writable at {va:#x}"), Outcome::ok(1), got);
    // SAFETY: as above: stores the zero already there.
    let written = unsafe { traps::try_write_u64(va, 0) };
    checks.verdict("write through it", written.is_ok(), "no fault", Fault(written.map(|()| "written")));
    // SAFETY: unmaps the unused window page; an invalidation changes no
    // mapping.
    let got = unsafe { mmu_update(hc, &[normal(space.window_l1, 7, 0)]) };
    expect(checks, "unmap it", Outcome::ok(1), got);
    // SAFETY: as above.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_INVLPG_LOCAL, va)]) };
    expect(checks, "INVLPG_LOCAL of it", Outcome::ok(1), got);
    // SAFETY: pins a zeroed frame no table links.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_PIN_L1_TABLE, spare)]) };
    expect(checks, "pin the spare frame as an L1 (no writable mapping is left)", Outcome::ok(1), got);
    // An entry the validator refuses: the L4 mapped writable. The L1 is
    // linked nowhere, so even if the store goes through no walk uses it.
    let forged = (space.l4 << 12) | PTE_PRESENT | PTE_WRITABLE | PTE_US;
    // SAFETY: see above; a store that goes through is undone below.
    let stale = unsafe { traps::try_write_u64(va, forged) };
    let held = read_entry(spare, 0);
    checks.verdict(
        "a store through the unmapped address into the now-pinned L1",
        is_page_fault(&stale, va, PF_WRITE) && held == 0,
        format_args!("#PF (not present) cr2={va:#x}, the L1 stays empty"),
        format_args!("{}, the pinned L1's entry 0 = {held:#x}", Fault(stale.map(|()| "written"))),
    );
    if held != 0 {
        // Undo through the same stale translation, so that the table holds
        // only what the validator saw: dropping it later must not release
        // a reference its entry never took.
        // SAFETY: the store that just went through, writing zero back.
        let _ = unsafe { traps::try_write_u64(va, 0) };
    }
}

/// `pv-paging-cr3-native`: after `NEW_BASEPTR`, a native `mov cr3` to a
/// copy of the L4 in a writable data page, which the validator never saw
/// (its entries are the validated L4's, so the guest keeps running). The
/// line printed next is an exit, where a direct-paging hypervisor sees the
/// CR3: with `--paging-violation kill` the domain ends there; with
/// `report` the guest checks that it runs on the copy and ends there, so
/// that an audit at the end walks an unvalidated root. Without `--paging
/// direct` nothing is checked and the workload passes as well.
pub fn cr3_native() -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-cr3-native");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let copy = frames().data[1];
    for i in 0..512 {
        // SAFETY: data page 1 is writable in the new identity map and used
        // by nothing else in this workload; the index stays in the page.
        unsafe { core::ptr::write_volatile((copy + 8 * i as u64) as *mut u64, read_entry(space.l4, i)) };
    }
    crate::println!("testguest: paging: loading CR3 {copy:#x}, an unvalidated copy of the L4, with a native mov cr3");
    // SAFETY: the copy maps exactly what the validated L4 maps.
    unsafe { arch::write_cr3(copy) };
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    checks.verdict("the vCPU runs on the unvalidated copy", cr3 == copy, format_args!("cr3={copy:#x}"), format_args!("cr3={cr3:#x}"));
    checks.finish()
}

/// `pv-paging-cr3-unpin`: after `NEW_BASEPTR`, a native `mov cr3` to the
/// second L4, which is pinned (allowed: no violation), then `UNPIN` of it
/// while running on it (it is nobody's base pointer, so it stops being a
/// validated table). The line printed next is an exit where a
/// direct-paging hypervisor sees a CR3 that is no longer validated (with
/// `--paging-violation kill` the domain ends there); with `report` the
/// guest goes back, natively, to the first L4 (pinned and the base
/// pointer).
pub fn cr3_unpin() -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-cr3-unpin");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let other = space.other_l4 << 12;
    // SAFETY: the second L4 shares the identity L3: it maps everything in
    // use (not the window, which this workload does not touch).
    unsafe { arch::write_cr3(other) };
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    checks.verdict("running on the pinned second L4 after a native mov cr3", cr3 == other, format_args!("cr3={other:#x}"), format_args!("cr3={cr3:#x}"));
    // SAFETY: the L4's memory stays as it is; only its validation ends.
    let got = unsafe { mmuext_op(hc, &[op(MMUEXT_UNPIN_TABLE, space.other_l4)]) };
    expect(&mut checks, "unpin the second L4 while running on it", Outcome::ok(1), got);
    let l4 = space.l4 << 12;
    // SAFETY: the first L4, which maps everything in use.
    unsafe { arch::write_cr3(l4) };
    let cr3 = arch::read_cr3() & PTE_ADDRESS_MASK;
    checks.verdict("back on the first L4 with a native mov cr3", cr3 == l4, format_args!("cr3={l4:#x}"), format_args!("cr3={cr3:#x}"));
    checks.finish()
}

/// `pv-paging-wp-off`: after `NEW_BASEPTR`, clears CR0.WP and prints a
/// line (an exit, where a direct-paging hypervisor sees WP clear: with
/// `--paging-violation kill` the domain ends there); then stores a present
/// entry (data page 0, read-only) into entry 5 of the pinned window L1
/// through its read-only mapping, behind the validator's back, and sets WP
/// again. The table then holds an entry the frame table never counted,
/// which an audit finds. On kvm_pvm the store is not made: there the guest
/// kernel runs at CPL 3 and such a store livelocks the vCPU in KVM's
/// shadow MMU (measured: hundreds of thousands of spurious page faults a
/// second, no exit), so it cannot land.
pub fn wp_off() -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-wp-off");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let target = entry_address(space.window_l1, 5);
    let value = space.read_only(frames().data[0]);
    let cr0 = arch::read_cr0();
    // SAFETY: only WP changes; paging stays on.
    unsafe { arch::write_cr0(cr0 & !arch::CR0_WP) };
    crate::println!("testguest: paging: CR0.WP is clear (CR0 {:#x})", arch::read_cr0());
    let stored = if host_pvm {
        None
    } else {
        // SAFETY: the entry is unused by the guest (window page 5); the
        // store is caught if it faults.
        Some(unsafe { traps::try_write_u64(target, value) })
    };
    // SAFETY: the value it had.
    unsafe { arch::write_cr0(cr0) };
    let entry = read_entry(space.window_l1, 5);
    match stored {
        None => checks.verdict("with CR0.WP clear a store into the read-only mapping of a pinned L1", true, "skipped on kvm_pvm", "skipped on kvm_pvm"),
        Some(stored) => {
            let landed = stored.is_ok() && entry == value;
            checks.verdict(
                "with CR0.WP clear a store into the read-only mapping of a pinned L1 lands",
                landed,
                format_args!("entry {value:#x}"),
                format_args!("{} (entry {entry:#x})", Fault(stored.map(|()| "stored"))),
            )
        }
    }
    let wp = arch::read_cr0() & arch::CR0_WP != 0;
    checks.verdict("CR0.WP is set again", wp, "set", if wp { "set" } else { "clear" });
    checks.finish()
}

/// `pv-paging-wp-spin`: after `NEW_BASEPTR`, prints a line, clears CR0.WP
/// and spins without ever exiting: only the hypervisor's periodic kick of
/// direct-paging vCPUs can see it (it never ends by itself; run it with
/// `--paging-violation kill` or a timeout).
pub fn wp_spin() -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-wp-spin");
    let (hc, host_pvm) = start(&mut checks);
    let Some(_space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    crate::println!("testguest: paging: clearing CR0.WP and spinning without exits");
    let cr0 = arch::read_cr0();
    // SAFETY: only WP changes; paging stays on.
    unsafe { arch::write_cr0(cr0 & !arch::CR0_WP) };
    loop {
        core::hint::spin_loop();
    }
}

/// `pv-paging-loop iterations=N`: after `NEW_BASEPTR`, `N` rounds (the
/// default, 100 million, lasts more than a day) of three `mmu_update` calls about a millisecond
/// apart: map data page 0 at the window, unmap it, and one the hypervisor
/// refuses (the pinned window L1 mapped writable). A long-running domain in
/// validated use, for audits and for the rates `dom0 top` shows. Prints
/// `testguest: paging: looping` once the address space is loaded.
pub fn update_loop(iterations: u64) -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-loop");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    let data0 = frames().data[0];
    let l1 = space.window_l1;
    crate::println!("testguest: paging: looping");
    // The TSC rate; 1 GHz if unknown (the pace need not be exact).
    let tsc_per_ms = match crate::bench::tsc_khz(host_pvm) {
        0 => 1_000_000,
        khz => khz,
    };
    for round in 0..iterations {
        // SAFETY: window entry 0 maps data page 0 (patterns only) or
        // nothing; the refused request changes nothing.
        let results = unsafe {
            [
                mmu_update(hc, &[normal(l1, 0, space.writable(data0))]),
                mmu_update(hc, &[normal(l1, 0, 0)]),
                mmu_update(hc, &[normal(l1, 1, space.writable(l1 << 12))]),
            ]
        };
        if Outcome::from(results[0]) != Outcome::ok(1) || Outcome::from(results[1]) != Outcome::ok(1) || Outcome::from(results[2]) != Outcome::err(EBUSY, 0) {
            checks.verdict(format_args!("round {round}"), false, "0, 0 and -EBUSY", format_args!("{}, {}, {}", Outcome::from(results[0]), Outcome::from(results[1]), Outcome::from(results[2])));
            checks.finish()
        }
        let start = arch::rdtsc();
        while arch::rdtsc().wrapping_sub(start) < tsc_per_ms {
            core::hint::spin_loop();
        }
    }
    checks.verdict(format_args!("{iterations} rounds"), true, "", format_args!("{iterations} rounds"));
    checks.finish()
}

/// Requests per call of `pv-paging-bench` (Xen's batches of 512: one L1
/// table rewritten per call).
pub const BENCH_BATCH: usize = 512;

/// The two request lists of `pv-paging-bench`: map every entry of the
/// window's L1, and unmap them again.
static BENCH_LISTS: RacyCell<[[MmuUpdate; BENCH_BATCH]; 2]> =
    RacyCell::new([[MmuUpdate { ptr: 0, val: 0 }; BENCH_BATCH]; 2]);

/// `pv-paging-bench iterations=N`: builds the address space of
/// `pv-paging`, then makes N `mmu_update` calls of [`BENCH_BATCH`]
/// requests each, alternately mapping a data page writable at every entry
/// of the window's L1 table and unmapping them all (each update takes or
/// drops a writable type reference). Prints `BENCH pv-paging-bench PASS:
/// iterations=N batch=512 updates=U cycles=C tsc_khz=K`.
pub fn update_bench(iterations: u64, vif_registered: bool) -> ! {
    let mut checks = Checks::with_topic("paging", "pv-paging-bench");
    let (hc, host_pvm) = start(&mut checks);
    let Some(space) = build_and_switch(&mut checks, hc, host_pvm) else { checks.finish() };
    if checks.failed() != 0 {
        checks.finish()
    }
    let data = frames().data[0];
    let lists = BENCH_LISTS.get();
    for index in 0..BENCH_BATCH {
        // SAFETY: only the boot vCPU runs this workload; nothing else
        // touches BENCH_LISTS.
        unsafe {
            (*lists)[0][index] = normal(space.window_l1, index, space.writable(data));
            (*lists)[1][index] = normal(space.window_l1, index, 0);
        }
    }
    let start = arch::rdtsc();
    for call in 0..iterations {
        // SAFETY: the lists map and unmap a page that holds only test
        // patterns at the window, which nothing but this workload uses.
        let (result, done) = unsafe { mmu_update(hc, &(*lists)[(call % 2) as usize]) };
        if result != 0 || done as usize != BENCH_BATCH {
            crate::println!("BENCH pv-paging-bench FAIL: call {call} returned {} with {done} of {BENCH_BATCH} done", Shown(decode(result)));
            crate::exit(pvabi::exit_status::FAILURE)
        }
    }
    let cycles = arch::rdtsc().wrapping_sub(start);
    crate::println!(
        "BENCH pv-paging-bench PASS: iterations={iterations} batch={BENCH_BATCH} updates={} cycles={cycles} tsc_khz={}",
        iterations * BENCH_BATCH as u64,
        crate::bench::tsc_khz(vif_registered)
    );
    crate::exit(pvabi::exit_status::SUCCESS)
}
