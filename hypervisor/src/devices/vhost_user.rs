//! The vhost-user frontend: hands a virtio-mmio device's queues to the dom0
//! backend that implements the device.
//!
//! At build time the hypervisor connects to the backend's socket and asks
//! what it offers (SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
//! GET_QUEUE_NUM, GET_CONFIG). When the guest sets DRIVER_OK it sends the
//! acknowledged features, the guest RAM (SET_MEM_TABLE with the domain's
//! memfd, so the backend maps the very same pages) and, per ready queue,
//! its size, its addresses (translated to this process's host virtual
//! addresses, which the backend translates back through the memory table),
//! a kick eventfd and a call eventfd. The kick eventfd is a KVM ioeventfd
//! on the slot's QueueNotify register (a notification is no exit to this
//! process) and the call eventfd a KVM irqfd on the slot's GSI when the
//! domain has an interrupt controller; a guest without one polls.
//!
//! Every request has a timeout. Any failure, and the backend closing its
//! socket (noticed by [`BackendWatcher`] at once, not at the next request),
//! puts the device in DEVICE_NEEDS_RESET; the domain keeps running. When
//! the driver then resets the device, the hypervisor connects to the socket
//! again, so a restarted backend is picked up.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::virtio_mmio::{ActiveQueue, BackendResult, VirtioBackend, VirtioMmio};
use crate::config::{DeviceKind, VirtioDeviceConfig};

/// How long one request to a backend may take before the backend is
/// considered hung (the vCPU that touched the register waits meanwhile).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most queues a device may have.
pub const MAX_QUEUES: usize = 16;

/// Size of the configuration space requested with GET_CONFIG (offset 0):
/// `struct virtio_blk_config` and `struct virtio_net_config` as in
/// virtio-bindings 0.2.7 (Linux 6.x), `struct virtio_console_config`.
pub fn config_size(kind: DeviceKind) -> u32 {
    match kind {
        DeviceKind::Blk => std::mem::size_of::<virtio_bindings::virtio_blk::virtio_blk_config>() as u32,
        DeviceKind::Net => std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_config>() as u32,
        // cols, rows (u16), max_nr_ports, emerg_wr (u32).
        DeviceKind::Console => 12,
    }
}

/// Queues a device has when its backend does not offer the MQ protocol
/// feature: blk one request queue, net one receive and one transmit queue,
/// console (without MULTIPORT) one receive and one transmit queue.
pub fn default_queues(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Blk => 1,
        DeviceKind::Net | DeviceKind::Console => 2,
    }
}

/// A backend could not be used.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The socket does not exist.
    #[error("the vhost-user socket {path} does not exist (is dom0's backend for this device running?)")]
    NoSocket {
        /// Socket path.
        path: PathBuf,
    },
    /// Connecting failed.
    #[error("connecting to the vhost-user socket {path} failed: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A request failed.
    #[error("the vhost-user backend at {path} failed {step}: {source}")]
    Request {
        /// Socket path.
        path: PathBuf,
        /// Which request.
        step: &'static str,
        /// Cause.
        source: vhost::Error,
    },
    /// The backend lacks something we need.
    #[error("the vhost-user backend at {path} does not offer {what}, which the hypervisor requires")]
    Missing {
        /// Socket path.
        path: PathBuf,
        /// What.
        what: &'static str,
    },
    /// Implausible queue count.
    #[error("the vhost-user backend at {path} offers {queues} queues; between 1 and {MAX_QUEUES} are supported")]
    QueueCount {
        /// Socket path.
        path: PathBuf,
        /// What it said.
        queues: u64,
    },
    /// A queue address outside guest RAM (the transport checks this first;
    /// this is the last line of defence).
    #[error("queue {queue}'s {what} at guest-physical address {gpa:#x} is not inside one RAM region")]
    Translate {
        /// Queue index.
        queue: u16,
        /// Which part.
        what: &'static str,
        /// Address.
        gpa: u64,
    },
    /// A queue the backend does not have.
    #[error("queue {0} does not exist on this device")]
    NoSuchQueue(u16),
    /// Not connected.
    #[error("the backend is not connected")]
    Disconnected,
}

