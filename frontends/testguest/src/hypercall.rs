//! The hypercall interface of `pvabi::hypercall`, guest side.
//!
//! [`install`] finds the hypercall page feature in CPUID and writes the
//! address of [`HYPERCALL_PAGE`] to the MSR the feature leaf names; the
//! hypervisor fills the page with one stub per hypercall number. It
//! returns a [`Hypercalls`] token, the proof that the stubs are there:
//! every call goes through it. Each call `call`s the stub at
//! `page + nr * STUB_SIZE` with the arguments in RDI, RSI, RDX, R10 and R8
//! and gets the result in RAX, `>= 0` or a negative errno.
//!
//! Hypercall pointers are guest-physical addresses. The guest's memory is
//! identity-mapped, so the address of any of its objects is its
//! guest-physical address ([`gpa`]).
//!
//! The typed wrappers are safe where their argument types bound what the
//! hypervisor may touch (a `&mut` buffer for data it writes, a `&` buffer
//! for data it reads). [`Hypercalls::call`] (any number, any arguments),
//! [`Call::raw`] (the same inside a multicall) and
//! [`Hypercalls::decrease_reservation`] (which makes the contents of
//! memory vanish) are `unsafe`.

use core::arch::asm;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use pvabi::boot::MemMapEntry;
use pvabi::cpuid::{features, LEAF_FEATURES, LEAF_SIGNATURE, SIGNATURE};
use pvabi::errno::{E2BIG, EAGAIN, EBUSY, EFAULT, EINVAL, ENOENT, ENOMEM, ENOSYS, EPERM};
use pvabi::hypercall::{MulticallEntry, CONSOLE_IO, MEMORY_OP, MULTICALL, SCHED_OP, STUB_COUNT, STUB_SIZE, VERSION};
use pvabi::{console, memory, sched, version, DOMID_SELF};

use crate::arch;
use crate::paging::Page;
use crate::sync::RacyCell;
use crate::traps::{self, CaughtFault};

/// The page the hypervisor fills with stubs. Zeroed .bss until then; after
/// installation only the hypervisor writes it, and the guest executes it.
static HYPERCALL_PAGE: RacyCell<Page> = RacyCell::new(Page::ZEROED);

/// The installed page's address, 0 before [`install`] succeeded.
static INSTALLED: AtomicU64 = AtomicU64::new(0);

/// The guest-physical address of `object`: the guest's memory is
/// identity-mapped (see paging.rs), so it is its virtual address.
pub fn gpa<T: ?Sized>(object: *const T) -> u64 {
    object.cast::<u8>() as u64
}

/// [`gpa`] of memory the hypervisor writes: the address comes from a
/// mutable pointer, so writes through it are allowed.
pub fn gpa_mut<T: ?Sized>(object: *mut T) -> u64 {
    object.cast::<u8>() as u64
}

/// The guest-physical address of the hypercall page (installed or not).
pub fn page_address() -> u64 {
    gpa(HYPERCALL_PAGE.get())
}

/// Why the hypercall page could not be installed.
#[derive(Clone, Copy, Debug)]
pub enum InstallError {
    /// CPUID shows no SplitPVonKVM leaves.
    NoSignature,
    /// The feature leaf does not announce the hypercall page.
    NoFeature { features: u32 },
    /// The MSR write raised an exception.
    Refused { msr: u32, fault: CaughtFault },
    /// Reading the MSR back gave another address.
    ReadBack { msr: u32, wrote: u64, read: u64 },
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::NoSignature => write!(out, "CPUID {LEAF_SIGNATURE:#x} shows no SplitPVonKVM signature"),
            InstallError::NoFeature { features } => {
                write!(out, "CPUID {LEAF_FEATURES:#x} EAX = {features:#x} lacks the hypercall page bit {:#x}", features::HYPERCALL_PAGE)
            }
            InstallError::Refused { msr, fault } => write!(out, "writing MSR {msr:#x} raised {fault}"),
            InstallError::ReadBack { msr, wrote, read } => write!(out, "MSR {msr:#x} reads back {read:#x} after writing {wrote:#x}"),
        }
    }
}

