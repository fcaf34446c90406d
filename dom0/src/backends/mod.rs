//! dom0's device backends: the device side of the split drivers, as
//! vhost-user backends.
//!
//! [`start`] opens what the device needs (the disk image, the tap device or
//! a port on a [`Switch`], a console buffer), listens on a Unix socket and
//! serves one vhost-user frontend (the domain's hypervisor process) on it.
//! When the frontend disconnects the backend ends; dom0 starts a fresh one
//! for the next life of the domain.
//!
//! Layout: `chain` (descriptor chains as checked buffer lists), `queue`
//! (the event-idx processing loop), `blk`, `null` (a blk device with
//! nothing behind it, for benchmarks), `net`, `console` (request logic,
//! testable against `virtio_queue::mock`), `switch`, `tap`, and `vhost`
//! (the vhost-user-backend plumbing).
//!
//! What the frontend has to know:
//! - virtio features offered: VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
//!   VIRTIO_RING_F_INDIRECT_DESC, VHOST_USER_F_PROTOCOL_FEATURES, plus the
//!   device's own (blk: SEG_MAX, SIZE_MAX, FLUSH, RO if read-only; net:
//!   MAC, STATUS; console: none). Protocol features: CONFIG, MQ, REPLY_ACK.
//! - GET_CONFIG offsets are relative to the start of the device-specific
//!   configuration (offset 0 is blk `capacity`, net `mac`).
//! - Queues: blk 1 (requestq), net 2 (rx 0, tx 1), console 2 (receiveq 0,
//!   transmitq 1); at most [`MAX_QUEUE_SIZE`] entries each. With
//!   PROTOCOL_FEATURES negotiated, a queue runs only after
//!   SET_VRING_ENABLE 1.
//! - A failing vhost-user request (e.g. SET_VRING_ADDR outside the memory
//!   table) ends the connection, and with it the backend.

mod blk;
mod chain;
mod console;
mod device;
mod net;
mod null;
mod queue;
mod switch;
mod tap;
#[cfg(test)]
mod testutil;

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use console::{ConsoleClient, ConsoleHandle, INPUT_BYTES, SCROLLBACK_BYTES};
pub use device::MAX_QUEUE_SIZE;
pub use switch::{PortStats, Switch, SwitchError, SwitchPort, PORT_QUEUE_FRAMES};

/// Limits of the virtio-blk device (also in its config space).
pub mod blk_limits {
    pub use super::blk::{MAX_DATA, SEG_MAX, SIZE_MAX};
}

/// Limits of the virtio-net device.
pub mod net_limits {
    pub use super::net::{MAX_FRAME, NET_HDR_LEN, RX_QUEUE_FRAMES};
}

/// Guest memory as the backends see it.
pub(crate) type Mem = GuestMemoryMmap<()>;

/// What device to run.
#[derive(Clone, Debug)]
pub enum BackendSpec {
    /// virtio-blk on a raw image file (or block device).
    Blk {
        /// The image.
        path: PathBuf,
        /// Open it read-only and advertise VIRTIO_BLK_F_RO.
        read_only: bool,
        /// The VIRTIO_BLK_T_GET_ID answer, at most 20 bytes (e.g.
        /// `"web-xvda"`).
        serial: String,
        /// Open the image with O_DIRECT (bypass the page cache). Requests
        /// go through 4 KiB-aligned bounce buffers; one the host file
        /// system refuses for alignment (EINVAL) is retried through the
        /// page cache.
        direct: bool,
    },
    /// A null virtio-blk device: every well-formed request completes at
    /// once with status OK, no file behind it (for ring benchmarks). The
    /// driver sees a writable blk device with the real one's limits.
    Null {
        /// The capacity it reports, in bytes (rounded down to sectors).
        capacity_bytes: u64,
        /// Copy the data as a memory-speed disk would (a read zero-fills
        /// the driver's buffers, a write reads them); otherwise only the
        /// status byte is written.
        touch_data: bool,
        /// After the queue runs dry, keep polling it this long with
        /// notifications off before sleeping on the kick eventfd (zero:
        /// sleep at once, as the other devices do).
        poll: std::time::Duration,
    },
    /// virtio-net.
    Net {
        /// The guest's MAC address (config space).
        mac: [u8; 6],
        /// Where its frames go.
        port: NetPort,
    },
    /// virtio-console with one port.
    Console {},
}

/// Where a net backend's frames go.
#[derive(Clone, Debug)]
pub enum NetPort {
    /// A tap device dom0 creates (a name with `%d` lets the kernel number
    /// it), sets up and, if given, adds to a Linux bridge. It disappears
    /// when the backend ends.
    Tap {
        /// The interface name, at most 15 bytes.
        name: String,
        /// The bridge to add it to.
        bridge: Option<String>,
    },
    /// A port on dom0's inter-domain switch.
    Switch(Arc<Switch>),
}

