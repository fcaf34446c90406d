//! A domain: one KVM VM with its RAM, vCPU threads and devices, built from a
//! [`DomainConfig`] and run until it ends.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use kvm_bindings::CpuId;
use pvabi::cpuid::HostBackend;
use pvabi::exit_status::{EXIT_CODE_CRASHED, EXIT_CODE_STOPPED, EXIT_CODE_TIMEOUT, MAX_GUEST_STATUS};
use pvabi::ports::{ACPI_PM_BASE, ACPI_PM_LEN, CMOS_INDEX, COM1, COM1_IRQ, COM1_LEN, DEBUG_EXIT, I8042_COMMAND};
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::freestanding::{BootError, FreestandingBoot};
use crate::config::DeviceKind;
use crate::control::DomainStats;
use crate::devices::ged::Ged;
use crate::devices::vhost_user::{self, BackendError, BackendWatcher, VhostUserBackend, VhostUserDevice};
use crate::devices::virtio_mmio::{self, EmptySlot, Transport, VirtioMmio, QUEUE_MAX_SIZE};
use crate::boot::linux::{self, LinuxBoot, LinuxBootError, LinuxFormat};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::cmos::Cmos;
use crate::devices::i8042::I8042;
use crate::devices::serial::ConsoleTail;
use crate::pv::hypercall::Balloon;
use crate::pv::audit::{self, AuditReport};
use crate::pv::{PvConsole, PvDomain};
use crate::config::{ConfigError, DomainConfig, PagingMode};
use crate::cpuid::{self, CpuidParams};
use crate::devices::debug_exit::DebugExit;
use crate::devices::serial::{ConsoleSink, SerialPort};
use crate::devices::{Bus, BusError};
use crate::vstate::memory::{GuestRam, MemoryError};
use crate::vstate::stats::StatsFd;
use crate::vstate::vcpu::{self, Crash, PauseGate, Vcpu, VcpuCounters, VcpuEnd, VcpuError, VcpuShared};
use crate::vstate::vm::{Vm, VmError};

/// Largest kernel image we read (freestanding guests are far smaller).
const MAX_KERNEL_BYTES: u64 = 512 << 20;

