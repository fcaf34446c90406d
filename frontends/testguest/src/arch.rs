//! Thin wrappers around the x86-64 instructions the guest needs.

use core::arch::asm;

/// Output of one CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Runs CPUID for `leaf` (sub-leaf 0).
pub fn cpuid(leaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID only writes the four result registers. LLVM reserves
    // RBX, so it is saved in a scratch register around the instruction and
    // the result swapped out of it.
    unsafe {
        asm!(
            "mov {rbx_result}, rbx",
            "cpuid",
            "xchg {rbx_result}, rbx",
            rbx_result = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") 0u32 => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    Cpuid { eax, ebx: ebx as u32, ecx, edx }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the guest only reads ports of devices the hypervisor
    // emulates (COM1); a read has no effect on guest memory.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: as for `inb`; port writes do not touch guest memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist, or the CPU raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR only writes EDX:EAX.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDTSC only writes EDX:EAX (CR4.TSD is clear at CPL 0 anyway).
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Reads CR2, the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects; the guest runs at CPL 0.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects; the guest runs at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
/// `value` must keep paging and protected mode on (PG, PE) and be a
/// value the CPU accepts; clearing WP lets supervisor code write through
/// read-only mappings.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: see above; the `memory` clobber (no `nomem`) keeps stores
    // on the right side of the change.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// CR0.WP: supervisor writes honour read-only mappings.
pub const CR0_WP: u64 = 1 << 16;

/// Reads CR3: the physical address of the current top-level page table
/// (plus flag bits, zero in this guest).
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects; the guest runs at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR3 with a new top-level page table.
///
/// # Safety
/// `pml4` must be the physical address of a valid PML4 that maps all code,
/// data and stacks in use, at the addresses they are in use at.
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map everything in use;
    // the write also flushes the TLB, which the `memory` clobber (no
    // `nomem`) orders against the table writes before it.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// Operand of LGDT/LIDT.
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    /// Size of the table minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Loads the IDT register.
///
/// # Safety
/// The table must stay valid (and its handlers callable) for as long as it
/// is loaded; a limit of 0 makes every exception a triple fault.
pub unsafe fn lidt(pointer: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table's validity.
    unsafe { asm!("lidt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) };
}

/// Loads the GDT register.
///
/// # Safety
/// The table must stay valid while loaded and contain descriptors matching
/// the segment selectors in use (their hidden parts are not reloaded).
pub unsafe fn lgdt(pointer: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table's validity.
    unsafe { asm!("lgdt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) };
}

/// Loads the task register with the TSS descriptor at `selector`.
///
/// # Safety
/// The GDT must hold an available 64-bit TSS descriptor at `selector`
/// whose TSS stays valid while loaded; the CPU marks the descriptor busy,
/// so the GDT must be writable.
pub unsafe fn ltr(selector: u16) {
    // SAFETY: the caller guarantees the descriptor and the TSS; LTR writes
    // the busy bit into the GDT, hence no `nomem`.
    unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
}

/// Halts with interrupts disabled, for good: the hypervisor parks the vCPU.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with IF clear, HLT only ends on NMI/SMI/INIT; looping
        // covers a spurious wake-up. No memory is touched.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Current stack pointer.
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register, no side effects.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}
