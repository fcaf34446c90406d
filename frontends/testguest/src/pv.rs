//! The PV workloads: the hypercall interface checked from inside.
//!
//! `pv-basic` and `pv-hostile` run a list of checks, print one line per
//! check (`testguest: pv: <check> = <result> ok`, or `... FAILED: expected
//! X got Y`) and a summary, and exit with SUCCESS if every check passed,
//! FAILURE otherwise. `pv-console` switches the console to `console_io`.
//! `pv-poweroff`, `pv-reboot` and `pv-crash` end the domain through
//! `sched_op(SHUTDOWN)`.
//!
//! The hostile checks hand the hypervisor bad pointers, sizes and frames.
//! Each is built so that a hypervisor that wrongly accepted it would still
//! not corrupt memory the guest relies on (the reasons are at each call),
//! and the guest repairs what such a hypervisor could have changed (the
//! hypercall page), so that one failed check does not hide the others.

use core::fmt::{self, Display};

use pvabi::boot::{MemMapEntry, MEMMAP_MAX_ENTRIES};
use pvabi::errno::{E2BIG, EFAULT, EINVAL, ENOSYS};
use pvabi::hypercall::{CONSOLE_IO, MEMORY_OP, MULTICALL, MULTICALL_MAX, SCHED_OP, STUB_SIZE, VERSION};
use pvabi::{console, exit_status, layout, memory, sched, version, DOMID_SELF};

use crate::console::Escaped;
use crate::hypercall::{self, decode, gpa, gpa_mut, Call, Errno, HcResult, Hypercalls};
use crate::paging::Page;
use crate::sync::RacyCell;
use crate::traps::{self, VECTOR_GP};
use crate::usermode;
use crate::virtio::workloads::LineInput;
use crate::{exit, println, BootParameters};

/// A guest-physical address that is never RAM: in the MMIO hole.
const OUTSIDE_RAM: u64 = layout::UNBACKED_MMIO_PROBE;
const PAGE_SIZE: u64 = 4096;

/// The ABI version `version(VERSION)` must return.
const ABI_VERSION: u64 = (pvabi::ABI_VERSION_MAJOR as u64) << 16 | pvabi::ABI_VERSION_MINOR as u64;

/// Counts checks and prints their lines, `testguest: <topic>: ...`.
pub(crate) struct Checks {
    topic: &'static str,
    workload: &'static str,
    run: u32,
    failed: u32,
}

impl Checks {
    fn new(workload: &'static str) -> Checks {
        Checks::with_topic("pv", workload)
    }

    /// Checks whose lines start with `testguest: <topic>: `.
    pub(crate) fn with_topic(topic: &'static str, workload: &'static str) -> Checks {
        Checks { topic, workload, run: 0, failed: 0 }
    }

    /// A check decided by the caller: prints `check = got ok`, or what was
    /// expected instead.
    pub(crate) fn verdict(&mut self, check: impl Display, ok: bool, expected: impl Display, got: impl Display) {
        self.run += 1;
        let topic = self.topic;
        if ok {
            println!("testguest: {topic}: {check} = {got} ok");
        } else {
            self.failed += 1;
            println!("testguest: {topic}: {check} FAILED: expected {expected} got {got}");
        }
    }

    /// How many checks failed so far.
    pub(crate) fn failed(&self) -> u32 {
        self.failed
    }

    /// A hypercall result that must equal `expected`.
    pub(crate) fn result(&mut self, check: impl Display, expected: HcResult, got: HcResult) {
        self.verdict(check, got == expected, Shown(expected), Shown(got))
    }

    /// Prints the summary and ends the domain: SUCCESS iff all passed.
    pub(crate) fn finish(&self) -> ! {
        let topic = self.topic;
        if self.failed == 0 {
            println!("testguest: {topic}: {}: all {} checks passed", self.workload, self.run);
            exit(exit_status::SUCCESS)
        } else {
            println!("testguest: {topic}: {}: {} of {} checks FAILED", self.workload, self.failed, self.run);
            exit(exit_status::FAILURE)
        }
    }
}