/// The domain could not be built.
#[derive(Debug, Error)]
pub enum DomainError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel file could not be read.
    #[error("reading the kernel image {path} failed: {source}")]
    Kernel {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Kernel larger than we accept.
    #[error("the kernel image {path} is {size} bytes; at most {MAX_KERNEL_BYTES} bytes are accepted")]
    KernelTooLarge {
        /// Path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// KVM VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Boot protocol.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Linux boot protocol.
    #[error(transparent)]
    LinuxBoot(#[from] LinuxBootError),
    /// An initrd for a guest that is not Linux.
    #[error("an initrd was given, but the kernel image is not a Linux kernel")]
    InitrdWithoutLinux,
    /// `--paging direct`, but the frame table could not be built.
    #[error("direct paging was asked for, but this domain cannot have it: {0}")]
    DirectPagingUnavailable(String),
    /// The initrd could not be read.
    #[error("reading the initrd {path} failed: {source}")]
    Initrd {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Device placement.
    #[error("placing a device failed: {0}")]
    Bus(#[from] BusError),
    /// Console log.
    #[error("opening the console log {path} failed: {source}")]
    ConsoleLog {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Device setup.
    #[error("creating an eventfd for a device failed: {0}")]
    EventFd(std::io::Error),
    /// A device's backend could not be reached or refused the handshake.
    #[error("device {index} ({kind}) could not be connected to its backend: {source}")]
    Device {
        /// Slot.
        index: u32,
        /// Kind.
        kind: DeviceKind,
        /// Cause.
        source: BackendError,
    },
    /// The backend watcher thread could not start.
    #[error("starting the thread that watches the device backends failed: {0}")]
    Watcher(std::io::Error),
    /// Thread creation.
    #[error("starting the thread of vCPU {index} failed: {source}")]
    Thread {
        /// vCPU index.
        index: u32,
        /// Cause.
        source: std::io::Error,
    },
}

/// Why a domain ended.
#[derive(Clone, Debug)]
pub enum DomainEnd {
    /// The guest reported an exit status through the debug-exit port.
    GuestExit(u32),
    /// The guest powered off.
    Poweroff,
    /// The guest asked for a reboot.
    Reboot,
    /// The domain crashed.
    Crashed(Crash),
    /// The guest kernel panicked (seen on its console before it reset or
    /// stopped).
    GuestPanic(String),
    /// Every vCPU halted with nothing left to wake it, and no exit status
    /// was reported.
    AllHalted,
    /// The run timed out.
    TimedOut(Duration),
    /// Someone asked the domain to stop (see [`Domain::stopper`]).
    Stopped,
}

impl DomainEnd {
    /// The process exit code `hypervisor run` ends with; see
    /// [`pvabi::exit_status`].
    pub fn exit_code(&self) -> i32 {
        match self {
            DomainEnd::GuestExit(s) => (*s).min(MAX_GUEST_STATUS) as i32,
            DomainEnd::Poweroff | DomainEnd::Reboot => 0,
            DomainEnd::Crashed(_) | DomainEnd::GuestPanic(_) | DomainEnd::AllHalted => EXIT_CODE_CRASHED,
            DomainEnd::TimedOut(_) => EXIT_CODE_TIMEOUT,
            DomainEnd::Stopped => EXIT_CODE_STOPPED,
        }
    }

    /// The reason as dom0 sees it in `hypervisor::control::ControlEvent::Ended`:
    /// `guest-exit`, `poweroff`, `reboot`, `crash`, `timeout` or `stopped`.
    pub fn reason(&self) -> &'static str {
        match self {
            DomainEnd::GuestExit(_) => "guest-exit",
            DomainEnd::Poweroff => "poweroff",
            DomainEnd::Reboot => "reboot",
            DomainEnd::Crashed(_) | DomainEnd::GuestPanic(_) | DomainEnd::AllHalted => "crash",
            DomainEnd::TimedOut(_) => "timeout",
            DomainEnd::Stopped => "stopped",
        }
    }

    /// Whether this is a clean end.
    pub fn is_clean(&self) -> bool {
        matches!(self, DomainEnd::GuestExit(0) | DomainEnd::Poweroff | DomainEnd::Reboot)
    }
}

impl fmt::Display for DomainEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainEnd::GuestExit(s) if *s > MAX_GUEST_STATUS => {
                write!(f, "the guest exited with status {s} (reported as {MAX_GUEST_STATUS}: statuses above {MAX_GUEST_STATUS} are reserved)")
            }
            DomainEnd::GuestExit(s) => write!(f, "the guest exited with status {s}"),
            DomainEnd::Poweroff => write!(f, "the guest powered off"),
            DomainEnd::Reboot => write!(f, "the guest asked for a reboot"),
            DomainEnd::Crashed(c) => write!(f, "the domain crashed: {c}"),
            DomainEnd::GuestPanic(text) => write!(f, "the domain crashed: the guest kernel panicked:\n{text}"),
            DomainEnd::AllHalted => write!(
                f,
                "the domain crashed: every vCPU halted with interrupts it cannot receive, and the guest never reported an exit status"
            ),
            DomainEnd::TimedOut(t) => write!(f, "the domain was stopped after running for {:.1} s (--timeout)", t.as_secs_f64()),
            DomainEnd::Stopped => write!(f, "the domain was stopped on request"),
        }
    }
}

/// Counters of one vCPU at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct VcpuReport {
    /// vCPU index.
    pub index: u32,
    /// KVM's binary statistics, if the kernel offers them.
    pub kvm: Vec<(String, u64)>,
    /// Counters kept by this process.
    pub userspace: Vec<(&'static str, u64)>,
}

impl VcpuReport {
    /// A KVM statistic by name.
    pub fn kvm_stat(&self, name: &str) -> Option<u64> {
        self.kvm.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// What [`Domain::run`] returns.
#[derive(Debug)]
pub struct RunReport {
    /// Why the domain ended.
    pub end: DomainEnd,
    /// Per-vCPU counters.
    pub vcpus: Vec<VcpuReport>,
    /// Hypercalls by name (plus `unknown` and `failed`).
    pub hypercalls: Vec<(String, u64)>,
    /// Direct-paging counters (validated updates, rejections by reason).
    pub paging: Vec<(String, u64)>,
    /// The audit at the end, with `--paging-audit`.
    pub audit: Option<AuditReport>,
    /// Wall time from the first KVM_RUN to the end.
    pub elapsed: Duration,
}

/// Options of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop the domain after this long.
    pub timeout: Option<Duration>,
    /// Run a paging audit at the end (`--paging-audit`).
    pub paging_audit: bool,
    /// And every so often while the domain runs.
    pub paging_audit_interval: Option<Duration>,
}

/// Feeds console input to a domain.
#[derive(Clone)]
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialPort>>,
    pv: PvConsole,
}

impl ConsoleInput {
    /// Queues `bytes` for the PV console and offers them to the UART;
    /// returns how many the UART took (its FIFO is small), or all of them
    /// once the guest reads its console through `console_io`: such a guest
    /// (Linux with the PV console) may never drain the UART, and waiting
    /// for it would stall the input for good.
    pub fn push(&self, bytes: &[u8], to_pv: bool) -> usize {
        if to_pv {
            self.pv.push_input(bytes);
        }
        let taken = self.serial.lock().unwrap_or_else(|p| p.into_inner()).enqueue_input(bytes);
        if self.pv.has_reader() {
            bytes.len()
        } else {
            taken
        }
    }
}

/// What the domain's main thread waits for.
#[derive(Debug)]
enum Event {
    /// A vCPU loop ended.
    Vcpu(u32, VcpuEnd),
    /// A [`Stopper`] asked the domain to stop.
    Stop,
}

/// Stops a running domain from another thread.
#[derive(Clone)]
pub struct Stopper(crossbeam_channel::Sender<Event>);

impl Stopper {
    /// Ends the domain with [`DomainEnd::Stopped`].
    pub fn stop(&self) {
        let _ = self.0.send(Event::Stop);
    }
}

/// What kind of guest a domain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// Our freestanding ELF protocol.
    Freestanding,
    /// Linux.
    Linux(LinuxFormat),
}

