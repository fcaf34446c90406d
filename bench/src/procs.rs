//! The processes a benchmark run measures: `hypervisor run` children (their
//! CPU time from `wait4`, their KVM exit counters from `--stats`, their
//! memory from /proc/PID/smaps) and this process's own CPU time (where the
//! dom0 backends run).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// The `hypervisor` binary, and the test guest image it runs.
#[derive(Clone, Debug)]
pub struct Hypervisor {
    /// Its path.
    pub path: PathBuf,
    /// The freestanding test guest's ELF image (`--kernel` of every run):
    /// `frontends::TESTGUEST_ELF` unless told otherwise (see
    /// [`Hypervisor::with_testguest`]).
    pub testguest: PathBuf,
}

/// The cargo profile directory this executable lives in (`…/target/release`
/// for the bench, `…/target/debug` for its tests).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    Some(if dir.file_name().is_some_and(|n| n == "deps") { dir.parent()?.to_path_buf() } else { dir.to_path_buf() })
}

impl Hypervisor {
    /// `explicit`, else `$SPLITPV_HYPERVISOR`, else the binary next to this
    /// one (same target directory and profile), built with cargo if it is
    /// not there yet.
    pub fn locate(explicit: Option<&Path>) -> Result<Hypervisor, BenchError> {
        let testguest = PathBuf::from(frontends::TESTGUEST_ELF);
        if let Some(p) = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("SPLITPV_HYPERVISOR").map(PathBuf::from)) {
            return if p.is_file() {
                Ok(Hypervisor { path: p, testguest })
            } else {
                Err(BenchError::NoHypervisor(format!("{} is not a file", p.display())))
            };
        }
        let dir = profile_dir().ok_or_else(|| BenchError::NoHypervisor("this executable's directory is unknown".into()))?;
        let path = dir.join("hypervisor");
        if path.is_file() {
            return Ok(Hypervisor { path, testguest });
        }
        Self::build(&dir)?;
        if path.is_file() {
            Ok(Hypervisor { path, testguest })
        } else {
            Err(BenchError::NoHypervisor(format!("cargo built it, yet {} is missing", path.display())))
        }
    }

    /// `cargo build [--release] -p hypervisor --bin hypervisor` into the
    /// target directory `profile_dir` belongs to.
    fn build(profile_dir: &Path) -> Result<(), BenchError> {
        let target = profile_dir.parent().ok_or_else(|| BenchError::NoHypervisor("no target directory".into()))?;
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()));
        cmd.args(["build", "-p", "hypervisor", "--bin", "hypervisor", "--manifest-path"]).arg(&manifest).env("CARGO_TARGET_DIR", target);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        eprintln!("bench: building the hypervisor binary: {cmd:?}");
        let status = cmd.status().map_err(|e| BenchError::NoHypervisor(format!("cannot run cargo: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::NoHypervisor(format!("cargo build -p hypervisor failed ({status})")))
        }
    }

    /// Uses `explicit`, else `$SPLITPV_TESTGUEST`, else the image this
    /// crate was built with (`frontends::TESTGUEST_ELF`, a path under the
    /// build's target directory: elsewhere, e.g. inside the rig's L1, the
    /// image has to be named).
    pub fn with_testguest(mut self, explicit: Option<&Path>) -> Result<Hypervisor, BenchError> {
        if let Some(p) = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("SPLITPV_TESTGUEST").map(PathBuf::from)) {
            self.testguest = p;
        }
        if self.testguest.is_file() {
            Ok(self)
        } else {
            Err(BenchError::NoTestGuest(self.testguest.clone()))
        }
    }

    /// `hypervisor info --json`, parsed (None if it fails).
    pub fn info(&self) -> Option<serde_json::Value> {
        let out = Command::new(&self.path).args(["info", "--json"]).stderr(Stdio::null()).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// Memory of a running hypervisor process, from /proc/PID/smaps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemSample {
    /// Resident set, all mappings (KiB).
    pub rss_kib: u64,
    /// Of which guest RAM (the memfd mapping) (KiB).
    pub guest_kib: u64,
    /// Of which anonymous memory (heap, stacks) (KiB).
    pub anon_kib: u64,
    /// Of which file-backed, not guest RAM: the binary and its libraries
    /// (KiB; shared with other processes using the same files).
    pub file_kib: u64,
}

impl MemSample {
    /// Everything resident that is not guest RAM (KiB).
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_kib)
    }
}

