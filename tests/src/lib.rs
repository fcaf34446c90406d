//! Helpers for the end-to-end tests: find the real binaries, boot guests
//! through them, read what they report.
//!
//! The binaries are the ones `cargo test` builds for the workspace (the
//! `hypervisor` package has integration tests of its own, so its binary is
//! always built before any test runs).

pub mod dom0;
pub mod rig;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The cargo target directory this test binary lives in (…/target/debug).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // …/target/debug/deps/<test>-<hash>
    exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps").to_path_buf()
}

/// A binary of this workspace, built by the same `cargo test`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = target_profile_dir().join(name);
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace` (or build it with `cargo build -p {name}`)", p.display());
    p
}

/// Whether /dev/kvm can be used by this process. Under `CI=true` it must
/// be: a test that needs it would otherwise pass without running.
pub fn kvm_usable() -> bool {
    let usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if !usable && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, but /dev/kvm cannot be opened read-write: the tests that need it would pass without running");
    }
    usable
}

/// Whether the host's KVM is kvm_pvm.
pub fn host_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// What a `hypervisor run` produced.
#[derive(Debug)]
pub struct GuestRun {
    /// Process exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// The guest console (stdout).
    pub console: String,
    /// The hypervisor's own messages (stderr).
    pub messages: String,
}

impl GuestRun {
    /// A KVM statistic summed over all vCPUs, from `--stats` output.
    pub fn kvm_stat_total(&self, name: &str) -> Option<u64> {
        stat_row(&self.messages, name).map(|v| v.iter().sum())
    }

    /// Panics with everything the run printed.
    pub fn explain(&self) -> String {
        format!("exit code {:?}\n--- console ---\n{}\n--- hypervisor ---\n{}", self.code, self.console, self.messages)
    }
}

/// The per-vCPU values of a counter row in `--stats` output.
pub fn stat_row(stats: &str, name: &str) -> Option<Vec<u64>> {
    stats.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(name)).then(|| words.filter_map(|w| w.parse().ok()).collect())
    })
}

/// Runs `hypervisor run` on `kernel` with `args` added, with a hard limit
/// on wall time so a hung guest fails the test instead of hanging it.
pub fn run_hypervisor(kernel: &Path, args: &[&str], limit: Duration) -> GuestRun {
    let mut cmd = Command::new(workspace_bin("hypervisor"));
    cmd.arg("run").arg("--kernel").arg(kernel);
    if !args.contains(&"--timeout") {
        cmd.arg("--timeout").arg(limit.as_secs_f64().to_string());
    }
    if !args.contains(&"--console-log") {
        cmd.args(["--console-log", "/dev/null"]);
    }
    cmd.args(args).stdin(Stdio::null());
    let out: Output = cmd.output().expect("the hypervisor binary runs");
    GuestRun {
        code: out.status.code(),
        console: String::from_utf8_lossy(&out.stdout).into_owned(),
        messages: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Boots the freestanding test guest with `cmdline`.
pub fn run_testguest(cmdline: &str, args: &[&str]) -> GuestRun {
    let mut all = vec!["--cmdline", cmdline];
    all.extend_from_slice(args);
    run_hypervisor(Path::new(frontends::TESTGUEST_ELF), &all, Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_rows() {
        let s = "vCPU statistics after 0.1 s:\n  counter (KVM binary stats)   vcpu0 vcpu1\n  exits    13    4\n  insn_emulation  5  7\n";
        assert_eq!(stat_row(s, "insn_emulation"), Some(vec![5, 7]));
        assert_eq!(stat_row(s, "missing"), None);
    }
}