impl GuestKind {
    /// Whether this guest knows how to run natively on kvm_pvm (registers
    /// a VIF page, U bit in its page tables).
    pub fn pvm_aware(self) -> bool {
        self == GuestKind::Freestanding
    }
}

/// A request to a domain from outside could not be carried out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    /// The domain has ended.
    #[error("the domain is not running any more")]
    Ended,
    /// Some vCPU did not stop in time.
    #[error("the vCPUs did not all stop within {0:?} (a vCPU may be stuck in a device request); they will stop when they can")]
    PauseTimeout(Duration),
}

/// How long [`DomainControl::pause`] waits for the vCPUs to stop.
pub const PAUSE_PATIENCE: Duration = Duration::from_secs(10);

/// Controls a domain from another thread (dom0's control channel): pause,
/// resume, the power button, statistics.
#[derive(Clone)]
pub struct DomainControl {
    pause: Arc<PauseGate>,
    pv: Arc<PvDomain>,
    ged: Arc<Mutex<Ged>>,
    stats: Arc<Vec<Option<StatsFd>>>,
    vcpus: u32,
    memory_bytes: u64,
    reboot_requested: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
}

impl DomainControl {
    fn check_running(&self) -> Result<(), ControlError> {
        if self.ended.load(Ordering::Acquire) {
            return Err(ControlError::Ended);
        }
        Ok(())
    }

    /// Stops every vCPU from running guest code; returns once they all
    /// have stopped.
    pub fn pause(&self) -> Result<(), ControlError> {
        self.check_running()?;
        if self.pause.pause(PAUSE_PATIENCE) {
            Ok(())
        } else {
            Err(ControlError::PauseTimeout(PAUSE_PATIENCE))
        }
    }

    /// Lets the vCPUs run again.
    pub fn unpause(&self) -> Result<(), ControlError> {
        self.check_running()?;
        self.pause.resume();
        Ok(())
    }

    /// Whether the domain is paused.
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Asks the guest to shut down: presses the power button.
    pub fn request_shutdown(&self) -> Result<(), ControlError> {
        self.check_running()?;
        self.ged.lock().unwrap_or_else(|p| p.into_inner()).press_power_button();
        Ok(())
    }

    /// Asks the guest to shut down so that dom0 can start it again: the
    /// same power button, remembered so the end reports "reboot requested".
    pub fn request_reboot(&self) -> Result<(), ControlError> {
        self.check_running()?;
        self.reboot_requested.store(true, Ordering::Release);
        self.request_shutdown()
    }

    /// Whether a reboot was requested.
    pub fn reboot_requested(&self) -> bool {
        self.reboot_requested.load(Ordering::Acquire)
    }

    /// Runs a paging audit (see [`crate::pv::audit`]) with the vCPUs
    /// paused, and resumes them unless they were paused already.
    pub fn audit(&self) -> Result<AuditReport, ControlError> {
        self.check_running()?;
        audit_paused(&self.pause, &self.pv)
    }

    /// Current statistics.
    pub fn stats(&self) -> DomainStats {
        let vcpu_time_ns = self.pause.thread_ids().into_iter().filter_map(vcpu::thread_cpu_time_ns).sum();
        let exits = self
            .stats
            .iter()
            .flatten()
            .filter_map(|s| s.read().ok())
            .filter_map(|v| v.into_iter().find(|(n, _)| n == "exits").map(|(_, x)| x))
            .sum();
        let (paging_updates, paging_rejected) = self.pv.paging_rates();
        DomainStats { vcpus: self.vcpus, vcpu_time_ns, exits, memory_bytes: self.memory_bytes, rss_bytes: rss_bytes().unwrap_or(0), paging_updates, paging_rejected, paging_counters: self.pv.paging_stats().into_iter().filter(|(_, n)| *n > 0).collect() }
    }
}

/// Pauses the vCPUs (unless they are paused), audits the domain with the
/// CR3 of every vCPU that has entered direct paging, and resumes them.
fn audit_paused(pause: &PauseGate, pv: &PvDomain) -> Result<AuditReport, ControlError> {
    let was_paused = pause.is_paused();
    if !was_paused && !pause.pause(PAUSE_PATIENCE) {
        pause.resume();
        return Err(ControlError::PauseTimeout(PAUSE_PATIENCE));
    }
    let cr3s: Vec<(usize, u64)> = match &pv.guard {
        Some(g) => (0..pv.shootdown.vcpus()).filter(|&i| g.entered(i)).map(|i| (i, pause.parked_cr3(i))).filter(|(_, cr3)| *cr3 != vcpu::NO_CR3).collect(),
        None => Vec::new(),
    };
    let report = audit::audit(pv, &cr3s);
    if !was_paused {
        pause.resume();
    }
    Ok(report)
}

