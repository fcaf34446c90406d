//! Linux tap devices for bridged vifs: `/dev/net/tun` with `TUNSETIFF`
//! (`IFF_TAP | IFF_NO_PI`: whole Ethernet frames, no extra header), brought
//! up and added to a bridge with the interface ioctls.
//!
//! The only unsafe code of dom0 is here: three ioctls on file descriptors we
//! own, each with an `ifreq` we build.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;

/// `_IOW('T', 202, int)`.
const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const IFF_UP: u16 = 0x0001;
const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCSIFFLAGS: u64 = 0x8914;
const SIOCGIFINDEX: u64 = 0x8933;
const SIOCBRADDIF: u64 = 0x89a2;
const IFNAMSIZ: usize = 16;

/// `struct ifreq`: the name, then a 24-byte union of which we use the
/// leading `short` (flags) or `int` (ifindex).
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid interface name (1 to 15 bytes, no NUL)"),
            ));
        }
        let mut r = IfReq::default();
        r.name[..bytes.len()].copy_from_slice(bytes);
        Ok(r)
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_flags(&mut self, flags: u16) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    fn ifindex(&self) -> i32 {
        i32::from_ne_bytes(self.data[..4].try_into().expect("4 bytes"))
    }

    fn set_ifindex(&mut self, index: i32) {
        self.data[..4].copy_from_slice(&index.to_ne_bytes());
    }
}

/// Runs `ioctl(fd, request, req)`.
fn ioctl(fd: RawFd, request: u64, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: `req` is a live, exclusively borrowed `struct ifreq` of the
    // size the kernel expects (40 bytes) for every request used here; the
    // kernel reads and writes only within it for the duration of the call.
    // A bad `fd` only makes the call fail.
    let r = unsafe { libc::ioctl(fd, request as _, req as *mut IfReq) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An open tap device; the interface disappears when this is dropped
/// (it is not made persistent).
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates (or attaches to) tap `name` (a `%d` pattern such as `vif%d`
    /// lets the kernel pick the number), sets it up and, if `bridge` is
    /// given, adds it to that bridge. The fd is nonblocking.
    pub fn open(name: &str, bridge: Option<&str>) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq::new(name)?;
        req.set_flags(IFF_TAP | IFF_NO_PI);
        ioctl(file.as_raw_fd(), TUNSETIFF, &mut req)?;
        let tap = Tap {
            file,
            name: req.name(),
        };
        // Any socket reaches the interface ioctls (the kernel falls back to
        // dev_ioctl); an unbound Unix datagram socket needs no address.
        let sock = UnixDatagram::unbound()?;
        let mut req = IfReq::new(&tap.name)?;
        ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req)?;
        let flags = req.flags() | IFF_UP;
        req.set_flags(flags);
        ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut req)?;
        if let Some(bridge) = bridge {
            let mut req = IfReq::new(&tap.name)?;
            ioctl(sock.as_raw_fd(), SIOCGIFINDEX, &mut req)?;
            let index = req.ifindex();
            let mut req = IfReq::new(bridge)?;
            req.set_ifindex(index);
            ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut req).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot add {} to the bridge {bridge}: {e}", tap.name),
                )
            })?;
        }
        Ok(tap)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame; `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame; `Ok(false)` if the device is busy (dropped).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        match (&self.file).write(frame) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_and_names() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert!(IfReq::new("").is_err());
        assert!(IfReq::new("0123456789abcdef").is_err());
        let mut r = IfReq::new("vif1.0").unwrap();
        assert_eq!(r.name(), "vif1.0");
        r.set_flags(0x1003);
        assert_eq!(r.flags(), 0x1003);
        r.set_ifindex(77);
        assert_eq!(r.ifindex(), 77);
    }

    /// Needs CAP_NET_ADMIN and /dev/net/tun; skipped without them.
    #[test]
    fn tap_comes_up_and_goes_away() {
        let tap = match Tap::open("sptest%d", None) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping: cannot create a tap device: {e}");
                return;
            }
        };
        let name = tap.name().to_owned();
        assert!(name.starts_with("sptest"), "{name}");
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).unwrap();
        let flags = u16::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_ne!(flags & IFF_UP, 0);
        let mut buf = [0u8; 2048];
        // Nothing to read is not an error (the kernel may send IPv6 router
        // solicitations once the link is up, so accept a frame too).
        assert!(tap.recv(&mut buf).is_ok());
        drop(tap);
        assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
    }
}