/// What the hypercall page's MSR is, from CPUID: `Ok(msr)` if the
/// hypervisor offers the page.
pub fn detect() -> Result<u32, InstallError> {
    let signature = arch::cpuid(LEAF_SIGNATURE);
    let mut seen = [0u8; 12];
    for (bytes, word) in seen.chunks_exact_mut(4).zip([signature.ebx, signature.ecx, signature.edx]) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    if seen != SIGNATURE || signature.eax < LEAF_FEATURES {
        return Err(InstallError::NoSignature);
    }
    let leaf = arch::cpuid(LEAF_FEATURES);
    if leaf.eax & features::HYPERCALL_PAGE == 0 {
        return Err(InstallError::NoFeature { features: leaf.eax });
    }
    Ok(leaf.edx)
}

/// Installs the hypercall page and checks that its MSR reads back the
/// page's address.
pub fn install() -> Result<Hypercalls, InstallError> {
    let msr = detect()?;
    let page = page_address();
    // SAFETY: the MSR is the hypercall page's (CPUID says so); the write
    // makes the hypervisor fill HYPERCALL_PAGE, which nothing else in the
    // guest uses. WRMSR is serializing, so the stubs are visible to
    // instruction fetches from here on.
    unsafe { traps::try_wrmsr(msr, page) }.map_err(|fault| InstallError::Refused { msr, fault })?;
    // SAFETY: the MSR exists (the write did not fault), and the ABI makes
    // it readable.
    let read = unsafe { arch::rdmsr(msr) };
    if read != page {
        return Err(InstallError::ReadBack { msr, wrote: page, read });
    }
    INSTALLED.store(page, Ordering::Release);
    Ok(Hypercalls { page })
}

/// The token of an installed hypercall page, if [`install`] succeeded.
pub fn installed() -> Option<Hypercalls> {
    match INSTALLED.load(Ordering::Acquire) {
        0 => None,
        page => Some(Hypercalls { page }),
    }
}

/// A hypercall's error: the positive errno of a negative result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl core::fmt::Display for Errno {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.0 {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            E2BIG => "E2BIG",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EINVAL => "EINVAL",
            ENOSYS => "ENOSYS",
            other => return write!(out, "-{other}"),
        };
        write!(out, "-{name}")
    }
}

/// A hypercall's decoded result.
pub type HcResult = Result<u64, Errno>;

/// Decodes a raw result: `>= 0` is success, anything else `-errno`.
pub fn decode(raw: i64) -> HcResult {
    if raw >= 0 {
        Ok(raw as u64)
    } else {
        Err(Errno(raw.wrapping_neg()))
    }
}

/// Proof that the hypercall page is installed; the calls are its methods.
#[derive(Clone, Copy, Debug)]
pub struct Hypercalls {
    page: u64,
}

impl Hypercalls {
    /// The page's guest-physical address.
    pub fn page(self) -> u64 {
        self.page
    }

    /// Makes hypercall `nr` with `args` and returns the raw result. A
    /// number with no stub (beyond the page) gives `-ENOSYS` without a call.
    ///
    /// # Safety
    /// The call must be sound: every argument the hypervisor takes as a
    /// pointer for this `nr` and command must be the guest-physical address
    /// of memory it may read, or write, as that call does, with no Rust
    /// reference to written memory alive.
    #[inline]
    pub unsafe fn call(self, nr: u32, args: [u64; 5]) -> i64 {
        if nr as usize >= STUB_COUNT {
            return -ENOSYS;
        }
        let stub = self.page + u64::from(nr) * STUB_SIZE as u64;
        let result: i64;
        // SAFETY: `stub` lies in the installed page (nr < STUB_COUNT), where
        // the hypervisor put `mov eax, nr; out; ret`. The stub changes only
        // RAX (pvabi::hypercall) and uses the stack for the return address,
        // hence no `nostack`; the hypervisor may read and write guest memory
        // during the call, hence no `nomem`, and the caller guarantees that
        // what it touches may be touched. Flags are not declared preserved.
        unsafe {
            asm!(
                "call {stub}",
                stub = in(reg) stub,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rax") result,
            );
        }
        result
    }

