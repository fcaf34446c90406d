//! The configuration of one domain, and its validation.
//!
//! Pure logic: every value a user or dom0 can pass is checked here, before
//! any KVM object exists, so that a bad value is a sentence and not a failed
//! ioctl.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

/// Smallest RAM a domain may have. The test guest is linked at 2 MiB and
/// needs room for its stacks and page tables above that.
pub const MIN_MEMORY_MIB: u64 = 8;
/// Largest RAM a domain may have (1 TiB); the host's own limit is checked
/// when the memory is created.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Largest number of vCPUs: 8-bit APIC IDs, without x2APIC.
pub const MAX_VCPUS: u32 = 255;
/// Longest domain name.
pub const MAX_NAME_LEN: usize = 64;

/// Everything needed to build one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// Name used in messages and log file names.
    pub name: String,
    /// The guest kernel image: a freestanding ELF, a Linux bzImage, or a
    /// Linux vmlinux with a PVH note.
    pub kernel: PathBuf,
    /// An initrd for a Linux kernel.
    pub initrd: Option<PathBuf>,
    /// The guest's command line.
    pub cmdline: String,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Where the console output is logged, besides stdout.
    pub console_log: Option<PathBuf>,
    /// Split-driver devices, in slot order: device `i` gets virtio-mmio
    /// slot `i` (see [`pvabi::virtio`]).
    pub devices: Vec<VirtioDeviceConfig>,
    /// Hide our CPUID leaves: the guest sees KVM's leaves at 0x4000_0000,
    /// as under a plain KVM host, and no trace of our PV interface (the
    /// hypercall MSR and port still work for a guest that uses them
    /// blindly). For testing that PV guests fall back to emulated devices.
    pub hide_pv_cpuid: bool,
    /// Whether the guest's page tables are put under validation (direct
    /// paging) or left to the guest (native, the default).
    pub paging: PagingMode,
    /// What a detected direct-paging violation (a vCPU on a CR3 that is no
    /// validated L4, or with CR0.WP clear) does in a direct-paging domain.
    pub paging_violation: ViolationPolicy,
}

/// What a direct-paging violation does (see `hypervisor::pv::guard`).
///
/// The default is to kill: a domain that asked for direct paging and then
/// runs on page tables the validator never saw has lost every guarantee
/// the mode gives, and a loud end at the first exit that sees it points at
/// the guest bug; `report` keeps it running (counted and logged once per
/// kind), for bringing a guest up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationPolicy {
    /// Count and log the violation; the domain runs on.
    Report,
    /// End the domain as crashed, with the violation as the reason.
    #[default]
    Kill,
}

impl ViolationPolicy {
    /// Every policy.
    pub const ALL: [ViolationPolicy; 2] = [ViolationPolicy::Report, ViolationPolicy::Kill];

    /// The name used on the command line and in xl.cfg.
    pub fn name(self) -> &'static str {
        match self {
            ViolationPolicy::Report => "report",
            ViolationPolicy::Kill => "kill",
        }
    }
}

impl fmt::Display for ViolationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a domain's page tables are managed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagingMode {
    /// The guest manages its page tables itself; `mmu_update` and
    /// `mmuext_op` are still available (CPUID `DIRECT_PAGING`), and nothing
    /// is checked at exits.
    #[default]
    Native,
    /// Direct paging: CPUID tells the guest (`PAGING_DIRECT`) that it must
    /// put its page tables under validation and change them only through
    /// the paging hypercalls; the hypervisor checks CR3 and CR0.WP of every
    /// vCPU that has loaded a validated base pointer.
    Direct,
}

impl PagingMode {
    /// Every mode, in the order the help lists them.
    pub const ALL: [PagingMode; 2] = [PagingMode::Native, PagingMode::Direct];

    /// The name used on the command line and in xl.cfg.
    pub fn name(self) -> &'static str {
        match self {
            PagingMode::Native => "native",
            PagingMode::Direct => "direct",
        }
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PagingMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        PagingMode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| ConfigError::PagingMode(s.to_string()))
    }
}

/// What kind of virtio device a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// virtio-blk (device ID 2).
    Blk,
    /// virtio-net (device ID 1).
    Net,
    /// virtio-console (device ID 3).
    Console,
}

