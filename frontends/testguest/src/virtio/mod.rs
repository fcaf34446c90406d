//! virtio-mmio frontend drivers and the `virtio-*` workloads.
//!
//! Everything but this file is plain `no_std` code without guest-only
//! dependencies, shared with the host crate (`frontends::virtio`), whose
//! unit tests run it against simulated devices. This file supplies what
//! only the guest has: the register blocks as volatile MMIO at
//! `pvabi::virtio::MMIO_BASE + i * MMIO_STRIDE` (covered by the identity
//! map of the MMIO hole, uncached, with the U bit on kvm_pvm), the TSC as
//! the clock, and RAM above the image as DMA memory.

// The shared modules are a small library: the guest's workloads use most
// of it, the host crate and its tests the rest.
#[allow(dead_code)]
pub mod args;
#[allow(dead_code)]
pub mod blk;
#[allow(dead_code)]
pub mod console;
#[allow(dead_code)]
pub mod defs;
#[allow(dead_code)]
pub mod hostile;
#[allow(dead_code)]
pub mod net;
#[allow(dead_code)]
pub mod pattern;
#[allow(dead_code)]
pub mod ring;
#[allow(dead_code)]
pub mod transport;
#[allow(dead_code)]
pub mod workloads;

use core::fmt;

use pvabi::boot::{MemMapEntry, MEMMAP_RAM};
use pvabi::cpuid::KVM_LEAF_BASE;
use pvabi::virtio::{MAX_DEVICES, MMIO_BASE, MMIO_STRIDE};

use crate::arch;
use ring::DmaRegion;
use transport::{Clock, Regs};
use workloads::{Platform, DMA_BYTES};

/// A slot's register block, accessed with single volatile loads and
/// stores of the access width (what the hypervisor's MMIO handler and, on
/// kvm_pvm, KVM's instruction emulator decode).
pub struct MmioRegs {
    base: u64,
}

impl Regs for MmioRegs {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: the slot's page lies in the identity-mapped MMIO hole;
        // the read leaves the guest as an MMIO exit.
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u32) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u32, value) }
    }

    fn read8(&self, offset: usize) -> u8 {
        // SAFETY: as for `read32`.
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u8) }
    }
}

/// The guest's side of [`Platform`].
pub struct GuestPlatform {
    tsc_khz: Option<u64>,
    dma: DmaRegion,
    outside_ram: u64,
}

/// Ticks per millisecond assumed for timeouts when the TSC rate is unknown.
const FALLBACK_TSC_KHZ: u64 = 3_000_000;

impl GuestPlatform {
    /// `vif_registered`: the host is kvm_pvm (its MSR tells the TSC rate).
    pub fn new(memory_map: &[MemMapEntry], vif_registered: bool) -> GuestPlatform {
        extern "C" {
            static __image_end: u8;
        }
        let image_end = (&raw const __image_end as u64 + 4095) & !4095;
        // DMA memory: RAM right above the image, up to DMA_BYTES.
        let dma_end = memory_map
            .iter()
            .filter(|entry| entry.kind == MEMMAP_RAM && entry.addr <= image_end && image_end < entry.addr + entry.size)
            .map(|entry| (entry.addr + entry.size).min(image_end + DMA_BYTES as u64))
            .next()
            .unwrap_or(image_end);
        let ram_end = memory_map.iter().filter(|entry| entry.kind == MEMMAP_RAM).map(|entry| entry.addr + entry.size).max().unwrap_or(0);
        // Beyond RAM and above the 32-bit MMIO hole, 1 GiB-aligned.
        let outside_ram = ((ram_end.max(1 << 32) + (1 << 30) - 1) & !((1 << 30) - 1)) + (1 << 30);
        GuestPlatform {
            tsc_khz: tsc_khz(vif_registered),
            dma: DmaRegion { ptr: image_end as *mut u8, len: (dma_end - image_end) as usize },
            outside_ram,
        }
    }
}

/// The TSC rate: kvm_pvm's MSR, CPUID 0x15 (crystal × ratio), CPUID 0x16
/// (base MHz), or KVM's timing leaf (0x40000010, relocated to
/// KVM_LEAF_BASE + 0x10) if the VMM filled it.
pub(crate) fn tsc_khz(vif_registered: bool) -> Option<u64> {
    if vif_registered {
        // SAFETY: the MSR exists on kvm_pvm hosts, which a registered VIF
        // proves.
        let khz = unsafe { arch::rdmsr(pvabi::pvm::MSR_TSC_KHZ) };
        if khz != 0 {
            return Some(khz);
        }
    }
    let max_leaf = arch::cpuid(0).eax;
    if max_leaf >= 0x15 {
        let leaf = arch::cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax) / 1000);
        }
    }
    if max_leaf >= 0x16 {
        let mhz = arch::cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1000);
        }
    }
    if arch::cpuid(KVM_LEAF_BASE).eax >= KVM_LEAF_BASE + 0x10 {
        let khz = arch::cpuid(KVM_LEAF_BASE + 0x10).eax;
        if khz != 0 {
            return Some(u64::from(khz));
        }
    }
    None
}

impl Clock for GuestPlatform {
    fn now(&self) -> u64 {
        arch::rdtsc()
    }

    fn ticks_per_ms(&self) -> u64 {
        self.tsc_khz.unwrap_or(FALLBACK_TSC_KHZ)
    }

    fn relax(&self) {
        core::hint::spin_loop();
    }
}

impl Platform for GuestPlatform {
    type Regs = MmioRegs;

    fn slot_count(&self) -> u32 {
        MAX_DEVICES
    }

    fn slot_address(&self, index: u32) -> u64 {
        MMIO_BASE + u64::from(index) * MMIO_STRIDE
    }

    fn slot(&self, index: u32) -> MmioRegs {
        assert!(index < MAX_DEVICES);
        MmioRegs { base: self.slot_address(index) }
    }

    fn line(&self, args: fmt::Arguments<'_>) {
        crate::console::print_line(args);
    }

    fn dma(&self) -> DmaRegion {
        self.dma
    }

    fn outside_ram(&self) -> u64 {
        self.outside_ram
    }

    fn tsc_khz(&self) -> Option<u64> {
        self.tsc_khz
    }
}

/// The virtio workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Probe,
    Blk,
    Net,
    Console,
    Hostile,
    Bench,
}

/// Runs `mode`; true if it passed.
pub fn run(mode: Mode, args: &args::VirtioArgs<'_>, memory_map: &[MemMapEntry], vif_registered: bool) -> bool {
    let platform = GuestPlatform::new(memory_map, vif_registered);
    match platform.tsc_khz {
        Some(khz) => crate::println!("VIRTIO TSC {khz} kHz, DMA memory {:#x}+{:#x}", platform.dma.addr(), platform.dma.len),
        None => crate::println!(
            "VIRTIO TSC rate unknown (timeouts assume {} MHz), DMA memory {:#x}+{:#x}",
            FALLBACK_TSC_KHZ / 1000,
            platform.dma.addr(),
            platform.dma.len
        ),
    }
    match mode {
        Mode::Probe => workloads::probe_workload(&platform),
        Mode::Blk => workloads::blk_workload(&platform, args),
        Mode::Net => workloads::net_workload(&platform, args),
        Mode::Console => workloads::console_workload(&platform, args),
        Mode::Hostile => hostile::hostile_workload(&platform, args),
        Mode::Bench => workloads::bench_workload(&platform, args),
    }
}
