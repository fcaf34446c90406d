//! Hypercall dispatch: numbers to handlers, arguments from the vCPU's
//! registers, pointers into guest memory checked on every access.
//!
//! All pointers a guest passes are guest-physical addresses. A pointer
//! outside RAM (or a structure running past its end) gives `-EFAULT`; an
//! unknown hypercall or command `-ENOSYS`; the guest keeps running either
//! way.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use pvabi::errno::{E2BIG, EFAULT, EINVAL, ENOSYS};
use pvabi::hypercall::{MulticallEntry, CONSOLE_IO, MEMORY_OP, MMUEXT_OP, MMU_UPDATE, MULTICALL, MULTICALL_MAX, SCHED_OP, VERSION};
use pvabi::{console, memory, sched, version};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::{mmu, PvDomain};
use crate::abi_bytes::Plain;
use crate::layout::is_ram;

/// What a hypercall does to the domain besides returning a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: the guest continues.
    None,
    /// `sched_op(SHUTDOWN, poweroff)`.
    Poweroff,
    /// `sched_op(SHUTDOWN, reboot)`.
    Reboot,
    /// `sched_op(SHUTDOWN, crash)`.
    Crash,
}

/// The result of one hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Goes to RAX: >= 0, or a negative errno.
    pub result: i64,
    /// What happens to the domain.
    pub effect: Effect,
}

impl Outcome {
    fn ok(result: i64) -> Outcome {
        Outcome { result, effect: Effect::None }
    }
    fn err(errno: i64) -> Outcome {
        Outcome { result: -errno, effect: Effect::None }
    }
}

/// Longest a `sched_op(BLOCK)` sleeps before returning (the guest blocks
/// again if it has nothing to do); bounds how long a stop request waits.
const BLOCK_SLICE: Duration = Duration::from_millis(50);

/// Frames taken away by the balloon.
#[derive(Default)]
pub struct Balloon {
    frames: Mutex<BTreeSet<u64>>,
}

fn read<T: Copy + Default>(pv: &PvDomain, gpa: u64) -> Result<T, i64>
where
    Plain<T>: ByteValued,
{
    pv.memory().read_obj::<Plain<T>>(GuestAddress(gpa)).map(|w| w.0).map_err(|_| EFAULT)
}

fn write<T: Copy + Default>(pv: &PvDomain, gpa: u64, val: T) -> Result<(), i64>
where
    Plain<T>: ByteValued,
{
    pv.memory().write_obj(Plain(val), GuestAddress(gpa)).map_err(|_| EFAULT)
}

fn in_ram(pv: &PvDomain, gpa: u64, len: u64) -> bool {
    len == 0 || is_ram(pv.ram(), gpa, len)
}

/// What a hypercall may do to the calling vCPU (its registers can only be
/// changed from its own thread).
pub trait VcpuControl {
    /// Flushes this vCPU's TLB (global pages included).
    fn flush_tlb(&mut self);
    /// Loads CR3 (a new address space; flushes non-global translations).
    fn set_cr3(&mut self, cr3: u64);
}

/// Everything a hypercall needs besides its number and arguments.
pub struct CallContext<'a> {
    /// The domain's PV state.
    pub pv: &'a PvDomain,
    /// The domain's balloon.
    pub balloon: &'a Balloon,
    /// The calling vCPU's index.
    pub vcpu: usize,
    /// The calling vCPU.
    pub cpu: &'a mut dyn VcpuControl,
}

/// Runs hypercall `nr` with `args` (RDI, RSI, RDX, R10, R8).
pub fn dispatch(ctx: &mut CallContext<'_>, nr: u32, args: [u64; 5]) -> Outcome {
    let out = match nr {
        VERSION => version_op(ctx, args[0], args[1]),
        CONSOLE_IO => console_io(ctx, args[0], args[1], args[2]),
        SCHED_OP => sched_op(ctx, args[0], args[1]),
        MULTICALL => multicall(ctx, args[0], args[1]),
        MEMORY_OP => memory_op(ctx, args[0], args[1]),
        MMU_UPDATE | MMUEXT_OP => paging(ctx, nr, args),
        _ => Outcome::err(ENOSYS),
    };
    ctx.pv.counters.count(nr, out.result);
    if out.result < 0 {
        tracing::debug!(vcpu = ctx.vcpu, nr, args = format_args!("{args:#x?}"), result = out.result, "hypercall failed");
    }
    out
}

