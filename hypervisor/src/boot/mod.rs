//! Boot protocols: how a guest image is placed in memory and what state its
//! vCPUs start in.
//!
//! - [`freestanding`]: our own ELF guests (the test guest), entered in
//!   64-bit mode with an identity map, as documented in [`pvabi::boot`];
//! - [`linux`]: Linux, as a bzImage (64-bit boot protocol, boot_params) or
//!   as an ELF vmlinux through its PVH entry point, with ACPI tables
//!   ([`acpi`]) describing the CPUs, the power and reset registers.

pub mod acpi;
pub mod elf;
pub mod freestanding;
pub mod linux;

use kvm_bindings::{kvm_segment, kvm_sregs};

/// The CPU mode and descriptor layout a boot protocol enters the guest in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit mode, our freestanding GDT (code 0x08, data 0x10, TSS 0x18).
    Freestanding64,
    /// 64-bit mode, the Linux boot protocol's GDT (__BOOT_CS 0x10,
    /// __BOOT_DS 0x18, TSS 0x20).
    Linux64,
    /// 32-bit protected mode without paging, for the PVH entry point (code
    /// 0x08, data 0x18, TSS 0x20).
    Pvh32,
}

/// The register state a vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// CPU mode.
    pub mode: EntryMode,
    /// Instruction pointer.
    pub rip: u64,
    /// RDI (freestanding: start info).
    pub rdi: u64,
    /// RSI (Linux 64-bit: boot_params).
    pub rsi: u64,
    /// RBX (PVH: hvm_start_info).
    pub rbx: u64,
    /// Page table root (64-bit modes).
    pub cr3: u64,
    /// Whether every vCPU starts here with its index in RSI (freestanding
    /// protocol); otherwise only vCPU 0 does and the others wait for the
    /// boot vCPU's INIT/SIPI in the in-kernel local APIC.
    pub all_vcpus: bool,
}

/// 64-bit code segment, DPL 0.
pub const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
/// Flat data segment, DPL 0.
pub const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;
/// Flat 32-bit code segment, DPL 0.
pub const GDT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
/// Selectors of the freestanding boot GDT.
pub const SEL_CODE: u16 = 0x08;
/// Data selector.
pub const SEL_DATA: u16 = 0x10;
/// TSS selector (a 16-byte descriptor).
pub const SEL_TSS: u16 = 0x18;
/// The GDT written by the Linux protocols: null, 32-bit code (0x08),
/// 64-bit code (__BOOT_CS, 0x10), data (__BOOT_DS, 0x18), TSS (0x20).
pub const LINUX_GDT: [u64; 4] = [0, GDT_CODE32, GDT_CODE64, GDT_DATA];
/// Bytes in the freestanding boot GDT: null, code, data, 16-byte TSS.
pub const GDT_LEN: u64 = 5 * 8;
/// Bytes in the Linux boot GDT.
pub const LINUX_GDT_LEN: u64 = 6 * 8;
/// TSS limit (a 104-byte 64-bit TSS).
pub const TSS_LIMIT: u32 = 0x67;

