//! Descriptor tables and CPU exception reporting.
//!
//! Every exception vector has a stub that normalises the stack (pushes a
//! zero where the CPU pushes no error code, then the vector number) and
//! jumps to a common path calling [`exception_handler`], which reports the
//! exception on the console and ends the domain with
//! `EXCEPTION_BASE + vector`. Nothing returns, so no registers are saved.

use core::arch::global_asm;

use pvabi::exit_status;

use crate::arch::{self, DescriptorTablePointer};
use crate::console::print_line_from_fault;
use crate::entry::current_vcpu;
use crate::sync::RacyCell;

/// Number of CPU exception vectors.
const EXCEPTION_VECTORS: usize = 32;
/// Code segment selector of the boot GDT, kept in ours.
const KERNEL_CS: u16 = 0x08;

/// Our GDT, the same layout as the boot GDT (pvabi::boot): 0x08 64-bit
/// code, 0x10 data. Loading it needs no segment reload because the
/// descriptors the selectors already in use point at are unchanged. The
/// boot TSS stays loaded in TR; nothing in the guest reloads TR, so its
/// descriptor is not needed here. The accessed bits are preset, so the CPU
/// never writes to the table.
static GDT: [u64; 3] = [
    0,
    // Present, DPL 0, code, execute/read, accessed, L=1 (64-bit).
    0x00af_9b00_0000_ffff,
    // Present, DPL 0, data, read/write, accessed, 4 GiB, D/B=1.
    0x00cf_9300_0000_ffff,
];

/// One 16-byte IDT gate descriptor as two quadwords.
type Gate = [u64; 2];

/// The IDT shared by all vCPUs: written by the boot vCPU in [`init_idt`]
/// before it publishes the boot state (release), read-only afterwards.
static IDT: RacyCell<[Gate; EXCEPTION_VECTORS]> = RacyCell::new([[0; 2]; EXCEPTION_VECTORS]);

/// What the stubs leave on the stack: the vector and error code they push,
/// then the CPU's interrupt frame.
#[repr(C)]
pub struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; for the others
// the stub pushes 0 in its place. The stub addresses are collected in
// `testguest_exception_stubs` for `init_idt`.
global_asm!(
    ".pushsection .text.exception_stubs, \"ax\"",
    ".macro exception_stub vector, cpu_pushes_error_code",
    "    .balign 16",
    "exception_stub_\\vector:",
    "    .if \\cpu_pushes_error_code == 0",
    "    push 0",
    "    .endif",
    "    push \\vector",
    "    jmp testguest_exception_common",
    ".endm",
    "exception_stub 0, 0",
    "exception_stub 1, 0",
    "exception_stub 2, 0",
    "exception_stub 3, 0",
    "exception_stub 4, 0",
    "exception_stub 5, 0",
    "exception_stub 6, 0",
    "exception_stub 7, 0",
    "exception_stub 8, 1",
    "exception_stub 9, 0",
    "exception_stub 10, 1",
    "exception_stub 11, 1",
    "exception_stub 12, 1",
    "exception_stub 13, 1",
    "exception_stub 14, 1",
    "exception_stub 15, 0",
    "exception_stub 16, 0",
    "exception_stub 17, 1",
    "exception_stub 18, 0",
    "exception_stub 19, 0",
    "exception_stub 20, 0",
    "exception_stub 21, 1",
    "exception_stub 22, 0",
    "exception_stub 23, 0",
    "exception_stub 24, 0",
    "exception_stub 25, 0",
    "exception_stub 26, 0",
    "exception_stub 27, 0",
    "exception_stub 28, 0",
    "exception_stub 29, 1",
    "exception_stub 30, 1",
    "exception_stub 31, 0",
    // RDI = the frame; the stack is realigned for the call, which does not
    // return.
    "testguest_exception_common:",
    "    cld",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {handler}",
    "    ud2",
    ".popsection",
    ".pushsection .rodata.exception_stubs, \"a\"",
    ".balign 8",
    ".global testguest_exception_stubs",
    "testguest_exception_stubs:",
    ".irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad exception_stub_\\vector",
    ".endr",
    ".popsection",
    handler = sym exception_handler,
);

