//! Drive the real `dom0` CLI against a daemon of its own: every test gets
//! a private run/state directory (`SPLITPV_RUN_DIR`/`SPLITPV_STATE_DIR`),
//! so tests run in parallel and never touch the host's /run/splitpv.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_bin;

/// A private dom0 (its daemon is started by the first CLI command).
pub struct Dom0 {
    /// Holds the run and state directories and test files.
    pub dir: PathBuf,
}

/// What one CLI command did.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code.
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl CliRun {
    /// stdout and stderr for failure messages.
    pub fn explain(&self) -> String {
        format!("exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Dom0 {
    /// A fresh directory under the target dir (not /tmp: tests may leave
    /// disk images there for inspection).
    pub fn new(test: &str) -> Dom0 {
        let dir = crate::target_profile_dir().join("dom0-tests").join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the test directory can be created");
        Dom0 { dir }
    }

    /// The run directory the daemon uses.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Runs `dom0 ARGS` with `stdin` as input.
    pub fn cli_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> CliRun {
        let mut cmd = Command::new(workspace_bin("dom0"));
        cmd.args(args)
            .env("SPLITPV_RUN_DIR", self.run_dir())
            .env("SPLITPV_STATE_DIR", self.dir.join("state"))
            .env("SPLITPV_HYPERVISOR", workspace_bin("hypervisor"))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("dom0 runs");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().expect("piped");
            let _ = s.write_all(input);
        }
        let out: Output = child.wait_with_output().expect("dom0 runs");
        CliRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `dom0 ARGS`.
    pub fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_with_input(args, None)
    }

    /// Runs `dom0 ARGS` and insists it succeeds.
    pub fn ok(&self, args: &[&str]) -> CliRun {
        let r = self.cli(args);
        assert_eq!(r.code, Some(0), "dom0 {args:?} failed:\n{}\n--- daemon log ---\n{}", r.explain(), self.daemon_log());
        r
    }

    /// Writes a file in the test directory and returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("test files can be written");
        p
    }

    /// A domain configuration for the freestanding test guest.
    pub fn testguest_config(&self, name: &str, cmdline: &str, extra: &str) -> PathBuf {
        let body = format!(
            "name = \"{name}\"\nmemory = 64\nvcpus = 1\nkernel = \"{}\"\ncmdline = \"{cmdline}\"\n{extra}\n",
            frontends::TESTGUEST_ELF
        );
        self.file(&format!("{name}.cfg"), body.as_bytes())
    }

    /// `list --json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let r = self.ok(&["list", "--json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout).unwrap_or_else(|e| panic!("list --json is not JSON ({e}):\n{}", r.stdout))
    }

    /// The entry of domain `name` in `list --json`.
    pub fn domain(&self, name: &str) -> Option<serde_json::Value> {
        self.list().into_iter().find(|d| d["name"] == name)
    }

    /// Waits until `cond` holds for `list --json`, or panics after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let l = self.list();
            if cond(&l) {
                return l;
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for {what}; list: {l:#?}\n--- daemon log ---\n{}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The serial console log of domain `id`'s current or last life.
    pub fn serial_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.run_dir().join("domains").join(id.to_string()).join("serial.log")).unwrap_or_default()
    }

    /// The hypervisor process's log of domain `id`.
    pub fn hypervisor_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.run_dir().join("domains").join(id.to_string()).join("hypervisor.log")).unwrap_or_default()
    }

    /// The daemon's log.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("dom0.log")).unwrap_or_default()
    }

    /// Path of a file in the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Dom0 {
    fn drop(&mut self) {
        // Stop the daemon (it kills its domains); its PID is in `info`.
        // No socket, no daemon: asking would start one.
        if !self.run_dir().join("dom0.sock").exists() {
            return;
        }
        let r = self.cli(&["info", "--json"]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.stdout) {
            if let Some(pid) = v["daemon_pid"].as_u64() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                let sock = self.run_dir().join("dom0.sock");
                let start = Instant::now();
                while sock.exists() && start.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}
