//! The vhost-user side: one [`Backend`] per device, served by
//! vhost-user-backend's `VhostUserDaemon` with one worker thread.
//!
//! The worker calls [`Backend::handle_event`] for queue kicks and for the
//! device's own fds (tap, switch port, console input). Nothing a guest does
//! makes it return an error (that would end the worker): bad requests are
//! answered or dropped and counted, a bad queue is marked broken and left
//! alone until the frontend stops it (GET_VRING_BASE) or resets the device.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringMutex, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::blk::Disk;
use super::console::ConsoleDevice;
use super::net::NetDevice;
use super::null::{self, NullDisk};
use super::queue::{Counters, Outcome, QueueError};
use super::Mem;

/// The largest queue the frontend may set up.
pub const MAX_QUEUE_SIZE: usize = 256;

/// The device behind a backend.
#[derive(Debug)]
pub(crate) enum Device {
    Blk(Disk),
    /// The null virtio-blk device (benchmarks).
    Null(NullDisk),
    Net(NetDevice),
    Console(ConsoleDevice),
}

impl Device {
    pub fn num_queues(&self) -> usize {
        match self {
            Device::Blk(_) | Device::Null(_) => 1,
            Device::Net(_) | Device::Console(_) => 2,
        }
    }

    /// The epoll id of the device's own fd: after the queues and the id
    /// vhost-user-backend reserves for its exit event.
    pub fn own_event_id(&self) -> u16 {
        self.num_queues() as u16 + 1
    }
}

/// One vhost-user device backend.
#[derive(Debug)]
pub(crate) struct Backend {
    pub device: Device,
    pub counters: Arc<Counters>,
    mem: GuestMemoryAtomic<Mem>,
    broken: Vec<AtomicBool>,
    acked_features: AtomicU64,
    /// The worker's epoll, to stop polling a port that failed for good.
    /// Weak: the handler holds the backend.
    worker: OnceLock<Weak<VringEpollHandler<Arc<Backend>>>>,
    /// The read ends of the exit events given to vhost-user-backend's
    /// workers. Its `VringEpollHandler::new` (0.24) turns the consumer into
    /// a raw fd for its epoll and never closes it: without closing them
    /// here every backend life leaked one eventfd in dom0.
    exit_consumers: Mutex<Vec<RawFd>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let fds = std::mem::take(self.exit_consumers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for fd in fds {
            // `fd` is the consumer of an exit event this backend made
            // (exit_event); the worker handler that registered it in its
            // epoll holds an Arc of this backend, so it and its epoll are
            // gone by now, and the crate never closes the fd itself: it is
            // open and owned by nobody else.
            let _ = nix::unistd::close(fd);
        }
    }
}

impl Backend {
    pub fn new(device: Device, counters: Arc<Counters>, mem: GuestMemoryAtomic<Mem>) -> Backend {
        let broken = (0..device.num_queues())
            .map(|_| AtomicBool::new(false))
            .collect();
        Backend {
            device,
            counters,
            mem,
            broken,
            acked_features: AtomicU64::new(0),
            worker: OnceLock::new(),
            exit_consumers: Mutex::new(Vec::new()),
        }
    }

    /// Polls the device's own fd (tap, switch port, console input) on
    /// `worker`'s epoll.
    pub fn register_own_fd(&self, worker: &Arc<VringEpollHandler<Arc<Backend>>>) -> io::Result<()> {
        let fd = match &self.device {
            Device::Net(n) => n.port.event_fd(),
            Device::Console(c) => Some(c.handle.input_event().as_raw_fd()),
            Device::Blk(_) | Device::Null(_) => None,
        };
        if let Some(fd) = fd {
            worker.register_listener(fd, EventSet::IN, u64::from(self.device.own_event_id()))?;
            let _ = self.worker.set(Arc::downgrade(worker));
        }
        Ok(())
    }

    fn unregister_own_fd(&self) {
        let Device::Net(n) = &self.device else { return };
        let (Some(fd), Some(worker)) =
            (n.port.event_fd(), self.worker.get().and_then(Weak::upgrade))
        else {
            return;
        };
        let _ = worker.unregister_listener(fd, EventSet::IN, u64::from(self.device.own_event_id()));
    }

