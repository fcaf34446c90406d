//! The vhost-user frontend against a tiny vhost-user backend in the test
//! (a null block-like device with one queue that completes every request),
//! with a real KVM domain built by `Domain::build --device`. The test plays
//! the guest driver by accessing the virtio-mmio registers through the
//! domain's MMIO bus, as a vCPU's exits would, and lays out a virtqueue in
//! guest RAM itself; the vCPUs never run.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypervisor::config::{DeviceKind, DomainConfig, VirtioDeviceConfig};
use hypervisor::domain::{Domain, DomainError};
use hypervisor::devices::Bus;
use pvabi::virtio::{MMIO_BASE, MMIO_STRIDE};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const PROTOCOL_FEATURES: u64 = 1 << 30;
const PACKED_RING: u64 = 1 << VIRTIO_F_RING_PACKED;
/// A device feature of the null device's own (blk's SIZE_MAX bit).
const OWN_FEATURE: u64 = 1 << 1;
const RAM_MIB: u64 = 32;

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// What the backend saw.
#[derive(Debug, Default)]
struct Seen {
    acked_features: Option<u64>,
    memory: Vec<(u64, u64)>,
    config_reads: Vec<(u32, u32)>,
    config_writes: Vec<(u32, Vec<u8>)>,
    completed: u64,
    stopped: Vec<u32>,
}

struct NullDevice {
    seen: Arc<Mutex<Seen>>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// Added to every configuration byte, so two backends differ.
    config_base: u8,
    /// Stops the daemon's worker thread (which the daemon joins on drop).
    exit: Arc<Mutex<Option<EventNotifier>>>,
}

