//! The boot protocol of our freestanding ELF guests ([`pvabi::boot`]).
//!
//! Writes the boot GDT, TSS, identity page tables, start info, memory map
//! and command line into guest memory, loads the checked ELF image with
//! linux-loader, and returns the entry state of the vCPUs.

use std::io::Cursor;

use linux_loader::loader::{elf::Elf, KernelLoader};
use pvabi::boot::{
    MemMapEntry, StartInfo, BOOT_GDT, BOOT_MAP_SIZE, BOOT_PML4, BOOT_TSS, CMDLINE, LOAD_MIN, MEMMAP, MEMMAP_RAM,
    MEMMAP_RESERVED, START_INFO, START_INFO_MAGIC, START_INFO_VERSION,
};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{elf, tss_descriptor, EntryMode, EntryState, GDT_CODE64, GDT_DATA};
use crate::abi_bytes::Plain;
use crate::layout::RamRange;

const PTE_PRESENT: u64 = 1;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;
const PAGE: u64 = 0x1000;
const HUGE_2M: u64 = 2 << 20;

/// Why a freestanding guest could not be put in memory.
#[derive(Debug, Error)]
pub enum BootError {
    /// The image failed a check.
    #[error("the kernel image is not a usable freestanding guest: {0}")]
    Elf(#[from] elf::ElfError),
    /// linux-loader refused it.
    #[error("loading the kernel image failed: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// A boot structure could not be written.
    #[error("writing the boot structures into guest memory failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// RAM too small for the boot structures.
    #[error("the domain's RAM is too small for the boot structures (need at least {0:#x} bytes)")]
    RamTooSmall(u64),
}

/// How to boot.
pub struct FreestandingBoot<'a> {
    /// The whole ELF file.
    pub image: &'a [u8],
    /// The command line.
    pub cmdline: &'a str,
    /// The domain's RAM.
    pub ram: &'a [RamRange],
    /// Number of vCPUs.
    pub vcpu_count: u32,
    /// Set the U/S bit in the boot page tables (kvm_pvm host).
    pub user_bit: bool,
}

impl FreestandingBoot<'_> {
    /// Loads the image and writes the boot structures.
    pub fn load<M: GuestMemoryBackend>(&self, mem: &M) -> Result<EntryState, BootError> {
        let low_end = self.ram.first().map_or(0, RamRange::end);
        if low_end < LOAD_MIN {
            return Err(BootError::RamTooSmall(LOAD_MIN));
        }
        let checked = elf::check(self.image, self.ram, LOAD_MIN)?;
        let result = Elf::load(mem, None, &mut Cursor::new(self.image), Some(GuestAddress(LOAD_MIN)))?;
        tracing::debug!(entry = checked.entry, end = result.kernel_end, "loaded freestanding ELF");
        // The guest may rely on a zeroed .bss (its VIF pages must be zero
        // when registered); do not depend on the memory being fresh.
        for seg in &checked.segments {
            let zeros = vec![0u8; (seg.mem_len - seg.file_len) as usize];
            mem.write_slice(&zeros, GuestAddress(seg.gpa + seg.file_len))?;
        }

        self.write_gdt(mem)?;
        self.write_page_tables(mem)?;
        let map = memory_map(self.ram);
        for (i, e) in map.iter().enumerate() {
            mem.write_obj(Plain(*e), GuestAddress(MEMMAP + (i * std::mem::size_of::<MemMapEntry>()) as u64))?;
        }
        let mut cmdline = self.cmdline.as_bytes().to_vec();
        cmdline.push(0);
        mem.write_slice(&cmdline, GuestAddress(CMDLINE))?;
        let info = StartInfo {
            magic: START_INFO_MAGIC,
            version: START_INFO_VERSION,
            vcpu_count: self.vcpu_count,
            flags: 0,
            ram_bytes: self.ram.iter().map(|r| r.len).sum(),
            cmdline_gpa: CMDLINE,
            cmdline_len: self.cmdline.len() as u64,
            memmap_gpa: MEMMAP,
            memmap_entries: map.len() as u64,
        };
        mem.write_obj(Plain(info), GuestAddress(START_INFO))?;
        Ok(EntryState { mode: EntryMode::Freestanding64, rip: checked.entry, rdi: START_INFO, rsi: 0, rbx: 0, cr3: BOOT_PML4, all_vcpus: true })
    }

    fn write_gdt<M: GuestMemoryBackend>(&self, mem: &M) -> Result<(), BootError> {
        let [tss_lo, tss_hi] = tss_descriptor(BOOT_TSS);
        for (i, d) in [0, GDT_CODE64, GDT_DATA, tss_lo, tss_hi].into_iter().enumerate() {
            mem.write_obj(d, GuestAddress(BOOT_GDT + 8 * i as u64))?;
        }
        // A zeroed TSS: no IST stacks, no I/O bitmap (offset past the limit).
        mem.write_slice(&[0u8; 0x68], GuestAddress(BOOT_TSS))?;
        mem.write_obj(0x68u16, GuestAddress(BOOT_TSS + 0x66))?;
        Ok(())
    }

    fn write_page_tables<M: GuestMemoryBackend>(&self, mem: &M) -> Result<(), BootError> {
        write_identity_map(mem, self.user_bit)
    }
}

