//! `hypervisor`: runs one domain in the foreground, or reports on the host.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use hypervisor::backend;
use hypervisor::config::{DomainConfig, PagingMode, VirtioDeviceConfig, ViolationPolicy};
use hypervisor::control::{take_inherited_socket, ControlChannel, ControlEvent};
use hypervisor::domain::{ConsoleInput, Domain, DomainEnd, DomainError, RunOptions, RunReport, Stopper};
use pvabi::cpuid::HostBackend;
use pvabi::exit_status::EXIT_CODE_HOST_ERROR;

#[derive(Parser)]
#[command(name = "hypervisor", version, about = "The per-domain runtime of our Xen-style PV hypervisor on KVM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the host's KVM backend (vmx, svm or pvm) and the KVM capabilities we rely on.
    Info {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run one domain in the foreground; exits with the guest's exit status.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Guest kernel: a freestanding ELF image, a Linux bzImage, or a Linux
    /// vmlinux with a PVH entry point.
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// Initial ramdisk for a Linux kernel.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u32,
    /// The guest's command line.
    #[arg(long, value_name = "STRING", default_value = "")]
    cmdline: String,
    /// Domain name, used in messages and the console log's file name.
    #[arg(long, default_value = "domain")]
    name: String,
    /// Console log file (default: /var/log/hypervisor/NAME.console.log for
    /// root, else $XDG_STATE_HOME/hypervisor/NAME.console.log).
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,
    /// Print the vCPU counters (KVM binary stats and our own) at the end.
    #[arg(long)]
    stats: bool,
    /// Stop the domain after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// What a guest reboot does: end the run (reported as a reboot), or
    /// start the domain again from its kernel.
    #[arg(long, value_enum, default_value_t = OnReboot::Stop)]
    on_reboot: OnReboot,
    /// A split-driver device served by a dom0 vhost-user backend:
    /// KIND:SOCKET with KIND blk, net or console. Repeatable; the n-th
    /// device gets virtio-mmio slot n (at most 8).
    #[arg(long = "device", value_name = "KIND:SOCKET")]
    devices: Vec<VirtioDeviceConfig>,
    /// An inherited, connected Unix stream socket for dom0's control
    /// channel (newline-delimited JSON; see hypervisor::control).
    #[arg(long, value_name = "FD")]
    control_fd: Option<i32>,
    /// An inherited, connected Unix stream socket for the domain's console
    /// (UART and PV console): its output is written there instead of
    /// stdout, and what arrives is the console's input (dom0's `dom0
    /// console`). Without it, stdout and stdin are the console.
    #[arg(long, value_name = "FD")]
    console_fd: Option<i32>,
    /// Build the domain and start it paused: its vCPUs wait for an
    /// `unpause` on the control channel.
    #[arg(long, requires = "control_fd")]
    paused: bool,
    /// Hide our CPUID leaves: leaf 0x40000000 shows KVM's signature and
    /// KVM's leaves stay where a plain KVM host puts them, so a PV-aware
    /// guest falls back to its emulated devices (UART, ACPI).
    #[arg(long)]
    hide_pv_cpuid: bool,
    /// How the guest's page tables are managed: native (the guest's own
    /// business) or direct (validated: CPUID tells the guest to put its
    /// tables under validation, and CR3 and CR0.WP are checked at exits).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = PagingArg::Native)]
    paging: PagingArg,
    /// What a detected direct-paging violation does (a vCPU on a CR3 that
    /// is no validated L4, or with CR0.WP clear, seen at an exit): kill
    /// ends the domain as crashed, report logs it once per kind and counts
    /// it. Only with --paging direct.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = ViolationArg::Kill)]
    paging_violation: ViolationArg,
    /// Audit the direct-paging state at the end of the run (and every
    /// --paging-audit-interval seconds): with the vCPUs stopped, recompute
    /// every count of the frame table from live memory and walk each
    /// vCPU's address space from its CR3. Needs --paging direct.
    #[arg(long)]
    paging_audit: bool,
    /// Also audit every this many seconds while the domain runs.
    #[arg(long, value_name = "SECONDS", requires = "paging_audit")]
    paging_audit_interval: Option<f64>,
}