/// A connection to a backend, after the handshake.
pub struct Connection {
    frontend: Frontend,
    /// Another handle on the socket: for shutting it down and for noticing
    /// that the backend closed it.
    stream: Arc<UnixStream>,
    path: PathBuf,
    /// Features the backend offers (VHOST_USER_F_PROTOCOL_FEATURES included).
    pub features: u64,
    /// Queues the device has.
    pub queues: usize,
    /// Its configuration space.
    pub config: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("path", &self.path).field("features", &self.features).field("queues", &self.queues).finish()
    }
}

/// The result of request `step` to the backend at `path`.
fn step<T>(path: &Path, step: &'static str, r: vhost::Result<T>) -> Result<T, BackendError> {
    r.map_err(|source| BackendError::Request { path: path.to_path_buf(), step, source })
}

/// Connects to the backend of a `kind` device at `path` and does the
/// handshake.
pub fn connect(path: &Path, kind: DeviceKind) -> Result<Connection, BackendError> {
    let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => BackendError::NoSocket { path: path.to_path_buf() },
        _ => BackendError::Connect { path: path.to_path_buf(), source },
    })?;
    let setup = |r: io::Result<()>| r.map_err(|source| BackendError::Connect { path: path.to_path_buf(), source });
    setup(stream.set_read_timeout(Some(REQUEST_TIMEOUT)))?;
    setup(stream.set_write_timeout(Some(REQUEST_TIMEOUT)))?;
    let watch = stream.try_clone().map_err(|source| BackendError::Connect { path: path.to_path_buf(), source })?;
    let mut c = Connection {
        frontend: Frontend::from_stream(stream, default_queues(kind) as u64),
        stream: Arc::new(watch),
        path: path.to_path_buf(),
        features: 0,
        queues: default_queues(kind),
        config: Vec::new(),
    };
    let result = handshake(&mut c, kind);
    if result.is_err() {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
    result.map(|()| c)
}

fn handshake(c: &mut Connection, kind: DeviceKind) -> Result<(), BackendError> {
    let missing = |what| BackendError::Missing { path: c.path.clone(), what };
    step(&c.path, "SET_OWNER", c.frontend.set_owner())?;
    c.features = step(&c.path, "GET_FEATURES", c.frontend.get_features())?;
    if c.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
        return Err(missing("VHOST_USER_F_PROTOCOL_FEATURES"));
    }
    let offered = step(&c.path, "GET_PROTOCOL_FEATURES", c.frontend.get_protocol_features())?;
    if !offered.contains(VhostUserProtocolFeatures::CONFIG) {
        return Err(missing("the CONFIG protocol feature (device configuration space)"));
    }
    let wanted = VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
    let acked = offered & wanted;
    step(&c.path, "SET_PROTOCOL_FEATURES", c.frontend.set_protocol_features(acked))?;
    if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        // Every request that has no reply of its own is acknowledged, so a
        // refusal is seen at the request that caused it.
        c.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    if acked.contains(VhostUserProtocolFeatures::MQ) {
        let n = step(&c.path, "GET_QUEUE_NUM", c.frontend.get_queue_num())?;
        if n == 0 || n > MAX_QUEUES as u64 {
            return Err(BackendError::QueueCount { path: c.path.clone(), queues: n });
        }
        c.queues = n as usize;
    }
    let size = config_size(kind);
    c.config = read_config(c, size)?;
    Ok(())
}

fn read_config(c: &mut Connection, size: u32) -> Result<Vec<u8>, BackendError> {
    let buf = vec![0u8; size as usize];
    let (_, config) = step(&c.path, "GET_CONFIG", c.frontend.get_config(0, size, VhostUserConfigFlags::empty(), &buf))?;
    Ok(config)
}