extern "C" {
    /// Entry addresses of the 32 exception stubs, by vector.
    static testguest_exception_stubs: [u64; EXCEPTION_VECTORS];
}

/// Builds the IDT. Boot vCPU only, before the boot state is published.
pub fn init_idt() {
    // SAFETY: the stub table is immutable data defined in the assembly above.
    let stubs = unsafe { &testguest_exception_stubs };
    // SAFETY: only the boot vCPU runs this, before any other vCPU loads the
    // IDT (they wait for the release store that follows).
    let idt = unsafe { &mut *IDT.get() };
    for (gate, &handler) in idt.iter_mut().zip(stubs) {
        *gate = interrupt_gate(handler);
    }
}

/// A present DPL-0 64-bit interrupt gate (IF cleared on entry) without IST.
fn interrupt_gate(handler: u64) -> Gate {
    const PRESENT_DPL0_INTERRUPT_GATE: u64 = 0x8e;
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (PRESENT_DPL0_INTERRUPT_GATE << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Loads our GDT and the IDT on this vCPU.
pub fn load_tables() {
    let gdt = DescriptorTablePointer { limit: (core::mem::size_of_val(&GDT) - 1) as u16, base: GDT.as_ptr() as u64 };
    let idt = DescriptorTablePointer { limit: (core::mem::size_of::<[Gate; EXCEPTION_VECTORS]>() - 1) as u16, base: IDT.get() as u64 };
    // SAFETY: both tables are statics; the GDT holds the descriptors of the
    // selectors in use (see `GDT`), and the IDT was built by `init_idt`
    // before this vCPU got here (boot vCPU: program order; others: acquire
    // of the published boot state).
    unsafe {
        arch::lgdt(&gdt);
        arch::lidt(&idt);
    }
}

/// Loads an IDT with limit 0: the next exception cannot be delivered, nor
/// the #GP and #DF that follow, so the CPU shuts down (triple fault).
pub fn load_empty_idt() {
    let empty = DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: making every exception fatal is the point; the caller raises
    // one right after.
    unsafe { arch::lidt(&empty) };
}

/// The conventional short name of each exception vector.
const EXCEPTION_NAMES: [&str; EXCEPTION_VECTORS] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "coprocessor-segment-overrun", "#TS", "#NP", "#SS",
    "#GP", "#PF", "reserved", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "reserved", "reserved", "reserved", "reserved",
    "reserved", "reserved", "#HV", "#VC", "#SX", "reserved",
];

/// Called by the common stub path with the exception frame; reports the
/// exception and ends the domain with `EXCEPTION_BASE + vector`.
extern "C" fn exception_handler(frame: &ExceptionFrame) -> ! {
    let vector = frame.vector as usize;
    let name = EXCEPTION_NAMES.get(vector).copied().unwrap_or("unknown");
    // CR2 itself, not the VIF page's copy: on kvm_pvm hosts `mov cr2` is
    // emulated with the right value, while the VIF field was measured to
    // stay 0 for faults delivered through the guest's IDT.
    let cr2 = arch::read_cr2();
    print_line_from_fault(format_args!(
        "testguest: exception {name} (vector {vector}) at rip={:#x}, error code {:#x}, cr2={cr2:#x}",
        frame.rip, frame.error_code
    ));
    let vcpu = current_vcpu().map_or(-1, |index| index as i64);
    print_line_from_fault(format_args!(
        "testguest: on vCPU {vcpu}: cs={:#x} rflags={:#x} rsp={:#x} ss={:#x}",
        frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    crate::exit(exit_status::EXCEPTION_BASE + vector as u32)
}