/// Displays a hypercall result: the value, or `-ENAME`.
#[derive(Clone, Copy)]
pub(crate) struct Shown(pub(crate) HcResult);

impl Display for Shown {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(value) => write!(out, "{value}"),
            Err(errno) => write!(out, "{errno}"),
        }
    }
}

/// Displays a multicall's own result and its entries' results.
struct Batch<'a>(HcResult, &'a [HcResult]);

impl Display for Batch<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{} [", Shown(self.0))?;
        for (index, result) in self.1.iter().enumerate() {
            write!(out, "{}{}", if index == 0 { "" } else { ", " }, Shown(*result))?;
        }
        write!(out, "]")
    }
}

/// Displays memory map entries as `[start+size type N, …]`.
struct MapEntries<'a>(&'a [MemMapEntry]);

impl Display for MapEntries<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "[")?;
        for (index, entry) in self.0.iter().enumerate() {
            write!(out, "{}{:#x}+{:#x} type {}", if index == 0 { "" } else { ", " }, entry.addr, entry.size, entry.kind)?;
        }
        write!(out, "]")
    }
}

/// Installs the hypercall page as the first check; without it nothing
/// else can run, so a failure ends the workload.
pub(crate) fn install(checks: &mut Checks) -> Hypercalls {
    match hypercall::install() {
        Ok(hypercalls) => {
            checks.verdict("hypercall page installed, its MSR reads back", true, "", format_args!("{:#x}", hypercalls.page()));
            hypercalls
        }
        Err(error) => {
            checks.verdict("hypercall page installed, its MSR reads back", false, "success", error);
            checks.finish()
        }
    }
}

/// `pv-basic`: every hypercall once, used as intended.
pub fn basic(boot: &BootParameters) -> ! {
    let mut checks = Checks::new("pv-basic");
    let hc = install(&mut checks);

    checks.result("version(VERSION)", Ok(ABI_VERSION), hc.version());

    let mut extra = [0u8; version::EXTRAVERSION_LEN];
    let result = hc.extraversion(&mut extra);
    let text = &extra[..extra.iter().position(|&byte| byte == 0).unwrap_or(extra.len())];
    checks.verdict(
        "version(EXTRAVERSION)",
        result == Ok(0) && text.starts_with(b"-splitpv-"),
        "0 and \"-splitpv-...\"",
        format_args!("{} and \"{}\"", Shown(result), Escaped(text)),
    );

    let line = b"testguest: pv: this line went through console_io(WRITE)\n";
    checks.result("console_io(WRITE) of a line returns its length", Ok(line.len() as u64), hc.console_write(line));

    let mut input = [0u8; 64];
    checks.result("console_io(READ) without input", Ok(0), hc.console_read(&mut input));
    checks.result("sched_op(YIELD)", Ok(0), hc.sched_yield());
    checks.result("sched_op(BLOCK, 1000 us)", Ok(0), hc.sched_block(1000));

    let ram_pages = boot.ram_bytes / PAGE_SIZE;
    checks.result("memory_op(MAXIMUM_RESERVATION) = RAM pages", Ok(ram_pages), hc.maximum_reservation());
    checks.result("memory_op(CURRENT_RESERVATION) = RAM pages", Ok(ram_pages), hc.current_reservation());

    let mut map = [MemMapEntry::default(); MEMMAP_MAX_ENTRIES];
    let expected = boot.memory_map();
    match hc.memory_map(&mut map) {
        Ok(count) => checks.verdict(
            "memory_op(MEMORY_MAP) = the StartInfo's map",
            map[..count] == *expected,
            MapEntries(expected),
            MapEntries(&map[..count]),
        ),
        Err(errno) => checks.verdict("memory_op(MEMORY_MAP) = the StartInfo's map", false, MapEntries(expected), errno),
    }

    let text = b"testguest: pv: this line went through a multicall\n";
    // SAFETY: 77 is no hypercall of the ABI and its arguments are no
    // pointers: the hypervisor can only refuse it.
    let unknown = unsafe { Call::raw(77, [0; 6]) };
    let mut batch = [Call::version(), Call::console_write(text), unknown];
    let result = hc.multicall(&mut batch);
    let got = [batch[0].result(), batch[1].result(), batch[2].result()];
    let expected = [Ok(ABI_VERSION), Ok(text.len() as u64), Err(Errno(ENOSYS))];
    checks.verdict(
        "multicall [version, console_io(WRITE), unknown 77]",
        result == Ok(0) && got == expected,
        Batch(Ok(0), &expected),
        Batch(result, &got),
    );

    checks.finish()
}

