//! The C memory primitives core's precompiled code calls.
//!
//! The host target's libcore expects libc to provide them. They are written
//! with string instructions in inline assembly so that the compiler cannot
//! recognise a copy loop in their bodies and turn it back into a call to
//! themselves. The direction flag is clear on entry to every function (SysV
//! ABI; `_start` clears it), which forward `rep movsb`/`stosb`/`cmpsb` need.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dest`; the ranges must not overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes;
    // `rep movsb` touches exactly those bytes, forward (DF is clear).
    unsafe {
        asm!("rep movsb",
            inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`; the ranges may overlap.
///
/// # Safety
/// `src` must be readable and `dest` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 || dest.cast_const() == src {
        return dest;
    }
    if (dest as usize) < (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // A forward copy never overwrites source bytes it has yet to read
        // when the destination starts below the source or past its end.
        // SAFETY: as for `memcpy`; see the condition above for overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // The destination overlaps the tail of the source: copy backwards,
    // starting at the last byte, with the direction flag set for the copy
    // only (the ABI requires it clear again on return).
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes; the
    // pointers start at their last byte and walk down over exactly `n`.
    unsafe {
        asm!("std", "rep movsb", "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
    dest
}

/// Fills `n` bytes at `dest` with the low byte of `c`.
///
/// # Safety
/// `dest` must be writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is writable for `n` bytes, which
    // is what `rep stosb` writes (forward, DF is clear).
    unsafe {
        asm!("rep stosb",
            inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
            options(nostack, preserves_flags));
    }
    dest
}

/// Compares `n` bytes: negative, zero or positive as `a` sorts before,
/// equal to or after `b` (bytes compared as unsigned).
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let a_next: *const u8;
    let b_next: *const u8;
    // SAFETY: the caller guarantees both ranges are readable for `n` bytes;
    // `repe cmpsb` reads at most that many from each, forward.
    unsafe {
        asm!("repe cmpsb",
            inout("rsi") a => a_next, inout("rdi") b => b_next, inout("rcx") n => _,
            options(readonly, nostack));
    }
    // `repe cmpsb` stops after the first differing pair, or after the last
    // pair when all are equal: either way the pair just before the final
    // pointers decides the result.
    // SAFETY: at least one pair was compared (n > 0), so both pointers are
    // one past a byte inside the caller's ranges.
    let (last_a, last_b) = unsafe { (*a_next.sub(1), *b_next.sub(1)) };
    i32::from(last_a) - i32::from(last_b)
}

/// Like `memcmp` but only zero versus non-zero matters.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}
