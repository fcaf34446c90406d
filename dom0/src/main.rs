//! `dom0`: the management CLI (think `xl`) and, as `dom0 daemon`, the
//! privileged process that owns the domains and runs their backends.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dom0::client::{self, ClientError};
use dom0::paths::Paths;
use dom0::protocol::{ConsoleKind, DomainDetail, DomainInfo, DomainTop, HostInfo, Reply, Request};

/// Exit code for a refused request or a failed exchange.
const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage (clap's).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "dom0", version, about = "Manage domains of the SplitPV hypervisor (like Xen's xl)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the management daemon in the foreground (the other commands start it when needed).
    Daemon,
    /// Create a domain from an xl.cfg-style file.
    Create {
        /// The configuration file.
        file: PathBuf,
        /// Settings that override the file's, in its syntax (`vcpus=2`, `name="web2"`).
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Attach to its console (the PV console and UART) afterwards.
        #[arg(short = 'c')]
        console: bool,
        /// Leave it paused.
        #[arg(short = 'p')]
        paused: bool,
    },
    /// List the domains.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Kill a domain at once.
    Destroy {
        /// Name or ID.
        domain: String,
    },
    /// Ask a domain to shut down (ACPI power button).
    Shutdown {
        /// Name or ID.
        domain: String,
        /// Wait until it has shut down.
        #[arg(short = 'w')]
        wait: bool,
        /// How long -w waits, seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Ask a domain to shut down, then start it again.
    Reboot {
        /// Name or ID.
        domain: String,
    },
    /// Stop running a domain's vCPUs.
    Pause {
        /// Name or ID.
        domain: String,
    },
    /// Run a paused domain again.
    Unpause {
        /// Name or ID.
        domain: String,
    },
    /// Attach to a domain's console; Ctrl-] detaches.
    Console {
        /// Name or ID.
        domain: String,
        /// Which console: `pv`, the domain's own (PV console and UART;
        /// Linux's hvc0 with our patches, or ttyS0), or `virtio`, the
        /// virtio-console (hvc1 beside the PV console).
        #[arg(short = 't', long = "type", value_enum, default_value_t = ConsoleKind::Pv)]
        kind: ConsoleKind,
    },
    /// The host, its KVM backend (vmx, svm, pvm) and the domains; with NAME, that
    /// domain in detail (its paging mode and the hypervisor's paging counters).
    Info {
        /// Name or ID of a domain.
        domain: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Audit a direct-paging domain: with its vCPUs paused, recompute every page-table
    /// count from live memory and walk each vCPU's address space from its CR3. Exits
    /// with status 1 if anything was found.
    Audit {
        /// Name or ID.
        domain: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Per-domain vCPU time, memory, exits/s and I/O requests/s, refreshed like xentop.
    Top {
        /// Seconds between refreshes.
        #[arg(short = 'd', long, default_value_t = 1.0)]
        delay: f64,
        /// Stop after this many refreshes (batch mode prints them one after another).
        #[arg(short = 'n', long)]
        iterations: Option<u64>,
        /// One JSON document per refresh.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let paths = Paths::from_env();
    if let Cmd::Daemon = cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
        return match dom0::daemon::run(paths) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dom0 daemon: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    match command(&paths, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dom0: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn command(paths: &Paths, cmd: Cmd) -> Result<(), ClientError> {
    let say = |reply: Reply| {
        if let Reply::Done { message } = reply {
            println!("{message}");
        }
    };
    match cmd {
        Cmd::Daemon => unreachable!("handled in main"),
        Cmd::Create { file, overrides, console, paused } => {
            let cwd = std::env::current_dir().map_err(ClientError::Io)?;
            let spec = dom0::config::parse_file_with_overrides(&file, &overrides, &cwd)
                .map_err(|e| ClientError::Refused(e.to_string()))?;
            let reply = client::request(paths, &Request::Create { spec, paused })?;
            if let Reply::Created { id, name } = reply {
                println!("domain {name} created (id {id}){}.", if paused { ", paused" } else { "" });
                if console {
                    return attach(paths, &name, ConsoleKind::Pv);
                }
            }
        }
        Cmd::List { json } => {
            if let Reply::Domains { domains } = client::request(paths, &Request::List)? {
                if json {
                    println!("{}", serde_json::to_string_pretty(&domains).expect("serializes"));
                } else {
                    print!("{}", render_list(&domains));
                }
            }
        }
        Cmd::Destroy { domain } => say(client::request(paths, &Request::Destroy { domain })?),
        Cmd::Shutdown { domain, wait, timeout } => {
            say(client::request(paths, &Request::Shutdown { domain, wait, timeout_s: timeout })?)
        }
        Cmd::Reboot { domain } => say(client::request(paths, &Request::Reboot { domain })?),
        Cmd::Pause { domain } => say(client::request(paths, &Request::Pause { domain })?),
        Cmd::Unpause { domain } => say(client::request(paths, &Request::Unpause { domain })?),
        Cmd::Console { domain, kind } => return attach(paths, &domain, kind),
        Cmd::Info { domain: Some(domain), json } => {
            if let Reply::Domain { domain } = client::request(paths, &Request::DomainInfo { domain })? {
                if json {
                    println!("{}", serde_json::to_string_pretty(&domain).expect("serializes"));
                } else {
                    print!("{}", render_domain(&domain));
                }
            }
        }
        Cmd::Info { domain: None, json } => {
            if let Reply::Info { host } = client::request(paths, &Request::Info)? {
                if json {
                    println!("{}", serde_json::to_string_pretty(&host).expect("serializes"));
                } else {
                    print!("{}", render_info(&host));
                }
            }
        }
        Cmd::Audit { domain, json } => {
            if let Reply::Audit { name, report } = client::request(paths, &Request::Audit { domain })? {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
                } else {
                    println!("domain {name}: paging audit {report}");
                }
                if !report.clean {
                    return Err(ClientError::Refused(format!("the paging audit of domain {name} found {} problem(s)", report.total_findings)));
                }
            }
        }
        Cmd::Top { delay, iterations, json } => {
            let delay = Duration::from_secs_f64(delay.clamp(0.1, 3600.0));
            // The daemon's rates are "since the previous top": prime them.
            client::request(paths, &Request::Top)?;
            let batch = iterations.is_some() || !std::io::stdout().is_terminal();
            let mut n = 0u64;
            loop {
                std::thread::sleep(delay);
                if let Reply::Top { domains } = client::request(paths, &Request::Top)? {
                    let text = if json {
                        serde_json::to_string(&domains).expect("serializes") + "\n"
                    } else {
                        render_top(&domains)
                    };
                    let mut out = std::io::stdout().lock();
                    if !batch {
                        let _ = out.write_all(b"\x1b[H\x1b[2J");
                    }
                    if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
                        return Ok(()); // stdout closed
                    }
                }
                n += 1;
                if iterations.is_some_and(|max| n >= max) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn render_list(domains: &[DomainInfo]) -> String {
    let mut out = format!("{:<24} {:>5} {:>8} {:>5} {:<10} {:>8} {:>9}  {}\n", "Name", "ID", "Mem(MiB)", "VCPUs", "State", "PID", "Time(s)", "Devices");
    for d in domains {
        out += &format!(
            "{:<24} {:>5} {:>8} {:>5} {:<10} {:>8} {:>9}  {}\n",
            d.name,
            d.id,
            d.memory_mib,
            d.vcpus,
            format!("{:?}", d.state).to_lowercase(),
            d.pid.map_or("-".into(), |p| p.to_string()),
            d.uptime_s,
            d.devices.join(" ")
        );
        if let Some(end) = &d.last_end {
            out += &format!("{:<24}   last end: {end}\n", "");
        }
    }
    out
}

fn render_info(h: &HostInfo) -> String {
    format!(
        "host:               {}\nkernel:             {}\nbackend:            {}\ncpus:               {}\nmemory (MiB):       {} total, {} available, {} given to domains\ndomains:            {}\ndom0 daemon:        pid {}, version {}\n--- hypervisor info ---\n{}",
        h.hostname,
        h.kernel,
        h.backend,
        h.cpus,
        h.memory_total_mib,
        h.memory_available_mib,
        h.domains_memory_mib,
        h.domains,
        h.daemon_pid,
        h.version,
        h.hypervisor_info
    )
}

fn render_top(domains: &[DomainTop]) -> String {
    let mut out = format!(
        "{:<20} {:>4} {:<10} {:>5} {:>10} {:>7} {:>8} {:>8} {:>12} {:>10} {:>10} {:>9} {:<6} {:>9} {:>9}\n",
        "NAME", "ID", "STATE", "VCPUS", "VCPU(s)", "CPU%", "MEM(MiB)", "RSS(MiB)", "EXITS", "EXITS/s", "IO REQS", "IO/s", "PAGING", "PT-UPD/s", "PT-REJ/s"
    );
    for d in domains {
        out += &format!(
            "{:<20} {:>4} {:<10} {:>5} {:>10.2} {:>7.1} {:>8} {:>8.1} {:>12} {:>10.0} {:>10} {:>9.0} {:<6} {:>9.0} {:>9.0}\n",
            d.name,
            d.id,
            format!("{:?}", d.state).to_lowercase(),
            d.vcpus,
            d.vcpu_time_s,
            d.cpu_percent,
            d.memory_mib,
            d.rss_mib,
            d.exits,
            d.exits_per_s,
            d.io_requests,
            d.io_requests_per_s,
            d.paging.name(),
            d.paging_updates_per_s,
            d.paging_rejected_per_s
        );
    }
    out
}

fn render_domain(d: &DomainDetail) -> String {
    let i = &d.info;
    let counters: Vec<String> = d.paging_counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!(
        "name:               {}\nid:                 {}\nstate:              {}\nmemory (MiB):       {}\nvcpus:              {}\npid:                {}\nuptime (s):         {}\ndevices:            {}\npaging:             {}\npaging violations:  {}\npaging counters:    {}\n",
        i.name,
        i.id,
        format!("{:?}", i.state).to_lowercase(),
        i.memory_mib,
        i.vcpus,
        i.pid.map_or("-".into(), |p| p.to_string()),
        i.uptime_s,
        i.devices.join(" "),
        i.paging.name(),
        if i.paging == dom0::config::PagingMode::Direct { d.paging_violation.name() } else { "(not checked: native paging)" },
        if counters.is_empty() { "none".to_string() } else { counters.join(" ") }
    )
}

/// `console`: bytes both ways; Ctrl-] (0x1d) detaches.
fn attach(paths: &Paths, domain: &str, kind: ConsoleKind) -> Result<(), ClientError> {
    const DETACH: u8 = 0x1d;
    let mut stream = client::connect(paths)?;
    let reply = client::exchange(&mut stream, &Request::Console { domain: domain.into(), kind })?;
    let Reply::ConsoleAttached { name } = reply else {
        return Err(ClientError::Protocol("expected a console reply".into()));
    };
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!("dom0: attached to the console of {name}; Ctrl-] detaches");
    }
    let _raw = tty.then(RawMode::enter).flatten();
    let mut from_domain = stream.try_clone()?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        loop {
            match from_domain.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Input on its own thread: the console ends when the printer sees the
    // connection close, either because the domain ended or because Ctrl-]
    // shut the connection down, without waiting for another key press.
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let detached = detached.clone();
        let mut to_domain = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = std::io::stdin();
            loop {
                let n = match stdin.read(&mut buf) {
                    // Input closed (a script): keep printing until the
                    // domain closes the console.
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (data, detach) = match buf[..n].iter().position(|&b| b == DETACH) {
                    Some(i) => (&buf[..i], true),
                    None => (&buf[..n], false),
                };
                if to_domain.write_all(data).is_err() || detach {
                    detached.store(detach, std::sync::atomic::Ordering::SeqCst);
                    let _ = to_domain.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let _ = printer.join();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(_raw);
    if tty {
        if detached.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\r\ndom0: detached from {name} (it keeps running)");
        } else {
            eprintln!("\r\ndom0: the console of {name} closed: the domain has ended");
        }
    }
    Ok(())
}

/// The terminal in raw mode while attached.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.0);
    }
}
