//! virtio-mmio transports (virtio 1.x, register layout "version 2"), one
//! per slot of [`pvabi::virtio`].
//!
//! The hypervisor process owns only the register block; the device itself
//! runs in a dom0 backend that reads and writes the queues in guest RAM
//! (see [`super::vhost_user`]). Split in two:
//!
//! - [`Transport`]: the register state and every check of what the guest
//!   writes, as pure logic (no KVM, no sockets), unit-tested below. A write
//!   returns an [`Effect`] saying what the backend must do.
//! - [`VirtioMmio`]: the bus device that feeds guest accesses to a
//!   [`Transport`] and carries out its effects on a [`VirtioBackend`]; a
//!   backend failure puts the device in DEVICE_NEEDS_RESET and never ends
//!   the domain.
//!
//! Empty slots are [`EmptySlot`]s: device ID 0, as the virtio spec allows
//! for placeholders, so a guest can probe the slots in order.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_IN_ORDER,
    VIRTIO_F_ORDER_PLATFORM, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::bus::{BusDevice, BusRequest};
use crate::layout::{is_ram, RamRange};

/// "virt", little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The register layout of virtio 1.x (the legacy layout is version 1).
pub const VERSION: u32 = 2;
/// Our vendor ID: "SPV" (the ID only matters for driver quirks).
pub const VENDOR_ID: u32 = 0x0056_5053;
/// Largest queue size offered. vhost-user has no message to ask the
/// backend for its limit, so backends must accept up to this many entries.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Where the device-specific configuration space starts.
pub const CONFIG_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;

/// How many warnings one device logs before it goes quiet: a hostile guest
/// must not be able to fill the host's logs at the rate of MMIO exits.
const MAX_WARNINGS: u32 = 32;

/// Device-independent feature bits a guest may see: indirect descriptors,
/// event index, VERSION_1, ACCESS_PLATFORM, IN_ORDER, ORDER_PLATFORM.
/// The others are withheld: the packed ring (vhost-user backends here only
/// do split rings), NOTIFICATION_DATA and NOTIF_CONFIG_DATA (a QueueNotify
/// write must carry only the queue index, which is what the ioeventfd
/// matches), RING_RESET and ADMIN_VQ (no such registers here), and the
/// vhost-user transport bits (PROTOCOL_FEATURES, LOG_ALL).
const TRANSPORT_FEATURES_ALLOWED: u64 = (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_F_ACCESS_PLATFORM)
    | (1 << VIRTIO_F_IN_ORDER)
    | (1 << VIRTIO_F_ORDER_PLATFORM);
/// Device-specific feature bits: 0..=23 and 50..=63.
const DEVICE_FEATURES_MASK: u64 = 0x00ff_ffff | (!0u64 << 50);

/// The features a guest is offered, from what a backend offers.
pub fn guest_visible_features(backend_features: u64) -> u64 {
    backend_features & (DEVICE_FEATURES_MASK | TRANSPORT_FEATURES_ALLOWED)
}

/// One queue as the driver configured it (guest-physical addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// Entries.
    pub size: u16,
    /// Set by the driver once the queue is configured.
    pub ready: bool,
    /// Descriptor table.
    pub desc: u64,
    /// Driver area (available ring).
    pub driver: u64,
    /// Device area (used ring).
    pub device: u64,
}

/// A ready queue handed to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveQueue {
    /// Queue index.
    pub index: u16,
    /// Largest size the device offered.
    pub max_size: u16,
    /// Its configuration.
    pub config: QueueConfig,
}

/// What the backend must do after a register write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// The driver set DRIVER_OK: hand these features and queues to the
    /// backend.
    Activate {
        /// Features the driver acknowledged.
        features: u64,
        /// The ready queues.
        queues: Vec<ActiveQueue>,
    },
    /// The driver wrote 0 to Status: stop the backend's queues (those
    /// listed were running).
    Reset {
        /// Queues that had been handed to the backend.
        running: Vec<u16>,
    },
    /// A QueueNotify write for a running queue that reached this process
    /// (normally KVM's ioeventfd takes it without an exit).
    Notify(u16),
    /// The driver wrote configuration space.
    WriteConfig {
        /// Offset inside the configuration space.
        offset: u32,
        /// Bytes written.
        data: Vec<u8>,
    },
}

