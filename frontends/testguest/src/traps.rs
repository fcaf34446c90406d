//! Descriptor tables, CPU exceptions, recoverable faults and user mode.
//!
//! Every exception vector has a stub that normalises the stack (pushes a
//! zero where the CPU pushes no error code, then the vector number) and
//! jumps to a common path that saves the general-purpose registers and
//! calls [`exception_handler`]. An exception nobody expects is reported on
//! the console and ends the domain with `EXCEPTION_BASE + vector`.
//!
//! Two kinds of exceptions are expected, each armed in a per-vCPU
//! [`FaultSlot`] for the duration of one call and recovered from by
//! returning through `iretq` with an edited frame:
//! - [`try_wrmsr`]: a #GP raised by one known WRMSR instruction continues
//!   after it, so the guest can check that the hypervisor refuses an MSR
//!   write; [`try_read_u64`] and [`try_write_u64`] do the same for a #PF
//!   raised by one known load or store, so the guest can check what its
//!   page tables allow;
//! - [`run_in_user_mode`]: any exception raised at CPL 3 returns to the
//!   kernel context saved when user mode was entered (longjmp-style), so
//!   the guest can check what user code may not do.
//!
//! Both happen inside `extern "C"` calls, across which the caller treats
//! every caller-saved register (including all vector registers) as
//! clobbered; so the handler's Rust code, which may use vector registers,
//! needs to preserve only the general-purpose registers.

use core::arch::global_asm;

use pvabi::exit_status;

use crate::arch::{self, DescriptorTablePointer};
use crate::console::print_line_from_fault;
use crate::entry::{current_vcpu, MAX_VCPUS};
use crate::sync::RacyCell;

/// Number of CPU exception vectors.
const EXCEPTION_VECTORS: usize = 32;
/// The #GP vector.
pub const VECTOR_GP: u8 = 13;
/// The #PF vector.
pub const VECTOR_PF: u8 = 14;

/// Kernel code selector (the boot GDT's, kept in ours).
const KERNEL_CS: u16 = 0x08;
/// Kernel data selector (the boot GDT's, kept in ours).
const KERNEL_DS: u16 = 0x10;
/// User data selector: GDT slot 4, RPL 3.
pub const USER_DS: u16 = 0x20 | 3;
/// User 64-bit code selector: GDT slot 5, RPL 3.
pub const USER_CS: u16 = 0x28 | 3;
/// Selector of vCPU 0's TSS descriptor; vCPU `i`'s is 16 bytes further
/// per index (64-bit TSS descriptors take two slots).
const FIRST_TSS: u16 = 0x30;
/// GDT slots: null, kernel code, kernel data, an unused slot where the
/// boot GDT has its TSS, user data, user code, then one two-slot TSS
/// descriptor per vCPU.
const GDT_SLOTS: usize = FIRST_TSS as usize / 8 + 2 * MAX_VCPUS;
/// RFLAGS with only the always-one bit 1 set: interrupts off, IOPL 0 (so
/// port I/O at CPL 3 faults), direction flag clear.
const RFLAGS_QUIET: u64 = 1 << 1;

/// Our GDT. The code and data descriptors at 0x08 and 0x10 are those of
/// the boot GDT (pvabi::boot), so loading it needs no segment reload. The
/// boot TSS's selector 0x18 is left null: each vCPU loads its own TSS
/// from its slot at [`FIRST_TSS`] in [`load_tables`]. Accessed bits are
/// preset; the CPU still writes each TSS descriptor's busy bit on `ltr`,
/// which is why this table is not read-only. The boot vCPU fills the TSS
/// descriptors in [`init_tables`] before it publishes the boot state;
/// afterwards only `ltr` writes here, each vCPU to its own descriptor.
static GDT: RacyCell<[u64; GDT_SLOTS]> = RacyCell::new({
    let mut gdt = [0u64; GDT_SLOTS];
    // Present, DPL 0, code, execute/read, accessed, L=1 (64-bit).
    gdt[1] = 0x00af_9b00_0000_ffff;
    // Present, DPL 0, data, read/write, accessed, 4 GiB, D/B=1.
    gdt[2] = 0x00cf_9300_0000_ffff;
    // Present, DPL 3, data, read/write, accessed, 4 GiB, D/B=1.
    gdt[4] = 0x00cf_f300_0000_ffff;
    // Present, DPL 3, code, execute/read, accessed, L=1 (64-bit).
    gdt[5] = 0x00af_fb00_0000_ffff;
    gdt
});

