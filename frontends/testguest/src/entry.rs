//! `_start`: from the boot state of pvabi::boot to Rust, per vCPU.
//!
//! On a kvm_pvm host every instruction before the VIF registration runs in
//! KVM's instruction emulator, and the guest's total emulated-instruction
//! count is budgeted (tests assert it stays small), so the code up to the
//! WRMSR is a straight run of register-only instructions: two CPUIDs to
//! recognise our hypervisor and learn the backend, then the WRMSR of this
//! vCPU's VIF page. The boot identity map already carries the U/S bit on
//! such a host, so the very next instruction runs natively. Only then is a
//! stack set up and Rust entered.

use core::arch::global_asm;

use pvabi::cpuid::{features, LEAF_FEATURES, LEAF_SIGNATURE, SIGNATURE};
use pvabi::{exit_status, ports, pvm};

use crate::sync::RacyCell;

/// Largest number of vCPUs the guest supports (stacks and VIF pages are
/// static). A vCPU with a higher index ends the domain with FAILURE.
pub const MAX_VCPUS: usize = 64;
/// log2 of the per-vCPU stack size.
const STACK_SHIFT: u32 = 16;
/// Bytes of stack per vCPU.
const STACK_SIZE: usize = 1 << STACK_SHIFT;
/// Bytes per VIF page.
const PAGE_SIZE: usize = 4096;

/// `entry_flags` bit: CPUID showed our hypervisor's signature.
pub const ENTRY_SIGNATURE: u64 = 1 << 0;
/// `entry_flags` bit: the host is kvm_pvm and this vCPU registered its VIF
/// page, so it runs natively.
pub const ENTRY_VIF_REGISTERED: u64 = 1 << 1;

/// One vCPU's VIF page: the 16-byte [`pvm::Vif`] alone in a page, as the
/// PVM ABI asks.
#[repr(C, align(4096))]
pub struct VifPage {
    vif: pvm::Vif,
    _rest_of_page: [u8; PAGE_SIZE - core::mem::size_of::<pvm::Vif>()],
}

impl VifPage {
    const ZEROED: VifPage = VifPage {
        vif: pvm::Vif { interrupt_flag: 0, pending: 0, reserved: [0; 6], cr2: 0 },
        _rest_of_page: [0; PAGE_SIZE - core::mem::size_of::<pvm::Vif>()],
    };
}

/// One vCPU's stack.
#[repr(C, align(4096))]
struct Stack([u8; STACK_SIZE]);

/// VIF pages, indexed by vCPU. Zero-initialised .bss (the ELF loader
/// zeroes it), which is the state the host requires at registration; after
/// that only the host writes them.
static VIF_PAGES: RacyCell<[VifPage; MAX_VCPUS]> = RacyCell::new([VifPage::ZEROED; MAX_VCPUS]);

/// Stacks, indexed by vCPU; vCPU `i` uses `STACKS[i]` and nothing else does.
static STACKS: RacyCell<[Stack; MAX_VCPUS]> = RacyCell::new([const { Stack([0; STACK_SIZE]) }; MAX_VCPUS]);

/// The signature as CPUID returns it in EBX, ECX, EDX.
const fn signature_word(index: usize) -> u32 {
    u32::from_le_bytes([SIGNATURE[4 * index], SIGNATURE[4 * index + 1], SIGNATURE[4 * index + 2], SIGNATURE[4 * index + 3]])
}

// Register use: RDI (StartInfo GPA) and RSI (vCPU index) survive CPUID and
// WRMSR untouched and are passed on as the first two arguments; R8
// collects the ENTRY_* flags, passed as the third.
global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    ".type _start, @function",
    "_start:",
    // Stacks and VIF pages exist for MAX_VCPUS vCPUs only.
    "    cmp rsi, {max_vcpus}",
    "    jae 9f",
    "    xor r8d, r8d",
    "    mov eax, {leaf_signature}",
    "    cpuid",
    "    cmp ebx, {signature_ebx}",
    "    jne 2f",
    "    cmp ecx, {signature_ecx}",
    "    jne 2f",
    "    cmp edx, {signature_edx}",
    "    jne 2f",
    "    mov r8d, {entry_signature}",
    "    mov eax, {leaf_features}",
    "    cpuid",
    "    test eax, {host_pvm}",
    "    jz 2f",
    // kvm_pvm: WRMSR(MSR_VIF, &VIF_PAGES[vcpu]). The image is linked below
    // 4 GiB, so the high half (EDX) is zero.
    "    mov rax, rsi",
    "    shl rax, {page_shift}",
    "    add rax, offset {vif_pages}",
    "    mov ecx, {msr_vif}",
    "    xor edx, edx",
    "    wrmsr",
    // Native from here on.
    "    or r8d, {entry_vif_registered}",
    "2:",
    // RSP = top of STACKS[vcpu], 16-byte aligned before the CALL as the
    // ABI requires.
    "    lea rsp, [rsi + 1]",
    "    shl rsp, {stack_shift}",
    "    add rsp, offset {stacks}",
    "    xor ebp, ebp",
    "    mov edx, r8d",
    "    cld",
    "    call {rust_entry}",
    "    ud2",
    // vCPU index out of range: no stack to print with, report FAILURE.
    "9:",
    "    mov eax, {failure}",
    "    mov edx, {debug_exit}",
    "    out dx, eax",
    "8:",
    "    cli",
    "    hlt",
    "    jmp 8b",
    ".size _start, . - _start",
    ".popsection",
    max_vcpus = const MAX_VCPUS,
    leaf_signature = const LEAF_SIGNATURE,
    signature_ebx = const signature_word(0),
    signature_ecx = const signature_word(1),
    signature_edx = const signature_word(2),
    entry_signature = const ENTRY_SIGNATURE,
    leaf_features = const LEAF_FEATURES,
    host_pvm = const features::HOST_PVM,
    page_shift = const PAGE_SIZE.trailing_zeros(),
    vif_pages = sym VIF_PAGES,
    msr_vif = const pvm::MSR_VIF,
    entry_vif_registered = const ENTRY_VIF_REGISTERED,
    stack_shift = const STACK_SHIFT,
    stacks = sym STACKS,
    rust_entry = sym crate::rust_entry,
    failure = const exit_status::FAILURE,
    debug_exit = const ports::DEBUG_EXIT,
);

/// The index of the vCPU running this code, from which per-vCPU stack the
/// stack pointer lies in; `None` when off all of them (which only a
/// corrupted RSP can cause).
pub fn current_vcpu() -> Option<usize> {
    let stacks_start = STACKS.get() as u64;
    let offset = crate::arch::stack_pointer().wrapping_sub(stacks_start);
    let index = (offset >> STACK_SHIFT) as usize;
    (index < MAX_VCPUS).then_some(index)
}
