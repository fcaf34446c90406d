//! The result of parsing: what dom0 needs to build a domain, with every
//! default applied and every path absolute.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::show;
pub use hypervisor::config::{PagingMode, ViolationPolicy};

/// A validated domain configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// The domain's name: 1 to 64 characters from `A-Za-z0-9_.-`, not
    /// starting with `.` or `-`, not all digits.
    pub name: String,
    /// RAM at boot, MiB.
    pub memory_mib: u64,
    /// The most RAM the domain may ever have, MiB; equals `memory_mib`
    /// unless `maxmem` was set.
    pub maxmem_mib: u64,
    /// vCPUs, 1 to 255.
    pub vcpus: u32,
    /// The kernel image (absolute).
    pub kernel: PathBuf,
    /// The initial ramdisk (absolute), if any.
    pub ramdisk: Option<PathBuf>,
    /// The complete kernel command line, built from `cmdline` or from
    /// `root` and `extra`; empty if none was given.
    pub cmdline: String,
    /// What to do when the guest powers off.
    pub on_poweroff: Action,
    /// What to do when the guest reboots.
    pub on_reboot: Action,
    /// What to do when the guest crashes.
    pub on_crash: Action,
    /// The disks, in the order of the `disk` list.
    pub disks: Vec<DiskSpec>,
    /// The network interfaces, in the order of the `vif` list.
    pub vifs: Vec<VifSpec>,
    /// How the domain's page tables are managed (`paging`); specs stored
    /// before the key existed read as `native`.
    #[serde(default)]
    pub paging: PagingMode,
    /// What a detected direct-paging violation does (`paging_violation`);
    /// specs stored before the key existed read as `kill`.
    #[serde(default)]
    pub paging_violation: ViolationPolicy,
}

/// What dom0 does when a domain shuts down for a given reason (xl's
/// `on_poweroff`, `on_reboot`, `on_crash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy the domain and create it again from the same configuration.
    Restart,
    /// Keep the stopped domain for inspection until it is destroyed.
    Preserve,
}

impl Action {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One virtio-blk disk backed by a raw image file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// The image file (absolute).
    pub path: PathBuf,
    /// The vdev as written (`xvda`, `vdb`, `hda`…).
    pub vdev: String,
    /// The disk number the vdev stands for: `xvda`, `vda`, `sda` and `hda`
    /// are 0, `xvdb` is 1, `xvdaa` is 26. Unique within a domain.
    pub index: u32,
    /// Whether the guest may only read the disk.
    pub read_only: bool,
}

/// One virtio-net interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    /// Position in the `vif` list (xl's DEVID).
    pub devid: u32,
    /// The guest's MAC address: as given, or generated from the domain name
    /// and `devid` (see [`MacAddr::generated`]).
    pub mac: MacAddr,
    /// Where the interface's traffic goes.
    pub link: VifLink,
    /// The name of the host tap device (bridge links only); dom0 picks one
    /// when absent.
    pub vifname: Option<String>,
}

/// Where a vif is connected in dom0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VifLink {
    /// A tap device that dom0 creates and adds to this Linux bridge.
    Bridge(String),
    /// A port on dom0's own inter-domain switch of this name.
    Switch(String),
}