    /// `version(VERSION)`: the ABI version, `major << 16 | minor`.
    pub fn version(self) -> HcResult {
        // SAFETY: VERSION takes no pointer.
        decode(unsafe { self.call(VERSION, [version::VERSION, 0, 0, 0, 0]) })
    }

    /// `version(EXTRAVERSION)`: fills `buffer` with the NUL-padded
    /// extra-version string.
    pub fn extraversion(self, buffer: &mut [u8; version::EXTRAVERSION_LEN]) -> HcResult {
        // SAFETY: the hypervisor writes EXTRAVERSION_LEN bytes to the
        // argument, exactly `buffer`, which is borrowed mutably.
        decode(unsafe { self.call(VERSION, [version::EXTRAVERSION, gpa_mut(buffer), 0, 0, 0]) })
    }

    /// `console_io(WRITE)`: writes `bytes` (at most `console::MAX_CHUNK`
    /// of them are taken); returns how many were written.
    pub fn console_write(self, bytes: &[u8]) -> HcResult {
        // SAFETY: the hypervisor reads at most `bytes.len()` bytes from
        // `bytes`.
        decode(unsafe { self.call(CONSOLE_IO, [console::WRITE, bytes.len() as u64, gpa(bytes), 0, 0]) })
    }

    /// `console_io(READ)`: reads waiting console input into `buffer`;
    /// returns how many bytes came (0 if none was waiting).
    pub fn console_read(self, buffer: &mut [u8]) -> HcResult {
        // SAFETY: the hypervisor writes at most `buffer.len()` bytes to
        // `buffer`, which is borrowed mutably.
        decode(unsafe { self.call(CONSOLE_IO, [console::READ, buffer.len() as u64, gpa_mut(buffer), 0, 0]) })
    }

    /// `sched_op(YIELD)`.
    pub fn sched_yield(self) -> HcResult {
        // SAFETY: YIELD takes no pointer.
        decode(unsafe { self.call(SCHED_OP, [sched::YIELD, 0, 0, 0, 0]) })
    }

    /// `sched_op(BLOCK)`: waits for an event or at most `micros` µs (0: no
    /// limit of the guest's own).
    pub fn sched_block(self, micros: u64) -> HcResult {
        // SAFETY: BLOCK takes no pointer.
        decode(unsafe { self.call(SCHED_OP, [sched::BLOCK, micros, 0, 0, 0]) })
    }

    /// `sched_op(SHUTDOWN)` with `reason` (`sched::REASON_*`). Returns only
    /// if the hypervisor did not end the domain.
    pub fn sched_shutdown(self, reason: u32) -> HcResult {
        let shutdown = sched::Shutdown { reason };
        // SAFETY: the hypervisor reads the Shutdown, a live local.
        decode(unsafe { self.call(SCHED_OP, [sched::SHUTDOWN, gpa(&shutdown), 0, 0, 0]) })
    }

    /// `memory_op(MEMORY_MAP)` into `buffer`; returns how many entries the
    /// hypervisor wrote.
    pub fn memory_map(self, buffer: &mut [MemMapEntry]) -> Result<usize, Errno> {
        let mut map = memory::MemoryMap { nr_entries: buffer.len().min(u32::MAX as usize) as u32, pad: 0, buffer: gpa_mut(buffer) };
        // SAFETY: the hypervisor reads and writes `map`, a local borrowed
        // mutably here, and writes at most `nr_entries` entries to `buffer`,
        // which is borrowed mutably and at least that long.
        decode(unsafe { self.call(MEMORY_OP, [memory::MEMORY_MAP, gpa_mut(&mut map), 0, 0, 0]) })?;
        // The hypervisor never reports more than it was given room for;
        // should it, trust only the buffer's length.
        Ok((map.nr_entries as usize).min(buffer.len()))
    }

    /// `memory_op(CURRENT_RESERVATION)`: pages the domain has now.
    pub fn current_reservation(self) -> HcResult {
        // SAFETY: CURRENT_RESERVATION takes no pointer.
        decode(unsafe { self.call(MEMORY_OP, [memory::CURRENT_RESERVATION, 0, 0, 0, 0]) })
    }