/// Why a backend could not start, or how it ended badly.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The disk image cannot be opened.
    #[error("cannot open the disk image {path}: {source}")]
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The tap device cannot be set up.
    #[error("cannot set up the tap device {name}: {source}")]
    Tap {
        /// The requested name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// Something is already at the socket path.
    #[error("cannot listen on {path}: {reason}")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        reason: &'static str,
    },
    /// The socket cannot be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An OS resource (eventfd, epoll, thread) cannot be had.
    #[error("cannot start the backend: {0}")]
    Resource(io::Error),
    /// The vif cannot join its switch.
    #[error("cannot join the switch: {0}")]
    SwitchPort(#[from] switch::SwitchError),
    /// vhost-user-backend refused to start.
    #[error("the vhost-user daemon cannot start: {0}")]
    Daemon(String),
    /// The frontend broke the vhost-user protocol and was disconnected.
    #[error("the vhost-user connection failed: {0}")]
    Protocol(String),
    /// The backend's thread panicked.
    #[error("the backend thread panicked")]
    Panicked,
}

/// A backend's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Requests handled: blk requests, net frames sent and delivered,
    /// console chunks.
    pub requests: u64,
    /// Payload bytes moved (disk data, frames without their header,
    /// console bytes).
    pub bytes: u64,
    /// Requests refused or failed, chains dropped as malformed, queues
    /// broken.
    pub errors: u64,
    /// Times the call eventfd was signalled (the driver asked for it).
    pub notifications: u64,
    /// Frames or requests dropped: full queues, receive buffers too small,
    /// requests without a status byte.
    pub dropped: u64,
    /// Queues the driver made unusable (the device needs a reset).
    pub broken_queues: u64,
}

/// A running backend. Dropping it stops it.
#[derive(Debug)]
pub struct RunningBackend {
    socket_path: PathBuf,
    counters: Arc<queue::Counters>,
    console: Option<ConsoleHandle>,
    interface: Option<String>,
    stop: Arc<StopState>,
    thread: Option<JoinHandle<Result<(), BackendError>>>,
}

struct StopState {
    requested: AtomicBool,
    event: EventFd,
    shutdown: Mutex<Option<ShutdownHandle>>,
}

impl std::fmt::Debug for StopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopState")
            .field("requested", &self.requested)
            .finish_non_exhaustive()
    }
}

impl RunningBackend {
    /// The counters so far.
    pub fn stats(&self) -> BackendStats {
        let c = &self.counters;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        BackendStats {
            requests: l(&c.requests),
            bytes: l(&c.bytes),
            errors: l(&c.errors),
            notifications: l(&c.notifications),
            dropped: l(&c.dropped),
            broken_queues: l(&c.broken_queues),
        }
    }

    /// The socket the backend listens on (removed once a frontend has
    /// connected).
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A console backend's output and input.
    pub fn console(&self) -> Option<ConsoleHandle> {
        self.console.clone()
    }

    /// A tap-backed net backend's interface name.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// Whether the backend has ended (frontend gone, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the frontend disconnects (or [`RunningBackend::stop`]
    /// is called elsewhere); `Err` if the connection failed.
    pub fn wait(mut self) -> Result<(), BackendError> {
        self.join()
    }

    /// Ends the backend: stops listening, or disconnects the frontend, and
    /// joins its threads.
    pub fn stop(mut self) -> Result<(), BackendError> {
        self.request_stop();
        self.join()
    }

    fn request_stop(&self) {
        self.stop.requested.store(true, Ordering::SeqCst);
        let _ = self.stop.event.write(1);
        if let Some(h) = self
            .stop
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            h.shutdown();
        }
    }

    fn join(&mut self) -> Result<(), BackendError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| BackendError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop();
            let _ = self.join();
        }
    }
}

