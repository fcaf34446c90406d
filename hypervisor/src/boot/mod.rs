//! Boot protocols: how a guest image is placed in memory and what state its
//! vCPUs start in.
//!
//! - [`freestanding`]: our own ELF guests (the test guest), entered in
//!   64-bit mode with an identity map, as documented in [`pvabi::boot`].

pub mod elf;
pub mod freestanding;

use kvm_bindings::{kvm_segment, kvm_sregs};

/// The register state every vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// Instruction pointer.
    pub rip: u64,
    /// First argument register (RDI).
    pub rdi: u64,
    /// Page table root.
    pub cr3: u64,
    /// Whether the vCPU index goes in RSI (freestanding protocol).
    pub vcpu_index_in_rsi: bool,
}

/// 64-bit code segment, DPL 0.
pub const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
/// Flat data segment, DPL 0.
pub const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;
/// Selectors of the boot GDT.
pub const SEL_CODE: u16 = 0x08;
/// Data selector.
pub const SEL_DATA: u16 = 0x10;
/// TSS selector (a 16-byte descriptor).
pub const SEL_TSS: u16 = 0x18;
/// Bytes in the boot GDT: null, code, data, 16-byte TSS.
pub const GDT_LEN: u64 = 5 * 8;
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

/// Puts `sregs` into 64-bit long mode with the boot GDT at `gdt_base`, the
/// TSS at `tss_base` and paging rooted at `cr3`. The IDT is left empty: the
/// guest installs its own.
pub fn set_long_mode(sregs: &mut kvm_sregs, gdt_base: u64, tss_base: u64, cr3: u64) {
    let code = segment_from_descriptor(SEL_CODE, GDT_CODE64);
    let data = segment_from_descriptor(SEL_DATA, GDT_DATA);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: tss_base,
        limit: TSS_LIMIT,
        selector: SEL_TSS,
        type_: 11, // busy 64-bit TSS, as after LTR
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = gdt_base;
    sregs.gdt.limit = (GDT_LEN - 1) as u16;
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
        assert_eq!((low >> 16) & 0xff_ffff, 0x56_789a & 0xff_ffff | 0);
        assert_eq!((low >> 40) & 0xff, 0x89);
        assert_eq!(((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | (high << 32), 0x1234_5678_9abc);
    }

    #[test]
    fn long_mode_state() {
        let mut s = kvm_sregs::default();
        set_long_mode(&mut s, 0x500, 0x600, 0x1000);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.cr3, 0x1000);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.tr.base, 0x600);
        assert_eq!(s.gdt.limit, 39);
    }
}