/// More entries than one multicall takes, all harmless (`version`).
const TOO_MANY: usize = MULTICALL_MAX as usize + 1;
/// The batch of [`TOO_MANY`] entries; used only by [`hostile`].
static TOO_MANY_CALLS: RacyCell<[Call<'static>; TOO_MANY]> = RacyCell::new([const { Call::version() }; TOO_MANY]);
/// The batch a nested multicall entry points to; used only by [`hostile`].
static INNER_BATCH: RacyCell<[Call<'static>; 1]> = RacyCell::new([Call::version()]);
/// The frame ballooned out and back; holds only a test pattern.
static BALLOON_FRAME: RacyCell<Page> = RacyCell::new(Page::ZEROED);
/// Where a misaligned hypercall-page address points: should the
/// hypervisor accept it, the stubs land in these two pages, used for
/// nothing else.
static MSR_PROBE_AREA: RacyCell<[Page; 2]> = RacyCell::new([Page::ZEROED, Page::ZEROED]);

/// `pv-hostile`: bad numbers, pointers, sizes, frames, MSR values and a
/// hypercall from user mode; the domain must refuse each and live on.
pub fn hostile(boot: &BootParameters) -> ! {
    let mut checks = Checks::new("pv-hostile");
    let hc = install(&mut checks);

    // The raw calls below name, each, why a hypervisor that accepted the
    // bad argument would still touch nothing the guest uses.
    // SAFETY: no hypercall 77 exists; its arguments are no pointers.
    checks.result("unknown hypercall 77", Err(Errno(ENOSYS)), decode(unsafe { hc.call(77, [0; 5]) }));
    // SAFETY: WRITE only reads its buffer, here in the MMIO hole.
    let result = decode(unsafe { hc.call(CONSOLE_IO, [console::WRITE, 16, OUTSIDE_RAM, 0, 0]) });
    checks.result("console_io(WRITE) of a buffer outside RAM", Err(Errno(EFAULT)), result);
    // SAFETY: WRITE only reads its buffer: the last 8 bytes of RAM and 8
    // beyond.
    let result = decode(unsafe { hc.call(CONSOLE_IO, [console::WRITE, 16, boot.ram_end() - 8, 0, 0]) });
    checks.result("console_io(WRITE) of a buffer running past the end of RAM", Err(Errno(EFAULT)), result);
    // SAFETY: the 16 bytes would be written in the MMIO hole, not RAM.
    let result = decode(unsafe { hc.call(VERSION, [version::EXTRAVERSION, OUTSIDE_RAM, 0, 0, 0]) });
    checks.result("version(EXTRAVERSION) to a buffer outside RAM", Err(Errno(EFAULT)), result);
    // SAFETY: SHUTDOWN only reads its argument, here in the MMIO hole.
    let result = decode(unsafe { hc.call(SCHED_OP, [sched::SHUTDOWN, OUTSIDE_RAM, 0, 0, 0]) });
    checks.result("sched_op(SHUTDOWN) with its argument outside RAM", Err(Errno(EFAULT)), result);
    checks.result("sched_op(SHUTDOWN) with reason 9", Err(Errno(EINVAL)), hc.sched_shutdown(9));

    // SAFETY: TOO_MANY_CALLS is used by this function only, once.
    let too_many = unsafe { &mut *TOO_MANY_CALLS.get() };
    let result = hc.multicall(too_many);
    let ran = too_many.iter().filter(|call| call.result() != Ok(0)).count();
    checks.verdict(
        format_args!("multicall of {TOO_MANY} entries"),
        result == Err(Errno(E2BIG)) && ran == 0,
        format_args!("{} with no entry run", Errno(E2BIG)),
        format_args!("{} with {ran} entries run", Shown(result)),
    );

    // SAFETY: a nested multicall, which the hypervisor must refuse; run
    // anyway, it would run INNER_BATCH (used only here), one version call,
    // and write its result there.
    let nested = unsafe { Call::raw(MULTICALL.into(), [gpa_mut(INNER_BATCH.get()), 1, 0, 0, 0, 0]) };
    let mut batch = [nested, Call::version()];
    let result = hc.multicall(&mut batch);
    let got = [batch[0].result(), batch[1].result()];
    let expected = [Err(Errno(EINVAL)), Ok(ABI_VERSION)];
    checks.verdict(
        "multicall [nested multicall, version]",
        result == Ok(0) && got == expected,
        Batch(Ok(0), &expected),
        Batch(result, &got),
    );

    balloon_checks(&mut checks, hc);
    msr_checks(&mut checks, hc);

    let fault = usermode::call_version_from_user_mode();
    let stub = usermode::USER_VERSION_STUB;
    checks.verdict(
        "version hypercall from user mode (CPL 3)",
        fault.vector == VECTOR_GP && fault.cs & 3 == 3 && (stub..stub + STUB_SIZE as u64).contains(&fault.rip),
        format_args!("#GP at CPL 3 in the stub at {stub:#x}"),
        fault,
    );

    checks.result("version(VERSION) after all of the above", Ok(ABI_VERSION), hc.version());
    checks.finish()
}

/// The balloon: oversized requests, frames it must refuse, and one it
/// must take and give back.
fn balloon_checks(checks: &mut Checks, hc: Hypercalls) {
    // The list starts with a frame below 1 MiB, so that a hypervisor
    // ignoring the size limit would still stop at the first extent.
    let refused_first = [0u64];
    let reservation = memory::Reservation {
        extent_start: gpa(&refused_first),
        nr_extents: 1_000_000,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
        pad: 0,
    };
    // SAFETY: the hypervisor reads `reservation` and the frame list; see
    // above for why no frame would be taken.
    let result = decode(unsafe { hc.call(MEMORY_OP, [memory::DECREASE_RESERVATION, gpa(&reservation), 0, 0, 0]) });
    checks.result("memory_op(DECREASE_RESERVATION) of 1000000 extents", Err(Errno(E2BIG)), result);

    // Frame 0xff, the last below 1 MiB, is in the boot area, which holds
    // nothing the guest still uses (it copied the StartInfo and runs on
    // its own GDT, TSS and page tables).
    // SAFETY: see above.
    let result = unsafe { hc.decrease_reservation(&[0xff]) };
    checks.result("memory_op(DECREASE_RESERVATION) of frame 0xff (below 1 MiB)", Ok(0), result);

    let page_frame = hc.page() / PAGE_SIZE;
    // SAFETY: the hypervisor must keep the page; should it take it, the
    // check fails and the page is given back and installed again below
    // before the next hypercall.
    let result = unsafe { hc.decrease_reservation(&[page_frame]) };
    checks.result(format_args!("memory_op(DECREASE_RESERVATION) of the hypercall page's frame {page_frame:#x}"), Ok(0), result);
    if result != Ok(0) {
        repair_hypercall_page(hc, Some(page_frame));
    }

    let frame_address = BALLOON_FRAME.get().cast::<u64>();
    let frame = gpa(frame_address) / PAGE_SIZE;
    const PATTERN: u64 = 0xa5a5_5a5a_0123_4567;
    for index in 0..PAGE_SIZE as usize / 8 {
        // SAFETY: inside BALLOON_FRAME, used only here, through raw
        // pointers (no reference to it exists).
        unsafe { frame_address.add(index).write_volatile(PATTERN) };
    }
    let before = hc.current_reservation();
    // SAFETY: BALLOON_FRAME holds nothing but the pattern.
    let result = unsafe { hc.decrease_reservation(&[frame]) };
    checks.result(format_args!("memory_op(DECREASE_RESERVATION) of frame {frame:#x}"), Ok(1), result);
    // SAFETY: as for the pattern writes; reading a ballooned frame is
    // allowed and shows what the domain has there now.
    let nonzero = (0..PAGE_SIZE as usize / 8).filter(|&index| unsafe { frame_address.add(index).read_volatile() } != 0).count();
    checks.verdict("the ballooned frame reads as zero", nonzero == 0, "0 non-zero words", format_args!("{nonzero} non-zero words"));
    let expected = before.map(|pages| pages - 1);
    checks.result("memory_op(CURRENT_RESERVATION) dropped by 1", expected, hc.current_reservation());
    checks.result(format_args!("memory_op(INCREASE_RESERVATION) of frame {frame:#x}"), Ok(1), hc.increase_reservation(&[frame]));
    checks.result("memory_op(CURRENT_RESERVATION) is back", before, hc.current_reservation());
}

/// Gives the hypercall page's frame back (if it was ballooned) and writes
/// the MSR again, so that the stubs are there after a check that failed
/// because the hypervisor changed them.
fn repair_hypercall_page(hc: Hypercalls, ballooned: Option<u64>) {
    println!("testguest: pv: restoring the hypercall page at {:#x}", hc.page());
    // The stubs may be gone: write the MSR, which makes the hypervisor
    // fill the page again, before any hypercall.
    if let Err(error) = hypercall::install() {
        println!("testguest: pv: cannot reinstall the hypercall page at {:#x}: {error}", hc.page());
        exit(exit_status::FAILURE)
    }
    if let Some(frame) = ballooned {
        // Whatever the answer, the page is back in use.
        let _ = hc.increase_reservation(&[frame]);
    }
}

/// The hypercall page's MSR refuses bad addresses with #GP.
fn msr_checks(checks: &mut Checks, hc: Hypercalls) {
    let msr = match hypercall::detect() {
        Ok(msr) => msr,
        Err(error) => {
            checks.verdict("the hypercall page's MSR", false, "CPUID to name it", error);
            return;
        }
    };
    let misaligned = gpa(MSR_PROBE_AREA.get()) + 8;
    for (what, value) in [("a misaligned address", misaligned), ("an address outside RAM", OUTSIDE_RAM)] {
        // SAFETY: the hypervisor must refuse the value; should it accept
        // it, the stubs land in MSR_PROBE_AREA (used for nothing else) or
        // outside RAM, and the real page is installed again below.
        let result = unsafe { traps::try_wrmsr(msr, value) };
        let ok = matches!(result, Err(fault) if fault.vector == VECTOR_GP);
        match result {
            Ok(()) => checks.verdict(format_args!("writing {value:#x} ({what}) to MSR {msr:#x}"), false, "#GP", "no fault"),
            Err(fault) => checks.verdict(format_args!("writing {value:#x} ({what}) to MSR {msr:#x}"), ok, "#GP", fault),
        }
        // SAFETY: the MSR exists (CPUID names it and installation read it).
        let now = unsafe { crate::arch::rdmsr(msr) };
        checks.verdict(
            format_args!("MSR {msr:#x} still reads the installed page"),
            now == hc.page(),
            format_args!("{:#x}", hc.page()),
            format_args!("{now:#x}"),
        );
        if !ok || now != hc.page() {
            repair_hypercall_page(hc, None);
        }
    }
}

/// Installs the hypercall page for a workload that cannot do without it;
/// a failure is printed as `testguest: WHO: cannot install the hypercall
/// page: ...` and ends the workload.
fn install_or_fail(who: &str) -> Hypercalls {
    match hypercall::install() {
        Ok(hc) => hc,
        Err(error) => {
            println!("testguest: {who}: cannot install the hypercall page: {error}");
            exit(exit_status::FAILURE)
        }
    }
}

/// The long line of `pv-console`: longer than the console_io buffer, so it
/// takes two hypercalls.
const LONG_LINE_PREFIX: &str = "testguest: pv-console: long line ";
const LONG_LINE_LEN: usize = 5000;
const _: () = assert!(LONG_LINE_LEN > console::MAX_CHUNK as usize && LONG_LINE_LEN < 2 * console::MAX_CHUNK as usize);

/// `count` digits, `0123456789` repeated.
struct Digits(usize);

impl Display for Digits {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &str = "0123456789";
        let mut left = self.0;
        while left > 0 {
            let chunk = left.min(DIGITS.len());
            out.write_str(&DIGITS[..chunk])?;
            left -= chunk;
        }
        Ok(())
    }
}

/// `pv-console`: installs the hypercall page and prints through
/// `console_io`: three lines, the second longer than one call takes.
pub fn console_workload() -> ! {
    let hc = install_or_fail("pv-console");
    crate::console::use_console_io(hc);
    println!("testguest: pv-console: hypercall page at {:#x}; lines now go through console_io, one hypercall each", hc.page());
    println!("{LONG_LINE_PREFIX}{}", Digits(LONG_LINE_LEN - LONG_LINE_PREFIX.len()));
    println!("testguest: pv-console: done");
    exit(exit_status::SUCCESS)
}

/// `pv-console-echo`: the PV console both ways, as a shell on Linux's
/// hvc0 uses it: prints a hello through `console_io`, waits up to
/// `wait_ms` for a line of input from `console_io(READ)` (polled every
/// 10 ms with `sched_op(BLOCK)`), prints it back and ends with SUCCESS.
pub fn console_echo_workload(wait_ms: u64) -> ! {
    const POLL_US: u64 = 10_000;
    let hc = install_or_fail("pv-console-echo");
    crate::console::use_console_io(hc);
    println!("SPLITPV-PVCONSOLE hello; waiting {wait_ms} ms for a line of input");
    let mut line = LineInput::new();
    let mut chunk = [0u8; 64];
    let mut waited_us = 0;
    loop {
        match hc.console_read(&mut chunk) {
            Ok(0) => {}
            Ok(count) => {
                if line.feed(&chunk[..count as usize]) {
                    break;
                }
                continue;
            }
            Err(error) => {
                println!("testguest: pv-console-echo: console_io(READ) FAILED: {}", Shown(Err(error)));
                exit(exit_status::FAILURE)
            }
        }
        if waited_us >= wait_ms.saturating_mul(1000) {
            println!(
                "testguest: pv-console-echo: FAILED: no line of input within {wait_ms} ms ({} bytes of a partial line)",
                line.line().len()
            );
            exit(exit_status::FAILURE)
        }
        let _ = hc.sched_block(POLL_US);
        waited_us += POLL_US;
    }
    println!("SPLITPV-PVCONSOLE echo: {}", Escaped(line.line()));
    exit(exit_status::SUCCESS)
}

/// `pv-poweroff`, `pv-reboot`, `pv-crash`: `sched_op(SHUTDOWN)` with
/// `reason`; returning from it is a failure.
pub fn shutdown(reason: u32) -> ! {
    let name = match reason {
        sched::REASON_POWEROFF => "poweroff",
        sched::REASON_REBOOT => "reboot",
        sched::REASON_CRASH => "crash",
        _ => "unknown",
    };
    let hc = install_or_fail("pv");
    if reason == sched::REASON_CRASH {
        println!("testguest: pv: crashing on purpose");
    } else {
        println!("testguest: pv: sched_op(SHUTDOWN, {name})");
    }
    let result = hc.sched_shutdown(reason);
    println!("testguest: pv: sched_op(SHUTDOWN, {name}) FAILED: expected the domain to end, got {}", Shown(result));
    exit(exit_status::FAILURE)
}