impl VhostUserBackendMut for NullDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        VERSION_1 | PROTOCOL_FEATURES | PACKED_RING | OWN_FEATURE
    }

    fn acked_features(&mut self, features: u64) {
        self.seen.lock().unwrap().acked_features = Some(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()?;
        *self.exit.lock().unwrap() = Some(notifier.try_clone().ok()?);
        Some((consumer, notifier))
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.seen.lock().unwrap().config_reads.push((offset, size));
        (offset..offset + size).map(|i| (i as u8).wrapping_add(self.config_base)).collect()
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> io::Result<()> {
        self.seen.lock().unwrap().config_writes.push((offset, buf.to_vec()));
        Ok(())
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.seen.lock().unwrap().memory = mem.memory().iter().map(|r| (r.start_addr().0, r.len())).collect();
        self.mem = Some(mem);
        Ok(())
    }

    fn stop_vring(&mut self, queue_index: u32) -> io::Result<()> {
        self.seen.lock().unwrap().stopped.push(queue_index);
        Ok(())
    }

    fn handle_event(&mut self, device_event: u16, _evset: EventSet, vrings: &[VringRwLock], _thread_id: usize) -> io::Result<()> {
        let (Some(mem), Some(vring)) = (&self.mem, vrings.get(usize::from(device_event))) else { return Ok(()) };
        let mut completed = 0;
        loop {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.memory());
            let Some(chain) = chain else { break };
            vring.add_used(chain.head_index(), 0).map_err(io::Error::other)?;
            completed += 1;
        }
        if completed > 0 {
            self.seen.lock().unwrap().completed += completed;
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

/// A backend listening on `path`, serving one connection.
struct Backend {
    seen: Arc<Mutex<Seen>>,
    shutdown: mpsc::Receiver<ShutdownHandle>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(path: &Path, config_base: u8) -> Backend {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let exit = Arc::new(Mutex::new(None));
        let device = Arc::new(RwLock::new(NullDevice { seen: seen.clone(), mem: None, config_base, exit: exit.clone() }));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (shutdown_tx, shutdown) = mpsc::channel();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut listener = Listener::new(&path, true).unwrap();
            let mut daemon = VhostUserDaemon::new("null".into(), device, GuestMemoryAtomic::new(GuestMemoryMmap::new())).unwrap();
            ready_tx.send(()).unwrap();
            if daemon.start(&mut listener).is_err() {
                return;
            }
            let _ = shutdown_tx.send(daemon.shutdown_handle().unwrap());
            let _ = daemon.wait();
            if let Some(exit) = exit.lock().unwrap().as_ref() {
                let _ = exit.notify();
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("the backend listens");
        Backend { seen, shutdown, thread: Some(thread) }
    }

    /// Closes the connection, as a backend that crashed would.
    fn kill(mut self) {
        self.shutdown.recv_timeout(Duration::from_secs(5)).expect("a frontend connected").shutdown();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hv-virtio-{}-{name}.sock", std::process::id()))
}

fn config(devices: Vec<VirtioDeviceConfig>) -> DomainConfig {
    DomainConfig {
        name: "virtio-test".into(),
        kernel: frontends::TESTGUEST_ELF.into(),
        initrd: None,
        cmdline: String::new(),
        memory_mib: RAM_MIB,
        vcpus: 1,
        console_log: None,
        devices,
        hide_pv_cpuid: false,
        paging: hypervisor::config::PagingMode::Native,
        paging_violation: hypervisor::config::ViolationPolicy::Kill,
    }
}

fn read(bus: &Bus, slot: u64, reg: u32) -> u32 {
    let mut b = [0u8; 4];
    assert!(bus.read(MMIO_BASE + slot * MMIO_STRIDE + u64::from(reg), &mut b), "slot {slot} answers");
    u32::from_le_bytes(b)
}

fn write(bus: &Bus, slot: u64, reg: u32, v: u32) {
    assert!(bus.write(MMIO_BASE + slot * MMIO_STRIDE + u64::from(reg), &v.to_le_bytes()).is_some());
}

fn read_config(bus: &Bus, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    assert!(bus.read(MMIO_BASE + u64::from(VIRTIO_MMIO_CONFIG) + offset, &mut b));
    b
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const DESC: u64 = 0x40_0000;
const AVAIL: u64 = 0x40_1000;
const USED: u64 = 0x40_2000;
const BUFFER: u64 = 0x41_0000;
const QUEUE_SIZE: u32 = 16;

/// The driver side of a device bring-up, as Linux's virtio_mmio does it.
fn bring_up(bus: &Bus, features: u64) {
    let ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    write(bus, 0, VIRTIO_MMIO_STATUS, 0);
    write(bus, 0, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    write(bus, 0, VIRTIO_MMIO_STATUS, ack_driver);
    for sel in 0..2 {
        write(bus, 0, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        write(bus, 0, VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * sel)) as u32);
    }
    write(bus, 0, VIRTIO_MMIO_STATUS, ack_driver | VIRTIO_CONFIG_S_FEATURES_OK);
    assert_ne!(read(bus, 0, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0, "FEATURES_OK accepted");
    write(bus, 0, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
    write(bus, 0, VIRTIO_MMIO_QUEUE_NUM, QUEUE_SIZE);
    for (reg, addr) in [(VIRTIO_MMIO_QUEUE_DESC_LOW, DESC), (VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL), (VIRTIO_MMIO_QUEUE_USED_LOW, USED)] {
        write(bus, 0, reg, addr as u32);
        write(bus, 0, reg + 4, (addr >> 32) as u32);
    }
    write(bus, 0, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_QUEUE_READY), 1);
    write(bus, 0, VIRTIO_MMIO_STATUS, ack_driver | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

/// Puts one 512-byte buffer in the queue (descriptor 0, available index
/// `n`).
fn post_request(mem: &GuestMemoryMmap, n: u16) {
    mem.write_obj(BUFFER, GuestAddress(DESC)).unwrap();
    mem.write_obj(512u32, GuestAddress(DESC + 8)).unwrap();
    mem.write_obj(0u16, GuestAddress(DESC + 12)).unwrap();
    mem.write_obj(0u16, GuestAddress(DESC + 14)).unwrap();
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from((n - 1) % QUEUE_SIZE as u16))).unwrap();
    mem.write_obj(n, GuestAddress(AVAIL + 2)).unwrap();
}

fn used_index(mem: &GuestMemoryMmap) -> u16 {
    mem.read_obj(GuestAddress(USED + 2)).unwrap()
}

#[test]
fn the_frontend_hands_the_queues_to_a_vhost_user_backend() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let path = socket_path("null");
    let backend = Backend::start(&path, 0);
    let seen = backend.seen.clone();
    let devices = vec![VirtioDeviceConfig { kind: DeviceKind::Blk, socket: path.clone() }];
    let domain = Domain::build(&config(devices), hypervisor::backend::detect().backend).expect("the domain builds");
    let bus = domain.mmio_bus();
    let mem = domain.ram().memory().clone();

    // The handshake at build time read the configuration space.
    assert_eq!(seen.lock().unwrap().config_reads, vec![(0, 96)], "GET_CONFIG of a virtio_blk_config");
    // Slot 0 is the device, the other slots are placeholders.
    assert_eq!(read(bus, 0, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_DEVICE_ID), 2);
    for slot in 1..u64::from(pvabi::virtio::MAX_DEVICES) {
        assert_eq!(read(bus, slot, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(read(bus, slot, VIRTIO_MMIO_DEVICE_ID), 0, "slot {slot} is empty");
    }
    // Features: the backend's, without PROTOCOL_FEATURES and the packed ring.
    write(bus, 0, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    let low = read(bus, 0, VIRTIO_MMIO_DEVICE_FEATURES);
    write(bus, 0, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    let high = read(bus, 0, VIRTIO_MMIO_DEVICE_FEATURES);
    assert_eq!(u64::from(low) | (u64::from(high) << 32), VERSION_1 | OWN_FEATURE);
    // Configuration space comes from the backend (cached: no new request).
    assert_eq!(read_config(bus, 4, 4), vec![4, 5, 6, 7]);
    assert_eq!(seen.lock().unwrap().config_reads.len(), 1);

    bring_up(bus, VERSION_1 | OWN_FEATURE);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0, "activation succeeded");
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.acked_features, Some(VERSION_1 | OWN_FEATURE | PROTOCOL_FEATURES), "SET_FEATURES");
        assert_eq!(s.memory, vec![(0, RAM_MIB << 20)], "SET_MEM_TABLE with the domain's RAM");
    }
    assert_eq!(read(bus, 0, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);

    // A request: the backend finds it through the translated ring
    // addresses and the memory table, and completes it in guest RAM.
    post_request(&mem, 1);
    write(bus, 0, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    wait_for("the backend to complete the request", || used_index(&mem) == 1);
    assert_eq!(mem.read_obj::<u32>(GuestAddress(USED + 4)).unwrap(), 0, "used element: descriptor 0");
    assert_eq!(seen.lock().unwrap().completed, 1);

    // Configuration writes reach the backend.
    assert!(bus.write(MMIO_BASE + u64::from(VIRTIO_MMIO_CONFIG) + 8, &[0xee, 0xef]).is_some());
    assert_eq!(seen.lock().unwrap().config_writes, vec![(8, vec![0xee, 0xef])]);

    // A reset stops the ring (GET_VRING_BASE).
    write(bus, 0, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(seen.lock().unwrap().stopped, vec![0]);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

    // Up again, then the backend dies: the device needs a reset and says
    // so with a configuration interrupt; the domain is unaffected.
    bring_up(bus, VERSION_1);
    backend.kill();
    wait_for("DEVICE_NEEDS_RESET", || read(bus, 0, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET != 0);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    write(bus, 0, VIRTIO_MMIO_QUEUE_NOTIFY, 0);

    // dom0 restarts the backend; the driver's reset reconnects to it.
    let second = Backend::start(&path, 100);
    write(bus, 0, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(read_config(bus, 0, 2), vec![100, 101], "the new backend's configuration");
    // The driver sets its queue up afresh (zeroed rings).
    mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
    mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
    bring_up(bus, VERSION_1);
    assert_eq!(read(bus, 0, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    post_request(&mem, 1);
    write(bus, 0, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    wait_for("the new backend to complete the request", || used_index(&mem) == 1);
    assert_eq!(second.seen.lock().unwrap().memory, vec![(0, RAM_MIB << 20)]);
    drop(domain);
    second.kill();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_missing_backend_socket_fails_the_build_with_a_sentence() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let devices = vec![VirtioDeviceConfig { kind: DeviceKind::Net, socket: socket_path("absent") }];
    let e = Domain::build(&config(devices), hypervisor::backend::detect().backend).err().expect("the build fails");
    assert!(matches!(e, DomainError::Device { index: 0, kind: DeviceKind::Net, .. }), "{e:?}");
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn the_test_guest_finds_the_device_through_the_cli() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let path = socket_path("probe");
    let backend = Backend::start(&path, 0);
    let device = format!("blk:{}", path.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hypervisor"))
        .args(["run", "--kernel", frontends::TESTGUEST_ELF, "--mem", "32", "--console-log", "/dev/null", "--timeout", "60"])
        .args(["--cmdline", "workload=virtio-probe", "--device", &device])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    let explain = format!("{console}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{explain}");
    assert!(console.contains("VIRTIO slot 0 at 0xd8000000: blk (device id 2)"), "{explain}");
    assert!(console.contains("VIRTIO slot 7 at 0xd8007000: empty (device id 0)"), "{explain}");
    // The hypervisor exited: the backend saw its connection end.
    backend.kill();
    let _ = std::fs::remove_file(&path);
}