/// Starts a backend for `spec` listening on `socket_path`.
///
/// A socket already at the path is replaced (dom0 must not start two
/// backends on one path); anything else there is an error. The socket file is removed
/// once the frontend has connected (one connection per backend) or when
/// the backend stops.
pub fn start(spec: BackendSpec, socket_path: &Path) -> Result<RunningBackend, BackendError> {
    let counters = Arc::new(queue::Counters::default());
    let mut console = None;
    let mut interface = None;
    let device = match spec {
        BackendSpec::Blk {
            path,
            read_only,
            serial,
            direct,
        } => {
            let disk = blk::Disk::open(&path, read_only, direct, &serial)
                .map_err(|source| BackendError::Image { path, source })?;
            device::Device::Blk(disk)
        }
        BackendSpec::Null {
            capacity_bytes,
            touch_data,
            poll,
        } => device::Device::Null(null::NullDisk::new(
            null::sectors(capacity_bytes),
            touch_data,
            poll,
        )),
        BackendSpec::Net { mac, port } => {
            let port = match port {
                NetPort::Tap { name, bridge } => {
                    let tap = tap::Tap::open(&name, bridge.as_deref())
                        .map_err(|source| BackendError::Tap { name, source })?;
                    interface = Some(tap.name().to_owned());
                    net::Port::Tap(tap)
                }
                NetPort::Switch(sw) => {
                    net::Port::Switch(sw.attach(mac).map_err(BackendError::SwitchPort)?)
                }
            };
            device::Device::Net(net::NetDevice::new(mac, port))
        }
        BackendSpec::Console {} => {
            let handle = ConsoleHandle::new().map_err(BackendError::Resource)?;
            console = Some(handle.clone());
            device::Device::Console(console::ConsoleDevice { handle })
        }
    };

    let listener = listen(socket_path)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(device::Backend::new(device, counters.clone(), mem.clone()));
    let name = format!("vhost-{}", socket_path.display());
    let daemon = VhostUserDaemon::new(name.clone(), backend.clone(), mem)
        .map_err(|e| BackendError::Daemon(e.to_string()))?;
    let handlers = daemon.get_epoll_handlers();
    let worker = handlers
        .first()
        .ok_or_else(|| BackendError::Daemon("it has no worker thread".into()))?;
    backend
        .register_own_fd(worker)
        .map_err(BackendError::Resource)?;
    drop(handlers);
    drop(backend);

    let stop = Arc::new(StopState {
        requested: AtomicBool::new(false),
        event: EventFd::new(EFD_NONBLOCK).map_err(BackendError::Resource)?,
        shutdown: Mutex::new(None),
    });
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || serve(daemon, listener, &thread_stop))
        .map_err(BackendError::Resource)?;
    Ok(RunningBackend {
        socket_path: socket_path.to_owned(),
        counters,
        console,
        interface,
        stop,
        thread: Some(thread),
    })
}

/// Binds the socket, replacing an old one. (No probe for a live backend
/// behind it: connecting would make that backend serve the probe and end.)
fn listen(path: &Path) -> Result<Listener, BackendError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| BackendError::Listen {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(BackendError::SocketInUse {
                path: path.to_owned(),
                reason: "something that is not a socket is there",
            })
        }
        Err(_) => {}
    }
    let listener = Listener::new(path, false).map_err(|e| BackendError::Listen {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| BackendError::Listen {
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
    Ok(listener)
}

/// The backend's thread: waits for the frontend (or a stop), serves it
/// until it disconnects, then ends the worker.
fn serve(
    mut daemon: VhostUserDaemon<Arc<device::Backend>>,
    mut listener: Listener,
    stop: &StopState,
) -> Result<(), BackendError> {
    const LISTENER: u64 = 0;
    const STOP: u64 = 1;
    let epoll = Epoll::new().map_err(BackendError::Resource)?;
    epoll
        .ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER),
        )
        .map_err(BackendError::Resource)?;
    epoll
        .ctl(
            ControlOperation::Add,
            stop.event.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )
        .map_err(BackendError::Resource)?;
    let mut events = [EpollEvent::default(); 2];
    loop {
        if stop.requested.load(Ordering::SeqCst) {
            end_workers(&daemon);
            return Ok(());
        }
        match epoll.wait(-1, &mut events) {
            Ok(n) if events[..n].iter().any(|e| e.data() == LISTENER) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                end_workers(&daemon);
                return Err(BackendError::Resource(e));
            }
        }
    }
    // A connection is waiting: accept it (blocking, so the daemon does not
    // spin), then stop listening; the socket file goes with the listener.
    let started = match listener.set_nonblocking(false) {
        Ok(()) => daemon.start(&mut listener).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    drop(listener);
    if let Err(e) = started {
        end_workers(&daemon);
        return Err(BackendError::Daemon(e));
    }
    if let Some(h) = daemon.shutdown_handle() {
        let mut slot = stop.shutdown.lock().unwrap_or_else(|e| e.into_inner());
        if stop.requested.load(Ordering::SeqCst) {
            h.shutdown();
        }
        *slot = Some(h);
    }
    let result = daemon.wait();
    end_workers(&daemon);
    match result {
        Ok(()) => Ok(()),
        Err(vhost_user_backend::Error::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "the vhost-user connection failed");
            Err(BackendError::Protocol(e.to_string()))
        }
    }
}

/// Tells the worker threads to exit; they are joined when the daemon (and
/// with it the last reference to the handler) is dropped.
fn end_workers(daemon: &VhostUserDaemon<Arc<device::Backend>>) {
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
}