/// The host virtual address of `[gpa, gpa + len)`, which must lie inside
/// one RAM region.
fn host_address(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Option<u64> {
    let region = mem.find_region(GuestAddress(gpa))?;
    let offset = gpa - region.start_addr().0;
    (offset.checked_add(len)? <= region.len()).then(|| region.as_ptr() as u64 + offset)
}

/// A device's dom0 backend, as a [`VirtioBackend`].
pub struct VhostUserBackend {
    device: VirtioDeviceConfig,
    conn: Option<Connection>,
    mem: GuestMemoryMmap,
    kicks: Vec<EventFd>,
    call: EventFd,
    /// Tells the [`BackendWatcher`] that the connection changed.
    watcher: Arc<EventFd>,
}

impl VhostUserBackend {
    /// A backend reached through `conn`, serving queues in `mem`; `kicks`
    /// (one per queue) and `call` are the eventfds KVM signals and the
    /// backend signals; `watcher` is the [`BackendWatcher`]'s wake-up.
    pub fn new(device: VirtioDeviceConfig, conn: Connection, mem: GuestMemoryMmap, kicks: Vec<EventFd>, call: EventFd, watcher: Arc<EventFd>) -> VhostUserBackend {
        VhostUserBackend { device, conn: Some(conn), mem, kicks, call, watcher }
    }

    /// The socket to watch for a hang-up, while connected.
    pub fn watch_handle(&self) -> Option<Arc<UnixStream>> {
        self.conn.as_ref().map(|c| c.stream.clone())
    }

    fn conn(&mut self) -> Result<&mut Connection, BackendError> {
        self.conn.as_mut().ok_or(BackendError::Disconnected)
    }

    fn start_queue(&mut self, q: &ActiveQueue) -> Result<(), BackendError> {
        let i = usize::from(q.index);
        let kick = self.kicks.get(i).ok_or(BackendError::NoSuchQueue(q.index))?;
        let n = u64::from(q.config.size);
        let translate = |what, gpa, len| host_address(&self.mem, gpa, len).ok_or(BackendError::Translate { queue: q.index, what, gpa });
        let addrs = VringConfigData {
            queue_max_size: q.max_size,
            queue_size: q.config.size,
            flags: 0,
            desc_table_addr: translate("descriptor table", q.config.desc, 16 * n)?,
            used_ring_addr: translate("device area", q.config.device, 6 + 8 * n)?,
            avail_ring_addr: translate("driver area", q.config.driver, 6 + 2 * n)?,
            log_addr: None,
        };
        let c = self.conn.as_mut().ok_or(BackendError::Disconnected)?;
        step(&c.path, "SET_VRING_NUM", c.frontend.set_vring_num(i, q.config.size))?;
        step(&c.path, "SET_VRING_ADDR", c.frontend.set_vring_addr(i, &addrs))?;
        step(&c.path, "SET_VRING_BASE", c.frontend.set_vring_base(i, 0))?;
        step(&c.path, "SET_VRING_CALL", c.frontend.set_vring_call(i, &self.call))?;
        step(&c.path, "SET_VRING_KICK", c.frontend.set_vring_kick(i, kick))?;
        step(&c.path, "SET_VRING_ENABLE", c.frontend.set_vring_enable(i, true))?;
        Ok(())
    }
}

impl VirtioBackend for VhostUserBackend {
    fn activate(&mut self, features: u64, queues: &[ActiveQueue]) -> BackendResult<()> {
        let regions = self
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BackendError::Request { path: self.device.socket.clone(), step: "describing guest RAM", source })?;
        let c = self.conn()?;
        step(&c.path, "SET_FEATURES", c.frontend.set_features(features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()))?;
        step(&c.path, "SET_MEM_TABLE", c.frontend.set_mem_table(&regions))?;
        for q in queues {
            self.start_queue(q)?;
        }
        Ok(())
    }

    fn reset(&mut self, running: &[u16]) -> BackendResult<()> {
        let c = self.conn()?;
        for &q in running {
            let i = usize::from(q);
            step(&c.path, "SET_VRING_ENABLE", c.frontend.set_vring_enable(i, false))?;
            // Stops the ring; the returned index is of no use after a reset.
            step(&c.path, "GET_VRING_BASE", c.frontend.get_vring_base(i))?;
        }
        Ok(())
    }

    fn read_config(&mut self) -> BackendResult<Vec<u8>> {
        let size = config_size(self.device.kind);
        Ok(read_config(self.conn()?, size)?)
    }

    fn write_config(&mut self, offset: u32, data: &[u8]) -> BackendResult<()> {
        let c = self.conn()?;
        Ok(step(&c.path, "SET_CONFIG", c.frontend.set_config(offset, VhostUserConfigFlags::WRITABLE, data))?)
    }

    fn notify(&mut self, index: u16) {
        if let Some(k) = self.kicks.get(usize::from(index)) {
            let _ = k.write(1);
        }
    }

    fn interrupt(&mut self) {
        let _ = self.call.write(1);
    }

    fn connected(&self) -> bool {
        self.conn.is_some()
    }

    fn disconnect(&mut self) {
        if let Some(c) = self.conn.take() {
            // The watcher holds another handle on the socket: shut it down
            // so the backend sees the end now.
            let _ = c.stream.shutdown(Shutdown::Both);
            let _ = self.watcher.write(1);
        }
    }

    fn reconnect(&mut self) -> BackendResult<(u64, Vec<u8>)> {
        let c = connect(&self.device.socket, self.device.kind)?;
        let out = (c.features, c.config.clone());
        if c.queues != self.kicks.len() {
            tracing::warn!(
                "the reconnected backend at {} offers {} queues where the device had {}; only the first {} can be used",
                self.device.socket.display(),
                c.queues,
                self.kicks.len(),
                c.queues.min(self.kicks.len())
            );
        }
        self.conn = Some(c);
        let _ = self.watcher.write(1);
        Ok(out)
    }
}