/// A 64-bit task-state segment. The guest uses only RSP0 (the stack the
/// CPU switches to on an exception at CPL 3) and the I/O map base, which
/// points past the segment's limit: no I/O permission bitmap, so every
/// port access at CPL 3 raises #GP.
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    /// RSP0..RSP2.
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}
const TSS_SIZE: usize = core::mem::size_of::<Tss>();
const _: () = assert!(TSS_SIZE == 104);

/// One TSS per vCPU. The boot vCPU sets the I/O map bases in
/// [`init_tables`]; RSP0 is written by [`run_in_user_mode`] on the vCPU
/// owning the TSS.
static TSS: RacyCell<[Tss; MAX_VCPUS]> = RacyCell::new(
    [const { Tss { reserved0: 0, rsp: [0; 3], reserved1: 0, ist: [0; 7], reserved2: 0, reserved3: 0, iomap_base: 0 } }; MAX_VCPUS],
);

/// One 16-byte IDT gate descriptor as two quadwords.
type Gate = [u64; 2];

/// The IDT shared by all vCPUs: written by the boot vCPU in [`init_tables`]
/// before it publishes the boot state (release), read-only afterwards.
static IDT: RacyCell<[Gate; EXCEPTION_VECTORS]> = RacyCell::new([[0; 2]; EXCEPTION_VECTORS]);

/// What the common exception path leaves on the stack: the registers it
/// saved, the vector and error code the stub pushed, then the CPU's
/// interrupt frame (in 64-bit mode always with RSP and SS). The handler
/// may edit it; the common path restores the registers from it and
/// returns through `iretq` with its RIP, CS, RFLAGS, RSP and SS.
#[repr(C)]
pub struct ExceptionFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
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
// `testguest_exception_stubs` for `init_tables`. The common path keeps the
// frame's address in RBX (callee-saved) across the call, which runs on a
// 16-byte aligned stack as the ABI requires.
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
    "testguest_exception_common:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rbx",
    "    push rbp",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    mov rdi, rsp",
    "    mov rbx, rsp",
    "    and rsp, -16",
    "    call {handler}",
    "    mov rsp, rbx",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rbp",
    "    pop rbx",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    // The vector and the error code.
    "    add rsp, 16",
    "    iretq",
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

/// Builds the IDT and the TSSs with their GDT descriptors. Boot vCPU
/// only, before the boot state is published.
pub fn init_tables() {
    // SAFETY: the stub table is immutable data defined in the assembly above.
    let stubs = unsafe { &testguest_exception_stubs };
    // SAFETY: only the boot vCPU runs this, before any other vCPU loads the
    // tables (they wait for the release store that follows); the boot vCPU
    // itself loads them only afterwards.
    let (idt, gdt, tss) = unsafe { (&mut *IDT.get(), &mut *GDT.get(), &mut *TSS.get()) };
    for (gate, &handler) in idt.iter_mut().zip(stubs) {
        *gate = interrupt_gate(handler);
    }
    for (vcpu, tss) in tss.iter_mut().enumerate() {
        tss.iomap_base = TSS_SIZE as u16;
        let slot = usize::from(tss_selector(vcpu)) / 8;
        let [low, high] = tss_descriptor(tss as *const Tss as u64);
        gdt[slot] = low;
        gdt[slot + 1] = high;
    }
}