/// Reads /proc/`pid`/smaps; the guest RAM is the mapping of the memfd
/// named `memfd:domain-…`.
pub fn sample_memory(pid: u32) -> Option<MemSample> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(parse_smaps(&text))
}

/// Parses smaps text (see [`sample_memory`]).
pub fn parse_smaps(text: &str) -> MemSample {
    let mut s = MemSample::default();
    let mut guest = false;
    let mut file = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping header: range perms offset dev inode [path].
            let path = line.split_whitespace().nth(5).unwrap_or("");
            guest = path.starts_with("/memfd:domain-");
            file = !guest && path.starts_with('/');
            continue;
        }
        let kib = || words.clone().next().and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        match first {
            "Rss:" => {
                let v = kib();
                s.rss_kib += v;
                if guest {
                    s.guest_kib += v;
                } else if file {
                    s.file_kib += v;
                }
            }
            "Anonymous:" if !guest => s.anon_kib += kib(),
            _ => {}
        }
    }
    s
}

/// What one `hypervisor run` did.
#[derive(Clone, Debug, Default)]
pub struct GuestRun {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// The guest's console (stdout).
    pub console: String,
    /// The hypervisor's messages and `--stats` (stderr).
    pub messages: String,
    /// User + system CPU time of the process (from wait4).
    pub cpu: Duration,
    /// Peak resident set (KiB, from wait4).
    pub max_rss_kib: u64,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// The sample with the largest non-guest resident set, if sampled.
    pub memory: Option<MemSample>,
}

impl GuestRun {
    /// A counter of the `--stats` table summed over the vCPUs (the first
    /// row of that name: the KVM binary stats come first).
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.messages.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(name)).then(|| words.filter_map(|w| w.parse::<u64>().ok()).sum())
        })
    }

    /// The console line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.console.lines().find(|l| l.starts_with(prefix))
    }

    /// The last few lines of output, for errors.
    pub fn tail(&self) -> String {
        let all: Vec<&str> = self.console.lines().chain(self.messages.lines()).collect();
        all[all.len().saturating_sub(6)..].join(" | ")
    }
}

/// How to run a guest.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    /// The guest's command line.
    pub cmdline: String,
    /// `--device KIND:SOCKET` values.
    pub devices: Vec<String>,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Kill it after this long.
    pub timeout: Duration,
    /// Sample /proc/PID/smaps every this often while it runs.
    pub sample_memory: Option<Duration>,
    /// The domain's name.
    pub name: &'a str,
}

/// Runs the test guest once and waits for it.
pub fn run_guest(hv: &Hypervisor, spec: &RunSpec<'_>) -> Result<GuestRun, BenchError> {
    let child = spawn_guest(hv, spec)?;
    child.wait(spec.sample_memory)
}

/// A `hypervisor run` that has been started.
pub struct RunningGuest {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    started: Instant,
}

