//! The guest's own page tables, built by the boot vCPU.
//!
//! An identity map in 2 MiB pages over every RAM range of the memory map,
//! the guest image, the boot structures and the 32-bit MMIO hole
//! (uncached), plus the user window: a few 4 KiB pages at [`USER_WINDOW`],
//! the only user-accessible addresses on a hardware-assisted host. Tables
//! come from a static pool, so the map needs no allocator. On a kvm_pvm
//! host every present entry at every level carries the U/S bit, without
//! which the vCPU cannot run natively; user mode can then reach all of
//! the identity map too.

use pvabi::boot::{MemMapEntry, LOAD_MIN, MEMMAP_RAM};
use pvabi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use pvabi::pvm::PTE_USER;

use crate::sync::RacyCell;

pub(crate) const PTE_PRESENT: u64 = 1 << 0;
pub(crate) const PTE_WRITABLE: u64 = 1 << 1;
/// Write-through; with PCD selects UC in the default PAT.
const PTE_WRITE_THROUGH: u64 = 1 << 3;
const PTE_CACHE_DISABLE: u64 = 1 << 4;
/// In a page-directory entry: maps a 2 MiB page.
const PTE_HUGE: u64 = 1 << 7;
/// No instruction fetches (EFER.NXE is set at boot).
pub(crate) const PTE_NO_EXECUTE: u64 = 1 << 63;
/// Physical address bits of an entry.
pub(crate) const PTE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

const LARGE_PAGE_SIZE: u64 = 2 << 20;
pub(crate) const PAGE_SIZE: u64 = 4096;
/// Addresses from here on are non-canonical or in the upper half, which
/// the identity map never covers.
const LOWER_HALF_END: u64 = 1 << 47;
/// Tables in the pool: one PML4, one PDPT per 512 GiB, one page directory
/// per GiB, three for the user window; enough for ~120 GiB of RAM plus
/// the MMIO hole.
const POOL_TABLES: usize = 128;

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

/// A page of memory (not a page table) for statics that must fill a page
/// of their own: the hypercall page, the user stack, probe areas.
#[repr(C, align(4096))]
pub struct Page(pub [u8; PAGE_SIZE as usize]);

impl Page {
    pub const ZEROED: Page = Page([0; PAGE_SIZE as usize]);
}

/// Zeroed page tables; handed out in order by [`IdentityMap`] on the boot
/// vCPU, before the tables are published. Never freed.
static POOL: RacyCell<[PageTable; POOL_TABLES]> = RacyCell::new([const { PageTable([0; 512]) }; POOL_TABLES]);

/// Why the map could not be built.
pub enum MapError {
    /// The memory map needs more tables than the pool has.
    PoolExhausted,
    /// A range reaches beyond the lower half of the address space.
    NotInLowerHalf { address: u64 },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::PoolExhausted => write!(out, "more than {POOL_TABLES} page tables needed"),
            MapError::NotInLowerHalf { address } => write!(out, "range ends at {address:#x}, beyond the lower half"),
        }
    }
}

/// An identity map under construction.
pub struct IdentityMap {
    pml4: *mut PageTable,
    tables_used: usize,
    /// [`PTE_USER`] on kvm_pvm hosts, else 0; set in every present entry.
    user_bit: u64,
}

impl IdentityMap {
    /// Starts an empty map. Takes the static pool: call once.
    fn new(host_pvm: bool) -> Result<Self, MapError> {
        let mut map = IdentityMap { pml4: core::ptr::null_mut(), tables_used: 0, user_bit: if host_pvm { PTE_USER } else { 0 } };
        map.pml4 = map.allocate_table()?;
        Ok(map)
    }

    fn allocate_table(&mut self) -> Result<*mut PageTable, MapError> {
        if self.tables_used == POOL_TABLES {
            return Err(MapError::PoolExhausted);
        }
        // SAFETY: the index is in bounds; each table is handed out once.
        let table = unsafe { (&raw mut (*POOL.get())[self.tables_used]).cast::<PageTable>() };
        self.tables_used += 1;
        Ok(table)
    }

    /// The table `parent[index]` points to, created if absent; a new entry
    /// allows user access if `user` (and on kvm_pvm always).
    fn next_level(&mut self, parent: *mut PageTable, index: usize, user: bool) -> Result<*mut PageTable, MapError> {
        // SAFETY: `parent` is a pool table owned by this map; the pool is
        // identity-mapped under both the boot map and this one, so its
        // physical addresses are usable as pointers.
        let entry = unsafe { &mut (*parent).0[index] };
        if *entry & PTE_PRESENT != 0 {
            return Ok((*entry & PTE_ADDRESS_MASK) as *mut PageTable);
        }
        let table = self.allocate_table()?;
        let user_bit = if user { PTE_USER } else { self.user_bit };
        *entry = table as u64 | PTE_PRESENT | PTE_WRITABLE | user_bit;
        Ok(table)
    }