fn version_op(ctx: &CallContext<'_>, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        version::VERSION => Outcome::ok(i64::from(pvabi::ABI_VERSION_MAJOR) << 16 | i64::from(pvabi::ABI_VERSION_MINOR)),
        version::EXTRAVERSION => {
            let mut s = [0u8; version::EXTRAVERSION_LEN];
            let text = concat!("-splitpv-", env!("CARGO_PKG_VERSION"));
            let n = text.len().min(s.len() - 1);
            s[..n].copy_from_slice(&text.as_bytes()[..n]);
            match ctx.pv.memory().write_slice(&s, GuestAddress(arg)) {
                Ok(()) => Outcome::ok(0),
                Err(_) => Outcome::err(EFAULT),
            }
        }
        _ => Outcome::err(ENOSYS),
    }
}

fn console_io(ctx: &CallContext<'_>, cmd: u64, count: u64, buffer: u64) -> Outcome {
    let count = count.min(console::MAX_CHUNK);
    if !in_ram(ctx.pv, buffer, count) {
        return Outcome::err(EFAULT);
    }
    match cmd {
        console::WRITE => {
            let mut bytes = vec![0u8; count as usize];
            if ctx.pv.memory().read_slice(&mut bytes, GuestAddress(buffer)).is_err() {
                return Outcome::err(EFAULT);
            }
            ctx.pv.console.write(&bytes);
            Outcome::ok(count as i64)
        }
        console::READ => {
            let bytes = ctx.pv.console.read_input(count as usize);
            match ctx.pv.memory().write_slice(&bytes, GuestAddress(buffer)) {
                Ok(()) => Outcome::ok(bytes.len() as i64),
                Err(_) => Outcome::err(EFAULT),
            }
        }
        _ => Outcome::err(ENOSYS),
    }
}

fn sched_op(ctx: &CallContext<'_>, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        sched::YIELD => {
            std::thread::yield_now();
            Outcome::ok(0)
        }
        sched::BLOCK => {
            let limit = if arg == 0 { BLOCK_SLICE } else { Duration::from_micros(arg).min(BLOCK_SLICE) };
            ctx.pv.console.wait_input(limit);
            Outcome::ok(0)
        }
        sched::SHUTDOWN => match read::<sched::Shutdown>(ctx.pv, arg) {
            Err(e) => Outcome::err(e),
            Ok(s) => match s.reason {
                sched::REASON_POWEROFF => Outcome { result: 0, effect: Effect::Poweroff },
                sched::REASON_REBOOT => Outcome { result: 0, effect: Effect::Reboot },
                sched::REASON_CRASH => Outcome { result: 0, effect: Effect::Crash },
                _ => Outcome::err(EINVAL),
            },
        },
        _ => Outcome::err(ENOSYS),
    }
}

fn multicall(ctx: &mut CallContext<'_>, entries: u64, count: u64) -> Outcome {
    if count > MULTICALL_MAX {
        return Outcome::err(E2BIG);
    }
    let size = std::mem::size_of::<MulticallEntry>() as u64;
    if !in_ram(ctx.pv, entries, count * size) {
        return Outcome::err(EFAULT);
    }
    for i in 0..count {
        let at = entries + i * size;
        let mut e = match read::<MulticallEntry>(ctx.pv, at) {
            Ok(e) => e,
            Err(errno) => return Outcome::err(errno),
        };
        let out = match u32::try_from(e.op) {
            // No nesting: it would make the work of one call unbounded.
            Ok(MULTICALL) | Err(_) => Outcome::err(EINVAL),
            Ok(op) => dispatch(ctx, op, [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]]),
        };
        e.result = out.result as u64;
        if let Err(errno) = write(ctx.pv, at, e) {
            return Outcome::err(errno);
        }
        if out.effect != Effect::None {
            return Outcome { result: 0, effect: out.effect };
        }
    }
    Outcome::ok(0)
}

