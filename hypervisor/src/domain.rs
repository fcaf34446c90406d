//! A domain: one KVM VM with its RAM, vCPU threads and devices, built from a
//! [`DomainConfig`] and run until it ends.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use kvm_bindings::CpuId;
use pvabi::cpuid::HostBackend;
use pvabi::exit_status::{EXIT_CODE_CRASHED, EXIT_CODE_TIMEOUT, MAX_GUEST_STATUS};
use pvabi::ports::{COM1, COM1_LEN, DEBUG_EXIT};
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::freestanding::{BootError, FreestandingBoot};
use crate::config::{ConfigError, DomainConfig};
use crate::cpuid::{self, CpuidParams};
use crate::devices::debug_exit::DebugExit;
use crate::devices::serial::{ConsoleSink, SerialPort};
use crate::devices::{Bus, BusError};
use crate::vstate::memory::{GuestRam, MemoryError};
use crate::vstate::stats::StatsFd;
use crate::vstate::vcpu::{self, Crash, Vcpu, VcpuCounters, VcpuEnd, VcpuError, VcpuShared};
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
    /// Every vCPU halted with nothing left to wake it, and no exit status
    /// was reported.
    AllHalted,
    /// The run timed out.
    TimedOut(Duration),
}

impl DomainEnd {
    /// The process exit code `hypervisor run` ends with; see
    /// [`pvabi::exit_status`].
    pub fn exit_code(&self) -> i32 {
        match self {
            DomainEnd::GuestExit(s) => (*s).min(MAX_GUEST_STATUS) as i32,
            DomainEnd::Poweroff | DomainEnd::Reboot => 0,
            DomainEnd::Crashed(_) | DomainEnd::AllHalted => EXIT_CODE_CRASHED,
            DomainEnd::TimedOut(_) => EXIT_CODE_TIMEOUT,
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
            DomainEnd::AllHalted => write!(
                f,
                "the domain crashed: every vCPU halted with interrupts it cannot receive, and the guest never reported an exit status"
            ),
            DomainEnd::TimedOut(t) => write!(f, "the domain was stopped after running for {:.1} s (--timeout)", t.as_secs_f64()),
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
    /// Wall time from the first KVM_RUN to the end.
    pub elapsed: Duration,
}

/// Options of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop the domain after this long.
    pub timeout: Option<Duration>,
}

/// A built domain, ready to run.
pub struct Domain {
    config: DomainConfig,
    backend: HostBackend,
    // Field order is drop order: vCPUs and the VM go before the RAM they map.
    vcpus: Vec<Vcpu>,
    stats: Vec<Option<StatsFd>>,
    vm: Vm,
    ram: GuestRam,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    _serial: Arc<Mutex<SerialPort>>,
}

fn read_kernel(path: &std::path::Path) -> Result<Vec<u8>, DomainError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| DomainError::Kernel { path: shown.clone(), source })?;
    let size = file.metadata().map_err(|source| DomainError::Kernel { path: shown.clone(), source })?.len();
    if size > MAX_KERNEL_BYTES {
        return Err(DomainError::KernelTooLarge { path: shown, size });
    }
    let mut image = Vec::with_capacity(size as usize);
    file.take(MAX_KERNEL_BYTES + 1)
        .read_to_end(&mut image)
        .map_err(|source| DomainError::Kernel { path: shown.clone(), source })?;
    Ok(image)
}

impl Domain {
    /// Builds a domain: VM, RAM, boot image, vCPUs, devices.
    pub fn build(config: &DomainConfig, backend: HostBackend) -> Result<Domain, DomainError> {
        config.validate()?;
        let image = read_kernel(&config.kernel)?;
        let vm = Vm::new()?;
        vm.check_vcpus(config.vcpus)?;
        let name = CString::new(format!("domain-{}", config.name)).expect("validated names have no NUL");
        let ram = GuestRam::new(&name, config.memory_bytes())?;
        vm.register_memory(&ram)?;

        let entry = FreestandingBoot {
            image: &image,
            cmdline: &config.cmdline,
            ram: ram.ranges(),
            vcpu_count: config.vcpus,
            user_bit: backend == HostBackend::Pvm,
        }
        .load(ram.memory())?;

        let supported = vm.supported_cpuid()?;
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        let mut stats = Vec::with_capacity(config.vcpus as usize);
        for index in 0..config.vcpus {
            let vcpu = Vcpu::new(vm.fd(), index)?;
            let entries = cpuid::build(supported.as_slice(), CpuidParams { vcpu_index: index, vcpu_count: config.vcpus, backend });
            let cpuid = CpuId::from_entries(&entries).expect("the entry count is bounded by KVM_MAX_CPUID_ENTRIES + 3");
            vcpu.configure(&cpuid, &entry)?;
            stats.push(match StatsFd::open(vcpu.fd()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("vCPU {index} statistics are unavailable: {e}");
                    None
                }
            });
            vcpus.push(vcpu);
        }

