//! `bench --rig`: the same benchmark inside the hardware-assisted rig
//! (tests/rig: an L1 Linux with nested AMD SVM under QEMU TCG), and the
//! Linux boot-time comparison with QEMU microvm there.
//!
//! The host side runs `tests/rig/rig.sh run --scenario
//! tests/rig/scenarios/bench.scenario` with this bench binary, the
//! hypervisor, the test guest image and QEMU copied into L1; in L1 the
//! scenario runs `bench --scale rig --summary` and `bench boot-time`, which
//! print their results as framed JSON ([`crate::summary::frame`]) on the
//! serial console; this module reads them back from rig.sh's output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::summary::{self, BootTimes, Summary};

/// The scenario (relative to the repository root).
pub const SCENARIO: &str = "tests/rig/scenarios/bench.scenario";
/// QEMU's firmware for microvm and the option ROM its `-kernel` loading of
/// a bzImage needs, copied into L1 at the same paths.
pub const QEMU_FILES: [&str; 2] = ["/usr/share/qemu/qboot.rom", "/usr/share/qemu/linuxboot_dma.bin"];
/// rig.sh's time limit for the whole L1 run (s).
pub const TIMEOUT_S: u32 = 1500;

/// What the host side needs.
#[derive(Clone, Debug)]
pub struct RigOptions {
    /// The hypervisor binary (the one the bare run used).
    pub hypervisor: PathBuf,
    /// The test guest image (the one the bare run used).
    pub testguest: PathBuf,
    /// This bench binary.
    pub bench: PathBuf,
    /// Where rig.sh's log goes.
    pub log: PathBuf,
    /// Boots per VMM in the boot-time comparison.
    pub boot_runs: u32,
}

/// One `RIG-RESULT` line.
#[derive(Clone, Debug, PartialEq)]
pub struct RigResult {
    /// Its name.
    pub name: String,
    /// PASS.
    pub pass: bool,
    /// The reason of a FAIL.
    pub reason: String,
}

/// What the rig run gave.
#[derive(Clone, Debug)]
pub struct RigData {
    /// The in-rig benchmark's key figures, or why there are none.
    pub summary: Result<Summary, String>,
    /// The boot-time comparison, or why there is none.
    pub boot: Result<BootTimes, String>,
    /// RIG-RESULT lines.
    pub results: Vec<RigResult>,
    /// rig.sh's exit code.
    pub code: Option<i32>,
    /// rig.sh's timing line ("QEMU start -> L1 init …").
    pub times: Option<String>,
    /// L1's kvm_amd state line.
    pub l1_kvm: Option<String>,
    /// The log.
    pub log: PathBuf,
    /// Wall time of the rig run.
    pub wall: Duration,
    /// The last lines of the log (for failures).
    pub tail: String,
    /// Set when the log is an earlier run's (`--rig-reuse-log`).
    pub reused: bool,
    /// This machine's load average (1, 5, 15 min) before and after the rig
    /// run (QEMU TCG runs on its CPUs).
    pub host_load: (String, String),
}

/// The rig part of a report.
#[derive(Clone, Debug)]
pub enum RigPart {
    /// `--rig` not given.
    NotRequested,
    /// The rig could not be run: why.
    Unavailable(String),
    /// It ran (maybe with failures inside).
    Ran(Box<RigData>),
}

/// The repository root (the bench crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Parses `RIG-RESULT <name> PASS` / `RIG-RESULT <name> FAIL <reason>`.
pub fn parse_results(log: &str) -> Vec<RigResult> {
    log.lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').split_once("RIG-RESULT ")?.1;
            let mut w = rest.splitn(3, ' ');
            let (name, verdict) = (w.next()?, w.next()?);
            if verdict != "PASS" && verdict != "FAIL" {
                return None;
            }
            Some(RigResult { name: name.into(), pass: verdict == "PASS", reason: w.next().unwrap_or("").into() })
        })
        .collect()
}

/// Reads the rig's results out of rig.sh's output `log`.
pub fn parse_log(log: &str, path: &Path, code: Option<i32>, wall: Duration) -> RigData {
    let summary = summary::unframe(log, "summary").and_then(|j| serde_json::from_str(&j).map_err(|e| format!("bad summary JSON: {e}")));
    let boot = summary::unframe(log, "boot").and_then(|j| serde_json::from_str(&j).map_err(|e| format!("bad boot JSON: {e}")));
    let line_after = |needle: &str| log.lines().find_map(|l| l.split_once(needle).map(|(_, r)| r.trim().to_string()));
    let lines: Vec<&str> = log.lines().collect();
    RigData {
        summary,
        boot,
        results: parse_results(log),
        code,
        times: line_after("  times: "),
        l1_kvm: line_after("RIG-L1: kvm_amd nested paging: ").map(|s| format!("nested paging {s}")),
        log: path.to_path_buf(),
        wall,
        tail: lines[lines.len().saturating_sub(25)..].join("\n"),
        reused: false,
        host_load: Default::default(),
    }
}