/// Starts the test guest; [`RunningGuest::wait`] collects it.
pub fn spawn_guest(hv: &Hypervisor, spec: &RunSpec<'_>) -> Result<RunningGuest, BenchError> {
    let mut cmd = Command::new(&hv.path);
    cmd.arg("run")
        .arg("--kernel")
        .arg(&hv.testguest)
        .args(["--mem", &spec.mem_mib.to_string(), "--name", spec.name, "--console-log", "/dev/null", "--stats"])
        .args(["--timeout", &spec.timeout.as_secs_f64().to_string()])
        .args(["--cmdline", &spec.cmdline]);
    for d in &spec.devices {
        cmd.args(["--device", d]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| BenchError::Spawn { what: hv.path.display().to_string(), source })?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    Ok(RunningGuest { child, out, err, started })
}

impl RunningGuest {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process (sampling its memory meanwhile if asked) and
    /// collects what it printed and used.
    pub fn wait(self, sample_every: Option<Duration>) -> Result<GuestRun, BenchError> {
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: rusage is plain data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut memory: Option<MemSample> = None;
        loop {
            let flags = if sample_every.is_some() { libc::WNOHANG } else { 0 };
            // SAFETY: `pid` is our own child, not yet reaped (std's Child
            // never waited for it); `status` and `usage` are valid for
            // writes.
            let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            if r == pid {
                break;
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(BenchError::Os { what: "wait4", source: e });
            }
            if let Some(every) = sample_every {
                if let Some(s) = sample_memory(pid as u32) {
                    if better_sample(s, memory) {
                        memory = Some(s);
                    }
                }
                std::thread::sleep(every);
            }
        }
        let wall = self.started.elapsed();
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let console = self.out.join().unwrap_or_default();
        let messages = self.err.join().unwrap_or_default();
        Ok(GuestRun {
            code,
            console,
            messages,
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss as u64,
            wall,
            memory,
        })
    }
}

/// Whether `s` replaces `best` as the run's memory sample: the largest
/// non-guest resident set while guest RAM is mapped (a sample taken while
/// the process starts up or tears the domain down has no guest RAM and
/// would count start-up or teardown state); one without guest RAM only if
/// there is nothing better.
fn better_sample(s: MemSample, best: Option<MemSample>) -> bool {
    match best {
        None => true,
        Some(m) => match (s.guest_kib > 0, m.guest_kib > 0) {
            (true, false) => true,
            (false, true) => false,
            _ => s.overhead_kib() > m.overhead_kib(),
        },
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// User + system CPU time of this whole process so far (threads that have
/// ended included): the dom0 backends' worker threads run here.
pub fn self_cpu() -> Result<Duration, BenchError> {
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(BenchError::Os { what: "getrusage", source: std::io::Error::last_os_error() });
    }
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

/// User + system CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes; RUSAGE_THREAD is Linux's.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// The TSC rate of this machine (kHz), measured once: rdtsc against
/// CLOCK_MONOTONIC over 200 ms. The test guest reports TSC cycles and, on
/// kvm_pvm, the rate (from PVM's MSR); elsewhere (the rig's nested SVM) it
/// cannot tell the rate, and its cycles are converted with this one (a
/// guest's TSC runs at its host's rate: KVM scales it only when asked).
pub fn tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        let (t0, c0) = (Instant::now(), rdtsc());
        std::thread::sleep(Duration::from_millis(200));
        let (t1, c1) = (Instant::now(), rdtsc());
        let ns = (t1 - t0).as_nanos().max(1) as f64;
        (c1.wrapping_sub(c0) as f64 / ns * 1e6).round() as u64
    })
}

fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The value of `key=` in a `key=value …` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// [`field`] parsed as a number.
pub fn num(line: &str, key: &str) -> Option<u64> {
    field(line, key)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_split_guest_ram_from_the_rest() {
        let text = "\
5555-6666 r-xp 00000000 fd:01 123 /usr/bin/hypervisor
Size:               100 kB
Rss:                 40 kB
Anonymous:            0 kB
7000-8000 rw-p 00000000 00:00 0 
Rss:                 12 kB
Anonymous:           12 kB
9000-a000 rw-s 00000000 00:01 77 /memfd:domain-bench (deleted)
Rss:               5000 kB
Anonymous:            0 kB
";
        let s = parse_smaps(text);
        assert_eq!(s, MemSample { rss_kib: 5052, guest_kib: 5000, anon_kib: 12, file_kib: 40 });
        assert_eq!(s.overhead_kib(), 52);
    }

    #[test]
    fn samples_with_guest_ram_win() {
        let early = MemSample { rss_kib: 9000, guest_kib: 0, anon_kib: 2000, file_kib: 7000 };
        let running = MemSample { rss_kib: 12000, guest_kib: 7000, anon_kib: 1000, file_kib: 4000 };
        let bigger = MemSample { rss_kib: 13000, guest_kib: 7000, anon_kib: 2000, file_kib: 4000 };
        assert!(better_sample(early, None));
        assert!(better_sample(running, Some(early)));
        assert!(!better_sample(early, Some(running)));
        assert!(better_sample(bigger, Some(running)));
        assert!(!better_sample(running, Some(bigger)));
    }

    #[test]
    fn fields_and_stats() {
        let l = "VIRTIO-BENCH PASS: op=read size=4096 batch=16 req_per_s=37000 kicks=5";
        assert_eq!(num(l, "size"), Some(4096));
        assert_eq!(num(l, "kicks"), Some(5));
        assert_eq!(field(l, "op"), Some("read"));
        assert_eq!(num(l, "missing"), None);
        let run = GuestRun { messages: "  exits   10   5\n  mmio_exits 3 4\n  mmio_exits 9 9\n".into(), ..GuestRun::default() };
        assert_eq!(run.stat("exits"), Some(15));
        assert_eq!(run.stat("mmio_exits"), Some(7));
        assert_eq!(run.stat("nope"), None);
    }
}