fn ram_pages(ctx: &CallContext<'_>) -> u64 {
    ctx.pv.ram().iter().map(|r| r.len / 4096).sum()
}

fn memory_op(ctx: &CallContext<'_>, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        memory::MAXIMUM_RESERVATION => Outcome::ok(ram_pages(ctx) as i64),
        memory::CURRENT_RESERVATION => {
            let ballooned = ctx.balloon.frames.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
            Outcome::ok((ram_pages(ctx) - ballooned) as i64)
        }
        memory::MEMORY_MAP => {
            let mut m = match read::<memory::MemoryMap>(ctx.pv, arg) {
                Ok(m) => m,
                Err(e) => return Outcome::err(e),
            };
            let map = ctx.pv.memory_map();
            let n = (m.nr_entries as usize).min(map.len());
            let size = std::mem::size_of::<pvabi::boot::MemMapEntry>() as u64;
            if !in_ram(ctx.pv, m.buffer, n as u64 * size) {
                return Outcome::err(EFAULT);
            }
            for (i, e) in map.iter().take(n).enumerate() {
                if let Err(errno) = write(ctx.pv, m.buffer + i as u64 * size, *e) {
                    return Outcome::err(errno);
                }
            }
            m.nr_entries = n as u32;
            match write(ctx.pv, arg, m) {
                Ok(()) => Outcome::ok(0),
                Err(e) => Outcome::err(e),
            }
        }
        memory::DECREASE_RESERVATION | memory::INCREASE_RESERVATION => balloon(ctx, cmd == memory::DECREASE_RESERVATION, arg),
        _ => Outcome::err(ENOSYS),
    }
}

/// Inflates (`take`) or deflates the balloon by the frames listed in the
/// [`memory::Reservation`] at `arg`; returns how many extents were done
/// (stopping at the first bad one, as Xen does).
fn balloon(ctx: &CallContext<'_>, take: bool, arg: u64) -> Outcome {
    let r = match read::<memory::Reservation>(ctx.pv, arg) {
        Ok(r) => r,
        Err(e) => return Outcome::err(e),
    };
    if r.extent_order != 0 || r.domid != pvabi::DOMID_SELF || r.mem_flags != 0 {
        return Outcome::err(EINVAL);
    }
    if r.nr_extents > pvabi::mm::MAX_BATCH {
        return Outcome::err(E2BIG);
    }
    if !in_ram(ctx.pv, r.extent_start, r.nr_extents * 8) {
        return Outcome::err(EFAULT);
    }
    let mut frames = ctx.balloon.frames.lock().unwrap_or_else(|p| p.into_inner());
    let hypercall_frame = ctx.pv.hypercall_page().map(|a| a >> 12);
    for i in 0..r.nr_extents {
        let Ok(frame) = ctx.pv.memory().read_obj::<u64>(GuestAddress(r.extent_start + 8 * i)) else {
            return Outcome::ok(i as i64);
        };
        let gpa = frame.checked_mul(4096);
        let valid = gpa.is_some_and(|g| g >= pvabi::boot::LOAD_MIN && is_ram(ctx.pv.ram(), g, 4096)) && Some(frame) != hypercall_frame;
        if take {
            // A frame the guest still maps (or uses as a page table) cannot
            // go: the frame table refuses to make it absent.
            if !valid || frames.contains(&frame) || ctx.pv.set_frame_class(frame, pvmm::FrameClass::Absent).is_err() {
                return Outcome::ok(i as i64);
            }
            if let Err(e) = ctx.pv.discard_page(frame * 4096) {
                // Not the guest's fault: say so, and stop the batch here as
                // for any frame that cannot be taken.
                tracing::warn!("ballooning out frame {frame:#x} failed: the host could not free its memory: {e}");
                return Outcome::ok(i as i64);
            }
            frames.insert(frame);
        } else if !frames.remove(&frame) {
            return Outcome::ok(i as i64);
        } else {
            let _ = ctx.pv.set_frame_class(frame, pvmm::FrameClass::Ram);
        }
    }
    Outcome::ok(r.nr_extents as i64)
}