/// A copy of `src` in `dir` under the same name, without debug info when
/// `strip` is there (the rig's initramfs is unpacked by an emulated CPU:
/// 50 MB less of it saves seconds; the code is the same).
fn staged(src: &Path, dir: &Path) -> Result<PathBuf, String> {
    let name = src.file_name().ok_or_else(|| format!("{} has no file name", src.display()))?;
    let dst = dir.join(name);
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(src, &dst).map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dst.display()))?;
    }
    Ok(dst)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Runs the scenario in the rig; `progress` gets every line rig.sh prints.
pub fn run(opts: &RigOptions, mut progress: impl FnMut(&str)) -> RigPart {
    let root = repo_root();
    let rig = root.join("tests/rig/rig.sh");
    let scenario = root.join(SCENARIO);
    if !rig.is_file() || !scenario.is_file() {
        return RigPart::Unavailable(format!("{} or {} is missing", rig.display(), scenario.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let qemu = which("qemu-system-x86_64");
    if qemu.is_none() && !root_user {
        return RigPart::Unavailable("qemu-system-x86_64 is not installed and rig.sh can only install it as root".into());
    }
    if std::env::var_os("RIG_L1_DIR").is_none() || std::env::var_os("RIG_GUEST_DIR").is_none() {
        progress("RIG_L1_DIR/RIG_GUEST_DIR not set: rig.sh builds (or reuses) the kernels through guest-patches/build.sh (a clean build takes ~20 min)");
    }
    let stage = std::env::temp_dir().join(format!("splitpv-bench-rig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    if let Err(e) = std::fs::create_dir_all(&stage) {
        return RigPart::Unavailable(format!("cannot create {}: {e}", stage.display()));
    }
    let result = (|| -> Result<RigData, String> {
        let mut cmd = Command::new(&rig);
        cmd.arg("run").arg("--scenario").arg(&scenario).args(["--timeout", &TIMEOUT_S.to_string()]).arg("--log").arg(&opts.log);
        for b in [&opts.bench, &opts.hypervisor, &opts.testguest] {
            cmd.arg("--bin").arg(staged(b, &stage)?);
        }
        if let Some(q) = &qemu {
            cmd.arg("--bin").arg(q);
            for f in QEMU_FILES.iter().filter(|f| Path::new(f).is_file()) {
                cmd.arg("--file").arg(format!("{f}:{f}"));
            }
        }
        let env = stage.join("bench.env");
        std::fs::write(&env, format!("BENCH_BOOT_RUNS={}\n", opts.boot_runs)).map_err(|e| format!("cannot write {}: {e}", env.display()))?;
        cmd.arg("--file").arg(format!("{}:/etc/bench.env", env.display()));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        progress(&format!("{cmd:?}"));
        let started = Instant::now();
        let load_before = loadavg();
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", rig.display()))?;
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx2 = tx.clone();
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let out = child.stdout.take().expect("stdout is piped");
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut text = String::new();
        for line in rx {
            progress(&line);
            text.push_str(&line);
            text.push('\n');
        }
        let _ = (out_thread.join(), err_thread.join());
        let status = child.wait().map_err(|e| format!("waiting for rig.sh: {e}"))?;
        let mut d = parse_log(&text, &opts.log, status.code(), started.elapsed());
        d.host_load = (load_before, loadavg());
        Ok(d)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    match result {
        Ok(d) => RigPart::Ran(Box::new(d)),
        Err(e) => RigPart::Unavailable(e),
    }
}

/// The rig part from the log of an earlier `bench --rig` (to rework the
/// report without the minutes of another rig run).
pub fn from_log(path: &Path) -> RigPart {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut d = parse_log(&text, path, None, Duration::ZERO);
            d.reused = true;
            RigPart::Ran(Box::new(d))
        }
        Err(e) => RigPart::Unavailable(format!("cannot read the rig log {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results_and_frames_from_a_log() {
        let s = Summary { backend: "svm".into(), scale: "rig".into(), ..Summary::default() };
        let framed = summary::frame("summary", &serde_json::to_string(&s).unwrap());
        let log = format!(
            "RIG-L1: kvm_amd nested paging: enabled (params npt=Y nested=1 nrips=0)\n{framed}RIG-RESULT bench-rig PASS\n\
             RIG-RESULT bench-boot FAIL no marker\nRIG-RESULT x\n  times: QEMU start -> L1 init 2.9 s\n"
        );
        let d = parse_log(&log, Path::new("/tmp/x.log"), Some(1), Duration::from_secs(3));
        assert_eq!(d.summary.unwrap(), s);
        assert!(d.boot.is_err());
        assert_eq!(d.results.len(), 2);
        assert!(d.results[0].pass && !d.results[1].pass);
        assert_eq!(d.results[1].reason, "no marker");
        assert_eq!(d.times.as_deref(), Some("QEMU start -> L1 init 2.9 s"));
        assert_eq!(d.l1_kvm.as_deref(), Some("nested paging enabled (params npt=Y nested=1 nrips=0)"));
    }
}
