//! The management protocol between the `dom0` CLI and the daemon.
//!
//! One request, one response, each a single line of JSON on the daemon's
//! Unix socket. The only exception is [`Request::Console`]: after its
//! [`Reply::ConsoleAttached`] the connection carries raw console bytes in
//! both directions until either side closes it.
//!
//! Lines are bounded by [`MAX_LINE`]; a longer or malformed line gets an
//! [`Response::Error`] and the connection is closed.

use serde::{Deserialize, Serialize};

use crate::config::{DomainSpec, PagingMode, ViolationPolicy};

/// Longest request or response line, in bytes (a domain list of hundreds
/// of domains fits easily; a runaway client does not grow the daemon).
pub const MAX_LINE: usize = 1 << 20;

/// Which of a domain's consoles to attach to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleKind {
    /// The domain's console: what the hypervisor's console carries, the PV
    /// console (`console_io`; the patched Linux's hvc0) and the emulated
    /// UART (ttyS0), from the first byte the guest writes.
    #[default]
    Pv,
    /// The virtio-console dom0 serves (Linux's hvc1 beside the PV console,
    /// hvc0 without it).
    Virtio,
}

/// What a client asks the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Build and start a domain.
    Create {
        /// The parsed configuration.
        spec: DomainSpec,
        /// Leave its vCPUs paused until `unpause`.
        paused: bool,
    },
    /// The domains.
    List,
    /// Kill a domain at once and free everything it had.
    Destroy {
        /// Name or numeric ID.
        domain: String,
    },
    /// Ask the guest to shut down (ACPI power button).
    Shutdown {
        /// Name or numeric ID.
        domain: String,
        /// Answer only once the domain has ended (or `timeout_s` passed).
        wait: bool,
        /// How long to wait, seconds.
        timeout_s: u64,
    },
    /// Ask the guest to shut down and start it again afterwards.
    Reboot {
        /// Name or numeric ID.
        domain: String,
    },
    /// Stop running the domain's vCPUs.
    Pause {
        /// Name or numeric ID.
        domain: String,
    },
    /// Run the domain's vCPUs again.
    Unpause {
        /// Name or numeric ID.
        domain: String,
    },
    /// Attach to one of the domain's consoles; the connection then
    /// carries bytes.
    Console {
        /// Name or numeric ID.
        domain: String,
        /// Which console (the domain's own unless said otherwise).
        #[serde(default)]
        kind: ConsoleKind,
    },
    /// The host and the daemon.
    Info,
    /// Per-domain resource use and rates since the previous `Top`.
    Top,
    /// One domain in detail.
    DomainInfo {
        /// Name or numeric ID.
        domain: String,
    },
    /// Audit a direct-paging domain's page tables (its vCPUs paused
    /// meanwhile).
    Audit {
        /// Name or numeric ID.
        domain: String,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The request was carried out.
    Ok {
        /// What it produced.
        reply: Reply,
    },
    /// It was not; the message says why, as a sentence.
    Error {
        /// Why.
        message: String,
    },
}

/// What a successful request produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// A domain was created.
    Created {
        /// Its ID.
        id: u32,
        /// Its name.
        name: String,
    },
    /// The domain table.
    Domains {
        /// One entry per domain, by ID.
        domains: Vec<DomainInfo>,
    },
    /// Done; a sentence for people.
    Done {
        /// What happened.
        message: String,
    },
    /// The host.
    Info {
        /// Host facts.
        host: HostInfo,
    },
    /// Resource use per domain.
    Top {
        /// One entry per domain.
        domains: Vec<DomainTop>,
    },
    /// One domain in detail.
    Domain {
        /// The domain.
        domain: DomainDetail,
    },
    /// The result of an audit.
    Audit {
        /// The domain's name.
        name: String,
        /// What the hypervisor found.
        report: hypervisor::pv::audit::AuditReport,
    },
    /// Console attached: raw bytes follow.
    ConsoleAttached {
        /// The domain's name.
        name: String,
    },
}