    /// `memory_op(MAXIMUM_RESERVATION)`: pages the domain may have.
    pub fn maximum_reservation(self) -> HcResult {
        // SAFETY: MAXIMUM_RESERVATION takes no pointer.
        decode(unsafe { self.call(MEMORY_OP, [memory::MAXIMUM_RESERVATION, 0, 0, 0, 0]) })
    }

    /// `memory_op(DECREASE_RESERVATION)`: gives the frames in `frames`
    /// (frame numbers, order 0) to the balloon; returns how many were
    /// taken, stopping at the first the hypervisor refuses.
    ///
    /// # Safety
    /// The contents of every frame taken are gone (it reads as zero): no
    /// data the guest still needs may live there.
    pub unsafe fn decrease_reservation(self, frames: &[u64]) -> HcResult {
        // SAFETY: the hypervisor reads the reservation and the frame list;
        // the caller answers for the frames themselves.
        unsafe { self.reservation(memory::DECREASE_RESERVATION, frames) }
    }

    /// `memory_op(INCREASE_RESERVATION)`: takes the frames in `frames` back
    /// from the balloon; returns how many came back.
    pub fn increase_reservation(self, frames: &[u64]) -> HcResult {
        // SAFETY: the hypervisor reads the reservation and the frame list,
        // and only forgets that the frames were ballooned.
        unsafe { self.reservation(memory::INCREASE_RESERVATION, frames) }
    }

    /// A reservation call over `frames`.
    ///
    /// # Safety
    /// As for the command.
    unsafe fn reservation(self, command: u64, frames: &[u64]) -> HcResult {
        let reservation = memory::Reservation {
            extent_start: gpa(frames),
            nr_extents: frames.len() as u64,
            extent_order: 0,
            mem_flags: 0,
            domid: DOMID_SELF,
            pad: 0,
        };
        // SAFETY: the hypervisor reads `reservation` (a live local) and the
        // `frames` it points to; the caller answers for the command.
        decode(unsafe { self.call(MEMORY_OP, [command, gpa(&reservation), 0, 0, 0]) })
    }

    /// `multicall`: runs `calls` in order; each call's result lands in it.
    /// The batch as a whole returns 0 or an error of its own (too many
    /// entries, entries outside RAM).
    pub fn multicall(self, calls: &mut [Call<'_>]) -> HcResult {
        // SAFETY: `Call` is a transparent MulticallEntry, so `calls` is the
        // entry array the hypervisor reads and writes back (borrowed
        // mutably); every entry is sound by construction, its buffers
        // borrowed for as long as it lives (see `Call`).
        decode(unsafe { self.call(MULTICALL, [gpa_mut(calls), calls.len() as u64, 0, 0, 0]) })
    }
}

/// One entry of a multicall batch. The constructors borrow the buffers
/// the call will use for `'a`, so a batch can only run while they live.
#[repr(transparent)]
pub struct Call<'a> {
    entry: MulticallEntry,
    _buffers: PhantomData<&'a mut [u8]>,
}

impl Call<'static> {
    /// `version(VERSION)`.
    pub const fn version() -> Self {
        Call { entry: MulticallEntry { op: VERSION as u64, result: 0, args: [version::VERSION, 0, 0, 0, 0, 0] }, _buffers: PhantomData }
    }
}

impl<'a> Call<'a> {
    /// `console_io(WRITE)` of `text`.
    pub fn console_write(text: &'a [u8]) -> Self {
        Call {
            entry: MulticallEntry { op: CONSOLE_IO.into(), result: 0, args: [console::WRITE, text.len() as u64, gpa(text), 0, 0, 0] },
            _buffers: PhantomData,
        }
    }

    /// Hypercall `op` with `args`.
    ///
    /// # Safety
    /// As for [`Hypercalls::call`], for as long as the entry lives.
    pub const unsafe fn raw(op: u64, args: [u64; 6]) -> Self {
        Call { entry: MulticallEntry { op, result: 0, args }, _buffers: PhantomData }
    }

    /// The result the hypervisor wrote back (0 before the batch ran).
    pub fn result(&self) -> HcResult {
        decode(self.entry.result as i64)
    }
}
