//! One vCPU: its setup, its thread's exit loop, and how it is stopped.
//!
//! Exits are expensive (≈74 µs to userspace on kvm_pvm, 1-2 µs on VT-x), so
//! the loop does as little as possible per exit and everything that can stay
//! in the kernel (ioeventfd, irqfd, in-kernel irqchip) is meant to.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_run, CpuId, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd, VmFd};
use pvabi::hypercall::{HYPERCALL_PORT, MSR_HYPERCALL_PAGE};
use thiserror::Error;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::regs::RegisterDump;
use crate::boot::{self, EntryState};
use crate::devices::{Bus, BusRequest};
use crate::pv::hypercall::{self, Balloon, CallContext, Effect, VcpuControl};
use crate::pv::guard::{ViolationPolicy, VcpuGuard};
use crate::pv::PvDomain;

/// A vCPU could not be created or set up.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("creating vCPU {index} failed: {source}")]
    Create {
        /// vCPU index.
        index: u32,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// A register or CPUID ioctl failed.
    #[error("setting up vCPU {index} failed in {what}: {source}")]
    Setup {
        /// vCPU index.
        index: u32,
        /// Which step.
        what: &'static str,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("installing the vCPU kick signal handler failed: {0}")]
    SignalHandler(vmm_sys_util::errno::Error),
}

/// Why a domain crashed, as seen by one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    TripleFault,
    /// KVM_EXIT_FAIL_ENTRY: the CPU refused to enter the guest.
    FailEntry {
        /// Hardware failure reason.
        hardware_reason: u64,
        /// Host CPU.
        cpu: u32,
    },
    /// KVM_EXIT_INTERNAL_ERROR, e.g. an instruction KVM could not emulate.
    InternalError {
        /// KVM_INTERNAL_ERROR_* suberror.
        suberror: u32,
        /// Extra data words.
        data: Vec<u64>,
    },
    /// An access to guest-physical memory where there is neither RAM nor a
    /// device.
    UnbackedMmio {
        /// Address.
        gpa: u64,
        /// Access size.
        len: usize,
        /// Write (else read).
        write: bool,
    },
    /// KVM_RUN itself failed.
    RunFailed(String),
    /// A direct-paging domain ran on page tables the validator never saw
    /// (`--paging-violation kill`); the text says how.
    PagingViolation(String),
    /// An exit the hypervisor does not handle.
    UnexpectedExit(String),
}

fn internal_suberror_name(s: u32) -> &'static str {
    match s {
        1 => "the instruction could not be emulated",
        2 => "a simultaneous exception occurred during event delivery",
        3 => "event delivery failed",
        4 => "an unexpected VM exit occurred during event delivery",
        _ => "an unknown internal error occurred",
    }
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashKind::TripleFault => write!(f, "the guest triple-faulted (an exception could not be delivered; KVM_EXIT_SHUTDOWN)"),
            CrashKind::FailEntry { hardware_reason, cpu } => {
                write!(f, "the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {hardware_reason:#x} on host CPU {cpu})")
            }
            CrashKind::InternalError { suberror, data } => write!(
                f,
                "KVM reported an internal error: {} (suberror {suberror}, data {data:x?})",
                internal_suberror_name(*suberror)
            ),
            CrashKind::UnbackedMmio { gpa, len, write } => write!(
                f,
                "the guest {} {len} byte(s) at guest-physical address {gpa:#x}, where there is neither RAM nor a device",
                if *write { "wrote" } else { "read" }
            ),
            CrashKind::RunFailed(e) => write!(f, "KVM_RUN failed: {e}"),
            CrashKind::PagingViolation(v) => f.write_str(v),
            CrashKind::UnexpectedExit(e) => write!(f, "the vCPU stopped with an exit the hypervisor does not handle: {e}"),
        }
    }
}

/// A crash with the vCPU that saw it and its registers.
#[derive(Clone, Debug)]
pub struct Crash {
    /// vCPU index.
    pub vcpu: u32,
    /// What happened.
    pub kind: CrashKind,
    /// Registers at the time, if they could be read.
    /// (Boxed: a register dump is large, and crashes travel in enums that
    /// are otherwise small.)
    pub registers: Option<Box<RegisterDump>>,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}: {}", self.vcpu, self.kind)?;
        match &self.registers {
            Some(r) => write!(f, "\nregisters of vCPU {}:\n{r}", self.vcpu),
            None => write!(f, "\n(the registers could not be read)"),
        }
    }
}