/// `--paging-violation`: [`ViolationPolicy`] by name.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ViolationArg {
    /// Log once per kind and count; the domain runs on.
    Report,
    /// End the domain as crashed (the default).
    Kill,
}

impl From<ViolationArg> for ViolationPolicy {
    fn from(a: ViolationArg) -> ViolationPolicy {
        match a {
            ViolationArg::Report => ViolationPolicy::Report,
            ViolationArg::Kill => ViolationPolicy::Kill,
        }
    }
}

/// `--paging`: [`PagingMode`] by name.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PagingArg {
    /// The guest manages its own page tables (the default).
    Native,
    /// Direct paging: every page-table change goes through validated
    /// hypercalls.
    Direct,
}

impl From<PagingArg> for PagingMode {
    fn from(a: PagingArg) -> PagingMode {
        match a {
            PagingArg::Native => PagingMode::Native,
            PagingArg::Direct => PagingMode::Direct,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnReboot {
    /// End the run and report the reboot.
    Stop,
    /// Build and boot the domain again.
    Restart,
}

/// Puts a terminal on stdin into raw mode for the guest console and puts it
/// back on drop.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return RawTerminal(None) };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // Keep output processing so our own messages still start lines.
        raw.output_flags = saved.output_flags;
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal(None);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

/// Ctrl-], as in `xl console` and telnet.
const DETACH: u8 = 0x1d;

/// The running domain's console input and its stopper; replaced at every
/// (re)start, empty before the first and in between.
#[derive(Clone, Default)]
struct InputTarget(Arc<Mutex<Option<(ConsoleInput, Stopper)>>>);

impl InputTarget {
    fn set(&self, target: Option<(ConsoleInput, Stopper)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    fn get(&self) -> Option<(ConsoleInput, Stopper)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Feeds `source` to the guest's console (UART and PV console) for as
/// long as the process runs. From stdin (`detach_key`), Ctrl-] stops the
/// domain; from dom0's console socket every byte is input (dom0's client
/// detaches on Ctrl-] itself).
fn spawn_console_input(mut source: impl Read + Send + 'static, detach_key: bool, target: InputTarget) {
    let _ = std::thread::Builder::new().name("console-input".into()).spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = source.read(&mut buf) {
            if n == 0 {
                return;
            }
            // Input that comes before the domain is built, or between a
            // reboot and the next start, waits for it.
            let (input_sink, stopper) = loop {
                match target.get() {
                    Some(t) => break t,
                    None => std::thread::sleep(Duration::from_millis(10)),
                }
            };
            let mut input = &buf[..n];
            if detach_key {
                if let Some(i) = input.iter().position(|&b| b == DETACH) {
                    stopper.stop();
                    input = &input[..i];
                }
            }
            // The PV console queues everything; the UART FIFO is small, so
            // wait for the guest to drain it.
            let mut to_pv = true;
            while !input.is_empty() {
                let taken = input_sink.push(input, to_pv);
                to_pv = false;
                input = &input[taken..];
                if !input.is_empty() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    });
}

fn default_console_log(name: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/log/hypervisor")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?
            .join("hypervisor")
    };
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!("{name}.console.log")))
}

fn info(json: bool) -> ExitCode {
    let report = match hypervisor::host::probe() {
        Ok(r) => r,
        Err(e) => {
            let d = backend::detect();
            eprintln!("hypervisor: /dev/kvm cannot be opened: {e}");
            eprintln!("host backend: {} ({})", d.backend.name(), d.evidence);
            return ExitCode::from(EXIT_CODE_HOST_ERROR as u8);
        }
    };
    // Build the whole text first: a closed stdout (`| head`) must not make
    // the hypervisor panic half-way through printing.
    use std::fmt::Write as _;
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(&report).expect("the report serializes") + "\n";
    } else {
        let _ = writeln!(out, "host backend: {}", report.backend);
        let _ = writeln!(out, "  evidence:   {}", report.evidence);
        if let Some(ok) = report.pvm_signature_confirmed {
            let state = if ok { "reads \"PVM\" (confirmed)" } else { "does not read \"PVM\"" };
            let _ = writeln!(out, "  PVM signature MSR {:#x}: {state}", pvabi::pvm::MSR_SIGNATURE);
        }
        let _ = writeln!(out, "cpu: {}", report.cpu);
        let _ = writeln!(out, "KVM API version: {}", report.kvm_api_version);
        let _ = writeln!(out, "capabilities:");
        for c in &report.capabilities {
            let state = if c.value > 0 { format!("yes ({})", c.value) } else { "NO".into() };
            let _ = writeln!(out, "  {:<28} {:<10} {}{}", c.name, state, if c.required { "required: " } else { "" }, c.used_for);
        }
        for n in &report.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    if report.usable() {
        ExitCode::SUCCESS
    } else {
        eprintln!("hypervisor: this host's KVM lacks a required capability");
        ExitCode::from(EXIT_CODE_HOST_ERROR as u8)
    }
}

fn print_stats(report: &RunReport) {
    eprintln!("vCPU statistics after {:.3} s:", report.elapsed.as_secs_f64());
    let mut names: Vec<String> = Vec::new();
    for v in &report.vcpus {
        for (n, _) in v.kvm.iter() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let header: String = report.vcpus.iter().map(|v| format!(" {:>14}", format!("vcpu{}", v.index))).collect();
    eprintln!("  {:<28}{header}", "counter (KVM binary stats)");
    for n in &names {
        let vals: Vec<u64> = report.vcpus.iter().map(|v| v.kvm_stat(n).unwrap_or(0)).collect();
        if vals.iter().any(|&x| x != 0) || ["exits", "io_exits", "mmio_exits", "insn_emulation", "halt_exits"].contains(&n.as_str()) {
            let row: String = vals.iter().map(|x| format!(" {x:>14}")).collect();
            eprintln!("  {n:<28}{row}");
        }
    }
    if names.is_empty() {
        eprintln!("  (KVM binary statistics are not available on this host)");
    }
    let calls: Vec<String> = report.hypercalls.iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name}={n}")).collect();
    eprintln!("  hypercalls: {}", if calls.is_empty() { "none".to_string() } else { calls.join(" ") });
    let paging: Vec<String> = report.paging.iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name}={n}")).collect();
    if !paging.is_empty() {
        eprintln!("  direct paging: {}", paging.join(" "));
    }
    eprintln!("  {:<28}{header}", "counter (hypervisor)");
    if let Some(first) = report.vcpus.first() {
        for (i, (n, _)) in first.userspace.iter().enumerate() {
            let row: String = report.vcpus.iter().map(|v| format!(" {:>14}", v.userspace[i].1)).collect();
            eprintln!("  {n:<28}{row}");
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let detection = backend::detect();
    let console_log = args.console_log.clone().or_else(|| default_console_log(&args.name));
    let config = DomainConfig {
        name: args.name,
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        memory_mib: args.mem,
        vcpus: args.vcpus,
        console_log,
        devices: args.devices,
        hide_pv_cpuid: args.hide_pv_cpuid,
        paging: args.paging.into(),
        paging_violation: args.paging_violation.into(),
    };
    let timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            eprintln!("hypervisor: --timeout {t} is not a positive number of seconds");
            return ExitCode::from(2);
        }
        None => None,
    };
    if args.paging_audit && config.paging != PagingMode::Direct {
        eprintln!("hypervisor: --paging-audit needs --paging direct (in native mode nothing is validated to audit)");
        return ExitCode::from(2);
    }
    let paging_audit_interval = match args.paging_audit_interval {
        Some(t) if (0.1..1e9).contains(&t) => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            eprintln!("hypervisor: --paging-audit-interval {t} is not a number of seconds of at least 0.1");
            return ExitCode::from(2);
        }
        None => None,
    };
    let control = match args.control_fd.map(ControlChannel::from_fd).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hypervisor: --control-fd: {e}");
            return ExitCode::from(2);
        }
    };
    let send = |event: ControlEvent| {
        if let Some(c) = &control {
            c.send(&event);
        }
    };
    let ended_with_error = |code: u8, detail: String| {
        send(ControlEvent::Ended { reason: "error".into(), exit_code: i32::from(code), detail });
        ExitCode::from(code)
    };
    let console_socket: Option<UnixStream> = match args.console_fd.map(|fd| take_inherited_socket(fd, "console")).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hypervisor: --console-fd: {e}");
            return ExitCode::from(2);
        }
    };
    let input_target = InputTarget::default();
    match &console_socket {
        Some(socket) => match socket.try_clone() {
            Ok(reader) => spawn_console_input(reader, false, input_target.clone()),
            Err(e) => {
                eprintln!("hypervisor: --console-fd: {e}");
                return ExitCode::from(2);
            }
        },
        None => spawn_console_input(std::io::stdin(), true, input_target.clone()),
    }
    let interactive = console_socket.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut start_paused = args.paused;
    loop {
        let domain = match Domain::build(&config, detection.backend) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("hypervisor: domain {:?} could not be built: {e}", config.name);
                // A bad value on the command line is a usage error, like clap's.
                let code = if matches!(e, DomainError::Config(_)) { 2 } else { EXIT_CODE_HOST_ERROR as u8 };
                return ended_with_error(code, format!("the domain could not be built: {e}"));
            }
        };
        eprintln!(
            "hypervisor: domain {:?}: {} MiB, {} vCPU(s), host backend {}{}{}",
            config.name,
            config.memory_mib,
            config.vcpus,
            detection.backend.name(),
            config.console_log.as_ref().map(|p| format!(", console log {}", p.display())).unwrap_or_default(),
            if interactive { "; Ctrl-] stops the domain" } else { "" }
        );
        if detection.backend == HostBackend::Pvm && !domain.kind().pvm_aware() {
            eprintln!(
                "hypervisor: warning: this host's KVM is kvm_pvm and this guest kernel is not PVM-aware: \
                 it will run in KVM's instruction emulator at a few million instructions per second, \
                 and Linux does not get far that way. Run Linux guests on a VT-x/AMD-V host, or in the \
                 nested-SVM rig (tests/rig)."
            );
        }
        if let Some(socket) = &console_socket {
            match socket.try_clone() {
                Ok(s) => domain.echo_console_to(s),
                Err(e) => eprintln!("hypervisor: the console socket cannot be used, the console goes to stdout: {e}"),
            }
        }
        input_target.set(Some((domain.console_input(), domain.stopper())));
        let domain_control = domain.control();
        if std::mem::take(&mut start_paused) {
            // No vCPU runs yet: this returns at once and they park as
            // they start.
            let _ = domain_control.pause();
        }
        if let Some(c) = &control {
            c.attach(domain_control.clone());
        }
        send(ControlEvent::Started { pid: std::process::id(), backend: detection.backend.name().into() });
        let _raw = interactive.then(RawTerminal::enter);
        let report = match domain.run(RunOptions { timeout, paging_audit: args.paging_audit, paging_audit_interval }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hypervisor: domain {:?} could not run: {e}", config.name);
                return ended_with_error(EXIT_CODE_HOST_ERROR as u8, format!("the domain could not run: {e}"));
            }
        };
        if let Some(c) = &control {
            c.detach();
        }
        input_target.set(None);
        drop(_raw);
        if args.stats {
            print_stats(&report);
        }
        if let Some(audit) = &report.audit {
            eprintln!("hypervisor: paging audit at the end: {audit}");
        }
        eprintln!("hypervisor: domain {:?} ended: {}", config.name, report.end);
        if matches!(report.end, DomainEnd::Reboot) && args.on_reboot == OnReboot::Restart {
            eprintln!("hypervisor: restarting domain {:?} (--on-reboot restart)", config.name);
            continue;
        }
        let detail = if matches!(report.end, DomainEnd::Poweroff) && domain_control.reboot_requested() {
            "reboot requested".to_string()
        } else {
            report.end.to_string()
        };
        send(ControlEvent::Ended { reason: report.end.reason().into(), exit_code: report.end.exit_code(), detail });
        return ExitCode::from(report.end.exit_code() as u8);
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HYPERVISOR_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    match Cli::parse().command {
        Command::Info { json } => info(json),
        Command::Run(args) => run(*args),
    }
}