/// `mmu_update(requests, count, done, domain)` and
/// `mmuext_op(ops, count, done, domain)`: the batch goes to the frame
/// table; `done` (a u32, if the pointer is not 0) receives the number of
/// entries carried out before the first failure.
fn paging(ctx: &mut CallContext<'_>, nr: u32, args: [u64; 5]) -> Outcome {
    let [list, count, done_ptr, domid, _] = args;
    let Some(frames) = &ctx.pv.frames else { return Outcome::err(ENOSYS) };
    if domid != u64::from(pvabi::DOMID_SELF) {
        return Outcome::err(pvabi::errno::EPERM);
    }
    // Check where the count goes before doing anything: a batch must not
    // be applied and then reported as failed.
    if done_ptr != 0 && !in_ram(ctx.pv, done_ptr, 4) {
        return Outcome::err(EFAULT);
    }
    let (pv, vcpu) = (ctx.pv, ctx.vcpu);
    // Another vCPU holding the table may be waiting for this one to flush
    // its TLB: keep answering while waiting for the lock.
    let mut table = loop {
        match frames.try_lock() {
            Ok(t) => break t,
            Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                if let Some(g) = pv.shootdown.pending(vcpu) {
                    ctx.cpu.flush_tlb();
                    pv.shootdown.ack(vcpu, g);
                }
                std::thread::yield_now();
            }
        }
    };
    let cpu = &mut *ctx.cpu;
    let mut flush_all = || {
        cpu.flush_tlb();
        let late = pv.shootdown.flush_others(vcpu);
        if !late.is_empty() {
            tracing::error!("vCPUs {late:?} did not flush their TLBs in time");
        }
    };
    // Frames that became or stopped being tables (what the CR3 checks
    // depend on) show in these two counters.
    let retyped_before = (table.stats().tables_validated, table.stats().tables_released);
    let out = {
        let mut mem = mmu::GuestTables::new(pv.memory(), &mut flush_all);
        if nr == MMU_UPDATE { table.mmu_update_in_guest(&mut mem, list, count) } else { table.mmuext_op_in_guest(&mut mem, vcpu, list, count) }
    };
    if let Some(guard) = &pv.guard {
        // Under the lock, so that no vCPU caches a CR3 check against the
        // old generation with the new state. Ordinary entry updates change
        // no table's type and leave the vCPUs' cached checks valid.
        if (table.stats().tables_validated, table.stats().tables_released) != retyped_before {
            guard.table_changed();
        }
        if out.effects.new_base.is_some() {
            guard.enter(vcpu);
        }
    }
    drop(table);
    let e = out.effects;
    // A shadow MMU never saw our writes to the guest's tables: make it
    // re-read them before any vCPU runs on stale shadow entries.
    let changed = out.done > 0 || e.flush_all != pvmm::Flush::None || e.flush_local != pvmm::Flush::None || e.new_base.is_some();
    if let (Some(shadow), true) = (&pv.shadow, changed) {
        shadow.zap();
    }
    if e.flush_all != pvmm::Flush::None {
        flush_all();
    } else if e.flush_local != pvmm::Flush::None {
        cpu.flush_tlb();
    }
    if let Some(base) = e.new_base {
        cpu.set_cr3(base.0 << 12);
    }
    if done_ptr != 0 && pv.memory().write_obj(out.done as u32, GuestAddress(done_ptr)).is_err() {
        return Outcome::err(EFAULT);
    }
    Outcome { result: i64::from(out.errno()), effect: Effect::None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial::{ConsoleSink, ConsoleTail};
    use crate::pv::PvConsole;
    use crate::vstate::memory::GuestRam;
    use std::sync::{Arc, Mutex};

    fn domain() -> (PvDomain, ConsoleTail, Balloon, GuestRam) {
        let ram = GuestRam::new(c"pv-test", 16 << 20).unwrap();
        let tail = ConsoleTail::default();
        let console = PvConsole::new(Arc::new(Mutex::new(ConsoleSink::new(false, None, tail.clone()))));
        let map = crate::boot::freestanding::memory_map(ram.ranges());
        (PvDomain::new(ram.memory().clone(), ram.file().try_clone().unwrap(), ram.ranges().to_vec(), map, console, 1, &crate::pv::FrameLayout::freestanding()), tail, Balloon::default(), ram)
    }

    #[derive(Default)]
    struct FakeCpu {
        flushes: usize,
        cr3: Option<u64>,
    }
    impl VcpuControl for FakeCpu {
        fn flush_tlb(&mut self) {
            self.flushes += 1;
        }
        fn set_cr3(&mut self, cr3: u64) {
            self.cr3 = Some(cr3);
        }
    }

    fn call(pv: &PvDomain, b: &Balloon, nr: u32, args: [u64; 5]) -> Outcome {
        dispatch(&mut CallContext { pv, balloon: b, vcpu: 0, cpu: &mut FakeCpu::default() }, nr, args)
    }

    #[test]
    fn version_and_unknown_calls() {
        let (pv, _, b, _r) = domain();
        let v = call(&pv, &b, VERSION, [version::VERSION, 0, 0, 0, 0]);
        assert_eq!(v.result, i64::from(pvabi::ABI_VERSION_MAJOR) << 16 | i64::from(pvabi::ABI_VERSION_MINOR));
        assert_eq!(call(&pv, &b, VERSION, [version::EXTRAVERSION, 0x20_0000, 0, 0, 0]).result, 0);
        let mut s = [0u8; 16];
        pv.memory().read_slice(&mut s, GuestAddress(0x20_0000)).unwrap();
        assert!(s.starts_with(b"-splitpv-"));
        assert_eq!(call(&pv, &b, VERSION, [version::EXTRAVERSION, 0xD000_0000, 0, 0, 0]).result, -EFAULT);
        assert_eq!(call(&pv, &b, 77, [0; 5]).result, -ENOSYS);
        assert_eq!(call(&pv, &b, VERSION, [99, 0, 0, 0, 0]).result, -ENOSYS);
        let counts = pv.counters.snapshot();
        assert!(counts.contains(&("version".into(), 4)));
        assert!(counts.contains(&("unknown".into(), 1)));
        assert!(counts.contains(&("failed".into(), 3)));
    }

    #[test]
    fn console_write_and_read() {
        let (pv, tail, b, _r) = domain();
        pv.memory().write_slice(b"hello, world\n", GuestAddress(0x30_0000)).unwrap();
        assert_eq!(call(&pv, &b, CONSOLE_IO, [console::WRITE, 13, 0x30_0000, 0, 0]).result, 13);
        assert_eq!(tail.text(), "hello, world\n");
        assert_eq!(call(&pv, &b, CONSOLE_IO, [console::WRITE, 8, (16 << 20) - 4, 0, 0]).result, -EFAULT, "runs past RAM");
        assert_eq!(call(&pv, &b, CONSOLE_IO, [console::READ, 10, 0x30_0000, 0, 0]).result, 0, "no input yet");
        pv.console.push_input(b"ls\n");
        assert_eq!(call(&pv, &b, CONSOLE_IO, [console::READ, 10, 0x30_0000, 0, 0]).result, 3);
        let mut got = [0u8; 3];
        pv.memory().read_slice(&mut got, GuestAddress(0x30_0000)).unwrap();
        assert_eq!(&got, b"ls\n");
        // A huge count is cut to MAX_CHUNK.
        assert_eq!(call(&pv, &b, CONSOLE_IO, [console::WRITE, u64::MAX, 0x30_0000, 0, 0]).result, console::MAX_CHUNK as i64);
    }

    #[test]
    fn shutdown_reasons() {
        let (pv, _, b, _r) = domain();
        for (reason, effect) in [(sched::REASON_POWEROFF, Effect::Poweroff), (sched::REASON_REBOOT, Effect::Reboot), (sched::REASON_CRASH, Effect::Crash)] {
            write(&pv, 0x40_0000, sched::Shutdown { reason }).unwrap();
            assert_eq!(call(&pv, &b, SCHED_OP, [sched::SHUTDOWN, 0x40_0000, 0, 0, 0]), Outcome { result: 0, effect });
        }
        write(&pv, 0x40_0000, sched::Shutdown { reason: 9 }).unwrap();
        assert_eq!(call(&pv, &b, SCHED_OP, [sched::SHUTDOWN, 0x40_0000, 0, 0, 0]).result, -EINVAL);
        assert_eq!(call(&pv, &b, SCHED_OP, [sched::SHUTDOWN, u64::MAX - 2, 0, 0, 0]).result, -EFAULT);
        assert_eq!(call(&pv, &b, SCHED_OP, [sched::YIELD, 0, 0, 0, 0]).result, 0);
        assert_eq!(call(&pv, &b, SCHED_OP, [sched::BLOCK, 1000, 0, 0, 0]).result, 0);
    }

    #[test]
    fn multicall_runs_each_entry_and_stops_at_a_shutdown() {
        let (pv, _, b, _r) = domain();
        let base = 0x50_0000;
        write(&pv, 0x60_0000, sched::Shutdown { reason: sched::REASON_POWEROFF }).unwrap();
        let entries = [
            MulticallEntry { op: VERSION.into(), result: 0, args: [version::VERSION, 0, 0, 0, 0, 0] },
            MulticallEntry { op: 77, result: 0, args: [0; 6] },
            MulticallEntry { op: MULTICALL.into(), result: 0, args: [base, 1, 0, 0, 0, 0] },
            MulticallEntry { op: SCHED_OP.into(), result: 0, args: [sched::SHUTDOWN, 0x60_0000, 0, 0, 0, 0] },
            MulticallEntry { op: VERSION.into(), result: 7, args: [version::VERSION, 0, 0, 0, 0, 0] },
        ];
        for (i, e) in entries.iter().enumerate() {
            write(&pv, base + 64 * i as u64, *e).unwrap();
        }
        let out = call(&pv, &b, MULTICALL, [base, entries.len() as u64, 0, 0, 0]);
        assert_eq!(out.effect, Effect::Poweroff);
        let result = |i: u64| read::<MulticallEntry>(&pv, base + 64 * i).unwrap().result as i64;
        assert_eq!(result(0), i64::from(pvabi::ABI_VERSION_MAJOR) << 16 | i64::from(pvabi::ABI_VERSION_MINOR));
        assert_eq!(result(1), -ENOSYS);
        assert_eq!(result(2), -EINVAL, "no nested multicalls");
        assert_eq!(result(4), 7, "entries after the shutdown do not run");
        assert_eq!(call(&pv, &b, MULTICALL, [base, MULTICALL_MAX + 1, 0, 0, 0]).result, -E2BIG);
        assert_eq!(call(&pv, &b, MULTICALL, [(16 << 20) - 64, 2, 0, 0, 0]).result, -EFAULT);
    }

    #[test]
    fn memory_map_and_balloon() {
        let (pv, _, b, _r) = domain();
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::MAXIMUM_RESERVATION, 0, 0, 0, 0]).result, 4096);
        write(&pv, 0x70_0000, memory::MemoryMap { nr_entries: 8, pad: 0, buffer: 0x70_1000 }).unwrap();
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::MEMORY_MAP, 0x70_0000, 0, 0, 0]).result, 0);
        let m: memory::MemoryMap = read(&pv, 0x70_0000).unwrap();
        assert_eq!(m.nr_entries as usize, pv.memory_map().len());
        let e: pvabi::boot::MemMapEntry = read(&pv, 0x70_1000 + 24).unwrap();
        assert_eq!(e, pv.memory_map()[1]);

        // Balloon out two frames; the second list entry is the boot area
        // and stops the batch after one.
        pv.memory().write_obj(0xabu8, GuestAddress(0x80_0000)).unwrap();
        pv.memory().write_obj(0x800u64, GuestAddress(0x71_0000)).unwrap();
        pv.memory().write_obj(0x1u64, GuestAddress(0x71_0008)).unwrap();
        let res = memory::Reservation { extent_start: 0x71_0000, nr_extents: 2, extent_order: 0, mem_flags: 0, domid: pvabi::DOMID_SELF, pad: 0 };
        write(&pv, 0x72_0000, res).unwrap();
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::DECREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, 1);
        assert_eq!(pv.memory().read_obj::<u8>(GuestAddress(0x80_0000)).unwrap(), 0, "the frame's contents are gone");
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::CURRENT_RESERVATION, 0, 0, 0, 0]).result, 4095);
        // Taking the same frame twice stops at once.
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::DECREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, 0);
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::INCREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, 1);
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::CURRENT_RESERVATION, 0, 0, 0, 0]).result, 4096);
        write(&pv, 0x72_0000, memory::Reservation { extent_order: 1, ..res }).unwrap();
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::DECREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, -EINVAL);
        write(&pv, 0x72_0000, memory::Reservation { nr_extents: 1 << 20, ..res }).unwrap();
        assert_eq!(call(&pv, &b, MEMORY_OP, [memory::DECREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, -E2BIG);
    }

    #[test]
    fn direct_paging_pins_switches_and_refuses_writable_tables() {
        use pvabi::mm::{MmuUpdate, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE};
        let (pv, _, b, _r) = domain();
        let (l4, l3, l2, l1, data) = (0x40_0000u64, 0x40_1000u64, 0x40_2000u64, 0x40_3000u64, 0x50_0000u64);
        let (p, rw) = (1u64, 2u64);
        for (table, entry) in [(l4, l3 | p | rw), (l3, l2 | p | rw), (l2, l1 | p | rw), (l1, data | p | rw)] {
            pv.memory().write_obj(entry, GuestAddress(table)).unwrap();
        }
        let ops = 0x60_0000u64;
        let done = 0x61_0000u64;
        let op = |at: u64, cmd, arg1| pv.memory().write_slice(&[cmd as u64, arg1, 0].map(u64::to_le_bytes).concat(), GuestAddress(at)).unwrap();
        op(ops, MMUEXT_PIN_L4_TABLE, l4 >> 12);
        op(ops + 24, MMUEXT_NEW_BASEPTR, l4 >> 12);
        op(ops + 48, MMUEXT_TLB_FLUSH_LOCAL, 0);
        let mut cpu = FakeCpu::default();
        let mut ctx = CallContext { pv: &pv, balloon: &b, vcpu: 0, cpu: &mut cpu };
        let dom = u64::from(pvabi::DOMID_SELF);
        assert_eq!(dispatch(&mut ctx, MMUEXT_OP, [ops, 3, done, dom, 0]).result, 0);
        assert_eq!(pv.memory().read_obj::<u32>(GuestAddress(done)).unwrap(), 3);
        assert_eq!(cpu.cr3, Some(l4), "the new base pointer is loaded");
        assert!(cpu.flushes >= 1);

        // Mapping the L4 itself writable through the L1 is refused, and
        // the batch reports how far it got.
        let reqs = 0x62_0000u64;
        let upd = |i: u64, ptr: u64, val: u64| pv.memory().write_slice(&[ptr, val].map(u64::to_le_bytes).concat(), GuestAddress(reqs + 16 * i)).unwrap();
        upd(0, l1 + 8, 0x50_1000 | p | rw);
        upd(1, l1 + 16, l4 | p | rw);
        let mut cpu = FakeCpu::default();
        let mut ctx = CallContext { pv: &pv, balloon: &b, vcpu: 0, cpu: &mut cpu };
        let out = dispatch(&mut ctx, MMU_UPDATE, [reqs, 2, done, dom, 0]);
        assert!(out.result < 0, "a writable mapping of a page table must fail: {out:?}");
        assert_eq!(pv.memory().read_obj::<u32>(GuestAddress(done)).unwrap(), 1);
        assert_eq!(pv.memory().read_obj::<u64>(GuestAddress(l1 + 8)).unwrap(), 0x50_1000 | p | rw, "the first update was applied");
        assert_eq!(pv.memory().read_obj::<u64>(GuestAddress(l1 + 16)).unwrap(), 0, "the refused one was not");
        assert_eq!(dispatch(&mut ctx, MMU_UPDATE, [reqs, 1, 0, 5, 0]).result, -pvabi::errno::EPERM, "another domain");
        let stats = pv.paging_stats();
        assert!(stats.iter().any(|(n, v)| n.starts_with("rejected_") && *v == 1), "{stats:?}");
        assert!(stats.contains(&("updates_applied".to_string(), 1)), "{stats:?}");

        // The mapped data frame cannot be ballooned out; unpinning a table
        // that is still the base pointer keeps it alive.
        op(ops, MMUEXT_UNPIN_TABLE, l4 >> 12);
        assert_eq!(dispatch(&mut ctx, MMUEXT_OP, [ops, 1, 0, dom, 0]).result, 0);
        pv.memory().write_obj(data >> 12, GuestAddress(0x71_0000)).unwrap();
        let res = memory::Reservation { extent_start: 0x71_0000, nr_extents: 1, extent_order: 0, mem_flags: 0, domid: pvabi::DOMID_SELF, pad: 0 };
        write(&pv, 0x72_0000, res).unwrap();
        assert_eq!(dispatch(&mut ctx, MEMORY_OP, [memory::DECREASE_RESERVATION, 0x72_0000, 0, 0, 0]).result, 0, "a mapped frame stays");
        let _ = (MmuUpdate::default(), MmuextOp::default());
    }

    #[test]
    fn the_hypercall_page_holds_one_stub_per_number() {
        let (pv, _, _b, _r) = domain();
        assert!(pv.install_hypercall_page(0x1234).is_err(), "misaligned");
        assert!(pv.install_hypercall_page(0xD000_0000).is_err(), "not RAM");
        pv.install_hypercall_page(0x90_0000).unwrap();
        let mut stub = [0u8; 32];
        pv.memory().read_slice(&mut stub, GuestAddress(0x90_0000 + 32 * u64::from(SCHED_OP))).unwrap();
        assert_eq!(stub, pvabi::hypercall::stub(SCHED_OP));
        assert_eq!(pv.hypercall_page(), Some(0x90_0000));
    }
}

#[cfg(test)]
mod errno_tests {
    /// The validator's errnos are the ABI's: a guest reads them from RAX.
    #[test]
    fn validator_errnos_are_abi_errnos() {
        use pvabi::errno as abi;
        use pvmm::errno as mm;
        for (m, a) in [
            (mm::EINVAL, abi::EINVAL),
            (mm::EPERM, abi::EPERM),
            (mm::EBUSY, abi::EBUSY),
            (mm::ENOSYS, abi::ENOSYS),
            (mm::E2BIG, abi::E2BIG),
            (mm::EFAULT, abi::EFAULT),
            (mm::EOVERFLOW, abi::EOVERFLOW),
            (mm::ENOMEM, abi::ENOMEM),
        ] {
            assert_eq!(i64::from(m), a);
        }
    }
}