/// This process's resident set (guest RAM it touched included).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// A built domain, ready to run.
pub struct Domain {
    config: DomainConfig,
    backend: HostBackend,
    kind: GuestKind,
    console_tail: ConsoleTail,
    // Field order is drop order: the backend watcher (which holds the
    // vhost-user sockets open) first; vCPUs and the VM before the RAM they
    // map.
    _watcher: Option<BackendWatcher>,
    virtio: Vec<Arc<Mutex<VhostUserDevice>>>,
    vcpus: Vec<Vcpu>,
    stats: Arc<Vec<Option<StatsFd>>>,
    vm: Vm,
    ram: GuestRam,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialPort>>,
    console_sink: Arc<Mutex<ConsoleSink>>,
    pv: Arc<PvDomain>,
    balloon: Arc<Balloon>,
    ged: Arc<Mutex<Ged>>,
    pause: Arc<PauseGate>,
    reboot_requested: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
    events: (crossbeam_channel::Sender<Event>, crossbeam_channel::Receiver<Event>),
}

/// Reads a boot file of at most [`MAX_KERNEL_BYTES`]; `err` names which.
fn read_image(
    path: &std::path::Path,
    err: fn(String, std::io::Error) -> DomainError,
) -> Result<Vec<u8>, DomainError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| err(shown.clone(), e))?;
    let size = file.metadata().map_err(|e| err(shown.clone(), e))?.len();
    if size > MAX_KERNEL_BYTES {
        return Err(DomainError::KernelTooLarge { path: shown, size });
    }
    let mut image = Vec::with_capacity(size as usize);
    file.take(MAX_KERNEL_BYTES + 1).read_to_end(&mut image).map_err(|e| err(shown.clone(), e))?;
    Ok(image)
}

