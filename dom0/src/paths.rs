//! Where dom0 keeps its socket, per-domain files and state.
//!
//! Defaults follow the FHS: `/run/splitpv` (runtime: the management socket,
//! one directory per domain with its vhost-user sockets and logs) and
//! `/var/lib/splitpv` (the configurations of the domains that exist).
//! `SPLITPV_RUN_DIR` and `SPLITPV_STATE_DIR` move them (tests run their
//! own daemon in a temporary directory this way).

use std::path::{Path, PathBuf};

/// The daemon's directories.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Runtime directory (mode 0700).
    pub run_dir: PathBuf,
    /// State directory (mode 0700).
    pub state_dir: PathBuf,
}

impl Paths {
    /// From `SPLITPV_RUN_DIR` / `SPLITPV_STATE_DIR`, or the defaults.
    pub fn from_env() -> Paths {
        let var = |name: &str, default: &str| {
            std::env::var_os(name).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Paths { run_dir: var("SPLITPV_RUN_DIR", "/run/splitpv"), state_dir: var("SPLITPV_STATE_DIR", "/var/lib/splitpv") }
    }

    /// Both under one directory (tests).
    pub fn under(dir: &Path) -> Paths {
        Paths { run_dir: dir.join("run"), state_dir: dir.join("state") }
    }

    /// The management socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("dom0.sock")
    }

    /// The lock that keeps a second daemon from starting.
    pub fn lock(&self) -> PathBuf {
        self.run_dir.join("dom0.lock")
    }

    /// The daemon's log when the CLI started it.
    pub fn daemon_log(&self) -> PathBuf {
        self.run_dir.join("dom0.log")
    }

    /// A domain's runtime directory: vhost-user sockets, the hypervisor's
    /// output (the serial console and its messages).
    pub fn domain_dir(&self, id: u32) -> PathBuf {
        self.run_dir.join("domains").join(id.to_string())
    }

    /// Where the configuration of an existing domain is kept.
    pub fn domain_state(&self, name: &str) -> PathBuf {
        self.state_dir.join("domains").join(format!("{name}.json"))
    }
}

/// The `hypervisor` binary dom0 starts for each domain:
/// `SPLITPV_HYPERVISOR`, else the one next to the running `dom0` (they are
/// built and installed together), else `hypervisor` from `PATH`.
pub fn hypervisor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SPLITPV_HYPERVISOR").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/<profile>/deps; the binaries one up.
        for dir in exe.parent().into_iter().chain(exe.parent().and_then(Path::parent)) {
            let candidate = dir.join("hypervisor");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("hypervisor")
}
