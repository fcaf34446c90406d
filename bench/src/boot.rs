//! `bench boot-time`: boot time to init of our Linux guest, on our
//! hypervisor and on QEMU microvm, the same kernel, initramfs and command
//! line, timed the same way: from starting the VMM process to the guest's
//! `SPLITPV-GUEST-READY` line (printed by its /init) on the VMM's stdout.
//! Run inside the rig's L1 (tests/rig/scenarios/bench.scenario), where
//! both get the same hardware-assisted KVM.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::summary::{BootRun, BootSeries, BootTimes};

/// The line the guest's /init prints first.
pub const READY: &str = "SPLITPV-GUEST-READY";

/// What to boot and with what.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// Our hypervisor.
    pub hypervisor: PathBuf,
    /// QEMU, if it is to be measured.
    pub qemu: Option<PathBuf>,
    /// QEMU's `-bios` (qboot for microvm).
    pub bios: Option<PathBuf>,
    /// QEMU's `-L` (where linuxboot_dma.bin is), if not its default.
    pub qemu_datadir: Option<PathBuf>,
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Guest command line.
    pub cmdline: String,
    /// Guest RAM (MiB).
    pub mem_mib: u64,
    /// Boots per VMM.
    pub runs: u32,
    /// Give up on a boot after this long.
    pub timeout: Duration,
}

/// The guest command line of the comparison.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 splitpv.test=info";

impl BootSpec {
    /// Our hypervisor's command.
    pub fn ours(&self) -> Command {
        let mut c = Command::new(&self.hypervisor);
        c.arg("run")
            .arg("--kernel")
            .arg(&self.kernel)
            .arg("--initrd")
            .arg(&self.initrd)
            .args(["--mem", &self.mem_mib.to_string(), "--vcpus", "1", "--cmdline", &self.cmdline])
            .args(["--console-log", "/dev/null", "--name", "boottime"])
            .args(["--timeout", &self.timeout.as_secs().to_string()]);
        c
    }

    /// QEMU microvm's command (None if QEMU is not to be measured).
    pub fn qemu(&self) -> Option<Command> {
        let mut c = Command::new(self.qemu.as_ref()?);
        c.args(["-M", "microvm,accel=kvm", "-cpu", "host", "-m", &self.mem_mib.to_string()])
            .args(["-nographic", "-no-reboot"]);
        if let Some(b) = &self.bios {
            c.arg("-bios").arg(b);
        }
        if let Some(d) = &self.qemu_datadir {
            c.arg("-L").arg(d);
        }
        c.arg("-kernel").arg(&self.kernel).arg("-initrd").arg(&self.initrd).arg("-append").arg(&self.cmdline);
        Some(c)
    }
}

/// `[    1.234567] Run /init as init process` → 1.234567.
pub fn kernel_init_time(line: &str) -> Option<f64> {
    if !line.contains("Run /init as init process") {
        return None;
    }
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Starts `cmd`, notes when `READY` appears on its stdout, waits up to
/// `grace` after that for it to end (the `info` test powers off), kills it
/// otherwise. Returns the run and the last lines it printed.
pub fn time_one(mut cmd: Command, timeout: Duration, grace: Duration) -> std::io::Result<(BootRun, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let ready: Arc<Mutex<Option<Instant>>> = Arc::default();
    let kinit: Arc<Mutex<Option<f64>>> = Arc::default();
    let out = child.stdout.take().expect("stdout is piped");
    let (r2, k2) = (ready.clone(), kinit.clone());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = Vec::new();
        let mut r = BufReader::new(out);
        while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
            let now = Instant::now();
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
            if line.contains(READY) {
                r2.lock().expect("not poisoned").get_or_insert(now);
            }
            if let Some(t) = kernel_init_time(&line) {
                k2.lock().expect("not poisoned").get_or_insert(t);
            }
            text.push_str(&line);
            text.push('\n');
            buf.clear();
        }
        text
    });
    let mut err = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut exited = None;
    loop {
        if let Some(status) = child.try_wait()? {
            exited = Some((started.elapsed(), status.code()));
            break;
        }
        let seen = *ready.lock().expect("not poisoned");
        let limit = match seen {
            Some(t) => (t - started) + grace,
            None => timeout,
        };
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = reader.join().unwrap_or_default();
    let errs = err_reader.join().unwrap_or_default();
    // The reader thread timestamps the marker when it gets to read it,
    // which can be after the main loop saw the process exit; the marker
    // was written before the exit, so the exit time bounds it too.
    let ready_at = ready.lock().expect("not poisoned").map(|t| t - started);
    let ready_at = match (ready_at, exited) {
        (Some(r), Some((e, _))) => Some(r.min(e)),
        (r, _) => r,
    };
    let run = BootRun {
        ready_s: ready_at.map(|d| d.as_secs_f64()),
        kernel_init_s: *kinit.lock().expect("not poisoned"),
        exit_s: exited.map(|(d, _)| d.as_secs_f64()),
        code: exited.and_then(|(_, c)| c),
    };
    let all: Vec<&str> = text.lines().chain(errs.lines()).collect();
    Ok((run, all[all.len().saturating_sub(8)..].join(" | ")))
}