impl Domain {
    /// Builds a domain: VM, RAM, boot image, vCPUs, devices.
    pub fn build(config: &DomainConfig, backend: HostBackend) -> Result<Domain, DomainError> {
        config.validate()?;
        let image = read_image(&config.kernel, |path, source| DomainError::Kernel { path, source })?;
        let kind = linux::detect(&image).map_or(GuestKind::Freestanding, GuestKind::Linux);
        let initrd = match &config.initrd {
            Some(_) if kind == GuestKind::Freestanding => return Err(DomainError::InitrdWithoutLinux),
            Some(p) => Some(read_image(p, |path, source| DomainError::Initrd { path, source })?),
            None => None,
        };
        let vm = Vm::new()?;
        vm.check_vcpus(config.vcpus)?;
        // Linux expects a PC's interrupt controllers and timer; our own
        // guests poll and must see HLT as an exit.
        let irqchip = matches!(kind, GuestKind::Linux(_));
        if irqchip {
            vm.create_platform_irqchip()?;
        }
        let name = CString::new(format!("domain-{}", config.name)).expect("validated names have no NUL");
        let ram = GuestRam::new(&name, config.memory_bytes())?;
        vm.register_memory(&ram)?;

        let entry = match kind {
            GuestKind::Freestanding => FreestandingBoot {
                image: &image,
                cmdline: &config.cmdline,
                ram: ram.ranges(),
                vcpu_count: config.vcpus,
                user_bit: backend == HostBackend::Pvm,
            }
            .load(ram.memory())?,
            GuestKind::Linux(_) => LinuxBoot {
                image: &image,
                initrd: initrd.as_deref(),
                cmdline: &config.cmdline,
                ram: ram.ranges(),
                vcpu_count: config.vcpus,
                virtio_slots: &(0..config.devices.len() as u32).collect::<Vec<_>>(),
            }
            .load(ram.memory())?,
        };

        let log = match &config.console_log {
            Some(path) => Some(
                crate::devices::console_log::BoundedLog::open(path)
                    .map_err(|source| DomainError::ConsoleLog { path: path.display().to_string(), source })?,
            ),
            None => None,
        };
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?;
        if irqchip {
            vm.register_irqfd(&serial_irq, COM1_IRQ)?;
        }
        let console_tail = ConsoleTail::default();
        let sink = Arc::new(Mutex::new(ConsoleSink::new(true, log, console_tail.clone())));
        let serial = Arc::new(Mutex::new(SerialPort::new(serial_irq, sink.clone())));
        vm.trap_pv_msrs()?;
        let memory_map = match kind {
            GuestKind::Freestanding => crate::boot::freestanding::memory_map(ram.ranges()),
            GuestKind::Linux(_) => linux::e820_map(ram.ranges())
                .into_iter()
                .map(|(addr, size, kind)| pvabi::boot::MemMapEntry { addr, size, kind, reserved: 0 })
                .collect(),
        };
        let mut pv_console = PvConsole::new(sink.clone());
        if irqchip {
            let console_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?;
            vm.register_irqfd(&console_irq, pvabi::console::IRQ)?;
            pv_console = pv_console.with_irq(console_irq);
        }
        let memfd = ram.file().try_clone().map_err(|e| DomainError::Memory(crate::vstate::memory::MemoryError::Dup(e)))?;
        let paging_direct = config.paging == PagingMode::Direct;
        let pv = PvDomain::new(
            ram.memory().clone(),
            memfd,
            ram.ranges().to_vec(),
            memory_map,
            pv_console,
            config.vcpus as usize,
            &match kind {
                GuestKind::Freestanding => crate::pv::FrameLayout::freestanding(),
                GuestKind::Linux(_) => crate::pv::FrameLayout::linux(config.devices.len() as u32),
            }
            .on_pvm(backend == HostBackend::Pvm),
        )
        .with_shadow_sync(if backend == HostBackend::Pvm {
            // The slot number after the RAM slots.
            let slot = ram.ranges().len() as u32;
            Some(crate::pv::mmu::ShadowSync::new(vm.dup_fd().map_err(DomainError::EventFd)?, slot).map_err(DomainError::EventFd)?)
        } else {
            None
        });
        let pv = Arc::new(if paging_direct { pv.with_guard(config.paging_violation) } else { pv });
        if paging_direct && pv.frames.is_none() {
            return Err(DomainError::DirectPagingUnavailable(format!("no frame table for {} MiB of RAM", config.memory_mib)));
        }
        if paging_direct && !vm.can_sync_sregs() {
            return Err(DomainError::DirectPagingUnavailable(
                "the host's KVM cannot sync the special registers at exits (KVM_CAP_SYNC_REGS without KVM_SYNC_X86_SREGS), so CR3 and CR0.WP could not be checked".into(),
            ));
        }
        let supported = vm.supported_cpuid()?;
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        let mut stats = Vec::with_capacity(config.vcpus as usize);
        for index in 0..config.vcpus {
            let mut vcpu = Vcpu::new(vm.fd(), index)?;
            if paging_direct {
                vcpu.sync_sregs();
            }
            let entries = cpuid::build(
                supported.as_slice(),
                CpuidParams {
                    vcpu_index: index,
                    vcpu_count: config.vcpus,
                    backend,
                    direct_paging: pv.frames.is_some(),
                    paging_direct,
                    console_irq: irqchip,
                    hide_pv_leaves: config.hide_pv_cpuid,
                },
            );
            let cpuid = CpuId::from_entries(&entries).expect("the entry count is bounded by KVM_MAX_CPUID_ENTRIES + 3");
            vcpu.configure(&cpuid, &entry, irqchip)?;
            stats.push(match StatsFd::open(vcpu.fd()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("vCPU {index} statistics are unavailable: {e}");
                    None
                }
            });
            vcpus.push(vcpu);
        }

        let mut pio = Bus::new();
        pio.insert(u64::from(COM1), u64::from(COM1_LEN), serial.clone())?;
        pio.insert(u64::from(DEBUG_EXIT), 4, Arc::new(Mutex::new(DebugExit)))?;
        if let GuestKind::Linux(_) = kind {
            pio.insert(u64::from(CMOS_INDEX), 2, Arc::new(Mutex::new(Cmos::default())))?;
            pio.insert(u64::from(I8042_COMMAND), 1, Arc::new(Mutex::new(I8042)))?;
            pio.insert(u64::from(ACPI_PM_BASE), u64::from(ACPI_PM_LEN), Arc::new(Mutex::new(AcpiPm)))?;
        }

        let mut mmio = Bus::new();
        let ged_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?;
        if irqchip {
            vm.register_irqfd(&ged_irq, pvabi::power::GED_IRQ)?;
        }
        let ged = Arc::new(Mutex::new(Ged::new(ged_irq)));
        mmio.insert(pvabi::power::GED_MMIO_BASE, pvabi::power::GED_MMIO_LEN, ged.clone())?;
        let (virtio, watcher) = attach_virtio_devices(config, &vm, &ram, irqchip, &mut mmio)?;