/// Writes the boot identity map at [`BOOT_PML4`]: one PML4, one PDPT and
/// four PDs map the first 4 GiB with 2 MiB pages. With `user_bit` every
/// entry has the U/S bit, which kvm_pvm needs for native execution.
pub fn write_identity_map<M: GuestMemoryBackend>(mem: &M, user_bit: bool) -> Result<(), BootError> {
    let user = if user_bit { pvabi::pvm::PTE_USER } else { 0 };
    let table = PTE_PRESENT | PTE_WRITABLE | user;
    let pdpt = BOOT_PML4 + PAGE;
    let pd0 = pdpt + PAGE;
    let pds = BOOT_MAP_SIZE / (512 * HUGE_2M);
    mem.write_slice(&[0u8; PAGE as usize], GuestAddress(BOOT_PML4))?;
    mem.write_slice(&[0u8; PAGE as usize], GuestAddress(pdpt))?;
    mem.write_obj(pdpt | table, GuestAddress(BOOT_PML4))?;
    let mut entries = vec![0u8; PAGE as usize];
    for i in 0..pds {
        let pd = pd0 + i * PAGE;
        mem.write_obj(pd | table, GuestAddress(pdpt + 8 * i))?;
        for (j, chunk) in entries.chunks_exact_mut(8).enumerate() {
            let frame = (i * 512 + j as u64) * HUGE_2M;
            chunk.copy_from_slice(&(frame | table | PTE_PS).to_le_bytes());
        }
        mem.write_slice(&entries, GuestAddress(pd))?;
    }
    Ok(())
}