/// The two quadwords of a 64-bit available TSS descriptor.
pub fn tss_descriptor(base: u64) -> [u64; 2] {
    let low = u64::from(TSS_LIMIT)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// The KVM view of a code or data descriptor.
pub fn segment_from_descriptor(selector: u16, d: u64) -> kvm_segment {
    kvm_segment {
        base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
        limit: {
            let raw = ((d & 0xffff) | (((d >> 48) & 0xf) << 16)) as u32;
            if (d >> 55) & 1 == 1 { (raw << 12) | 0xfff } else { raw }
        },
        selector,
        type_: ((d >> 40) & 0xf) as u8,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g: ((d >> 55) & 1) as u8,
        avl: ((d >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Puts `sregs` into the mode of `entry`, with the boot GDT at `gdt_base`
/// and the TSS at `tss_base`. The IDT is left empty: the guest installs its
/// own.
pub fn set_entry_mode(sregs: &mut kvm_sregs, entry: &EntryState, gdt_base: u64, tss_base: u64) {
    match entry.mode {
        EntryMode::Freestanding64 => set_long_mode(sregs, gdt_base, tss_base, entry.cr3, (SEL_CODE, SEL_DATA, SEL_TSS, GDT_LEN)),
        EntryMode::Linux64 => set_long_mode(sregs, gdt_base, tss_base, entry.cr3, (0x10, 0x18, 0x20, LINUX_GDT_LEN)),
        EntryMode::Pvh32 => {
            let code = segment_from_descriptor(0x08, GDT_CODE32);
            let data = segment_from_descriptor(0x18, GDT_DATA);
            sregs.cs = code;
            for s in [&mut sregs.ds, &mut sregs.es, &mut sregs.fs, &mut sregs.gs, &mut sregs.ss] {
                *s = data;
            }
            sregs.tr = tss_segment(tss_base, 0x20);
            sregs.gdt.base = gdt_base;
            sregs.gdt.limit = (LINUX_GDT_LEN - 1) as u16;
            sregs.idt.base = 0;
            sregs.idt.limit = 0;
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

fn tss_segment(base: u64, selector: u16) -> kvm_segment {
    kvm_segment {
        base,
        limit: TSS_LIMIT,
        selector,
        type_: 11, // busy TSS, as after LTR
        present: 1,
        s: 0,
        ..Default::default()
    }
}

/// 64-bit long mode with paging rooted at `cr3`; `sel` is (code, data,
/// TSS, GDT length).
fn set_long_mode(sregs: &mut kvm_sregs, gdt_base: u64, tss_base: u64, cr3: u64, sel: (u16, u16, u16, u64)) {
    let code = segment_from_descriptor(sel.0, GDT_CODE64);
    let data = segment_from_descriptor(sel.1, GDT_DATA);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss_segment(tss_base, sel.2);
    sregs.gdt.base = gdt_base;
    sregs.gdt.limit = (sel.3 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_boot_descriptors() {
        let c = segment_from_descriptor(SEL_CODE, GDT_CODE64);
        assert_eq!((c.base, c.limit, c.type_, c.present, c.dpl, c.s, c.l, c.db, c.g), (0, 0xffff_ffff, 0xb, 1, 0, 1, 1, 0, 1));
        let d = segment_from_descriptor(SEL_DATA, GDT_DATA);
        assert_eq!((d.base, d.limit, d.type_, d.db, d.l, d.s), (0, 0xffff_ffff, 0x3, 1, 0, 1));
    }

    #[test]
    fn tss_descriptor_fields() {
        let [low, high] = tss_descriptor(0x1234_5678_9abc);
        assert_eq!(low & 0xffff, 0x67);
        assert_eq!((low >> 16) & 0xff_ffff, 0x78_9abc);
        assert_eq!((low >> 40) & 0xff, 0x89);
        assert_eq!(((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | (high << 32), 0x1234_5678_9abc);
    }

    #[test]
    fn long_mode_state() {
        let mut s = kvm_sregs::default();
        let entry = EntryState { mode: EntryMode::Freestanding64, rip: 0, rdi: 0, rsi: 0, rbx: 0, cr3: 0x1000, all_vcpus: true };
        set_entry_mode(&mut s, &entry, 0x500, 0x600);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.cr3, 0x1000);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.tr.base, 0x600);
        assert_eq!(s.gdt.limit, 39);
        set_entry_mode(&mut s, &EntryState { mode: EntryMode::Linux64, ..entry }, 0x500, 0x600);
        assert_eq!((s.cs.selector, s.ds.selector, s.tr.selector, s.cs.l), (0x10, 0x18, 0x20, 1));
        set_entry_mode(&mut s, &EntryState { mode: EntryMode::Pvh32, ..entry }, 0x500, 0x600);
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db, s.ss.selector), (0x08, 0, 1, 0x18));
        assert_eq!((s.cr0 & CR0_PG, s.efer), (0, 0), "PVH starts without paging");
    }
}