    /// Runs `f` on queue `index` if it is ready, enabled and not broken;
    /// signals the call eventfd if the driver asked for it; marks the queue
    /// broken if `f` says it is unusable.
    fn serve(
        &self,
        vrings: &[VringMutex<GuestMemoryAtomic<Mem>>],
        index: usize,
        f: impl FnOnce(&mut Queue, &Mem) -> Result<Outcome, QueueError>,
    ) {
        let (Some(vring), Some(broken)) = (vrings.get(index), self.broken.get(index)) else {
            return;
        };
        if broken.load(Ordering::Relaxed) {
            return;
        }
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return;
        }
        let mem = self.mem.memory();
        match f(state.get_queue_mut(), &mem) {
            Ok(o) => {
                if o.notify && state.get_call().is_some() {
                    match state.signal_used_queue() {
                        Ok(()) => Counters::add(&self.counters.notifications, 1),
                        Err(e) => {
                            tracing::warn!(queue = index, error = %e, "cannot signal the call eventfd")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    queue = index,
                    error = %e,
                    "the driver broke the queue; the device needs a reset and stops serving it"
                );
                broken.store(true, Ordering::Relaxed);
                self.counters.error();
                Counters::add(&self.counters.broken_queues, 1);
            }
        }
    }
}

impl Backend {
    /// Serves the null device's queue, then polls it for the device's
    /// polling period (with notifications off) before going back to
    /// sleep: every request found restarts the period.
    fn serve_null(&self, disk: &NullDisk, vrings: &[VringMutex<GuestMemoryAtomic<Mem>>]) {
        let c = &*self.counters;
        let Some(mut deadline) = null::poll_deadline(disk.poll()) else {
            self.serve(vrings, 0, |q, m| disk.process_queue(q, m, c, false));
            return;
        };
        loop {
            let mut used = 0;
            self.serve(vrings, 0, |q, m| {
                let o = disk.process_queue(q, m, c, true)?;
                used = o.used;
                Ok(o)
            });
            let now = std::time::Instant::now();
            if used > 0 {
                deadline = now + disk.poll();
            } else if now >= deadline {
                // Notifications back on, and whatever slipped in served.
                self.serve(vrings, 0, |q, m| disk.process_queue(q, m, c, false));
                return;
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl VhostUserBackend for Backend {
    type Bitmap = ();
    type Vring = VringMutex<GuestMemoryAtomic<Mem>>;

    fn num_queues(&self) -> usize {
        self.device.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let common = 1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        common
            | match &self.device {
                Device::Blk(d) => d.features(),
                Device::Null(d) => d.features(),
                Device::Net(n) => n.features(),
                Device::Console(_) => 0,
            }
    }

    fn acked_features(&self, features: u64) {
        self.acked_features.store(features, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn reset_device(&self) {
        for b in &self.broken {
            b.store(false, Ordering::Relaxed);
        }
    }

    fn set_event_idx(&self, _enabled: bool) {
        // vhost-user-backend sets it on every queue; `queue::run` reads it
        // from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = match &self.device {
            Device::Blk(d) => d.config(),
            Device::Null(d) => d.config(),
            Device::Net(n) => n.config(),
            Device::Console(c) => c.config(),
        };
        config_slice(&config, offset, size)
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        // Nothing is writable; refusing would end the connection.
        Ok(())
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<Mem>) -> io::Result<()> {
        // The same GuestMemoryAtomic `self.mem` shares with the daemon has
        // been updated in place.
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        // Closed when the backend goes (see `exit_consumers`).
        self.exit_consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // The frontend stops the queue (the guest reset the device); it will
        // be set up afresh.
        if let Some(b) = self.broken.get(queue_index as usize) {
            b.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        let c = &*self.counters;
        let own = self.device.own_event_id();
        match &self.device {
            Device::Blk(disk) => {
                if device_event == 0 {
                    self.serve(vrings, 0, |q, m| disk.process_queue(q, m, c));
                }
            }
            Device::Null(disk) => {
                if device_event == 0 {
                    self.serve_null(disk, vrings);
                }
            }
            Device::Net(net) => {
                if device_event == own && !net.pull_port(c) {
                    self.unregister_own_fd();
                }
                match device_event {
                    1 => self.serve(vrings, 1, |q, m| net.process_tx(q, m, c)),
                    _ => self.serve(vrings, 0, |q, m| net.process_rx(q, m, c)),
                }
            }
            Device::Console(con) => match device_event {
                1 => self.serve(vrings, 1, |q, m| con.process_tx(q, m, c)),
                _ => {
                    if device_event == own {
                        let _ = con.handle.input_event().read();
                    }
                    self.serve(vrings, 0, |q, m| con.process_rx(q, m, c));
                }
            },
        }
        Ok(())
    }
}

/// `size` bytes of `config` from `offset`, zero beyond its end (the
/// frontend needs exactly `size` bytes).
fn config_slice(config: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    let start = (offset as usize).min(config.len());
    let end = (offset as usize)
        .saturating_add(size as usize)
        .min(config.len());
    out[..end - start].copy_from_slice(&config[start..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_slices() {
        let c = [1, 2, 3, 4];
        assert_eq!(config_slice(&c, 0, 4), vec![1, 2, 3, 4]);
        assert_eq!(config_slice(&c, 2, 4), vec![3, 4, 0, 0]);
        assert_eq!(config_slice(&c, 8, 2), vec![0, 0]);
        assert_eq!(config_slice(&c, u32::MAX, 2), vec![0, 0]);
    }
}