/// A 48-bit Ethernet address; displays as `02:ab:cd:ef:01:23`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether the group bit (lowest bit of the first byte) is set.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Whether the locally-administered bit (second-lowest bit of the first
    /// byte) is set.
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 2 != 0
    }

    /// The address dom0 gives interface `devid` of domain `name` when the
    /// configuration names none.
    ///
    /// xl draws a random address in Xen's OUI 00:16:3e on every start. Ours
    /// is stable instead, so a guest keeps its address (and its DHCP lease)
    /// across restarts, and locally administered (first byte `xxxxxx10`),
    /// so it cannot collide with a real vendor's address or with another
    /// host drawing from Xen's block; that leaves 46 bits of hash. The hash
    /// is FNV-1a over the name and devid followed by the SplitMix64
    /// finaliser: fixed forever, because changing it would change every
    /// guest's address.
    pub fn generated(name: &str, devid: u32) -> MacAddr {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let devid = devid.to_le_bytes();
        let bytes = b"dom0-vif\0"
            .iter()
            .chain(name.as_bytes())
            .chain(b"\0")
            .chain(&devid);
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let b = h.to_be_bytes();
        MacAddr([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }

    /// Parses `xx:xx:xx:xx:xx:xx` (two hex digits per byte, either case,
    /// as libxl requires). On failure returns the byte offset of the first
    /// character that is wrong, and why.
    pub(crate) fn parse_at(s: &str) -> Result<MacAddr, (usize, String)> {
        let bytes = s.as_bytes();
        let mut mac = [0u8; 6];
        let expected = "six pairs of hex digits separated by ':', as in 02:16:3e:12:34:56";
        for (g, out) in mac.iter_mut().enumerate() {
            let at = g * 3;
            for k in at..at + 2 {
                if !bytes.get(k).is_some_and(u8::is_ascii_hexdigit) {
                    return Err((
                        k.min(s.len()),
                        format!("{} is not a MAC address: expected {expected}", show(s)),
                    ));
                }
            }
            *out = u8::from_str_radix(&s[at..at + 2], 16).expect("two hex digits");
            let sep = at + 2;
            if g < 5 && bytes.get(sep) != Some(&b':') {
                return Err((
                    sep.min(s.len()),
                    format!("{} is not a MAC address: expected {expected}", show(s)),
                ));
            }
        }
        if s.len() > 17 {
            return Err((
                17,
                format!(
                    "{} is not a MAC address: it has more than six bytes",
                    show(s)
                ),
            ));
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Parses `xx:xx:xx:xx:xx:xx`; any address, multicast included (the
    /// configuration refuses those for interfaces).
    fn from_str(s: &str) -> Result<MacAddr, String> {
        MacAddr::parse_at(s).map_err(|(_, msg)| msg)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "00:16:3E:74:3d:76".parse().unwrap();
        assert_eq!(m.0, [0x00, 0x16, 0x3e, 0x74, 0x3d, 0x76]);
        assert_eq!(m.to_string(), "00:16:3e:74:3d:76");
        assert_eq!(MacAddr::parse_at("00:16:3e:74:3d").unwrap_err().0, 14);
        assert_eq!(MacAddr::parse_at("00:16:3e:74:3d:7g").unwrap_err().0, 16);
        assert_eq!(MacAddr::parse_at("00-16:3e:74:3d:76").unwrap_err().0, 2);
        assert_eq!(MacAddr::parse_at("0:16:3e:74:3d:76").unwrap_err().0, 1);
        assert_eq!(MacAddr::parse_at("00:16:3e:74:3d:76:").unwrap_err().0, 17);
        assert_eq!(MacAddr::parse_at("").unwrap_err().0, 0);
        assert!(MacAddr::parse_at("é0:16:3e:74:3d:76").is_err());
    }

    #[test]
    fn generated_macs_are_stable_unicast_and_local() {
        // Pinned: guests must keep their address across dom0 versions.
        let pinned = MacAddr::generated("web", 0);
        assert_eq!(pinned.to_string(), PINNED_WEB_0);
        for name in ["a", "b", "web", "web1", "Domain-0"] {
            for devid in 0..8 {
                let m = MacAddr::generated(name, devid);
                assert!(!m.is_multicast() && m.is_locally_administered(), "{m}");
            }
        }
        assert_ne!(MacAddr::generated("web", 0), MacAddr::generated("web", 1));
        assert_ne!(MacAddr::generated("web", 0), MacAddr::generated("web0", 0));
    }

    const PINNED_WEB_0: &str = "f2:9e:cb:54:80:de";

    #[test]
    fn serde_forms() {
        let m = MacAddr([2, 0, 0, 0, 0, 1]);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:00:00:00:00:01\"");
        assert_eq!(
            serde_json::from_str::<MacAddr>("\"02:00:00:00:00:01\"").unwrap(),
            m
        );
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
        assert_eq!(
            serde_json::to_string(&Action::Preserve).unwrap(),
            "\"preserve\""
        );
        assert_eq!(
            serde_json::to_string(&VifLink::Switch("s".into())).unwrap(),
            "{\"switch\":\"s\"}"
        );
    }
}