        Ok(Domain {
            config: config.clone(),
            backend,
            kind,
            console_tail,
            _watcher: watcher,
            virtio,
            vcpus,
            stats: Arc::new(stats),
            vm,
            ram,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            serial,
            console_sink: sink,
            pv,
            balloon: Arc::new(Balloon::default()),
            ged,
            pause: Arc::new(PauseGate::new(config.vcpus as usize)),
            reboot_requested: Arc::new(AtomicBool::new(false)),
            ended: Arc::new(AtomicBool::new(false)),
            events: crossbeam_channel::unbounded(),
        })
    }

    /// A handle to pause, resume, shut down and query the domain from
    /// another thread.
    pub fn control(&self) -> DomainControl {
        DomainControl {
            pause: self.pause.clone(),
            pv: self.pv.clone(),
            ged: self.ged.clone(),
            stats: self.stats.clone(),
            vcpus: self.config.vcpus,
            memory_bytes: self.config.memory_bytes(),
            reboot_requested: self.reboot_requested.clone(),
            ended: self.ended.clone(),
        }
    }

    /// The domain's MMIO bus (tests drive device registers through it, as
    /// a vCPU would).
    pub fn mmio_bus(&self) -> &Bus {
        &self.mmio
    }

    /// The virtio devices, in slot order.
    pub fn virtio_devices(&self) -> &[Arc<Mutex<VhostUserDevice>>] {
        &self.virtio
    }

    /// A handle that stops the domain once it runs.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.events.0.clone())
    }

    /// What kind of guest it runs.
    pub fn kind(&self) -> GuestKind {
        self.kind
    }

    /// Sends the console's live output (UART and PV console) to `stream`,
    /// dom0's console socket, instead of stdout. Writes never block a vCPU:
    /// what dom0 does not take in time is dropped (the console log keeps
    /// everything).
    pub fn echo_console_to(&self, stream: UnixStream) {
        self.console_sink.lock().unwrap_or_else(|p| p.into_inner()).echo_to(stream);
    }

    /// A handle that feeds console input to the guest (UART and PV console).
    pub fn console_input(&self) -> ConsoleInput {
        ConsoleInput { serial: self.serial.clone(), pv: self.pv.console.clone() }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &DomainConfig {
        &self.config
    }

    /// The host backend it runs on.
    pub fn backend(&self) -> HostBackend {
        self.backend
    }

    /// The guest's RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Runs every vCPU on its own thread until the domain ends.
    pub fn run(mut self, options: RunOptions) -> Result<RunReport, DomainError> {
        vcpu::install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = VcpuShared {
            pv: self.pv.clone(),
            balloon: self.balloon.clone(),
            pio: self.pio.clone(),
            mmio: self.mmio.clone(),
            stop: stop.clone(),
            pause: self.pause.clone(),
        };
        let (tx, rx) = (self.events.0.clone(), self.events.1.clone());
        let counters: Vec<Arc<VcpuCounters>> = self.vcpus.iter().map(Vcpu::counters).collect();
        let started = Instant::now();
        let mut threads: Vec<JoinHandle<Vcpu>> = Vec::new();
        let mut spawn_error = None;
        for mut vcpu in self.vcpus.drain(..) {
            let (tx, shared, index) = (tx.clone(), shared.clone(), vcpu.index());
            let spawned = std::thread::Builder::new().name(format!("vcpu{index}")).spawn(move || {
                let end = vcpu.run(&shared);
                let halted = matches!(end, VcpuEnd::Halted);
                let _ = tx.send(Event::Vcpu(index, end));
                // A halted vCPU without an interrupt controller can never
                // run again; keep it (and its state) until the domain ends.
                while halted && !shared.stop.load(Ordering::Acquire) {
                    std::thread::park();
                }
                vcpu
            });
            match spawned {
                Ok(t) => {
                    self.pv.shootdown.register_thread(index as usize, std::os::unix::thread::JoinHandleExt::as_pthread_t(&t));
                    threads.push(t)
                }
                Err(source) => {
                    spawn_error = Some(DomainError::Thread { index, source });
                    break;
                }
            }
        }
        drop(tx);
        // A vCPU that never exits to this process (a guest spinning in its
        // kernel, or, on kvm_pvm, livelocked in page faults after clearing
        // CR0.WP) would never be checked: kick every vCPU once a second, so
        // the direct-paging checks see each at least that often.
        // The same thread runs the periodic audits.
        let watch = self.pv.guard.as_ref().map(|_| {
            let (pause, stop, pv) = (self.pause.clone(), stop.clone(), self.pv.clone());
            let interval = options.paging_audit_interval.filter(|_| options.paging_audit);
            std::thread::Builder::new().name("paging-watch".into()).spawn(move || {
                let mut next_audit = interval.map(|i| Instant::now() + i);
                let nap = interval.map_or(PAGING_KICK, |i| i.min(PAGING_KICK));
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(nap);
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    pause.kick_all();
                    if let (Some(at), Some(i)) = (next_audit, interval) {
                        if Instant::now() >= at {
                            match audit_paused(&pause, &pv) {
                                Ok(r) => eprintln!("hypervisor: paging audit: {r}"),
                                Err(e) => eprintln!("hypervisor: paging audit not run: {e}"),
                            }
                            next_audit = Some(Instant::now() + i);
                        }
                    }
                }
            })
        });

        let watch_emulation = self.backend == HostBackend::Pvm && !self.kind.pvm_aware();
        let stats0 = self.stats.first().and_then(Option::as_ref);
        let mut last_emulated = 0;
        let mut warned = false;
        let mut tick = || {
            // A guest that is not PVM-aware runs in KVM's instruction
            // emulator on kvm_pvm: say so instead of looking hung.
            let Some(emulated) = stats0.filter(|_| watch_emulation).and_then(|s| s.read().ok()).and_then(|v| {
                v.into_iter().find(|(n, _)| n == "insn_emulation").map(|(_, x)| x)
            }) else {
                return;
            };
            if !warned && emulated.saturating_sub(last_emulated) > 100_000 {
                eprintln!(
                    "hypervisor: warning: vCPU 0 ran {} instructions in KVM's instruction emulator in the last {} s: \
                     this guest is not PVM-aware and runs emulated, very slowly, on this kvm_pvm host",
                    emulated - last_emulated,
                    TICK.as_secs()
                );
                warned = true;
            }
            last_emulated = emulated;
        };
        let end = match spawn_error {
            Some(_) => None,
            None => Some(wait_for_end(&rx, threads.len(), options.timeout, started, &mut tick)),
        };
        // A Linux kernel that panicked resets (panic=N) or stops; its
        // console says why.
        let end = end.map(|e| match (&e, self.console_tail.linux_panic(12)) {
            (DomainEnd::Reboot | DomainEnd::Poweroff | DomainEnd::Crashed(_) | DomainEnd::TimedOut(_) | DomainEnd::GuestPanic(_), Some(text)) => {
                DomainEnd::GuestPanic(text)
            }
            (DomainEnd::GuestPanic(_), None) => {
                DomainEnd::GuestPanic("(the guest reported a crash through sched_op(SHUTDOWN, crash); its console shows no panic message)".into())
            }
            _ => e,
        });

        stop.store(true, Ordering::Release);
        if let Some(Ok(w)) = watch {
            w.thread().unpark();
            let _ = w.join();
        }
        self.ended.store(true, Ordering::Release);
        self.pause.release();
        for t in &threads {
            // SAFETY: pthread_kill on a thread we spawned and have not
            // joined yet; the kick signal's handler is installed.
            unsafe { libc::pthread_kill(std::os::unix::thread::JoinHandleExt::as_pthread_t(t), vcpu::kick_signal()) };
            t.thread().unpark();
        }
        let elapsed = started.elapsed();
        for t in threads {
            match t.join() {
                Ok(v) => self.vcpus.push(v),
                Err(_) => tracing::error!("a vCPU thread panicked"),
            }
        }
        if let Some(e) = spawn_error {
            return Err(e);
        }
        // Every vCPU has stopped: their registers can be read from here.
        let audit = options.paging_audit.then(|| {
            let cr3s: Vec<(usize, u64)> = match &self.pv.guard {
                Some(g) => self.vcpus.iter().filter(|v| g.entered(v.index() as usize)).filter_map(|v| Some((v.index() as usize, v.cr3()?))).collect(),
                None => Vec::new(),
            };
            audit::audit(&self.pv, &cr3s)
        });
        let vcpus = self
            .stats
            .iter()
            .zip(&counters)
            .enumerate()
            .map(|(index, (stats, counters))| VcpuReport {
                index: index as u32,
                kvm: stats.as_ref().and_then(|s| s.read().ok()).unwrap_or_default(),
                userspace: counters.snapshot(),
            })
            .collect();
        Ok(RunReport {
            end: end.expect("set when every thread started"),
            vcpus,
            hypercalls: self.pv.counters.snapshot(),
            paging: self.pv.paging_stats(),
            audit,
            elapsed,
        })
    }
}