impl DeviceKind {
    /// The virtio device ID.
    pub fn device_id(self) -> u32 {
        match self {
            DeviceKind::Net => 1,
            DeviceKind::Blk => 2,
            DeviceKind::Console => 3,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Blk => "blk",
            DeviceKind::Net => "net",
            DeviceKind::Console => "console",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One split-driver device: its kind and the vhost-user socket of the dom0
/// backend that implements it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioDeviceConfig {
    /// Kind of device.
    pub kind: DeviceKind,
    /// The backend's vhost-user socket (the hypervisor connects to it).
    pub socket: PathBuf,
}

impl FromStr for VirtioDeviceConfig {
    type Err = ConfigError;

    /// Parses `KIND:SOCKET`, as in `--device blk:/run/splitpv/web.blk.sock`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::DeviceSyntax(s.to_string());
        let (kind, socket) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "blk" => DeviceKind::Blk,
            "net" => DeviceKind::Net,
            "console" => DeviceKind::Console,
            _ => return Err(bad()),
        };
        if socket.is_empty() {
            return Err(bad());
        }
        Ok(VirtioDeviceConfig { kind, socket: PathBuf::from(socket) })
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Bad domain name.
    #[error("domain name {0:?} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.' or '-'")]
    InvalidName(String),
    /// Memory outside the allowed range.
    #[error("memory of {0} MiB is out of range: a domain has between {MIN_MEMORY_MIB} MiB and {MAX_MEMORY_MIB} MiB")]
    MemoryOutOfRange(u64),
    /// vCPU count outside the allowed range.
    #[error("{0} vCPUs is out of range: a domain has between 1 and {MAX_VCPUS} vCPUs")]
    VcpusOutOfRange(u32),
    /// Command line too long for the boot protocol.
    #[error("the command line is {len} bytes long; at most {max} bytes fit")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Command line with a NUL byte or other control character.
    #[error("the command line contains a control character at byte {0}; only printable text is passed to the guest")]
    CmdlineControlCharacter(usize),
    /// More devices than there are virtio-mmio slots.
    #[error("{0} devices were given; a domain has at most {max} virtio devices", max = pvabi::virtio::MAX_DEVICES)]
    TooManyDevices(usize),
    /// A `--device` value that is not `KIND:SOCKET`.
    #[error("device {0:?} is not valid: write KIND:SOCKET with KIND one of blk, net, console, and SOCKET the path of the backend's vhost-user socket")]
    DeviceSyntax(String),
    /// A paging mode that is neither `native` nor `direct`.
    #[error("paging mode {0:?} is not valid: use native (the guest's own page tables) or direct (validated page tables)")]
    PagingMode(String),
    /// A device socket path that cannot be a Unix socket address.
    #[error("the socket path of device {index} ({path:?}) is not usable: it must be non-empty, without NUL bytes, and at most 107 bytes long")]
    DeviceSocketPath {
        /// Slot.
        index: usize,
        /// The path.
        path: PathBuf,
    },
}

/// Longest Unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

impl DomainConfig {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemoryOutOfRange(self.memory_mib));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::VcpusOutOfRange(self.vcpus));
        }
        // The boot protocols store the command line NUL-terminated.
        let max = pvabi::boot::CMDLINE_MAX - 1;
        if self.cmdline.len() > max {
            return Err(ConfigError::CmdlineTooLong { len: self.cmdline.len(), max });
        }
        if let Some(pos) = self.cmdline.bytes().position(|b| b.is_ascii_control()) {
            return Err(ConfigError::CmdlineControlCharacter(pos));
        }
        if self.devices.len() > pvabi::virtio::MAX_DEVICES as usize {
            return Err(ConfigError::TooManyDevices(self.devices.len()));
        }
        for (index, d) in self.devices.iter().enumerate() {
            use std::os::unix::ffi::OsStrExt;
            let bytes = d.socket.as_os_str().as_bytes();
            if bytes.is_empty() || bytes.len() > MAX_SOCKET_PATH || bytes.contains(&0) {
                return Err(ConfigError::DeviceSocketPath { index, path: d.socket.clone() });
            }
        }
        Ok(())
    }

    /// RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// Domain names end up in file names and in dom0's table: keep them tame.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(ok_char)
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> DomainConfig {
        DomainConfig {
            name: "guest-1".into(),
            kernel: "/boot/guest.elf".into(),
            initrd: None,
            cmdline: "workload=compute iterations=100".into(),
            memory_mib: 64,
            vcpus: 2,
            console_log: None,
            devices: Vec::new(),
            hide_pv_cpuid: false,
            paging: PagingMode::Native,
            paging_violation: ViolationPolicy::Kill,
        }
    }

    #[test]
    fn a_good_config_validates() {
        assert_eq!(good().validate(), Ok(()));
        assert_eq!(good().memory_bytes(), 64 << 20);
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".hidden", "-flag", "a/b", "a b", "ünï", &"x".repeat(65)] {
            let c = DomainConfig { name: bad.into(), ..good() };
            assert_eq!(c.validate(), Err(ConfigError::InvalidName(bad.into())), "{bad:?}");
        }
        for ok in ["a", "web.01", "db_2", &"x".repeat(64)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn memory_bounds() {
        for (mib, ok) in [(0, false), (MIN_MEMORY_MIB - 1, false), (MIN_MEMORY_MIB, true), (MAX_MEMORY_MIB, true), (MAX_MEMORY_MIB + 1, false)] {
            let c = DomainConfig { memory_mib: mib, ..good() };
            assert_eq!(c.validate().is_ok(), ok, "{mib} MiB");
        }
    }

    #[test]
    fn vcpu_bounds() {
        for (n, ok) in [(0, false), (1, true), (MAX_VCPUS, true), (MAX_VCPUS + 1, false)] {
            let c = DomainConfig { vcpus: n, ..good() };
            assert_eq!(c.validate().is_ok(), ok, "{n} vCPUs");
        }
    }

    #[test]
    fn cmdline_is_checked() {
        let long = DomainConfig { cmdline: "a".repeat(pvabi::boot::CMDLINE_MAX), ..good() };
        assert!(matches!(long.validate(), Err(ConfigError::CmdlineTooLong { .. })));
        let fits = DomainConfig { cmdline: "a".repeat(pvabi::boot::CMDLINE_MAX - 1), ..good() };
        assert_eq!(fits.validate(), Ok(()));
        let nul = DomainConfig { cmdline: "a\0b".into(), ..good() };
        assert_eq!(nul.validate(), Err(ConfigError::CmdlineControlCharacter(1)));
    }

    #[test]
    fn devices_parse_and_are_checked() {
        let d: VirtioDeviceConfig = "blk:/run/a.sock".parse().unwrap();
        assert_eq!(d, VirtioDeviceConfig { kind: DeviceKind::Blk, socket: "/run/a.sock".into() });
        assert_eq!("net:rel/b".parse::<VirtioDeviceConfig>().unwrap().kind, DeviceKind::Net);
        assert_eq!("console:/c:d".parse::<VirtioDeviceConfig>().unwrap().socket, PathBuf::from("/c:d"));
        for bad in ["blk", "blk:", "disk:/x", ":/x", ""] {
            assert_eq!(bad.parse::<VirtioDeviceConfig>(), Err(ConfigError::DeviceSyntax(bad.into())), "{bad:?}");
        }
        let dev = |p: &str| VirtioDeviceConfig { kind: DeviceKind::Console, socket: p.into() };
        let max = pvabi::virtio::MAX_DEVICES as usize;
        let c = DomainConfig { devices: vec![dev("/s"); max], ..good() };
        assert_eq!(c.validate(), Ok(()));
        let c = DomainConfig { devices: vec![dev("/s"); max + 1], ..good() };
        assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(max + 1)));
        let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
        let c = DomainConfig { devices: vec![dev("/s"), dev(&long)], ..good() };
        assert_eq!(c.validate(), Err(ConfigError::DeviceSocketPath { index: 1, path: long.into() }));
        assert_eq!(DeviceKind::Blk.device_id(), 2);
        assert_eq!(DeviceKind::Net.device_id(), 1);
        assert_eq!(DeviceKind::Console.device_id(), 3);
    }

    #[test]
    fn paging_modes_parse_by_name() {
        assert_eq!("native".parse(), Ok(PagingMode::Native));
        assert_eq!("direct".parse(), Ok(PagingMode::Direct));
        assert_eq!(PagingMode::default(), PagingMode::Native);
        for bad in ["", "Direct", "shadow", "direct "] {
            assert_eq!(bad.parse::<PagingMode>(), Err(ConfigError::PagingMode(bad.into())), "{bad:?}");
        }
        for m in PagingMode::ALL {
            assert_eq!(m.to_string().parse(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(ViolationPolicy::default(), ViolationPolicy::Kill);
        for p in ViolationPolicy::ALL {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
    }
}
