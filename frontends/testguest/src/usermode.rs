//! A user-mode (CPL 3) program, to check that user code cannot make a
//! hypercall.
//!
//! The user window (see paging.rs) shows three pages to user mode: the
//! program's code page, the hypercall page (read-only) and a stack page.
//! On a hardware-assisted host they are the only user-accessible pages;
//! on kvm_pvm every page is. The program calls the `version` stub through
//! the window; the stub's port write must raise #GP at CPL 3.

use core::arch::global_asm;

use pvabi::hypercall::{STUB_SIZE, VERSION};
use pvabi::version;

use crate::paging::{Page, UserPage, USER_WINDOW};
use crate::sync::RacyCell;
use crate::traps::{self, CaughtFault};

const PAGE_SIZE: u64 = 4096;
/// The program's code, page 0 of the window.
const USER_CODE: u64 = USER_WINDOW;
/// The hypercall page as user mode sees it, page 1 of the window.
const USER_HYPERCALL_PAGE: u64 = USER_WINDOW + PAGE_SIZE;
/// The top of the program's stack, page 2 of the window.
const USER_STACK_TOP: u64 = USER_WINDOW + 3 * PAGE_SIZE;
/// The stub the program calls, as user mode sees it.
pub const USER_VERSION_STUB: u64 = USER_HYPERCALL_PAGE + VERSION as u64 * STUB_SIZE as u64;

/// The program's stack; only user mode touches it.
static USER_STACK: RacyCell<Page> = RacyCell::new(Page::ZEROED);

// The program, alone in its page (the section is page-aligned and padded
// to a page): `version(VERSION)` through the window's stub. Should the call
// return, the hypercall went through, and `ud2` brings the kernel back
// with the result in RAX.
global_asm!(
    ".pushsection .text.testguest_user_program, \"ax\"",
    ".balign 4096",
    ".global testguest_user_program",
    "testguest_user_program:",
    "    mov edi, {command}",
    "    mov rax, {stub}",
    "    call rax",
    "    ud2",
    ".balign 4096",
    ".popsection",
    command = const version::VERSION,
    stub = const USER_VERSION_STUB,
);

extern "C" {
    static testguest_user_program: u8;
}

/// The pages of the user window, in order, for the page tables.
pub fn window_pages() -> [UserPage; 3] {
    [
        UserPage { phys: &raw const testguest_user_program as u64, writable: false, executable: true },
        UserPage { phys: crate::hypercall::page_address(), writable: false, executable: true },
        UserPage { phys: USER_STACK.get() as u64, writable: true, executable: false },
    ]
}

/// Runs the program at CPL 3 and returns the exception that ended it:
/// #GP inside the stub at [`USER_VERSION_STUB`] if the hypercall was
/// refused; #UD after the call, with the result in RAX, if it was not.
pub fn call_version_from_user_mode() -> CaughtFault {
    // SAFETY: the program is the code above, mapped at USER_CODE by the
    // page tables (window_pages); it only calls the version stub (which
    // reads nothing and writes RAX) and executes ud2, touching no memory
    // but its own stack page.
    unsafe { traps::run_in_user_mode(USER_CODE, USER_STACK_TOP) }
}