/// How a vCPU's loop ended.
#[derive(Clone, Debug)]
pub enum VcpuEnd {
    /// The guest wrote its exit status to the debug-exit port.
    GuestExit(u32),
    /// The guest asked for power off (ACPI sleep control, or a KVM system
    /// event).
    Poweroff,
    /// The guest asked for a reset (ACPI reset register, i8042, or a KVM
    /// system event).
    Reset,
    /// The vCPU executed HLT and nothing can wake it (no in-kernel
    /// interrupt controller): it is parked.
    Halted,
    /// The domain crashed.
    Crashed(Crash),
    /// The guest reported a crash through `sched_op(SHUTDOWN, crash)`.
    GuestReportedCrash,
    /// The vCPU was asked to stop.
    Stopped,
}

/// Counters of exits handled in this process (KVM's own counters are in
/// its binary stats).
#[derive(Debug, Default)]
pub struct VcpuCounters {
    /// Port I/O exits.
    pub pio_exits: AtomicU64,
    /// MMIO exits.
    pub mmio_exits: AtomicU64,
    /// Port accesses no device claimed (reads return all ones).
    pub unclaimed_pio: AtomicU64,
    /// KVM_RUN returns caused by a kick or a signal.
    pub interrupted_runs: AtomicU64,
    /// Hypercalls made by this vCPU.
    pub hypercalls: AtomicU64,
    /// MSR accesses trapped to this process.
    pub msr_exits: AtomicU64,
}

impl VcpuCounters {
    /// Name/value pairs, for reports.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("pio_exits", self.pio_exits.load(Ordering::Relaxed)),
            ("mmio_exits", self.mmio_exits.load(Ordering::Relaxed)),
            ("unclaimed_pio", self.unclaimed_pio.load(Ordering::Relaxed)),
            ("interrupted_runs", self.interrupted_runs.load(Ordering::Relaxed)),
            ("hypercalls", self.hypercalls.load(Ordering::Relaxed)),
            ("msr_exits", self.msr_exits.load(Ordering::Relaxed)),
        ]
    }
}

/// What a vCPU thread shares with the rest of the domain.
#[derive(Clone)]
pub struct VcpuShared {
    /// The domain's PV state (hypercalls).
    pub pv: Arc<PvDomain>,
    /// The domain's balloon.
    pub balloon: Arc<Balloon>,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set when the domain is ending.
    pub stop: Arc<AtomicBool>,
    /// Pauses and resumes the vCPUs.
    pub pause: Arc<PauseGate>,
}

/// How often a paused vCPU wakes to serve TLB shootdowns of vCPUs that are
/// not paused yet.
const PAUSED_POLL: Duration = Duration::from_millis(20);

/// Pausing and resuming a domain's vCPUs: a paused vCPU thread does not
/// enter KVM_RUN; it waits on a condition variable until the domain is
/// resumed or ends. Pausing kicks every vCPU out of KVM_RUN (the kick
/// signal sets `immediate_exit`) and waits until each running vCPU is
/// parked.
#[derive(Default)]
pub struct PauseGate {
    requested: AtomicBool,
    state: Mutex<PauseState>,
    changed: Condvar,
    /// vCPU loops that run (between the start and the end of
    /// [`Vcpu::run`]).
    running: AtomicUsize,
    /// Kernel thread IDs of the vCPU threads, for kicks and CPU time (0
    /// until the thread starts).
    tids: Mutex<Vec<Arc<AtomicI32>>>,
    /// Each vCPU's CR3 as it parked ([`NO_CR3`] until it first does), for
    /// audits of a paused domain.
    cr3s: Vec<AtomicU64>,
}

/// The CR3 of a vCPU that never parked.
pub const NO_CR3: u64 = u64::MAX;

#[derive(Default)]
struct PauseState {
    paused: bool,
    parked: usize,
    released: bool,
}