/// The selector of vCPU `vcpu`'s TSS descriptor.
fn tss_selector(vcpu: usize) -> u16 {
    FIRST_TSS + 16 * vcpu as u16
}

/// A present DPL-0 available 64-bit TSS descriptor for the TSS at `base`.
fn tss_descriptor(base: u64) -> [u64; 2] {
    const PRESENT_AVAILABLE_TSS64: u64 = 0x89;
    let limit = TSS_SIZE as u64 - 1;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (PRESENT_AVAILABLE_TSS64 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
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

/// Loads our GDT, the IDT and vCPU `vcpu`'s TSS. Once per vCPU: `ltr`
/// marks the TSS busy, and loading a busy TSS faults.
pub fn load_tables(vcpu: usize) {
    let gdt = DescriptorTablePointer { limit: (core::mem::size_of::<[u64; GDT_SLOTS]>() - 1) as u16, base: GDT.get() as u64 };
    let idt = DescriptorTablePointer { limit: (core::mem::size_of::<[Gate; EXCEPTION_VECTORS]>() - 1) as u16, base: IDT.get() as u64 };
    // SAFETY: all three live in statics and were built by `init_tables`
    // before this vCPU got here (boot vCPU: program order; others: acquire
    // of the published boot state). The GDT holds the descriptors of the
    // selectors in use (see `GDT`), and `vcpu`'s TSS descriptor is still
    // available because each vCPU loads only its own, once.
    unsafe {
        arch::lgdt(&gdt);
        arch::lidt(&idt);
        arch::ltr(tss_selector(vcpu));
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

/// An exception the guest provoked on purpose and recovered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    pub vector: u8,
    pub error_code: u64,
    /// Where it was raised.
    pub rip: u64,
    /// The code segment it was raised in (its low two bits are the CPL).
    pub cs: u64,
    pub rflags: u64,
    /// RAX at that point.
    pub rax: u64,
    /// CR2 (the faulting address) for a #PF, 0 for other vectors.
    pub cr2: u64,
}

impl core::fmt::Display for CaughtFault {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = EXCEPTION_NAMES.get(usize::from(self.vector)).copied().unwrap_or("unknown");
        write!(
            out,
            "{name} (error code {:#x}) at rip={:#x} cs={:#x} (CPL {}) rflags={:#x} rax={:#x}",
            self.error_code,
            self.rip,
            self.cs,
            self.cs & 3,
            self.rflags,
            self.rax
        )
    }
}

/// What the exception handler does with an exception on this vCPU.
#[derive(Clone, Copy)]
enum Recovery {
    /// Nothing is expected: report it and end the domain.
    Fatal,
    /// Exception `vector` raised at CPL 0 by the instruction at `rip`
    /// continues at `resume`.
    Skip { vector: u8, rip: u64, resume: u64 },
    /// The vCPU runs user code: any exception raised at CPL 3 returns to
    /// the kernel context `testguest_enter_user` saved.
    LeaveUserMode,
}

/// The expected-fault slot of one vCPU, used only by that vCPU: armed by
/// [`try_wrmsr`] or [`run_in_user_mode`], consulted and disarmed by the
/// exception handler, which leaves the exception in `caught`.
struct FaultSlot {
    /// The kernel RSP `testguest_enter_user` saved, with the callee-saved
    /// registers above it.
    kernel_rsp: u64,
    recovery: Recovery,
    caught: Option<CaughtFault>,
}

/// Expected-fault slots, indexed by vCPU; each vCPU touches only its own.
static FAULT_SLOTS: RacyCell<[FaultSlot; MAX_VCPUS]> =
    RacyCell::new([const { FaultSlot { kernel_rsp: 0, recovery: Recovery::Fatal, caught: None } }; MAX_VCPUS]);

/// This vCPU's slot. Panics if the stack pointer lies on no vCPU's stack,
/// which only a corrupted RSP can cause.
fn own_slot() -> (usize, *mut FaultSlot) {
    let Some(vcpu) = current_vcpu() else { panic!("the stack pointer is on no vCPU's stack") };
    // SAFETY: `vcpu` < MAX_VCPUS; only a pointer is formed.
    (vcpu, unsafe { (&raw mut (*FAULT_SLOTS.get())[vcpu]).cast::<FaultSlot>() })
}

// `testguest_wrmsr_probe(msr: u32, value: u64)`: WRMSR at a known address.
// A #GP it raises resumes at `testguest_wrmsr_probe_resume` (see
// `try_wrmsr`); all registers it changes are caller-saved.
//
// `testguest_read_probe(address) -> u64` and `testguest_write_probe(address,
// value)`: one 8-byte load or store at a known address; a #PF it raises
// resumes at the `ret` after it (RAX is then meaningless).
//
// `testguest_enter_user(rip, rsp, kernel_rsp: *mut u64, tss_rsp0: *mut u64)`:
// saves the callee-saved registers on the kernel stack, stores the stack
// pointer both in `*kernel_rsp` (where the exception handler resumes the
// kernel) and in the TSS's RSP0 (so an exception at CPL 3 pushes its
// frame just below, on this vCPU's own stack), and `iretq`s to `rip` at
// CPL 3 with stack `rsp`. It "returns" when the exception handler
// `iretq`s to `testguest_user_return` with RSP = `*kernel_rsp`.
global_asm!(
    ".pushsection .text.testguest_recoverable, \"ax\"",
    ".global testguest_wrmsr_probe",
    "testguest_wrmsr_probe:",
    "    mov ecx, edi",
    "    mov eax, esi",
    "    mov rdx, rsi",
    "    shr rdx, 32",
    ".global testguest_wrmsr_probe_insn",
    "testguest_wrmsr_probe_insn:",
    "    wrmsr",
    ".global testguest_wrmsr_probe_resume",
    "testguest_wrmsr_probe_resume:",
    "    ret",
    "",
    ".global testguest_read_probe",
    "testguest_read_probe:",
    ".global testguest_read_probe_insn",
    "testguest_read_probe_insn:",
    "    mov rax, [rdi]",
    ".global testguest_read_probe_resume",
    "testguest_read_probe_resume:",
    "    ret",
    "",
    ".global testguest_write_probe",
    "testguest_write_probe:",
    ".global testguest_write_probe_insn",
    "testguest_write_probe_insn:",
    "    mov [rdi], rsi",
    ".global testguest_write_probe_resume",
    "testguest_write_probe_resume:",
    "    ret",
    "",
    ".global testguest_enter_user",
    "testguest_enter_user:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdx], rsp",
    "    mov [rcx], rsp",
    "    push {user_ds}",
    "    push rsi",
    "    push {rflags}",
    "    push {user_cs}",
    "    push rdi",
    "    iretq",
    ".global testguest_user_return",
    "testguest_user_return:",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    ret",
    ".popsection",
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    rflags = const RFLAGS_QUIET,
);

extern "C" {
    fn testguest_wrmsr_probe(msr: u32, value: u64);
    static testguest_wrmsr_probe_insn: u8;
    static testguest_wrmsr_probe_resume: u8;
    fn testguest_read_probe(address: u64) -> u64;
    static testguest_read_probe_insn: u8;
    static testguest_read_probe_resume: u8;
    fn testguest_write_probe(address: u64, value: u64);
    static testguest_write_probe_insn: u8;
    static testguest_write_probe_resume: u8;
    fn testguest_enter_user(rip: u64, rsp: u64, kernel_rsp: *mut u64, tss_rsp0: *mut u64);
    static testguest_user_return: u8;
}

/// Writes `value` to MSR `msr`; a #GP the write raises is caught and
/// returned instead of ending the domain.
///
/// # Safety
/// If the write succeeds it must be harmless: the caller answers for the
/// MSR's effect, as for any WRMSR.
pub unsafe fn try_wrmsr(msr: u32, value: u64) -> Result<(), CaughtFault> {
    let rip = &raw const testguest_wrmsr_probe_insn as u64;
    let resume = &raw const testguest_wrmsr_probe_resume as u64;
    // SAFETY: the caller answers for the MSR write; a #GP from it resumes
    // at the probe's `ret` with all registers but the caller-saved ones it
    // uses intact.
    unsafe { with_skip(VECTOR_GP, rip, resume, || testguest_wrmsr_probe(msr, value)) }
}

/// Reads the u64 at `address`; a #PF the load raises is caught and
/// returned (with CR2) instead of ending the domain.
///
/// # Safety
/// If `address` is mapped, reading 8 bytes there must be harmless (no
/// device memory with read side effects).
pub unsafe fn try_read_u64(address: u64) -> Result<u64, CaughtFault> {
    let rip = &raw const testguest_read_probe_insn as u64;
    let resume = &raw const testguest_read_probe_resume as u64;
    // SAFETY: the caller answers for the load; a #PF from it resumes at the
    // probe's `ret`, which only RAX (the meaningless result) differs for.
    unsafe { with_skip(VECTOR_PF, rip, resume, || testguest_read_probe(address)) }
}

/// Writes `value` to the u64 at `address`; a #PF the store raises is
/// caught and returned (with CR2) instead of ending the domain.
///
/// # Safety
/// If the store succeeds it must be harmless: the caller answers for what
/// lives at `address` (for example by writing the value already there).
pub unsafe fn try_write_u64(address: u64, value: u64) -> Result<(), CaughtFault> {
    let rip = &raw const testguest_write_probe_insn as u64;
    let resume = &raw const testguest_write_probe_resume as u64;
    // SAFETY: the caller answers for the store; a #PF from it resumes at
    // the probe's `ret`.
    unsafe { with_skip(VECTOR_PF, rip, resume, || testguest_write_probe(address, value)) }
}

/// Runs `probe` with this vCPU's slot armed so that exception `vector`
/// raised at CPL 0 by the instruction at `rip` continues at `resume`.
///
/// # Safety
/// `probe` must call one of the assembly probes above, whose instruction
/// at `rip` is followed by `resume` and which clobbers only caller-saved
/// registers either way.
unsafe fn with_skip<R>(vector: u8, rip: u64, resume: u64, probe: impl FnOnce() -> R) -> Result<R, CaughtFault> {
    let (_, slot) = own_slot();
    // SAFETY: the slot is this vCPU's own, and no exception handler runs
    // on this vCPU right now.
    unsafe { *slot = FaultSlot { kernel_rsp: 0, recovery: Recovery::Skip { vector, rip, resume }, caught: None } };
    // The probe is an extern call, which the compiler treats as reading
    // and writing the slot (a static), so the stores above happen before
    // it and the loads below after.
    let result = probe();
    // SAFETY: as above; the handler is done with the slot.
    let caught = unsafe {
        (*slot).recovery = Recovery::Fatal;
        (*slot).caught.take()
    };
    caught.map_or(Ok(result), Err)
}

/// Runs code at CPL 3 from `rip` with the stack pointer `rsp` until it
/// raises an exception, and returns that exception. User mode has no
/// other way back.
///
/// # Safety
/// `rip` must be user code mapped user-accessible (with its stack at
/// `rsp`) that cannot harm the kernel, which is the case when the user
/// mappings reach only memory the kernel does not rely on (on a kvm_pvm
/// host every mapping is user-accessible, so this includes the code's own
/// behaviour).
pub unsafe fn run_in_user_mode(rip: u64, rsp: u64) -> CaughtFault {
    let (vcpu, slot) = own_slot();
    // SAFETY: the slot is this vCPU's own and no handler runs right now.
    unsafe { *slot = FaultSlot { kernel_rsp: 0, recovery: Recovery::LeaveUserMode, caught: None } };
    // SAFETY: vCPU `vcpu`'s TSS, written only on this vCPU; RSP0 sits at
    // offset 4 of the packed struct, which x86 writes unaligned.
    let rsp0 = unsafe { (&raw mut (*TSS.get())[vcpu].rsp).cast::<u64>() };
    // SAFETY: the caller guarantees the user code and its mappings;
    // `testguest_enter_user` saves the callee-saved registers and comes
    // back through the exception handler, which restores the kernel stack
    // it recorded in the slot (see `Recovery::LeaveUserMode`).
    unsafe { testguest_enter_user(rip, rsp, &raw mut (*slot).kernel_rsp, rsp0) };
    // SAFETY: as above; the handler is done with the slot.
    let caught = unsafe {
        (*slot).recovery = Recovery::Fatal;
        (*slot).caught.take()
    };
    // The handler is the only way back, and it records what it caught.
    caught.unwrap_or_else(|| panic!("came back from user mode without an exception"))
}

/// The conventional short name of each exception vector.
const EXCEPTION_NAMES: [&str; EXCEPTION_VECTORS] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "coprocessor-segment-overrun", "#TS", "#NP", "#SS",
    "#GP", "#PF", "reserved", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "reserved", "reserved", "reserved", "reserved",
    "reserved", "reserved", "#HV", "#VC", "#SX", "reserved",
];

/// Called by the common path with the saved state: recovers from an
/// exception this vCPU's [`FaultSlot`] expects (editing the frame the
/// common path returns through), or reports the exception and ends the
/// domain with `EXCEPTION_BASE + vector`.
extern "C" fn exception_handler(frame: &mut ExceptionFrame) {
    if recover(frame) {
        return;
    }
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

/// Whether this vCPU's slot expected the exception in `frame`; if so,
/// records it, disarms the slot (a second exception is fatal) and points
/// the frame where execution continues.
fn recover(frame: &mut ExceptionFrame) -> bool {
    // The handler runs on the stack of the vCPU it interrupted: at CPL 0
    // the same stack, from CPL 3 the one RSP0 names, which
    // `run_in_user_mode` set to this vCPU's own.
    let Some(vcpu) = current_vcpu() else { return false };
    // SAFETY: this vCPU's own slot; the code that armed it is suspended
    // until this handler returns.
    let slot = unsafe { &mut (*FAULT_SLOTS.get())[vcpu] };
    let from_user = frame.cs & 3 == 3;
    let resume = match slot.recovery {
        Recovery::Skip { vector, rip, resume } if !from_user && frame.vector == u64::from(vector) && frame.rip == rip => {
            Some((resume, frame.cs, frame.rflags, frame.rsp, frame.ss))
        }
        Recovery::LeaveUserMode if from_user => {
            let resume = &raw const testguest_user_return as u64;
            Some((resume, u64::from(KERNEL_CS), RFLAGS_QUIET, slot.kernel_rsp, u64::from(KERNEL_DS)))
        }
        _ => None,
    };
    let Some((rip, cs, rflags, rsp, ss)) = resume else { return false };
    slot.caught =
        Some(CaughtFault {
            vector: frame.vector as u8,
            error_code: frame.error_code,
            rip: frame.rip,
            cs: frame.cs,
            rflags: frame.rflags,
            rax: frame.rax,
            // Read only for #PF: on kvm_pvm `mov cr2` is emulated, and no
            // other vector sets it.
            cr2: if frame.vector == u64::from(VECTOR_PF) { arch::read_cr2() } else { 0 },
        });
    slot.recovery = Recovery::Fatal;
    frame.rip = rip;
    frame.cs = cs;
    frame.rflags = rflags;
    frame.rsp = rsp;
    frame.ss = ss;
    true
}