fn series(vmm: &str, make: impl Fn() -> Command, spec: &BootSpec, progress: &mut impl FnMut(&str)) -> BootSeries {
    let mut s = BootSeries { vmm: vmm.into(), command: shown(&make()), ..BootSeries::default() };
    for i in 0..spec.runs.max(1) {
        match time_one(make(), spec.timeout, Duration::from_secs(60)) {
            Ok((run, tail)) => {
                progress(&format!(
                    "{vmm} boot {}: ready {} (kernel's clock at /init: {}), exit {} code {:?}",
                    i + 1,
                    run.ready_s.map_or("never".into(), |t| format!("{t:.3} s")),
                    run.kernel_init_s.map_or("n/a".into(), |t| format!("{t:.3} s")),
                    run.exit_s.map_or("killed".into(), |t| format!("{t:.3} s")),
                    run.code
                ));
                if run.ready_s.is_none() {
                    s.tail = Some(tail);
                }
                s.runs.push(run);
            }
            Err(e) => {
                s.error = Some(format!("cannot start {}: {e}", s.command));
                break;
            }
        }
    }
    if s.error.is_none() && s.runs.iter().all(|r| r.ready_s.is_none()) {
        s.error = Some(format!("no {READY} within {} s in any run", spec.timeout.as_secs()));
    }
    s
}

/// Boots the kernel `spec.runs` times with each VMM, alternating them.
pub fn measure(spec: &BootSpec, mut progress: impl FnMut(&str)) -> BootTimes {
    let load = std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    let mut out = BootTimes {
        kernel: spec.kernel.display().to_string(),
        initrd: spec.initrd.display().to_string(),
        cmdline: spec.cmdline.clone(),
        mem_mib: spec.mem_mib,
        load,
        series: Vec::new(),
    };
    let one = BootSpec { runs: 1, ..spec.clone() };
    let mut ours = BootSeries::default();
    let mut qemu = BootSeries::default();
    // Alternate (ours, QEMU, ours, …) so a change in the machine's load
    // hits both alike.
    for i in 0..spec.runs.max(1) {
        let o = series("splitpv hypervisor", || spec.ours(), &one, &mut progress);
        merge(&mut ours, o, i);
        if spec.qemu.is_some() {
            let q = series("QEMU microvm", || spec.qemu().expect("qemu is set"), &one, &mut progress);
            merge(&mut qemu, q, i);
        }
    }
    out.series.push(ours);
    if spec.qemu.is_some() {
        out.series.push(qemu);
    } else {
        out.series.push(BootSeries { vmm: "QEMU microvm".into(), error: Some("no QEMU given (--qemu)".into()), ..BootSeries::default() });
    }
    for s in &mut out.series {
        if s.error.is_none() && !s.runs.is_empty() && s.runs.iter().all(|r| r.ready_s.is_none()) {
            s.error = Some(format!("no {READY} within {} s in any run", spec.timeout.as_secs()));
        }
    }
    out
}

/// Adds the single-boot series `one` (the `i`-th) to `all`.
fn merge(all: &mut BootSeries, one: BootSeries, i: u32) {
    if i == 0 {
        all.vmm = one.vmm.clone();
        all.command = one.command.clone();
    }
    all.runs.extend(one.runs);
    if all.error.is_none() && one.error.as_deref().is_some_and(|e| e.starts_with("cannot start")) {
        all.error = one.error;
    }
    if all.tail.is_none() {
        all.tail = one.tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_clock_at_init() {
        assert_eq!(kernel_init_time("[    1.234567] Run /init as init process"), Some(1.234567));
        assert_eq!(kernel_init_time("[   12.5] Run /init as init process\r"), Some(12.5));
        assert_eq!(kernel_init_time("[    1.2] Freeing unused kernel image"), None);
    }

    #[test]
    fn a_shell_that_prints_the_marker_is_timed() {
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 0.2; echo '[    0.5] Run /init as init process'; echo SPLITPV-GUEST-READY; exit 3"]);
        let (run, _) = time_one(c, Duration::from_secs(10), Duration::from_secs(5)).unwrap();
        let t = run.ready_s.expect("the marker was seen");
        assert!((0.15..5.0).contains(&t), "{t}");
        assert_eq!(run.kernel_init_s, Some(0.5));
        assert_eq!(run.code, Some(3));
        assert!(run.exit_s.unwrap() >= t);

        // No marker: killed at the timeout.
        let mut c = Command::new("sh");
        c.args(["-c", "echo booting; exec sleep 30"]);
        let (run, tail) = time_one(c, Duration::from_millis(300), Duration::from_secs(5)).unwrap();
        assert_eq!((run.ready_s, run.exit_s), (None, None));
        assert!(tail.contains("booting"), "{tail}");
    }
}