/// Puts a virtio-mmio transport in every slot: an [`EmptySlot`] where the
/// configuration has no device, else a device connected to its backend,
/// with its kick eventfds registered as KVM ioeventfds on the slot's
/// QueueNotify register and its call eventfd as an irqfd on the slot's GSI
/// (with an interrupt controller). Starts the [`BackendWatcher`].
#[allow(clippy::type_complexity)]
fn attach_virtio_devices(
    config: &DomainConfig,
    vm: &Vm,
    ram: &GuestRam,
    irqchip: bool,
    mmio: &mut Bus,
) -> Result<(Vec<Arc<Mutex<VhostUserDevice>>>, Option<BackendWatcher>), DomainError> {
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?);
    let mut devices = Vec::new();
    for slot in 0..pvabi::virtio::MAX_DEVICES {
        let addr = virtio_mmio::slot_address(slot);
        let Some(d) = config.devices.get(slot as usize) else {
            mmio.insert(addr, pvabi::virtio::MMIO_STRIDE, Arc::new(Mutex::new(EmptySlot)))?;
            continue;
        };
        let conn = vhost_user::connect(&d.socket, d.kind).map_err(|source| DomainError::Device { index: slot, kind: d.kind, source })?;
        let kicks = (0..conn.queues).map(|_| EventFd::new(libc::EFD_NONBLOCK)).collect::<Result<Vec<_>, _>>().map_err(DomainError::EventFd)?;
        for (q, kick) in kicks.iter().enumerate() {
            vm.register_mmio_ioeventfd(kick, addr + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY), q as u32)?;
        }
        let call = EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?;
        if irqchip {
            vm.register_irqfd(&call, virtio_mmio::slot_gsi(slot))?;
        }
        tracing::info!(slot, kind = %d.kind, socket = %d.socket.display(), features = format_args!("{:#x}", conn.features), queues = conn.queues, "virtio device connected to its backend");
        let transport = Transport::new(slot, d.kind.device_id(), conn.features, conn.queues, QUEUE_MAX_SIZE, ram.ranges().to_vec(), conn.config.clone());
        let backend = VhostUserBackend::new(d.clone(), conn, ram.memory().clone(), kicks, call, wake.clone());
        let device = Arc::new(Mutex::new(VirtioMmio::new(transport, backend)));
        mmio.insert(addr, pvabi::virtio::MMIO_STRIDE, device.clone())?;
        devices.push(device);
    }
    let watcher = if devices.is_empty() { None } else { Some(BackendWatcher::spawn(devices.clone(), wake).map_err(DomainError::Watcher)?) };
    Ok((devices, watcher))
}