/// Where a queue's parts must be aligned and how long they are for `n`
/// entries (virtio 1.x split virtqueue, event index fields included).
fn queue_parts(q: &QueueConfig) -> [(&'static str, u64, u64, u64); 3] {
    let n = u64::from(q.size);
    [("descriptor table", q.desc, 16 * n, 16), ("driver area", q.driver, 6 + 2 * n, 2), ("device area", q.device, 6 + 8 * n, 4)]
}

/// The register state of one virtio-mmio transport.
#[derive(Debug)]
pub struct Transport {
    slot: u32,
    device_id: u32,
    /// Offered to the guest (see [`guest_visible_features`]).
    device_features: u64,
    queue_max: Vec<u16>,
    ram: Vec<RamRange>,
    config: Vec<u8>,
    config_generation: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    status: u32,
    interrupt_status: u32,
    /// The backend runs the queues (DRIVER_OK accepted and activation
    /// succeeded).
    running: Vec<u16>,
    warnings: u32,
}

impl Transport {
    /// A transport in slot `slot` for a device with `device_id`, offering
    /// `backend_features` (filtered by [`guest_visible_features`]) and
    /// `queue_count` queues of at most `queue_max` entries, whose queues
    /// must lie in `ram`; `config` is the device's configuration space.
    pub fn new(slot: u32, device_id: u32, backend_features: u64, queue_count: usize, queue_max: u16, ram: Vec<RamRange>, config: Vec<u8>) -> Transport {
        let mut t = Transport {
            slot,
            device_id,
            device_features: guest_visible_features(backend_features),
            queue_max: vec![queue_max; queue_count],
            ram,
            config,
            config_generation: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: Vec::new(),
            status: 0,
            interrupt_status: 0,
            running: Vec::new(),
            warnings: 0,
        };
        t.reset();
        t
    }

    fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        self.warnings = self.warnings.saturating_add(1);
        if self.warnings <= MAX_WARNINGS {
            tracing::warn!("virtio-mmio slot {}: {msg}", self.slot);
            if self.warnings == MAX_WARNINGS {
                tracing::warn!("virtio-mmio slot {}: further warnings about this device are suppressed", self.slot);
            }
        }
    }

    /// Back to the state after power-on (the driver wrote 0 to Status).
    fn reset(&mut self) {
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = self.queue_max.iter().map(|&max| QueueConfig { size: max, ..QueueConfig::default() }).collect();
        self.status = 0;
        self.interrupt_status = 0;
        self.running.clear();
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The queues the backend runs.
    pub fn running(&self) -> &[u16] {
        &self.running
    }

    /// The queues' configuration.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// The features the guest is offered.
    pub fn device_features(&self) -> u64 {
        self.device_features
    }

    /// The features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The configuration space as last read from the backend.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// ConfigGeneration.
    pub fn config_generation(&self) -> u32 {
        self.config_generation
    }

    /// The backend's configuration space was read again: keep it, and bump
    /// the generation if it changed (a driver reading across the change
    /// retries).
    pub fn refresh_config(&mut self, config: Vec<u8>) {
        if config != self.config {
            self.config = config;
            self.config_generation = self.config_generation.wrapping_add(1);
        }
    }

    /// The device is offered by a new backend (after a reconnection, while
    /// the driver has it reset).
    pub fn replace_device(&mut self, backend_features: u64, config: Vec<u8>) {
        self.device_features = guest_visible_features(backend_features);
        self.refresh_config(config);
    }

    /// The device failed (its backend went away or refused a request): set
    /// DEVICE_NEEDS_RESET and raise a configuration-change interrupt, as
    /// the spec asks; the driver must reset the device to use it again.
    /// Returns whether the state changed.
    pub fn set_needs_reset(&mut self) -> bool {
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return false;
        }
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
        self.running.clear();
        true
    }

    /// The activation the last [`Effect::Activate`] asked for succeeded.
    pub fn activated(&mut self, queues: &[ActiveQueue]) {
        self.running = queues.iter().map(|q| q.index).collect();
    }

    /// Reads the 32-bit register at `offset` (below [`CONFIG_OFFSET`]).
    pub fn read_register(&mut self, offset: u32) -> u32 {
        let q = self.queues.get(self.queue_sel as usize).copied();
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device_id,
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => q.map_or(0, |_| u32::from(self.queue_max[self.queue_sel as usize])),
            VIRTIO_MMIO_QUEUE_NUM => q.map_or(0, |q| u32::from(q.size)),
            VIRTIO_MMIO_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.map_or(0, |q| q.desc as u32),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.map_or(0, |q| (q.desc >> 32) as u32),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.map_or(0, |q| q.driver as u32),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.map_or(0, |q| (q.driver >> 32) as u32),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.map_or(0, |q| q.device as u32),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.map_or(0, |q| (q.device >> 32) as u32),
            // The backend raises the queue interrupt itself (irqfd), so
            // this process cannot know which interrupt was for a queue:
            // while the device runs, "used buffer" always shows. A driver
            // that finds nothing new in its queues just returns.
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status | if self.running.is_empty() { 0 } else { VIRTIO_MMIO_INT_VRING },
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: a length of all ones means "no
            // such region".
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH | VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // Write-only registers and holes read as zero.
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset` (below [`CONFIG_OFFSET`]).
    pub fn write_register(&mut self, offset: u32, value: u32) -> Effect {
        if offset == VIRTIO_MMIO_STATUS {
            return self.write_status(value);
        }
        if offset == VIRTIO_MMIO_QUEUE_NOTIFY {
            return self.notify(value);
        }
        if offset == VIRTIO_MMIO_INTERRUPT_ACK {
            self.interrupt_status &= !value;
            return Effect::None;
        }
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.warn(format_args!("write of {value:#x} to register {offset:#x} ignored: the device needs a reset"));
            return Effect::None;
        }
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue(offset, value),
            _ => self.warn(format_args!("write of {value:#x} to read-only or unknown register {offset:#x} ignored")),
        }
        Effect::None
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK) != 0 {
            self.warn(format_args!("driver features written after FEATURES_OK: ignored"));
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
            sel => {
                if value != 0 {
                    self.warn(format_args!("driver features {value:#x} in word {sel} ignored: no such features are offered"));
                }
            }
        }
    }

    fn write_queue(&mut self, offset: u32, value: u32) {
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 || self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.warn(format_args!("queue register {offset:#x} written outside queue setup (after FEATURES_OK, before DRIVER_OK): ignored"));
            return;
        }
        let sel = self.queue_sel;
        let Some(max) = self.queue_max.get(sel as usize).copied() else {
            self.warn(format_args!("queue register {offset:#x} written for queue {sel}, which does not exist: ignored"));
            return;
        };
        let q = self.queues[sel as usize];
        if q.ready && !(offset == VIRTIO_MMIO_QUEUE_READY && value == 0) {
            self.warn(format_args!("queue {sel} is ready; register {offset:#x} cannot change: ignored"));
            return;
        }
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let hi = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        let mut q = q;
        match offset {
            VIRTIO_MMIO_QUEUE_NUM => {
                if value == 0 || value > u32::from(max) || !value.is_power_of_two() {
                    self.warn(format_args!("queue {sel}: size {value} refused (a power of two up to {max}): ignored"));
                    return;
                }
                q.size = value as u16;
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.desc = lo(q.desc),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.desc = hi(q.desc),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.driver = lo(q.driver),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.driver = hi(q.driver),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.device = lo(q.device),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.device = hi(q.device),
            VIRTIO_MMIO_QUEUE_READY => match value {
                0 => q.ready = false,
                1 => {
                    if let Some(problem) = self.check_queue(&q) {
                        self.warn(format_args!("queue {sel} cannot be made ready: {problem}; the device needs a reset"));
                        self.set_needs_reset();
                        return;
                    }
                    q.ready = true;
                }
                _ => {
                    self.warn(format_args!("queue {sel}: QueueReady value {value} is neither 0 nor 1: ignored"));
                    return;
                }
            },
            _ => unreachable!("only queue registers are passed here"),
        }
        self.queues[sel as usize] = q;
    }

    /// Why a queue's addresses cannot be used, if they cannot.
    fn check_queue(&self, q: &QueueConfig) -> Option<String> {
        for (what, gpa, len, align) in queue_parts(q) {
            if gpa % align != 0 {
                return Some(format!("its {what} at {gpa:#x} is not aligned to {align} bytes"));
            }
            if !is_ram(&self.ram, gpa, len) {
                return Some(format!("its {what} at {gpa:#x} ({len} bytes) is not inside guest RAM"));
            }
        }
        None
    }

    fn write_status(&mut self, value: u32) -> Effect {
        if value == 0 {
            let running = std::mem::take(&mut self.running);
            self.reset();
            return Effect::Reset { running };
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED;
        // DEVICE_NEEDS_RESET is the device's to set; the driver writes back
        // what it read, so the bit may come back in the value.
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if value & !known != 0 {
            self.warn(format_args!("status {value:#x} has unknown bits: ignored"));
            return Effect::None;
        }
        let current = self.status & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if current & !value != 0 {
            self.warn(format_args!("status {value:#x} clears bits of {current:#x} without a reset: ignored"));
            return Effect::None;
        }
        let new = value & !current;
        if new & VIRTIO_CONFIG_S_FAILED != 0 {
            // The driver gave up on the device; nothing else it sets counts.
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return Effect::None;
        }
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.warn(format_args!("status {value:#x} ignored: the device needs a reset"));
            return Effect::None;
        }
        let mut accepted = new & (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            match self.check_features(value) {
                Ok(()) => accepted |= VIRTIO_CONFIG_S_FEATURES_OK,
                // The driver reads FEATURES_OK back and gives up on the
                // device when it is not set.
                Err(why) => self.warn(format_args!("FEATURES_OK refused: {why}")),
            }
        }
        self.status |= accepted;
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                self.warn(format_args!("DRIVER_OK without FEATURES_OK; the device needs a reset"));
                self.set_needs_reset();
                return Effect::None;
            }
            self.status |= VIRTIO_CONFIG_S_DRIVER_OK;
            let queues = self
                .queues
                .iter()
                .enumerate()
                .filter(|(_, q)| q.ready)
                .map(|(i, q)| ActiveQueue { index: i as u16, max_size: self.queue_max[i], config: *q })
                .collect();
            return Effect::Activate { features: self.driver_features, queues };
        }
        Effect::None
    }

    fn check_features(&self, value: u32) -> Result<(), String> {
        if value & (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER) != (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER) {
            return Err("ACKNOWLEDGE and DRIVER must be set first".into());
        }
        let extra = self.driver_features & !self.device_features;
        if extra != 0 {
            return Err(format!("the driver acknowledged features {extra:#x} that were not offered"));
        }
        if self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err("a version 2 virtio-mmio device requires VIRTIO_F_VERSION_1".into());
        }
        Ok(())
    }

    fn notify(&mut self, value: u32) -> Effect {
        match u16::try_from(value) {
            Ok(q) if self.running.contains(&q) => Effect::Notify(q),
            _ => {
                tracing::debug!(slot = self.slot, value, "QueueNotify for a queue that does not run ignored");
                Effect::None
            }
        }
    }

    /// Reads configuration space at `offset` (relative to its start).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else { return };
        if let Some(src) = self.config.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    /// Writes configuration space at `offset` (relative to its start).
    pub fn write_config(&mut self, offset: u64, data: &[u8]) -> Effect {
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.warn(format_args!("configuration write ignored: the device needs a reset"));
            return Effect::None;
        }
        let end = offset.checked_add(data.len() as u64);
        match (u32::try_from(offset), end) {
            (Ok(start), Some(end)) if end <= self.config.len() as u64 => {
                self.config[start as usize..end as usize].copy_from_slice(data);
                Effect::WriteConfig { offset: start, data: data.to_vec() }
            }
            _ => {
                self.warn(format_args!("configuration write of {} bytes at {offset:#x} is outside the {}-byte configuration space: ignored", data.len(), self.config.len()));
                Effect::None
            }
        }
    }
}

/// A failed backend request.
pub type BackendResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Where the device work happens: a vhost-user backend in dom0, or a fake
/// in tests.
pub trait VirtioBackend: Send {
    /// Hands the negotiated features and the ready queues to the backend.
    fn activate(&mut self, features: u64, queues: &[ActiveQueue]) -> BackendResult<()>;
    /// Stops the queues that ran.
    fn reset(&mut self, running: &[u16]) -> BackendResult<()>;
    /// Reads the whole configuration space.
    fn read_config(&mut self) -> BackendResult<Vec<u8>>;
    /// Writes configuration space.
    fn write_config(&mut self, offset: u32, data: &[u8]) -> BackendResult<()>;
    /// Signals queue `index` (a QueueNotify that was not taken by KVM).
    fn notify(&mut self, index: u16);
    /// Raises the device's interrupt (configuration change).
    fn interrupt(&mut self);
    /// Whether the backend is connected; a disconnected backend is asked to
    /// [`VirtioBackend::reconnect`] when the driver resets the device.
    fn connected(&self) -> bool;
    /// Drops the connection after a failure.
    fn disconnect(&mut self);
    /// Tries to connect again; returns the new backend's features and
    /// configuration space.
    fn reconnect(&mut self) -> BackendResult<(u64, Vec<u8>)>;
}

/// How many backend failures of one device are logged (a guest that keeps
/// resetting a device whose backend keeps failing must not flood the log).
const MAX_FAILURE_LOGS: u32 = 8;

/// A virtio-mmio slot with a device behind it.
pub struct VirtioMmio<B: VirtioBackend> {
    transport: Transport,
    backend: B,
    failures: u32,
}

impl<B: VirtioBackend> VirtioMmio<B> {
    /// Joins a transport and its backend.
    pub fn new(transport: Transport, backend: B) -> VirtioMmio<B> {
        VirtioMmio { transport, backend, failures: 0 }
    }

    fn log_failure(&mut self, msg: std::fmt::Arguments<'_>) {
        self.failures = self.failures.saturating_add(1);
        if self.failures <= MAX_FAILURE_LOGS {
            tracing::error!("virtio-mmio slot {}: {msg}{}", self.transport.slot, if self.failures == MAX_FAILURE_LOGS { " (further failures of this device are not logged)" } else { "" });
        }
    }

    /// The register state.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend failed or went away: the device needs a reset, the
    /// domain runs on.
    pub fn fail(&mut self, why: &dyn std::fmt::Display) {
        if self.transport.status() & VIRTIO_CONFIG_S_NEEDS_RESET == 0 || self.backend.connected() {
            self.log_failure(format_args!("the device's backend failed: {why}; the device needs a reset, the domain keeps running"));
        }
        self.backend.disconnect();
        if self.transport.set_needs_reset() {
            self.backend.interrupt();
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Notify(q) => self.backend.notify(q),
            Effect::Activate { features, queues } => {
                if !self.backend.connected() {
                    self.fail(&"the backend is not connected");
                    return;
                }
                match self.backend.activate(features, &queues) {
                    Ok(()) => self.transport.activated(&queues),
                    Err(e) => self.fail(&e),
                }
            }
            Effect::Reset { running } => {
                if self.backend.connected() {
                    if let Err(e) = self.backend.reset(&running) {
                        self.fail(&e);
                    }
                }
                if !self.backend.connected() {
                    match self.backend.reconnect() {
                        Ok((features, config)) => {
                            tracing::info!("virtio-mmio slot {}: reconnected to the device's backend", self.transport.slot);
                            self.transport.replace_device(features, config);
                        }
                        Err(e) => self.log_failure(format_args!("reconnecting to the device's backend failed: {e}")),
                    }
                    return;
                }
                // The device may have changed its configuration meanwhile.
                match self.backend.read_config() {
                    Ok(config) => self.transport.refresh_config(config),
                    Err(e) => self.fail(&e),
                }
            }
            Effect::WriteConfig { offset, data } => {
                if !self.backend.connected() {
                    return;
                }
                let result = self.backend.write_config(offset, &data).and_then(|()| self.backend.read_config());
                match result {
                    Ok(config) => self.transport.refresh_config(config),
                    Err(e) => self.fail(&e),
                }
            }
        }
    }
}

impl<B: VirtioBackend> BusDevice for VirtioMmio<B> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.transport.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) if offset % 4 == 0 => *word = self.transport.read_register(offset as u32).to_le_bytes(),
            _ => {
                data.fill(0);
                self.transport.warn(format_args!("{}-byte read at register offset {offset:#x} ignored: registers take aligned 32-bit accesses", data.len()));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
        let effect = if offset >= CONFIG_OFFSET {
            self.transport.write_config(offset - CONFIG_OFFSET, data)
        } else {
            match <[u8; 4]>::try_from(data) {
                Ok(word) if offset % 4 == 0 => self.transport.write_register(offset as u32, u32::from_le_bytes(word)),
                _ => {
                    self.transport.warn(format_args!("{}-byte write at register offset {offset:#x} ignored: registers take aligned 32-bit accesses", data.len()));
                    Effect::None
                }
            }
        };
        self.apply(effect);
        BusRequest::None
    }
}

/// A slot without a device: reads as device ID 0, ignores writes.
#[derive(Default)]
pub struct EmptySlot;

impl BusDevice for EmptySlot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 4 {
            let v = match offset as u32 {
                VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
                VIRTIO_MMIO_VERSION => VERSION,
                VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
                _ => 0,
            };
            data.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> BusRequest {
        BusRequest::None
    }
}

/// Guest-physical address of slot `i`'s register block.
pub fn slot_address(i: u32) -> u64 {
    pvabi::virtio::MMIO_BASE + u64::from(i) * pvabi::virtio::MMIO_STRIDE
}

/// GSI of slot `i`.
pub fn slot_gsi(i: u32) -> u32 {
    pvabi::virtio::IRQ_BASE + i
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const ACK_DRIVER: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    const V1: u64 = 1 << VIRTIO_F_VERSION_1;
    const RAM: u64 = 16 << 20;

    fn transport() -> Transport {
        // A blk-like device: one feature bit of its own, EVENT_IDX, VERSION_1,
        // and transport bits that must not reach the guest.
        let features = 1 | (1 << VIRTIO_RING_F_EVENT_IDX) | V1 | (1 << 30) | (1 << 34) | (1 << 38);
        let ram = vec![RamRange { gpa: 0, len: RAM, file_offset: 0 }];
        Transport::new(3, 2, features, 2, 256, ram, vec![1, 2, 3, 4, 5, 6, 7, 8])
    }

    fn features_ok(t: &mut Transport, features: u64) -> u32 {
        t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER);
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        t.read_register(VIRTIO_MMIO_STATUS)
    }

    fn setup_queue(t: &mut Transport, q: u32, size: u32, desc: u64, driver: u64, device: u64) -> u32 {
        t.write_register(VIRTIO_MMIO_QUEUE_SEL, q);
        t.write_register(VIRTIO_MMIO_QUEUE_NUM, size);
        for (lo, v) in [(VIRTIO_MMIO_QUEUE_DESC_LOW, desc), (VIRTIO_MMIO_QUEUE_AVAIL_LOW, driver), (VIRTIO_MMIO_QUEUE_USED_LOW, device)] {
            t.write_register(lo, v as u32);
            t.write_register(lo + 4, (v >> 32) as u32);
        }
        t.write_register(VIRTIO_MMIO_QUEUE_READY, 1);
        t.read_register(VIRTIO_MMIO_QUEUE_READY)
    }

    #[test]
    fn identification_and_features() {
        let mut t = transport();
        assert_eq!(t.read_register(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(t.read_register(VIRTIO_MMIO_VERSION), 2);
        assert_eq!(t.read_register(VIRTIO_MMIO_DEVICE_ID), 2);
        assert_eq!(t.read_register(VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
        assert_eq!(t.read_register(VIRTIO_MMIO_DEVICE_FEATURES), 1 | (1 << VIRTIO_RING_F_EVENT_IDX), "PROTOCOL_FEATURES (bit 30) is masked");
        t.write_register(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(t.read_register(VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1 only: packed ring and NOTIFICATION_DATA are masked");
        t.write_register(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
        assert_eq!(t.read_register(VIRTIO_MMIO_DEVICE_FEATURES), 0);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        t.write_register(VIRTIO_MMIO_QUEUE_SEL, 2);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "queue 2 does not exist");
        assert_eq!(t.read_register(VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    }

    #[test]
    fn features_ok_only_for_offered_features_with_version_1() {
        let mut t = transport();
        assert_eq!(features_ok(&mut t, V1 | (1 << 30)) & VIRTIO_CONFIG_S_FEATURES_OK, 0, "PROTOCOL_FEATURES was not offered");
        t.write_register(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(features_ok(&mut t, 1) & VIRTIO_CONFIG_S_FEATURES_OK, 0, "VERSION_1 is required");
        t.write_register(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(features_ok(&mut t, V1 | 1), ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        // Features are frozen now.
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        t.write_register(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features(), V1 | 1);
        // FEATURES_OK without ACKNOWLEDGE|DRIVER is refused.
        let mut t = transport();
        t.write_register(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(t.status(), 0);
    }

    #[test]
    fn queue_sizes_and_addresses_are_checked() {
        let mut t = transport();
        // Before FEATURES_OK, queue registers are ignored.
        t.write_register(VIRTIO_MMIO_QUEUE_NUM, 64);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM), 256);
        features_ok(&mut t, V1);
        for bad in [0, 3, 100, 512, u32::MAX] {
            t.write_register(VIRTIO_MMIO_QUEUE_NUM, bad);
            assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM), 256, "size {bad} is refused");
        }
        t.write_register(VIRTIO_MMIO_QUEUE_NUM, 64);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM), 64);
        // A queue on a nonexistent index is ignored.
        t.write_register(VIRTIO_MMIO_QUEUE_SEL, 7);
        t.write_register(VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_READY), 0);
        assert_eq!(t.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        // Good addresses make a queue ready; high halves are kept.
        assert_eq!(setup_queue(&mut t, 0, 64, 0x10_0000, 0x10_1000, 0x10_2000), 1);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_DESC_LOW), 0x10_0000);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_USED_HIGH), 0);
        // A ready queue cannot change.
        t.write_register(VIRTIO_MMIO_QUEUE_NUM, 32);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM), 64);
    }

    #[test]
    fn bad_queue_addresses_need_a_reset() {
        for (desc, driver, device) in [
            (0x10_0008, 0x10_1000, 0x10_2000),    // descriptor table misaligned
            (0x10_0000, 0x10_1001, 0x10_2000),    // driver area misaligned
            (0x10_0000, 0x10_1000, 0x10_2002),    // device area misaligned
            (RAM - 0x10, 0x10_1000, 0x10_2000),   // runs off the end of RAM
            (0x10_0000, 0x10_1000, 1 << 40),      // not RAM at all
            (0x10_0000, u64::MAX - 1, 0x10_2000), // wraps
        ] {
            let mut t = transport();
            features_ok(&mut t, V1);
            assert_eq!(setup_queue(&mut t, 0, 64, desc, driver, device), 0, "{desc:#x} {driver:#x} {device:#x}");
            assert_ne!(t.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
            assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
            // Nothing but a reset is accepted now.
            assert_eq!(t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK), Effect::None);
            assert_eq!(t.write_register(VIRTIO_MMIO_STATUS, 0), Effect::Reset { running: vec![] });
            assert_eq!(t.status(), 0);
        }
    }

    #[test]
    fn driver_ok_activates_the_ready_queues_and_reset_stops_them() {
        let mut t = transport();
        features_ok(&mut t, V1 | (1 << VIRTIO_RING_F_EVENT_IDX));
        setup_queue(&mut t, 1, 128, 0x20_0000, 0x20_1000, 0x20_2000);
        let status = ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;
        let effect = t.write_register(VIRTIO_MMIO_STATUS, status);
        let queues = vec![ActiveQueue {
            index: 1,
            max_size: 256,
            config: QueueConfig { size: 128, ready: true, desc: 0x20_0000, driver: 0x20_1000, device: 0x20_2000 },
        }];
        assert_eq!(effect, Effect::Activate { features: V1 | (1 << VIRTIO_RING_F_EVENT_IDX), queues: queues.clone() });
        assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), 0, "not running until activated");
        t.activated(&queues);
        assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        t.write_register(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING, "stays while the backend runs the queues");
        assert_eq!(t.write_register(VIRTIO_MMIO_QUEUE_NOTIFY, 1), Effect::Notify(1));
        assert_eq!(t.write_register(VIRTIO_MMIO_QUEUE_NOTIFY, 0), Effect::None, "queue 0 does not run");
        assert_eq!(t.write_register(VIRTIO_MMIO_QUEUE_NOTIFY, 0x1_0001), Effect::None);
        // Clearing a bit without a reset is refused.
        assert_eq!(t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER), Effect::None);
        assert_eq!(t.status(), status);
        // Queue registers are frozen.
        t.write_register(VIRTIO_MMIO_QUEUE_SEL, 0);
        t.write_register(VIRTIO_MMIO_QUEUE_NUM, 2);
        assert_eq!(t.read_register(VIRTIO_MMIO_QUEUE_NUM), 256);
        assert_eq!(t.write_register(VIRTIO_MMIO_STATUS, 0), Effect::Reset { running: vec![1] });
        assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        t.write_register(VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!((t.read_register(VIRTIO_MMIO_QUEUE_READY), t.read_register(VIRTIO_MMIO_QUEUE_NUM)), (0, 256));
    }

    #[test]
    fn driver_ok_without_features_ok_needs_a_reset() {
        let mut t = transport();
        t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER);
        assert_eq!(t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK), Effect::None);
        assert_ne!(t.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(t.status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
    }

    #[test]
    fn failed_and_needs_reset() {
        let mut t = transport();
        t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER);
        t.write_register(VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FAILED);
        assert_eq!(t.status(), ACK_DRIVER | VIRTIO_CONFIG_S_FAILED);
        let mut t = transport();
        features_ok(&mut t, V1);
        assert!(t.set_needs_reset());
        assert!(!t.set_needs_reset(), "only once");
        // A driver writing back what it read (with NEEDS_RESET) is not an
        // unknown bit, but nothing is accepted until the reset.
        t.write_register(VIRTIO_MMIO_STATUS, t.status() | VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(t.status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
        t.write_register(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(t.read_register(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        t.write_register(VIRTIO_MMIO_STATUS, 0x100);
    }

    #[test]
    fn config_space() {
        let mut t = transport();
        let mut b = [0u8; 4];
        t.read_config(2, &mut b);
        assert_eq!(b, [3, 4, 5, 6]);
        t.read_config(6, &mut b);
        assert_eq!(b, [7, 8, 0, 0], "past the end reads as zero");
        t.read_config(u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
        assert_eq!(t.write_config(1, &[9, 9]), Effect::WriteConfig { offset: 1, data: vec![9, 9] });
        assert_eq!(t.config(), &[1, 9, 9, 4, 5, 6, 7, 8]);
        assert_eq!(t.write_config(7, &[0, 0]), Effect::None, "past the end");
        assert_eq!(t.write_config(u64::MAX, &[0]), Effect::None);
        let g = t.config_generation();
        t.refresh_config(t.config().to_vec());
        assert_eq!(t.config_generation(), g, "unchanged content keeps the generation");
        t.refresh_config(vec![0; 8]);
        assert_eq!(t.config_generation(), g + 1);
        assert_eq!(t.read_register(VIRTIO_MMIO_CONFIG_GENERATION), g + 1);
    }

    #[test]
    fn hostile_values_are_harmless() {
        let mut t = transport();
        for offset in (0..0x100).step_by(4) {
            for v in [0, 1, 0xff, 0x8000_0000, u32::MAX] {
                t.write_register(offset, v);
                t.read_register(offset);
            }
        }
        features_ok(&mut t, V1);
        for offset in (0..0x100).step_by(4) {
            for v in [0, 1, 7, 0x8000_0000, u32::MAX] {
                t.write_register(offset, v);
                t.read_register(offset);
            }
        }
    }

    /// Records what the device asks of its backend.
    #[derive(Clone, Default)]
    struct FakeBackend {
        log: Arc<Mutex<Vec<String>>>,
        fail_activate: bool,
        connected: Arc<Mutex<bool>>,
    }

    impl VirtioBackend for FakeBackend {
        fn activate(&mut self, features: u64, queues: &[ActiveQueue]) -> BackendResult<()> {
            self.log.lock().unwrap().push(format!("activate {features:#x} {}", queues.len()));
            if self.fail_activate {
                return Err("refused".into());
            }
            Ok(())
        }
        fn reset(&mut self, running: &[u16]) -> BackendResult<()> {
            self.log.lock().unwrap().push(format!("reset {running:?}"));
            Ok(())
        }
        fn read_config(&mut self) -> BackendResult<Vec<u8>> {
            Ok(vec![0xaa; 8])
        }
        fn write_config(&mut self, offset: u32, data: &[u8]) -> BackendResult<()> {
            self.log.lock().unwrap().push(format!("config {offset} {data:?}"));
            Ok(())
        }
        fn notify(&mut self, index: u16) {
            self.log.lock().unwrap().push(format!("notify {index}"));
        }
        fn interrupt(&mut self) {
            self.log.lock().unwrap().push("interrupt".into());
        }
        fn connected(&self) -> bool {
            *self.connected.lock().unwrap()
        }
        fn disconnect(&mut self) {
            *self.connected.lock().unwrap() = false;
        }
        fn reconnect(&mut self) -> BackendResult<(u64, Vec<u8>)> {
            self.log.lock().unwrap().push("reconnect".into());
            *self.connected.lock().unwrap() = true;
            Ok((V1, vec![0xbb; 8]))
        }
    }

    fn w(d: &mut dyn BusDevice, offset: u32, v: u32) {
        d.write(u64::from(offset), &v.to_le_bytes());
    }

    fn r(d: &mut dyn BusDevice, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        d.read(u64::from(offset), &mut b);
        u32::from_le_bytes(b)
    }

    fn bring_up(d: &mut dyn BusDevice) {
        w(d, VIRTIO_MMIO_STATUS, ACK_DRIVER);
        w(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w(d, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        w(d, VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        w(d, VIRTIO_MMIO_QUEUE_SEL, 0);
        w(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        w(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        w(d, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        w(d, VIRTIO_MMIO_QUEUE_READY, 1);
        w(d, VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    }

    #[test]
    fn the_bus_device_drives_its_backend() {
        let backend = FakeBackend { connected: Arc::new(Mutex::new(true)), ..Default::default() };
        let log = backend.log.clone();
        let mut d = VirtioMmio::new(transport(), backend);
        bring_up(&mut d);
        w(&mut d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        // Narrow register accesses are ignored, config space takes any width.
        d.write(u64::from(VIRTIO_MMIO_STATUS), &[0]);
        assert_eq!(r(&mut d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_DRIVER_OK);
        let mut byte = [0u8];
        d.read(CONFIG_OFFSET + 1, &mut byte);
        assert_eq!(byte, [2]);
        d.write(CONFIG_OFFSET + 2, &[7]);
        d.read(CONFIG_OFFSET + 2, &mut byte);
        assert_eq!(byte, [0xaa], "re-read from the backend after the write");
        w(&mut d, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(*log.lock().unwrap(), vec!["activate 0x100000000 1", "notify 0", "config 2 [7]", "reset [0]"]);
    }

    #[test]
    fn a_failing_backend_needs_a_reset_and_reconnects_on_reset() {
        let backend = FakeBackend { connected: Arc::new(Mutex::new(true)), fail_activate: true, ..Default::default() };
        let log = backend.log.clone();
        let mut d = VirtioMmio::new(transport(), backend);
        bring_up(&mut d);
        assert_ne!(r(&mut d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(r(&mut d, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
        assert!(!d.backend().connected());
        w(&mut d, VIRTIO_MMIO_STATUS, 0);
        assert!(d.backend().connected());
        let mut b = [0u8; 1];
        d.read(CONFIG_OFFSET, &mut b);
        assert_eq!(b, [0xbb], "the new backend's configuration");
        assert_eq!(*log.lock().unwrap(), vec!["activate 0x100000000 1", "interrupt", "reconnect"]);
    }

    #[test]
    fn empty_slots_are_placeholders() {
        let mut e = EmptySlot;
        assert_eq!(r(&mut e, VIRTIO_MMIO_MAGIC_VALUE), MAGIC_VALUE);
        assert_eq!(r(&mut e, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(r(&mut e, VIRTIO_MMIO_DEVICE_ID), 0);
        w(&mut e, VIRTIO_MMIO_STATUS, 1);
        assert_eq!(r(&mut e, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(slot_address(2), 0xD800_2000);
        assert_eq!(slot_gsi(7), 23);
    }
}
