//! The Linux x86 boot protocols, via linux-loader.
//!
//! - bzImage: the 64-bit boot protocol (Documentation/arch/x86/boot.rst):
//!   the protected-mode kernel at 1 MiB, `boot_params` (the zero page) with
//!   the setup header, an e820 map with the PC's RAM holes, the command
//!   line and the initrd; entry at `startup_64` (load address + 0x200) in
//!   64-bit mode with an identity map, RSI = boot_params.
//! - ELF vmlinux with a PVH note: `hvm_start_info` with the memory map, the
//!   command line and the initrd as a module; entry in 32-bit protected mode
//!   without paging, RBX = start info.
//!
//! Both hand Linux the RSDP of our ACPI tables ([`super::acpi`]), which
//! describe the vCPUs and the power/reset registers.

use std::io::Cursor;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use pvabi::boot::{BOOT_GDT, BOOT_PML4, BOOT_TSS};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::freestanding::{write_identity_map, BootError};
use super::{acpi, elf, tss_descriptor, EntryMode, EntryState, LINUX_GDT};
use crate::layout::RamRange;

/// The zero page (bzImage) or hvm_start_info (PVH).
pub const ZERO_PAGE: u64 = 0x7000;
/// PVH module list (the initrd).
pub const PVH_MODLIST: u64 = 0x7800;
/// PVH memory map.
pub const PVH_MEMMAP: u64 = 0x7900;
/// The command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Longest command line, with its NUL.
pub const CMDLINE_MAX: usize = 4096;
/// Start of the EBDA/BIOS hole, reserved in the e820 map as on a PC.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the kernel goes (and the end of the hole).
pub const HIMEM_START: u64 = 0x10_0000;
/// Most memory map entries we produce.
const MAX_E820: usize = 8;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XLF_KERNEL_64: u16 = 1;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `type_of_loader`: "undefined" loader ID.
const LOADER_UNDEFINED: u8 = 0xff;

/// A Linux kernel could not be put in memory.
#[derive(Debug, Error)]
pub enum LinuxBootError {
    /// linux-loader refused the kernel.
    #[error("loading the Linux kernel failed: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// Writing boot_params / start_info failed.
    #[error("writing the Linux boot parameters failed: {0}")]
    Configure(#[from] linux_loader::configurator::Error),
    /// The bzImage cannot be entered in 64-bit mode.
    #[error("the bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear in its setup header)")]
    No64BitEntry,
    /// The vmlinux has no PVH note.
    #[error("the ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y")]
    NoPvhEntry,
    /// No room for the initrd.
    #[error("the initrd ({size} bytes) does not fit in RAM between the kernel's end ({kernel_end:#x}) and {limit:#x}")]
    InitrdTooLarge {
        /// initrd size.
        size: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest usable address.
        limit: u64,
    },
    /// Command line too long.
    #[error("the kernel command line is {0} bytes; at most {max} bytes fit", max = CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    /// RAM too small.
    #[error("a Linux guest needs at least {0} MiB of RAM")]
    RamTooSmall(u64),
    /// Other memory failures.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Writing guest memory failed.
    #[error("writing guest memory failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// The two formats a Linux kernel comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxFormat {
    /// A bzImage.
    BzImage,
    /// An ELF vmlinux with a PVH entry note.
    ElfPvh,
}

/// Recognizes a Linux kernel; `None` for anything else (for example our
/// freestanding guests, which are ELF without a PVH note).
pub fn detect(image: &[u8]) -> Option<LinuxFormat> {
    if image.get(0x202..0x206) == Some(b"HdrS") && image.get(0x1fe..0x200) == Some(&[0x55, 0xaa]) {
        return Some(LinuxFormat::BzImage);
    }
    elf::has_pvh_note(image).then_some(LinuxFormat::ElfPvh)
}

/// The e820 map: low RAM up to the EBDA, the BIOS hole reserved (the ACPI
/// tables live there), RAM from 1 MiB, and RAM above 4 GiB. The 32-bit MMIO
/// hole is simply absent.
pub fn e820_map(ram: &[RamRange]) -> Vec<(u64, u64, u32)> {
    let mut map = Vec::new();
    for r in ram {
        if r.gpa == 0 {
            map.push((0, EBDA_START.min(r.len), E820_RAM));
            if r.len > EBDA_START {
                map.push((EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED));
            }
            if r.len > HIMEM_START {
                map.push((HIMEM_START, r.len - HIMEM_START, E820_RAM));
            }
        } else {
            map.push((r.gpa, r.len, E820_RAM));
        }
    }
    map.truncate(MAX_E820);
    map
}

/// Where the initrd goes: as high as possible in low RAM, below `max_addr`
/// (the kernel's `initrd_addr_max`), page-aligned, above the kernel.
pub fn initrd_address(ram: &[RamRange], size: u64, kernel_end: u64, max_addr: u64) -> Result<u64, LinuxBootError> {
    let low_end = ram.first().map_or(0, RamRange::end);
    let limit = low_end.min(max_addr.saturating_add(1));
    let too_large = LinuxBootError::InitrdTooLarge { size, kernel_end, limit };
    let start = limit.checked_sub(size).ok_or(too_large)? & !0xfff;
    if start < kernel_end {
        return Err(LinuxBootError::InitrdTooLarge { size, kernel_end, limit });
    }
    Ok(start)
}

/// What to boot.
pub struct LinuxBoot<'a> {
    /// The kernel file.
    pub image: &'a [u8],
    /// The initrd, if any.
    pub initrd: Option<&'a [u8]>,
    /// The command line.
    pub cmdline: &'a str,
    /// The domain's RAM.
    pub ram: &'a [RamRange],
    /// Number of vCPUs (for the MADT).
    pub vcpu_count: u32,
    /// The virtio-mmio slots with a device (for the DSDT).
    pub virtio_slots: &'a [u32],
}