/// The state of a domain, as `xl list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Its process is being started.
    Starting,
    /// Running.
    Running,
    /// vCPUs paused.
    Paused,
    /// Ended and kept (`preserve`); `destroy` removes it.
    Shutdown,
    /// Being restarted after a reboot.
    Restarting,
}

/// One row of `dom0 list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Domain ID (from 1; dom0 itself is not listed).
    pub id: u32,
    /// Name.
    pub name: String,
    /// State.
    pub state: DomainState,
    /// RAM, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// The domain's hypervisor process, while it runs.
    pub pid: Option<u32>,
    /// Seconds since the current life started.
    pub uptime_s: u64,
    /// How many times it was started (1 + restarts).
    pub starts: u32,
    /// Why its previous life (or, if shut down, its life) ended.
    pub last_end: Option<String>,
    /// Its devices, e.g. `blk:xvda`, `net:02:..`, `console`.
    pub devices: Vec<String>,
    /// How its page tables are managed: `native` or `direct`.
    pub paging: PagingMode,
}

/// `dom0 info NAME`: one domain in detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainDetail {
    /// What `list` shows.
    #[serde(flatten)]
    pub info: DomainInfo,
    /// What a direct-paging violation does.
    pub paging_violation: ViolationPolicy,
    /// The hypervisor's paging counters (name, value; zeros left out),
    /// as `hypervisor run --stats` prints them; empty if the domain does
    /// not run.
    pub paging_counters: Vec<(String, u64)>,
}

/// `dom0 info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// The KVM backend: vmx, svm or pvm.
    pub backend: String,
    /// `hypervisor info` in full.
    pub hypervisor_info: String,
    /// Online CPUs.
    pub cpus: u32,
    /// Host RAM, MiB.
    pub memory_total_mib: u64,
    /// Host RAM available, MiB.
    pub memory_available_mib: u64,
    /// RAM given to running domains, MiB.
    pub domains_memory_mib: u64,
    /// Number of domains.
    pub domains: u32,
    /// The daemon's PID.
    pub daemon_pid: u32,
    /// The daemon's version.
    pub version: String,
}

/// One row of `dom0 top`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainTop {
    /// Domain ID.
    pub id: u32,
    /// Name.
    pub name: String,
    /// State.
    pub state: DomainState,
    /// vCPUs.
    pub vcpus: u32,
    /// CPU time of all vCPU threads, seconds.
    pub vcpu_time_s: f64,
    /// vCPU use since the previous sample, percent of one CPU.
    pub cpu_percent: f64,
    /// Guest RAM, MiB.
    pub memory_mib: u64,
    /// Resident memory of the hypervisor process, MiB.
    pub rss_mib: f64,
    /// VM exits since start.
    pub exits: u64,
    /// VM exits per second since the previous sample.
    pub exits_per_s: f64,
    /// Requests completed by the domain's backends since start.
    pub io_requests: u64,
    /// Backend requests per second since the previous sample.
    pub io_requests_per_s: f64,
    /// How its page tables are managed.
    pub paging: PagingMode,
    /// Paging requests the validator carried out since start (`mmu_update`
    /// requests, plain writes included, plus `mmuext_op` operations).
    pub paging_updates: u64,
    /// Of those, per second since the previous sample.
    pub paging_updates_per_s: f64,
    /// Paging requests it refused since start.
    pub paging_rejected: u64,
    /// Refused per second since the previous sample.
    pub paging_rejected_per_s: f64,
}

/// Renders one response line (without the newline).
pub fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Request::Shutdown { domain: "web".into(), wait: true, timeout_s: 30 };
        let line = encode(&r);
        assert_eq!(line, r#"{"op":"shutdown","domain":"web","wait":true,"timeout_s":30}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        let e = Response::Error { message: "no domain is called x.".into() };
        assert_eq!(serde_json::from_str::<Response>(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn unknown_operations_are_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"destroy"}"#).is_err(), "missing field");
    }
}