impl PauseGate {
    /// A gate for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> PauseGate {
        PauseGate {
            tids: Mutex::new((0..vcpus).map(|_| Arc::new(AtomicI32::new(0))).collect()),
            cr3s: (0..vcpus).map(|_| AtomicU64::new(NO_CR3)).collect(),
            ..PauseGate::default()
        }
    }

    /// The CR3 vCPU `index` had when it last parked ([`NO_CR3`] if it
    /// never did).
    pub fn parked_cr3(&self, index: usize) -> u64 {
        self.cr3s.get(index).map_or(NO_CR3, |c| c.load(Ordering::Acquire))
    }

    fn publish_cr3(&self, index: usize, cr3: u64) {
        if let Some(c) = self.cr3s.get(index) {
            c.store(cr3, Ordering::Release);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the vCPUs are asked to stay paused.
    pub fn is_paused(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The kernel thread IDs of the vCPU threads that have started.
    pub fn thread_ids(&self) -> Vec<i32> {
        self.tids.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|t| t.load(Ordering::Acquire)).filter(|&t| t > 0).collect()
    }

    fn set_tid(&self, index: usize) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if let Some(t) = self.tids.lock().unwrap_or_else(|p| p.into_inner()).get(index) {
            t.store(tid, Ordering::Release);
        }
    }

    /// Kicks every vCPU thread out of KVM_RUN.
    pub fn kick_all(&self) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        for tid in self.thread_ids() {
            // SAFETY: tgkill only sends a signal. A vCPU thread that has
            // exited makes it fail with ESRCH; a thread ID reused by another
            // thread of this process gets the kick signal, whose handler
            // does nothing on a thread that runs no vCPU.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, kick_signal()) };
        }
    }

    /// Pauses the vCPUs and waits up to `patience` until every running vCPU
    /// is parked; returns whether they all are.
    pub fn pause(&self, patience: Duration) -> bool {
        {
            let mut s = self.state();
            s.paused = true;
            self.requested.store(true, Ordering::Release);
        }
        let deadline = Instant::now() + patience;
        let mut s = self.state();
        loop {
            if s.parked >= self.running.load(Ordering::Acquire) || s.released {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            drop(s);
            // A vCPU between its pause check and KVM_RUN gets
            // `immediate_exit` set and comes straight back; kick again in
            // case a thread was not in the run loop yet.
            self.kick_all();
            s = self.state();
            s = self.changed.wait_timeout(s, (deadline - now).min(Duration::from_millis(10))).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let mut s = self.state();
        s.paused = false;
        self.requested.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// The domain ends: no vCPU may stay parked.
    pub fn release(&self) {
        let mut s = self.state();
        s.released = true;
        s.paused = false;
        self.requested.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// Called by a vCPU thread that saw [`PauseGate::is_paused`]: waits
    /// until the domain is resumed or released, calling `meanwhile` every
    /// [`PAUSED_POLL`].
    fn park(&self, mut meanwhile: impl FnMut()) {
        let mut s = self.state();
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !s.released {
            s = self.changed.wait_timeout(s, PAUSED_POLL).unwrap_or_else(|p| p.into_inner()).0;
            drop(s);
            meanwhile();
            s = self.state();
        }
        s.parked -= 1;
    }
}

/// The calling vCPU's registers, for hypercalls that change them. KVM has
/// no ioctl to flush a vCPU's TLB; loading control registers that differ
/// from the current ones resets its MMU context, which flushes it, so the
/// flush writes CR4 with PGE toggled and then the original value.
struct FdControl<'a>(&'a VcpuFd);

impl VcpuControl for FdControl<'_> {
    fn flush_tlb(&mut self) {
        const CR4_PGE: u64 = 1 << 7;
        let Ok(mut s) = self.0.get_sregs() else { return };
        let original = s.cr4;
        s.cr4 ^= CR4_PGE;
        let _ = self.0.set_sregs(&s);
        s.cr4 = original;
        let _ = self.0.set_sregs(&s);
    }

    fn set_cr3(&mut self, cr3: u64) {
        if let Ok(mut s) = self.0.get_sregs() {
            s.cr3 = cr3;
            let _ = self.0.set_sregs(&s);
        }
    }
}

/// One vCPU of a domain.
pub struct Vcpu {
    index: u32,
    fd: VcpuFd,
    counters: Arc<VcpuCounters>,
    /// The CR3 / CR0.WP check state (direct-paging domains).
    guard: VcpuGuard,
}

thread_local! {
    /// The `immediate_exit` byte of the kvm_run of the vCPU this thread
    /// runs, for the kick signal handler. Const-initialised, so reading it
    /// in a signal handler allocates nothing.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is set by this thread to the kvm_run of
            // the vCPU it owns, and cleared before that vCPU is dropped;
            // a volatile byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    });
}

/// CPU time (user and system) a thread of this process has used, by its
/// kernel thread ID; `None` if the thread has exited.
pub fn thread_cpu_time_ns(tid: i32) -> Option<u64> {
    // The clock ID the kernel derives from a thread ID (what
    // pthread_getcpuclockid returns): CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD.
    let clock = ((!tid) << 3) | 6;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is; an unknown
    // or stale clock ID makes it fail with EINVAL.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::SignalHandler));
    result
}

impl Vcpu {
    /// Creates vCPU `index` of `vm`.
    pub fn new(vm: &VmFd, index: u32) -> Result<Vcpu, VcpuError> {
        let mut fd = vm.create_vcpu(u64::from(index)).map_err(|source| VcpuError::Create { index, source })?;
        // Hypercall arguments are read, and results written, through the
        // registers KVM mirrors into kvm_run at every exit (no extra ioctls).
        fd.set_sync_valid_reg(SyncReg::Register);
        Ok(Vcpu { index, fd, counters: Arc::new(VcpuCounters::default()), guard: VcpuGuard::default() })
    }

    /// Has KVM mirror CR0, CR3 and CR4 (all of kvm_sregs) into kvm_run at
    /// every exit, for the direct-paging checks. KVM only copies them out
    /// (`kvm_valid_regs`); they go back in only when marked dirty, which
    /// this process never does, so the KVM_SET_SREGS of a base-pointer
    /// switch or a TLB flush stays in force and the mirror shows it from
    /// the next exit on.
    pub fn sync_sregs(&mut self) {
        self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
    }

    /// Its CR3, read with KVM_GET_SREGS (call when it does not run).
    pub fn cr3(&self) -> Option<u64> {
        self.fd.get_sregs().ok().map(|s| s.cr3)
    }

    /// This vCPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The vCPU file descriptor (for its statistics).
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Exit counters kept by this process.
    pub fn counters(&self) -> Arc<VcpuCounters> {
        self.counters.clone()
    }

    fn setup_err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
        let index = self.index;
        move |source| VcpuError::Setup { index, what, source }
    }

    /// Sets CPUID and, if this vCPU starts at `entry` (every vCPU in the
    /// freestanding protocol, the boot vCPU for Linux), its segment state,
    /// registers and FPU. Other vCPUs stay in the reset state and wait for
    /// the boot vCPU's INIT/SIPI. With an in-kernel local APIC, LINT0 is
    /// wired as ExtINT and LINT1 as NMI, as firmware does on a PC.
    pub fn configure(&self, cpuid: &CpuId, entry: &EntryState, irqchip: bool) -> Result<(), VcpuError> {
        self.fd.set_cpuid2(cpuid).map_err(self.setup_err("KVM_SET_CPUID2"))?;
        if irqchip {
            self.set_lint()?;
        }
        if !entry.all_vcpus && self.index != 0 {
            return Ok(());
        }
        let mut sregs = self.fd.get_sregs().map_err(self.setup_err("KVM_GET_SREGS"))?;
        boot::set_entry_mode(&mut sregs, entry, pvabi::boot::BOOT_GDT, pvabi::boot::BOOT_TSS);
        self.fd.set_sregs(&sregs).map_err(self.setup_err("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: entry.rip,
            rdi: entry.rdi,
            rsi: if entry.all_vcpus { u64::from(self.index) } else { entry.rsi },
            rbx: entry.rbx,
            rflags: 0x2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(self.setup_err("KVM_SET_REGS"))?;
        // The x87 and SSE state after FNINIT / reset.
        let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
        self.fd.set_fpu(&fpu).map_err(self.setup_err("KVM_SET_FPU"))?;
        Ok(())
    }

    fn set_lint(&self) -> Result<(), VcpuError> {
        const APIC_LVT0: usize = 0x350;
        const APIC_LVT1: usize = 0x360;
        const DELIVERY_MODE_MASK: u32 = 0x700;
        const EXTINT: u32 = 0x700;
        const NMI: u32 = 0x400;
        let mut lapic = self.fd.get_lapic().map_err(self.setup_err("KVM_GET_LAPIC"))?;
        for (reg, mode) in [(APIC_LVT0, EXTINT), (APIC_LVT1, NMI)] {
            let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
            let v = (u32::from_le_bytes(bytes) & !DELIVERY_MODE_MASK) | mode;
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                lapic.regs[reg + i] = *b as libc::c_char;
            }
        }
        self.fd.set_lapic(&lapic).map_err(self.setup_err("KVM_SET_LAPIC"))
    }

    fn registers(&self) -> Option<Box<RegisterDump>> {
        Some(Box::new(RegisterDump { regs: self.fd.get_regs().ok()?, sregs: self.fd.get_sregs().ok()? }))
    }

    fn crash(&self, kind: CrashKind) -> VcpuEnd {
        VcpuEnd::Crashed(Crash { vcpu: self.index, kind, registers: self.registers() })
    }

    /// Runs the guest until its loop ends. Call on the vCPU's own thread
    /// after [`install_kick_handler`].
    pub fn run(&mut self, shared: &VcpuShared) -> VcpuEnd {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        // SAFETY: `run` points at this vCPU's mmapped kvm_run, valid while
        // `self.fd` lives; we take the address of one field without
        // creating a reference.
        let immediate_exit = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
        IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
        shared.pause.set_tid(self.index as usize);
        {
            let _s = shared.pause.state();
            shared.pause.running.fetch_add(1, Ordering::AcqRel);
        }
        let end = self.run_loop(shared);
        {
            // Under the lock, so a pauser waiting for this vCPU sees it go.
            let _s = shared.pause.state();
            shared.pause.running.fetch_sub(1, Ordering::AcqRel);
            shared.pause.changed.notify_all();
        }
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        // It runs no guest code any more: TLB flushes need not wait for it.
        shared.pv.shootdown.retire(self.index as usize);
        end
    }

    fn run_loop(&mut self, shared: &VcpuShared) -> VcpuEnd {
        enum Next {
            Continue,
            Io,
            InternalError,
            End(VcpuEnd),
        }
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return VcpuEnd::Stopped;
            }
            // Another vCPU changed a page table's type and asked every vCPU
            // to drop stale translations before running guest code again.
            if let Some(g) = shared.pv.shootdown.pending(self.index as usize) {
                FdControl(&self.fd).flush_tlb();
                shared.pv.shootdown.ack(self.index as usize, g);
            }
            if shared.pause.is_paused() {
                // For audits: the CR3 it stops on (set by the guest or by a
                // base-pointer switch; the synced copy may predate the
                // latter).
                if let Ok(s) = self.fd.get_sregs() {
                    shared.pause.publish_cr3(self.index as usize, s.cr3);
                }
                // A paused vCPU runs no guest code, but still flushes its
                // TLB when a vCPU that is not paused yet asks.
                shared.pause.park(|| {
                    if let Some(g) = shared.pv.shootdown.pending(self.index as usize) {
                        FdControl(&self.fd).flush_tlb();
                        shared.pv.shootdown.ack(self.index as usize, g);
                    }
                });
                continue;
            }
            let next = match self.fd.run() {
                Ok(VcpuExit::IoIn(..)) | Ok(VcpuExit::IoOut(..)) => Next::Io,
                Ok(VcpuExit::MmioRead(gpa, data)) => {
                    self.counters.mmio_exits.fetch_add(1, Ordering::Relaxed);
                    if shared.mmio.read(gpa, data) {
                        Next::Continue
                    } else {
                        Next::End(VcpuEnd::Crashed(Crash {
                            vcpu: self.index,
                            kind: CrashKind::UnbackedMmio { gpa, len: data.len(), write: false },
                            registers: None,
                        }))
                    }
                }
                Ok(VcpuExit::MmioWrite(gpa, data)) => {
                    self.counters.mmio_exits.fetch_add(1, Ordering::Relaxed);
                    match shared.mmio.write(gpa, data) {
                        Some(BusRequest::None) => Next::Continue,
                        Some(BusRequest::GuestExit(s)) => Next::End(VcpuEnd::GuestExit(s)),
                        Some(BusRequest::Poweroff) => Next::End(VcpuEnd::Poweroff),
                        Some(BusRequest::Reset) => Next::End(VcpuEnd::Reset),
                        None => Next::End(VcpuEnd::Crashed(Crash {
                            vcpu: self.index,
                            kind: CrashKind::UnbackedMmio { gpa, len: data.len(), write: true },
                            registers: None,
                        })),
                    }
                }
                Ok(VcpuExit::Hlt) => Next::End(VcpuEnd::Halted),
                Ok(VcpuExit::Shutdown) => Next::End(VcpuEnd::Crashed(Crash { vcpu: self.index, kind: CrashKind::TripleFault, registers: None })),
                Ok(VcpuExit::FailEntry(hardware_reason, cpu)) => Next::End(VcpuEnd::Crashed(Crash {
                    vcpu: self.index,
                    kind: CrashKind::FailEntry { hardware_reason, cpu },
                    registers: None,
                })),
                Ok(VcpuExit::InternalError) => Next::InternalError,
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => Next::End(VcpuEnd::Poweroff),
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_RESET => Next::End(VcpuEnd::Reset),
                Ok(VcpuExit::X86Wrmsr(exit)) => {
                    self.counters.msr_exits.fetch_add(1, Ordering::Relaxed);
                    let ok = exit.index == MSR_HYPERCALL_PAGE && shared.pv.install_hypercall_page(exit.data).is_ok();
                    // A refused write raises #GP in the guest, as a bad
                    // value written to a real MSR does.
                    *exit.error = u8::from(!ok);
                    Next::Continue
                }
                Ok(VcpuExit::X86Rdmsr(exit)) => {
                    self.counters.msr_exits.fetch_add(1, Ordering::Relaxed);
                    if exit.index == MSR_HYPERCALL_PAGE {
                        *exit.data = shared.pv.hypercall_page().unwrap_or(0);
                        *exit.error = 0;
                    } else {
                        *exit.error = 1;
                    }
                    Next::Continue
                }
                Ok(VcpuExit::Intr) => {
                    self.counters.interrupted_runs.fetch_add(1, Ordering::Relaxed);
                    Next::Continue
                }
                Ok(other) => Next::End(VcpuEnd::Crashed(Crash {
                    vcpu: self.index,
                    kind: CrashKind::UnexpectedExit(format!("{other:?}")),
                    registers: None,
                })),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.counters.interrupted_runs.fetch_add(1, Ordering::Relaxed);
                    self.fd.set_kvm_immediate_exit(0);
                    Next::Continue
                }
                Err(e) => Next::End(VcpuEnd::Crashed(Crash { vcpu: self.index, kind: CrashKind::RunFailed(e.to_string()), registers: None })),
            };
            // The state at this exit, before handling it can change the
            // frame table or the registers.
            if let Some(end) = self.check_paging(shared) {
                return end;
            }
            match next {
                Next::Continue => {}
                Next::Io => {
                    if let Some(end) = self.handle_io(shared) {
                        return end;
                    }
                }
                Next::InternalError => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so
                    // `internal` is the active member of the exit union.
                    let internal = unsafe { run.__bindgen_anon_1.internal };
                    let n = (internal.ndata as usize).min(internal.data.len());
                    let kind = CrashKind::InternalError { suberror: internal.suberror, data: internal.data[..n].to_vec() };
                    return self.crash(kind);
                }
                // Read the registers now, on the vCPU's thread, before
                // anything else can change them.
                Next::End(VcpuEnd::Crashed(c)) => return self.crash(c.kind),
                Next::End(end) => return end,
            }
        }
    }

    /// The direct-paging checks of one exit (see `crate::pv::guard`), on
    /// the registers KVM synced: a violation is counted, the first of its
    /// kind reported, and with the kill policy the domain ends.
    fn check_paging(&mut self, shared: &VcpuShared) -> Option<VcpuEnd> {
        let guard = shared.pv.guard.as_ref()?;
        let index = self.index as usize;
        if !guard.entered(index) {
            return None;
        }
        let sync = self.fd.sync_regs();
        let (cr0, cr3, rip) = (sync.sregs.cr0, sync.sregs.cr3, sync.regs.rip);
        let frames = shared.pv.frames.as_ref()?;
        let (fd, vcpu_guard) = (&self.fd, &mut self.guard);
        let lookup = |gfn| {
            // Another vCPU holding the table may be waiting for this one
            // to flush its TLB: keep answering while waiting for the lock,
            // as the paging hypercalls do.
            loop {
                match frames.try_lock() {
                    Ok(t) => break t.frame(gfn),
                    Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner().frame(gfn),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        if let Some(g) = shared.pv.shootdown.pending(index) {
                            FdControl(fd).flush_tlb();
                            shared.pv.shootdown.ack(index, g);
                        }
                        std::thread::yield_now();
                    }
                }
            }
        };
        let out = vcpu_guard.check(guard, index, cr0, cr3, rip, lookup);
        for v in &out.first_of_kind {
            eprintln!("hypervisor: {v}");
        }
        match (guard.policy(), out.new.first()) {
            (ViolationPolicy::Kill, Some(v)) => Some(self.crash(CrashKind::PagingViolation(v.to_string()))),
            _ => None,
        }
    }

    /// Runs hypercall `nr` with the arguments in the synced registers and
    /// puts its result in RAX.
    fn hypercall(&mut self, shared: &VcpuShared, nr: u32) -> Option<VcpuEnd> {
        self.counters.hypercalls.fetch_add(1, Ordering::Relaxed);
        let r = self.fd.sync_regs().regs;
        let mut cpu = FdControl(&self.fd);
        let mut ctx = CallContext { pv: &shared.pv, balloon: &shared.balloon, vcpu: self.index as usize, cpu: &mut cpu };
        let out = hypercall::dispatch(&mut ctx, nr, [r.rdi, r.rsi, r.rdx, r.r10, r.r8]);
        self.fd.sync_regs_mut().regs.rax = out.result as u64;
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        match out.effect {
            Effect::None => None,
            Effect::Poweroff => Some(VcpuEnd::Poweroff),
            Effect::Reboot => Some(VcpuEnd::Reset),
            Effect::Crash => Some(VcpuEnd::GuestReportedCrash),
        }
    }

    /// Serves a KVM_EXIT_IO, one `size`-byte access per repetition (string
    /// I/O comes as several).
    fn handle_io(&mut self, shared: &VcpuShared) -> Option<VcpuEnd> {
        self.counters.pio_exits.fetch_add(1, Ordering::Relaxed);
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_IO, so `io` is the active
        // member of the exit union.
        let io = unsafe { run.__bindgen_anon_1.io };
        if io.port == u16::from(HYPERCALL_PORT) && u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_OUT && io.size == 4 && io.count == 1 {
            // SAFETY: as below: KVM put the 4 bytes written at data_offset
            // inside this vCPU's kvm_run mapping.
            let nr = unsafe { std::ptr::read_unaligned((run as *mut kvm_run as *const u8).add(io.data_offset as usize).cast::<u32>()) };
            return self.hypercall(shared, nr);
        }
        let size = usize::from(io.size);
        let len = size * io.count as usize;
        // SAFETY: KVM places the I/O data at `data_offset` inside the
        // vCPU's kvm_run mapping (KVM_PIO_PAGE_OFFSET), `size * count`
        // bytes long; the mapping lives as long as `self.fd`, and no other
        // reference to those bytes exists during this call.
        let data = unsafe { std::slice::from_raw_parts_mut((run as *mut kvm_run as *mut u8).add(io.data_offset as usize), len) };
        let port = u64::from(io.port);
        for access in data.chunks_exact_mut(size.max(1)) {
            if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_OUT {
                match shared.pio.write(port, access) {
                    Some(BusRequest::None) => {}
                    Some(BusRequest::GuestExit(status)) => return Some(VcpuEnd::GuestExit(status)),
                    Some(BusRequest::Poweroff) => return Some(VcpuEnd::Poweroff),
                    Some(BusRequest::Reset) => return Some(VcpuEnd::Reset),
                    None => {
                        self.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(port, "write to a port no device claims ignored");
                    }
                }
            } else if !shared.pio.read(port, access) {
                // As on a PC, an unclaimed port reads as all ones.
                self.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                access.fill(0xff);
            }
        }
        None
    }
}