        let log = match &config.console_log {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| DomainError::ConsoleLog { path: path.display().to_string(), source })?,
            ),
            None => None,
        };
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(DomainError::EventFd)?;
        let serial = Arc::new(Mutex::new(SerialPort::new(serial_irq, ConsoleSink::new(true, log))));
        let mut pio = Bus::new();
        pio.insert(u64::from(COM1), u64::from(COM1_LEN), serial.clone())?;
        pio.insert(u64::from(DEBUG_EXIT), 4, Arc::new(Mutex::new(DebugExit)))?;

        Ok(Domain {
            config: config.clone(),
            backend,
            vcpus,
            stats,
            vm,
            ram,
            pio: Arc::new(pio),
            mmio: Arc::new(Bus::new()),
            _serial: serial,
        })
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
        let shared = VcpuShared { pio: self.pio.clone(), mmio: self.mmio.clone(), stop: stop.clone() };
        let (tx, rx) = crossbeam_channel::unbounded::<(u32, VcpuEnd)>();
        let counters: Vec<Arc<VcpuCounters>> = self.vcpus.iter().map(Vcpu::counters).collect();
        let started = Instant::now();
        let mut threads: Vec<JoinHandle<Vcpu>> = Vec::new();
        let mut spawn_error = None;
        for mut vcpu in self.vcpus.drain(..) {
            let (tx, shared, index) = (tx.clone(), shared.clone(), vcpu.index());
            let spawned = std::thread::Builder::new().name(format!("vcpu{index}")).spawn(move || {
                let end = vcpu.run(&shared);
                let halted = matches!(end, VcpuEnd::Halted);
                let _ = tx.send((index, end));
                // A halted vCPU without an interrupt controller can never
                // run again; keep it (and its state) until the domain ends.
                while halted && !shared.stop.load(Ordering::Acquire) {
                    std::thread::park();
                }
                vcpu
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    spawn_error = Some(DomainError::Thread { index, source });
                    break;
                }
            }
        }
        drop(tx);

        let end = match spawn_error {
            Some(_) => None,
            None => Some(wait_for_end(&rx, threads.len(), options.timeout, started)),
        };

        stop.store(true, Ordering::Release);
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
        Ok(RunReport { end: end.expect("set when every thread started"), vcpus, elapsed })
    }
}

/// Waits for the event that ends the domain: an exit status, a crash, a
/// power event, every vCPU halted, or the timeout.
fn wait_for_end(
    rx: &crossbeam_channel::Receiver<(u32, VcpuEnd)>,
    vcpu_count: usize,
    timeout: Option<Duration>,
    started: Instant,
) -> DomainEnd {
    let mut halted = 0;
    loop {
        let event = match timeout {
            Some(t) => match rx.recv_timeout(t.saturating_sub(started.elapsed())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => return DomainEnd::TimedOut(started.elapsed()),
                Err(RecvTimeoutError::Disconnected) => return DomainEnd::AllHalted,
            },
            None => match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return DomainEnd::AllHalted,
            },
        };
        match event.1 {
            VcpuEnd::GuestExit(s) => return DomainEnd::GuestExit(s),
            VcpuEnd::Poweroff => return DomainEnd::Poweroff,
            VcpuEnd::Reset => return DomainEnd::Reboot,
            VcpuEnd::Crashed(c) => return DomainEnd::Crashed(c),
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
        tx.send((1, VcpuEnd::Halted)).unwrap();
        tx.send((0, VcpuEnd::GuestExit(7))).unwrap();
        assert!(matches!(wait_for_end(&rx, 2, None, Instant::now()), DomainEnd::GuestExit(7)));
        tx.send((0, VcpuEnd::Halted)).unwrap();
        tx.send((1, VcpuEnd::Halted)).unwrap();
        assert!(matches!(wait_for_end(&rx, 2, None, Instant::now()), DomainEnd::AllHalted));
        assert!(matches!(wait_for_end(&rx, 2, Some(Duration::from_millis(10)), Instant::now()), DomainEnd::TimedOut(_)));
    }
}