    /// Maps `[start, end)`, widened to 2 MiB boundaries, onto itself with
    /// `extra_flags` in each 2 MiB entry.
    fn map(&mut self, start: u64, end: u64, extra_flags: u64) -> Result<(), MapError> {
        let first = start & !(LARGE_PAGE_SIZE - 1);
        let last_end = end.checked_add(LARGE_PAGE_SIZE - 1).ok_or(MapError::NotInLowerHalf { address: end })?
            & !(LARGE_PAGE_SIZE - 1);
        if last_end > LOWER_HALF_END {
            return Err(MapError::NotInLowerHalf { address: end });
        }
        for page in (first..last_end).step_by(LARGE_PAGE_SIZE as usize) {
            let pml4_index = (page >> 39) as usize & 511;
            let pdpt_index = (page >> 30) as usize & 511;
            let pd_index = (page >> 21) as usize & 511;
            let pdpt = self.next_level(self.pml4, pml4_index, false)?;
            let pd = self.next_level(pdpt, pdpt_index, false)?;
            // SAFETY: `pd` is a pool table of this map (see `next_level`).
            unsafe {
                (*pd).0[pd_index] = page | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE | self.user_bit | extra_flags;
            }
        }
        Ok(())
    }

    /// Maps the 4 KiB page at `virt` to `phys`, user-accessible, with
    /// `flags` (writable, no-execute). `virt` must lie outside every range
    /// mapped with 2 MiB pages.
    fn map_user_page(&mut self, virt: u64, phys: u64, flags: u64) -> Result<(), MapError> {
        if virt >= LOWER_HALF_END {
            return Err(MapError::NotInLowerHalf { address: virt });
        }
        let pdpt = self.next_level(self.pml4, (virt >> 39) as usize & 511, true)?;
        let pd = self.next_level(pdpt, (virt >> 30) as usize & 511, true)?;
        let pt = self.next_level(pd, (virt >> 21) as usize & 511, true)?;
        // SAFETY: `pt` is a pool table of this map (see `next_level`).
        unsafe { (*pt).0[(virt >> 12) as usize & 511] = (phys & PTE_ADDRESS_MASK) | PTE_PRESENT | PTE_USER | flags };
        Ok(())
    }
}

/// Where the user window starts: PML4 slot 128, far from the identity map
/// (slot 0 up to 512 GiB) and from [`UNMAPPED_ADDRESS`] (slot 255).
pub const USER_WINDOW: u64 = 0x0000_4000_0000_0000;
/// Pages the user window holds at most.
pub const USER_WINDOW_PAGES: usize = 8;
const _: () = assert!(USER_WINDOW >> 39 != UNMAPPED_ADDRESS >> 39 && (POOL_TABLES as u64) << 30 <= USER_WINDOW);

/// One page of the user window: the guest-physical page it shows.
#[derive(Clone, Copy)]
pub struct UserPage {
    /// Page-aligned guest-physical address.
    pub phys: u64,
    pub writable: bool,
    pub executable: bool,
}

// Bounds of the loaded image, from the linker script.
extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Builds the identity map for `memory_map` and the user window, page `i`
/// of `user_pages` at `USER_WINDOW + i * 4096`; returns the physical
/// address of the PML4, for CR3. Boot vCPU only, once.
pub fn build_page_tables(memory_map: &[MemMapEntry], host_pvm: bool, user_pages: &[UserPage]) -> Result<u64, MapError> {
    let mut map = IdentityMap::new(host_pvm)?;
    // The boot structures (StartInfo, memory map, command line, boot GDT
    // and the TSS still in TR) live below LOAD_MIN.
    map.map(0, LOAD_MIN, 0)?;
    let image_start = &raw const __image_start as u64;
    let image_end = &raw const __image_end as u64;
    map.map(image_start, image_end, 0)?;
    for entry in memory_map.iter().filter(|entry| entry.kind == MEMMAP_RAM && entry.size > 0) {
        let end = entry.addr.checked_add(entry.size).ok_or(MapError::NotInLowerHalf { address: u64::MAX })?;
        map.map(entry.addr, end, 0)?;
    }
    // Device memory must not be cached.
    map.map(MMIO_HOLE_START, MMIO_HOLE_END, PTE_CACHE_DISABLE | PTE_WRITE_THROUGH)?;
    assert!(user_pages.len() <= USER_WINDOW_PAGES, "the user window holds {USER_WINDOW_PAGES} pages");
    for (index, page) in user_pages.iter().enumerate() {
        let flags = if page.writable { PTE_WRITABLE } else { 0 } | if page.executable { 0 } else { PTE_NO_EXECUTE };
        map.map_user_page(USER_WINDOW + index as u64 * PAGE_SIZE, page.phys, flags)?;
    }
    Ok(map.pml4 as u64)
}

/// A canonical lower-half address the identity map never covers (PML4 slot
/// 255, 511.5 GiB up, while the pool cannot map past ~128 GiB).
pub const UNMAPPED_ADDRESS: u64 = 0x0000_7fff_ffff_f000;
const _: () = assert!((POOL_TABLES as u64) << 30 < (UNMAPPED_ADDRESS & !((1 << 39) - 1)));