/// How often [`wait_for_end`] calls its tick.
const TICK: Duration = Duration::from_secs(5);

/// How often every vCPU of a direct-paging domain is kicked out of KVM_RUN
/// so that its CR3 and CR0.WP are checked even if it makes no exit.
const PAGING_KICK: Duration = Duration::from_secs(1);

/// Waits for the event that ends the domain: an exit status, a crash, a
/// power event, every vCPU halted, or the timeout; calls `tick` every
/// [`TICK`] meanwhile.
fn wait_for_end(
    rx: &crossbeam_channel::Receiver<Event>,
    vcpu_count: usize,
    timeout: Option<Duration>,
    started: Instant,
    tick: &mut dyn FnMut(),
) -> DomainEnd {
    let mut halted = 0;
    let mut next_tick = started + TICK;
    loop {
        let deadline = timeout.map(|t| started + t);
        let wake = deadline.map_or(next_tick, |d| d.min(next_tick));
        let event = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return DomainEnd::TimedOut(started.elapsed());
                }
                tick();
                next_tick += TICK;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return DomainEnd::AllHalted,
        };
        let end = match event {
            Event::Stop => return DomainEnd::Stopped,
            Event::Vcpu(index, end) => {
                tracing::debug!(vcpu = index, ?end, "vCPU loop ended");
                end
            }
        };
        match end {
            VcpuEnd::GuestExit(s) => return DomainEnd::GuestExit(s),
            VcpuEnd::Poweroff => return DomainEnd::Poweroff,
            VcpuEnd::Reset => return DomainEnd::Reboot,
            VcpuEnd::Crashed(c) => return DomainEnd::Crashed(c),
            VcpuEnd::GuestReportedCrash => return DomainEnd::GuestPanic(String::new()),
            VcpuEnd::Halted => {
                halted += 1;
                if halted == vcpu_count {
                    return DomainEnd::AllHalted;
                }
            }
            VcpuEnd::Stopped => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(DomainEnd::GuestExit(0).exit_code(), 0);
        assert_eq!(DomainEnd::GuestExit(0x26).exit_code(), 0x26);
        assert_eq!(DomainEnd::GuestExit(1000).exit_code(), MAX_GUEST_STATUS as i32);
        assert_eq!(DomainEnd::AllHalted.exit_code(), EXIT_CODE_CRASHED);
        assert_eq!(DomainEnd::TimedOut(Duration::from_secs(1)).exit_code(), EXIT_CODE_TIMEOUT);
        assert!(DomainEnd::GuestExit(0).is_clean());
        assert!(!DomainEnd::GuestExit(3).is_clean());
    }

    #[test]
    fn the_first_decisive_event_ends_the_domain() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Event::Vcpu(1, VcpuEnd::Halted)).unwrap();
        tx.send(Event::Vcpu(0, VcpuEnd::GuestExit(7))).unwrap();
        let mut no_tick = || {};
        assert!(matches!(wait_for_end(&rx, 2, None, Instant::now(), &mut no_tick), DomainEnd::GuestExit(7)));
        tx.send(Event::Vcpu(0, VcpuEnd::Halted)).unwrap();
        tx.send(Event::Vcpu(1, VcpuEnd::Halted)).unwrap();
        assert!(matches!(wait_for_end(&rx, 2, None, Instant::now(), &mut no_tick), DomainEnd::AllHalted));
        assert!(matches!(wait_for_end(&rx, 2, Some(Duration::from_millis(10)), Instant::now(), &mut no_tick), DomainEnd::TimedOut(_)));
        tx.send(Event::Stop).unwrap();
        assert!(matches!(wait_for_end(&rx, 2, None, Instant::now(), &mut no_tick), DomainEnd::Stopped));
    }
}