/// The memory map handed to the guest: the boot area below [`LOAD_MIN`] is
/// reserved, the rest of each RAM range is usable.
pub fn memory_map(ram: &[RamRange]) -> Vec<MemMapEntry> {
    let mut map = Vec::new();
    for r in ram {
        let start = r.gpa.max(if r.gpa == 0 { LOAD_MIN } else { 0 });
        if r.gpa == 0 {
            map.push(MemMapEntry { addr: 0, size: LOAD_MIN.min(r.len), kind: MEMMAP_RESERVED, reserved: 0 });
        }
        if r.end() > start {
            map.push(MemMapEntry { addr: start, size: r.end() - start, kind: MEMMAP_RAM, reserved: 0 });
        }
    }
    map.truncate(pvabi::boot::MEMMAP_MAX_ENTRIES);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::elf::tests::image;
    use crate::layout::ram_ranges;
    use vm_memory::GuestMemoryMmap;

    fn mem(bytes: u64) -> (GuestMemoryMmap, Vec<RamRange>) {
        let ram = ram_ranges(bytes);
        let m = GuestMemoryMmap::<()>::from_ranges(&ram.iter().map(|r| (GuestAddress(r.gpa), r.len as usize)).collect::<Vec<_>>()).unwrap();
        (m, ram)
    }

    #[test]
    fn writes_boot_structures_and_loads_the_image() {
        let (m, ram) = mem(32 << 20);
        let img = image(0x20_0000, 0x20_0004, &[0x90, 0x90, 0x90, 0x90, 0xf4]);
        let boot = FreestandingBoot { image: &img, cmdline: "workload=banner", ram: &ram, vcpu_count: 2, user_bit: true };
        let entry = boot.load(&m).unwrap();
        assert_eq!(entry, EntryState { mode: EntryMode::Freestanding64, rip: 0x20_0004, rdi: START_INFO, rsi: 0, rbx: 0, cr3: BOOT_PML4, all_vcpus: true });
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x20_0004)).unwrap(), 0xf4);
        // .bss is zeroed even over stale memory.
        let (m2, _) = mem(32 << 20);
        m2.write_slice(&[0xaa; 0x2000], GuestAddress(0x20_0000)).unwrap();
        FreestandingBoot { image: &img, cmdline: "", ram: &ram, vcpu_count: 1, user_bit: false }.load(&m2).unwrap();
        assert_eq!(m2.read_obj::<u64>(GuestAddress(0x20_0008)).unwrap(), 0);
        assert_eq!(m2.read_obj::<u32>(GuestAddress(0x20_1001)).unwrap(), 0, "the last bytes of the segment");
        assert_eq!(m2.read_obj::<u8>(GuestAddress(0x20_1010)).unwrap(), 0xaa, "past the segment is untouched");
        let info: Plain<StartInfo> = m.read_obj(GuestAddress(START_INFO)).unwrap();
        assert_eq!(info.0.magic, START_INFO_MAGIC);
        assert_eq!(info.0.vcpu_count, 2);
        assert_eq!(info.0.ram_bytes, 32 << 20);
        assert_eq!(info.0.cmdline_len, 15);
        let mut cmd = [0u8; 16];
        m.read_slice(&mut cmd, GuestAddress(CMDLINE)).unwrap();
        assert_eq!(&cmd, b"workload=banner\0");
        // Identity map with the U bit at every level; 2 MiB page #1 maps 2 MiB.
        let pml4e: u64 = m.read_obj(GuestAddress(BOOT_PML4)).unwrap();
        assert_eq!(pml4e, (BOOT_PML4 + PAGE) | 7);
        let pdpte3: u64 = m.read_obj(GuestAddress(BOOT_PML4 + PAGE + 24)).unwrap();
        assert_eq!(pdpte3, (BOOT_PML4 + 5 * PAGE) | 7);
        let pde1: u64 = m.read_obj(GuestAddress(BOOT_PML4 + 2 * PAGE + 8)).unwrap();
        assert_eq!(pde1, HUGE_2M | 0x87);
        let last: u64 = m.read_obj(GuestAddress(BOOT_PML4 + 6 * PAGE - 8)).unwrap();
        assert_eq!(last & !0xfff, BOOT_MAP_SIZE - HUGE_2M);
        // The boot structures end below the start info.
        const { assert!(BOOT_PML4 + 6 * PAGE <= START_INFO) };
    }

    #[test]
    fn no_user_bit_on_hardware_hosts() {
        let (m, ram) = mem(16 << 20);
        let img = image(0x20_0000, 0x20_0000, &[0xf4]);
        FreestandingBoot { image: &img, cmdline: "", ram: &ram, vcpu_count: 1, user_bit: false }.load(&m).unwrap();
        let pml4e: u64 = m.read_obj(GuestAddress(BOOT_PML4)).unwrap();
        assert_eq!(pml4e & pvabi::pvm::PTE_USER, 0);
    }

    #[test]
    fn refuses_images_outside_ram() {
        let (m, ram) = mem(16 << 20);
        let img = image(0x200_0000, 0x200_0000, &[0xf4]);
        let err = FreestandingBoot { image: &img, cmdline: "", ram: &ram, vcpu_count: 1, user_bit: false }.load(&m).unwrap_err();
        assert!(err.to_string().contains("does not fit in the domain's RAM"), "{err}");
    }

    #[test]
    fn memory_map_reserves_the_boot_area() {
        let map = memory_map(&ram_ranges(6 << 30));
        assert_eq!(map[0], MemMapEntry { addr: 0, size: LOAD_MIN, kind: MEMMAP_RESERVED, reserved: 0 });
        assert_eq!(map[1], MemMapEntry { addr: LOAD_MIN, size: pvabi::layout::MMIO_HOLE_START - LOAD_MIN, kind: MEMMAP_RAM, reserved: 0 });
        assert_eq!(map[2].addr, 1 << 32);
        assert_eq!(map[2].kind, MEMMAP_RAM);
        let ram: u64 = map.iter().filter(|e| e.kind == MEMMAP_RAM).map(|e| e.size).sum();
        assert_eq!(ram + LOAD_MIN, 6 << 30);
    }
}