/// A device served by a vhost-user backend.
pub type VhostUserDevice = VirtioMmio<VhostUserBackend>;

/// Notices at once when a backend closes its socket (it crashed, or dom0
/// stopped it) and puts its device in DEVICE_NEEDS_RESET: a thread that
/// polls every connected backend's socket for a hang-up, and otherwise
/// sleeps.
pub struct BackendWatcher {
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BackendWatcher {
    /// Watches `devices`; `wake` is the eventfd their backends signal when
    /// their connection changes.
    pub fn spawn(devices: Vec<Arc<Mutex<VhostUserDevice>>>, wake: Arc<EventFd>) -> io::Result<BackendWatcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (wake.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("vhost-watch".into()).spawn(move || watch(&devices, &w, &s))?;
        Ok(BackendWatcher { wake, stop, thread: Some(thread) })
    }
}

impl Drop for BackendWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(d: &Mutex<VhostUserDevice>) -> std::sync::MutexGuard<'_, VhostUserDevice> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

fn watch(devices: &[Arc<Mutex<VhostUserDevice>>], wake: &EventFd, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let watched: Vec<(usize, Arc<UnixStream>)> =
            devices.iter().enumerate().filter_map(|(i, d)| lock(d).backend().watch_handle().map(|s| (i, s))).collect();
        let mut fds = vec![libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        fds.extend(watched.iter().map(|(_, s)| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 }));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures
        // whose descriptors stay open for the call (`watched` and `wake`
        // hold them).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("watching the vhost-user backends failed: {e}; a backend that goes away is noticed at the device's next request");
            return;
        }
        if fds[0].revents != 0 {
            let _ = wake.read();
        }
        for (pfd, (i, stream)) in fds[1..].iter().zip(&watched) {
            if pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            let mut d = lock(&devices[*i]);
            // Only if it is still the device's current connection.
            if d.backend().watch_handle().is_some_and(|s| Arc::ptr_eq(&s, stream)) {
                d.fail(&"the backend closed its vhost-user connection");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sizes_and_queue_defaults() {
        assert_eq!(config_size(DeviceKind::Blk), 96);
        assert_eq!(config_size(DeviceKind::Net), 24);
        assert_eq!(config_size(DeviceKind::Console), 12);
        assert_eq!(default_queues(DeviceKind::Blk), 1);
        assert_eq!(default_queues(DeviceKind::Net), 2);
    }

    #[test]
    fn a_missing_socket_is_a_sentence() {
        let e = connect(Path::new("/nonexistent/splitpv.sock"), DeviceKind::Blk).unwrap_err();
        assert!(matches!(e, BackendError::NoSocket { .. }), "{e:?}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn host_addresses_stay_inside_one_region() {
        let ram = crate::vstate::memory::GuestRam::new(c"vhost-test", 16 << 20).unwrap();
        let base = ram.memory().get_host_address(GuestAddress(0)).unwrap() as u64;
        assert_eq!(host_address(ram.memory(), 0x1000, 16), Some(base + 0x1000));
        assert_eq!(host_address(ram.memory(), (16 << 20) - 16, 16), Some(base + (16 << 20) - 16));
        assert_eq!(host_address(ram.memory(), (16 << 20) - 16, 17), None);
        assert_eq!(host_address(ram.memory(), 1 << 40, 1), None);
        assert_eq!(host_address(ram.memory(), 0x1000, u64::MAX), None);
    }
}