impl LinuxBoot<'_> {
    /// Loads the kernel, initrd, command line and ACPI tables; returns the
    /// boot vCPU's entry state.
    pub fn load<M: GuestMemoryBackend>(&self, mem: &M) -> Result<EntryState, LinuxBootError> {
        const MIN_RAM: u64 = 32 << 20;
        if self.ram.iter().map(|r| r.len).sum::<u64>() < MIN_RAM {
            return Err(LinuxBootError::RamTooSmall(MIN_RAM >> 20));
        }
        if self.cmdline.len() >= CMDLINE_MAX {
            return Err(LinuxBootError::CmdlineTooLong(self.cmdline.len()));
        }
        let mut cmdline = self.cmdline.as_bytes().to_vec();
        cmdline.push(0);
        mem.write_slice(&cmdline, GuestAddress(CMDLINE))?;
        for (addr, table) in acpi::build(self.vcpu_count, self.virtio_slots) {
            mem.write_slice(&table, GuestAddress(addr))?;
        }
        let [tss_lo, tss_hi] = tss_descriptor(BOOT_TSS);
        for (i, d) in LINUX_GDT.into_iter().chain([tss_lo, tss_hi]).enumerate() {
            mem.write_obj(d, GuestAddress(BOOT_GDT + 8 * i as u64))?;
        }
        mem.write_slice(&[0u8; 0x68], GuestAddress(BOOT_TSS))?;
        match detect(self.image) {
            Some(LinuxFormat::BzImage) => self.load_bzimage(mem),
            _ => self.load_pvh(mem),
        }
    }

    fn load_initrd<M: GuestMemoryBackend>(&self, mem: &M, kernel_end: u64, max_addr: u64) -> Result<Option<(u64, u64)>, LinuxBootError> {
        let Some(initrd) = self.initrd else { return Ok(None) };
        let addr = initrd_address(self.ram, initrd.len() as u64, kernel_end, max_addr)?;
        mem.write_slice(initrd, GuestAddress(addr))?;
        Ok(Some((addr, initrd.len() as u64)))
    }

    fn load_bzimage<M: GuestMemoryBackend>(&self, mem: &M) -> Result<EntryState, LinuxBootError> {
        let loaded = BzImage::load(mem, None, &mut Cursor::new(self.image), Some(GuestAddress(HIMEM_START)))?;
        let hdr = loaded.setup_header.ok_or(linux_loader::loader::Error::Bzimage(linux_loader::loader::bzimage::Error::InvalidBzImage))?;
        let mut params = boot_params { hdr, ..Default::default() };
        if params.hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxBootError::No64BitEntry);
        }
        params.hdr.type_of_loader = LOADER_UNDEFINED;
        params.hdr.cmd_line_ptr = CMDLINE as u32;
        params.hdr.cmdline_size = self.cmdline.len() as u32 + 1;
        let max = u64::from(params.hdr.initrd_addr_max);
        if let Some((addr, size)) = self.load_initrd(mem, loaded.kernel_end, max)? {
            params.hdr.ramdisk_image = addr as u32;
            params.hdr.ramdisk_size = size as u32;
        }
        let map = e820_map(self.ram);
        for (i, (addr, size, type_)) in map.iter().enumerate() {
            params.e820_table[i] = boot_e820_entry { addr: *addr, size: *size, r#type: *type_ };
        }
        params.e820_entries = map.len() as u8;
        params.acpi_rsdp_addr = acpi::ACPI_BASE;
        LinuxBootConfigurator::write_bootparams(&BootParams::new(&params, GuestAddress(ZERO_PAGE)), mem)?;
        write_identity_map(mem, false)?;
        Ok(EntryState {
            mode: EntryMode::Linux64,
            rip: loaded.kernel_load.0 + 0x200,
            rdi: 0,
            rsi: ZERO_PAGE,
            rbx: 0,
            cr3: BOOT_PML4,
            all_vcpus: false,
        })
    }

    fn load_pvh<M: GuestMemoryBackend>(&self, mem: &M) -> Result<EntryState, LinuxBootError> {
        let loaded = Elf::load(mem, None, &mut Cursor::new(self.image), Some(GuestAddress(HIMEM_START)))?;
        let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
            return Err(LinuxBootError::NoPvhEntry);
        };
        let map: Vec<hvm_memmap_table_entry> = e820_map(self.ram)
            .into_iter()
            .map(|(addr, size, type_)| hvm_memmap_table_entry { addr, size, type_, reserved: 0 })
            .collect();
        // The initrd may sit anywhere below 4 GiB for a 64-bit kernel.
        let initrd = self.load_initrd(mem, loaded.kernel_end, u32::MAX as u64)?;
        let modules: Vec<hvm_modlist_entry> = initrd
            .map(|(paddr, size)| hvm_modlist_entry { paddr, size, cmdline_paddr: 0, reserved: 0 })
            .into_iter()
            .collect();
        let info = hvm_start_info {
            magic: XEN_HVM_START_MAGIC,
            version: 1,
            flags: 0,
            nr_modules: modules.len() as u32,
            modlist_paddr: if modules.is_empty() { 0 } else { PVH_MODLIST },
            cmdline_paddr: CMDLINE,
            rsdp_paddr: acpi::ACPI_BASE,
            memmap_paddr: PVH_MEMMAP,
            memmap_entries: map.len() as u32,
            reserved: 0,
        };
        let mut params = BootParams::new(&info, GuestAddress(ZERO_PAGE));
        params.set_sections(&map, GuestAddress(PVH_MEMMAP));
        if !modules.is_empty() {
            params.set_modules(&modules, GuestAddress(PVH_MODLIST));
        }
        PvhBootConfigurator::write_bootparams(&params, mem)?;
        Ok(EntryState { mode: EntryMode::Pvh32, rip: entry.0, rdi: 0, rsi: 0, rbx: ZERO_PAGE, cr3: 0, all_vcpus: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ram_ranges;

    #[test]
    fn e820_has_the_pc_holes() {
        let m = e820_map(&ram_ranges(6 << 30));
        assert_eq!(m[0], (0, EBDA_START, E820_RAM));
        assert_eq!(m[1], (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED));
        assert_eq!(m[2], (HIMEM_START, pvabi::layout::MMIO_HOLE_START - HIMEM_START, E820_RAM));
        assert_eq!(m[3], (1 << 32, (6 << 30) - pvabi::layout::MMIO_HOLE_START, E820_RAM));
        let ram: u64 = m.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram + HIMEM_START - EBDA_START, 6 << 30);
        // The ACPI tables sit in the reserved hole.
        const { assert!(acpi::ACPI_BASE >= EBDA_START && acpi::ACPI_BASE + acpi::ACPI_MAX <= HIMEM_START) };
    }

    #[test]
    fn initrd_goes_high_but_below_the_limit_and_above_the_kernel() {
        let ram = ram_ranges(256 << 20);
        let a = initrd_address(&ram, 5 << 20, 0x200_0000, 0x7fff_ffff).unwrap();
        assert_eq!(a, (256 << 20) - (5 << 20));
        let a = initrd_address(&ram, 0x1234, 0x200_0000, (128 << 20) - 1).unwrap();
        assert_eq!(a % 0x1000, 0);
        assert!(a + 0x1234 <= 128 << 20);
        assert!(matches!(initrd_address(&ram, 255 << 20, 0x200_0000, u64::MAX), Err(LinuxBootError::InitrdTooLarge { .. })));
        assert!(matches!(initrd_address(&ram, 1 << 40, 0, u64::MAX), Err(LinuxBootError::InitrdTooLarge { .. })));
    }

    #[test]
    fn detects_formats() {
        let mut bz = vec![0u8; 0x300];
        bz[0x1fe] = 0x55;
        bz[0x1ff] = 0xaa;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect(&bz), Some(LinuxFormat::BzImage));
        assert_eq!(detect(&elf::tests::image(0x20_0000, 0x20_0000, &[0xf4])), None, "no PVH note: freestanding");
        assert_eq!(detect(b"garbage"), None);
    }
}
