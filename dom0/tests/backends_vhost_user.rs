//! dom0's backends over a real vhost-user socket: this test plays the
//! hypervisor (vhost's `Frontend`) and the guest driver (it writes
//! descriptors into a memfd it shares through SET_MEM_TABLE), kicks the
//! kick eventfd and waits on the call eventfd.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dom0::backends::{self, BackendSpec, NetPort, RunningBackend, Switch};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RAM: usize = 2 << 20;
const QSIZE: u16 = 16;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

fn temp_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "dom0-vu-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Guest RAM in a memfd, as the hypervisor has it.
fn guest_ram() -> GuestMemoryMmap<()> {
    let name = CString::new("guest-ram").unwrap();
    let fd = memfd_create(&name, MemFdCreateFlag::MFD_CLOEXEC).unwrap();
    let file = File::from(fd);
    file.set_len(RAM as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        RAM,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// One virtqueue as the guest driver sees it, at `base` in guest RAM.
struct Ring<'a> {
    mem: &'a GuestMemoryMmap<()>,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    kick: EventFd,
    call: EventFd,
}

impl<'a> Ring<'a> {
    fn new(mem: &'a GuestMemoryMmap<()>, base: u64) -> Ring<'a> {
        Ring {
            mem,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
        }
    }

    /// Hands the ring to the backend as queue `index`.
    fn setup(&self, fe: &mut Frontend, index: usize) {
        let host = self.mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        fe.set_vring_num(index, QSIZE).unwrap();
        fe.set_vring_addr(
            index,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: host + self.desc,
                used_ring_addr: host + self.used,
                avail_ring_addr: host + self.avail,
                log_addr: None,
            },
        )
        .unwrap();
        fe.set_vring_base(index, 0).unwrap();
        fe.set_vring_kick(index, &self.kick).unwrap();
        fe.set_vring_call(index, &self.call).unwrap();
        fe.set_vring_enable(index, true).unwrap();
    }

    /// Writes a chain of (addr, len, device-writable) and publishes it.
    fn add(&mut self, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let index = (self.next_desc + i as u16) % QSIZE;
            let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            let at = self.desc + 16 * u64::from(index);
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem
                .write_obj((index + 1) % QSIZE, GuestAddress(at + 14))
                .unwrap();
        }
        self.next_desc = (self.next_desc + descs.len() as u16) % QSIZE;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// EVENT_IDX: interrupt me when the used index passes `idx`.
    fn set_used_event(&self, idx: u16) {
        let at = self.avail + 4 + 2 * u64::from(QSIZE);
        self.mem.write_obj(idx, GuestAddress(at)).unwrap();
    }

    /// EVENT_IDX: what the device asked for (kick me at this avail index).
    fn avail_event(&self) -> u16 {
        let at = self.used + 4 + 8 * u64::from(QSIZE);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % QSIZE);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    /// Waits for the call eventfd (the "interrupt").
    fn wait_call(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self.call.read().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "no interrupt within 2 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the used index reaches `idx`.
    fn wait_used(&self, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.used_idx() != idx {
            assert!(
                Instant::now() < deadline,
                "used index stuck at {}",
                self.used_idx()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Connects as the hypervisor would and negotiates features.
fn connect(socket: &Path, mem: &GuestMemoryMmap<()>, queues: u64) -> Frontend {
    let mut fe = Frontend::connect(socket, queues).unwrap();
    // Wait for every request to be handled (REPLY_ACK), as a hypervisor
    // that kicks right after setting up a queue must.
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
    assert_ne!(features & VIRTIO_RING_F_EVENT_IDX, 0);
    fe.set_features(features).unwrap();
    let proto = fe.get_protocol_features().unwrap();
    assert!(proto.contains(
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    ));
    fe.set_protocol_features(proto).unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), queues);
    let region = mem.find_region(GuestAddress(0)).unwrap();
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    fe.set_mem_table(&[info]).unwrap();
    fe
}

fn config(fe: &mut Frontend, offset: u32, size: u32) -> Vec<u8> {
    let (_, data) = fe
        .get_config(
            offset,
            size,
            VhostUserConfigFlags::empty(),
            &vec![0; size as usize],
        )
        .unwrap();
    data
}

fn blk_header(mem: &GuestMemoryMmap<()>, at: u64, kind: u32, sector: u64) {
    mem.write_obj(kind, GuestAddress(at)).unwrap();
    mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
}

fn wait_finished(b: &RunningBackend) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !b.is_finished() {
        assert!(Instant::now() < deadline, "backend still running");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn blk_over_vhost_user() {
    let image = temp_path("disk.img");
    std::fs::write(&image, vec![0u8; 64 * 1024 + 100]).unwrap();
    let socket = temp_path("blk.sock");
    let backend = backends::start(
        BackendSpec::Blk {
            path: image.clone(),
            read_only: false,
            serial: "web-xvda".into(),
            direct: false,
        },
        &socket,
    )
    .unwrap();
    assert!(socket.exists());

    let mem = guest_ram();
    let mut fe = connect(&socket, &mem, 1);
    // Connected: the socket file is gone (one frontend per backend).
    let deadline = Instant::now() + Duration::from_secs(2);
    while socket.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // capacity: 128 sectors (the 100-byte tail is not addressable), then
    // size_max and seg_max.
    let cfg = config(&mut fe, 0, 16);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), 128);
    assert_eq!(
        u32::from_le_bytes(cfg[12..16].try_into().unwrap()),
        backends::blk_limits::SEG_MAX
    );

    let mut q = Ring::new(&mem, 0x10000);
    q.set_used_event(0);
    q.setup(&mut fe, 0);

    // Write 1 KiB at sector 4: header, data, status.
    let (hdr, data, status) = (0x20000u64, 0x21000u64, 0x20100u64);
    blk_header(&mem, hdr, 1, 4);
    mem.write_slice(&[0xab; 1024], GuestAddress(data)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
    let head = q.add(&[(hdr, 16, false), (data, 1024, false), (status, 1, true)]);
    q.kick();
    q.wait_call();
    assert_eq!(q.used_idx(), 1);
    assert_eq!(q.used_elem(0), (u32::from(head), 1));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0);
    let file = std::fs::read(&image).unwrap();
    assert_eq!(file[4 * 512..6 * 512], [0xab; 1024]);
    assert_eq!(file[6 * 512], 0);
    // The device asked to be kicked for the next request.
    assert_eq!(q.avail_event(), 1);

    // Read it back, with the driver asking for no interrupt until used
    // index 10: the request completes but the call eventfd stays quiet.
    q.set_used_event(10);
    blk_header(&mem, hdr, 0, 4);
    let rdata = 0x30000u64;
    q.add(&[(hdr, 16, false), (rdata, 1024, true), (status, 1, true)]);
    q.kick();
    q.wait_used(2);
    assert_eq!(q.used_elem(1).1, 1025);
    let mut back = [0u8; 1024];
    mem.read_slice(&mut back, GuestAddress(rdata)).unwrap();
    assert_eq!(back, [0xab; 1024]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(q.call.read().is_err(), "interrupt despite used_event");

    // A hostile request: data outside guest RAM → IOERR, file untouched.
    q.set_used_event(2);
    blk_header(&mem, hdr, 1, 0);
    mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
    q.add(&[
        (hdr, 16, false),
        (RAM as u64 + 0x1000, 512, false),
        (status, 1, true),
    ]);
    q.kick();
    q.wait_call();
    assert_eq!(mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 1);
    assert_eq!(std::fs::read(&image).unwrap(), file);

    let stats = backend.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.bytes, 2048);
    assert_eq!(stats.errors, 1);
    assert_eq!(stats.notifications, 2);

    // The hypervisor goes away: the backend ends cleanly.
    drop(fe);
    wait_finished(&backend);
    backend.wait().unwrap();
    std::fs::remove_file(&image).unwrap();
}

#[test]
fn a_broken_queue_is_disabled_and_other_backends_go_on() {
    let image = temp_path("disk.img");
    std::fs::write(&image, vec![0u8; 8192]).unwrap();
    let spec = || BackendSpec::Blk {
        path: image.clone(),
        read_only: true,
        serial: "x".into(),
        direct: false,
    };
    let (s1, s2) = (temp_path("a.sock"), temp_path("b.sock"));
    let b1 = backends::start(spec(), &s1).unwrap();
    let b2 = backends::start(spec(), &s2).unwrap();
    let (m1, m2) = (guest_ram(), guest_ram());
    let mut f1 = connect(&s1, &m1, 1);
    let mut f2 = connect(&s2, &m2, 1);
    let mut q1 = Ring::new(&m1, 0x10000);
    let mut q2 = Ring::new(&m2, 0x10000);
    q1.setup(&mut f1, 0);
    q2.setup(&mut f2, 0);

    // Guest 1 moves its available index 100 entries ahead.
    m1.write_obj(100u16, GuestAddress(q1.avail + 2)).unwrap();
    q1.kick();
    let deadline = Instant::now() + Duration::from_secs(2);
    while b1.stats().broken_queues == 0 {
        assert!(Instant::now() < deadline, "queue not marked broken");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(q1.used_idx(), 0);
    // Further kicks are ignored.
    q1.kick();

    // Guest 2 is unaffected.
    let (hdr, data, status) = (0x20000u64, 0x21000u64, 0x20100u64);
    blk_header(&m2, hdr, 0, 0);
    q2.add(&[(hdr, 16, false), (data, 512, true), (status, 1, true)]);
    q2.kick();
    q2.wait_call();
    assert_eq!(q2.used_elem(0).1, 513);
    assert_eq!(b2.stats().errors, 0);
    assert_eq!(b1.stats().errors, 1);

    // The frontend stops the queue (the guest reset the device) and sets it
    // up again: it works.
    f1.get_vring_base(0).unwrap();
    m1.write_obj(0u16, GuestAddress(q1.avail + 2)).unwrap();
    q1.avail_idx = 0;
    q1.setup(&mut f1, 0);
    blk_header(&m1, hdr, 0, 0);
    q1.add(&[(hdr, 16, false), (data, 512, true), (status, 1, true)]);
    q1.kick();
    q1.wait_call();
    assert_eq!(q1.used_elem(0).1, 513);

    drop((f1, f2));
    b1.wait().unwrap();
    b2.wait().unwrap();
    std::fs::remove_file(&image).unwrap();
}

#[test]
fn net_backends_talk_through_a_switch() {
    let sw = Switch::new("lan");
    let (sa, sb) = (temp_path("a.sock"), temp_path("b.sock"));
    let mac_a = [2, 0, 0, 0, 0, 0xa];
    let mac_b = [2, 0, 0, 0, 0, 0xb];
    let ba = backends::start(
        BackendSpec::Net {
            mac: mac_a,
            port: NetPort::Switch(Arc::clone(&sw)),
        },
        &sa,
    )
    .unwrap();
    let bb = backends::start(
        BackendSpec::Net {
            mac: mac_b,
            port: NetPort::Switch(Arc::clone(&sw)),
        },
        &sb,
    )
    .unwrap();
    assert_eq!(sw.port_count(), 2);
    let (ma, mb) = (guest_ram(), guest_ram());
    let mut fa = connect(&sa, &ma, 2);
    let mut fb = connect(&sb, &mb, 2);
    let cfg = config(&mut fb, 0, 8);
    assert_eq!(cfg[0..6], mac_b);
    assert_eq!(cfg[6], 1, "link up");

    let mut a_tx = Ring::new(&ma, 0x40000);
    let a_rx = Ring::new(&ma, 0x10000);
    a_rx.setup(&mut fa, 0);
    a_tx.setup(&mut fa, 1);
    let mut b_rx = Ring::new(&mb, 0x10000);
    let b_tx = Ring::new(&mb, 0x40000);
    b_rx.setup(&mut fb, 0);
    b_tx.setup(&mut fb, 1);

    // b posts a receive buffer; a broadcasts a frame.
    b_rx.add(&[(0x80000, 2048, true)]);
    b_rx.kick();
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac_a);
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.extend_from_slice(b"who has 10.0.0.2");
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&frame);
    ma.write_slice(&packet, GuestAddress(0x90000)).unwrap();
    a_tx.add(&[(0x90000, packet.len() as u32, false)]);
    a_tx.kick();
    a_tx.wait_call();
    b_rx.wait_call();
    assert_eq!(b_rx.used_elem(0).1 as usize, 12 + frame.len());
    let mut got = vec![0u8; 12 + frame.len()];
    mb.read_slice(&mut got, GuestAddress(0x80000)).unwrap();
    assert_eq!(got[12..], frame);
    assert_eq!(got[10], 1, "num_buffers");
    assert_eq!(ba.stats().bytes, frame.len() as u64);
    assert_eq!(bb.stats().bytes, frame.len() as u64);

    drop((fa, fb));
    ba.wait().unwrap();
    bb.wait().unwrap();
    assert_eq!(sw.port_count(), 0);
}

#[test]
fn console_over_vhost_user() {
    let socket = temp_path("con.sock");
    let backend = backends::start(BackendSpec::Console {}, &socket).unwrap();
    let console = backend.console().unwrap();
    let client = console.attach();
    // Input pushed before the guest is there waits.
    assert_eq!(console.send_input(b"root\n"), 5);
    let mem = guest_ram();
    let mut fe = connect(&socket, &mem, 2);
    let mut rx = Ring::new(&mem, 0x10000);
    let mut tx = Ring::new(&mem, 0x40000);
    rx.add(&[(0x80000, 64, true)]);
    rx.setup(&mut fe, 0);
    tx.setup(&mut fe, 1);
    rx.wait_call();
    assert_eq!(rx.used_elem(0).1, 5);
    let mut got = [0u8; 5];
    mem.read_slice(&mut got, GuestAddress(0x80000)).unwrap();
    assert_eq!(&got, b"root\n");

    mem.write_slice(b"login: ", GuestAddress(0x90000)).unwrap();
    tx.add(&[(0x90000, 7, false)]);
    tx.kick();
    tx.wait_call();
    assert_eq!(
        client.recv_timeout(Duration::from_secs(2)).unwrap(),
        b"login: "
    );
    assert_eq!(console.scrollback(), b"login: ");
    drop(fe);
    backend.wait().unwrap();
    // The scrollback outlives the backend.
    assert_eq!(console.attach().scrollback, b"login: ");
}

#[test]
fn socket_lifecycle() {
    let image = temp_path("disk.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let spec = || BackendSpec::Blk {
        path: image.clone(),
        read_only: false,
        serial: "x".into(),
        direct: false,
    };
    let socket = temp_path("s.sock");
    // A stale socket is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let b = backends::start(spec(), &socket).unwrap();
    // Stopping before any frontend came removes the socket.
    b.stop().unwrap();
    assert!(!socket.exists());
    // Not a socket: refused.
    std::fs::write(&socket, b"x").unwrap();
    let err = backends::start(spec(), &socket).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("something that is not a socket is there"),
        "{err}"
    );
    std::fs::remove_file(&socket).unwrap();
    // Stopping while a frontend is connected disconnects it.
    let b = backends::start(spec(), &socket).unwrap();
    let mem = guest_ram();
    let fe = connect(&socket, &mem, 1);
    b.stop().unwrap();
    assert!(fe.get_features().is_err());
    // Errors read as sentences.
    let err = backends::start(
        BackendSpec::Blk {
            path: "/nonexistent/disk.img".into(),
            read_only: false,
            serial: "x".into(),
            direct: false,
        },
        &socket,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot open the disk image /nonexistent/disk.img: No such file or directory (os error 2)"
    );
    std::fs::remove_file(&image).unwrap();
}
