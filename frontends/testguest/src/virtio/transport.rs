//! The virtio-mmio transport (spec 4.2, register layout version 2), over
//! any [`Regs`]: volatile MMIO in the guest, a simulated register block in
//! the host tests.
//!
//! Initialisation follows spec 3.1.1: reset (and wait until the status
//! reads 0), ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK and a
//! re-read that must still show it, queue setup, DRIVER_OK.

use super::defs::{feature, reg, status, MAGIC, MMIO_VERSION_MODERN};
use super::ring::{QueueAddrs, QueueError};

/// 32-bit (and narrower, for config space) access to one device's
/// register block.
pub trait Regs {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    /// Byte read, for device config space.
    fn read8(&self, offset: usize) -> u8;
}

/// Time for bounded waits, and what to do while waiting.
pub trait Clock {
    /// A monotonic tick count (the TSC in the guest).
    fn now(&self) -> u64;
    /// Ticks per millisecond.
    fn ticks_per_ms(&self) -> u64;
    /// Called in every iteration of a polling loop (`pause` in the guest;
    /// the simulated device does its work here in the host tests).
    fn relax(&self);
}

/// A deadline `ms` milliseconds from now.
pub fn deadline<C: Clock>(clock: &C, ms: u64) -> u64 {
    clock.now().saturating_add(ms.saturating_mul(clock.ticks_per_ms()))
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A virtio-mmio version-2 block with a device.
    Device { device_id: u32, vendor_id: u32 },
    /// A virtio-mmio block whose DeviceID is 0: no device.
    Empty,
    /// No virtio-mmio block (wrong magic).
    NotVirtio { magic: u32 },
    /// A legacy (version 1) or unknown layout.
    UnsupportedVersion { version: u32, device_id: u32 },
}

/// Reads the identification registers of a slot.
pub fn probe<R: Regs>(regs: &R) -> Probe {
    let magic = regs.read32(reg::MAGIC_VALUE);
    if magic != MAGIC {
        return Probe::NotVirtio { magic };
    }
    let version = regs.read32(reg::VERSION);
    let device_id = regs.read32(reg::DEVICE_ID);
    if device_id == 0 {
        return Probe::Empty;
    }
    if version != MMIO_VERSION_MODERN {
        return Probe::UnsupportedVersion { version, device_id };
    }
    Probe::Device { device_id, vendor_id: regs.read32(reg::VENDOR_ID) }
}

/// Why a device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The status did not read 0 after a reset within the wait.
    ResetTimeout { status: u32 },
    /// The device lacks features the driver needs (the mask of them).
    MissingFeatures { missing: u64, offered: u64 },
    /// FEATURES_OK did not stick: the device refused the feature set.
    FeaturesRefused { accepted: u64, status: u32 },
    /// The queue does not exist (QueueNumMax 0).
    NoSuchQueue(u16),
    /// QueueReady was already set before setup.
    QueueAlreadyReady(u16),
    /// QueueReady did not read 1 after setting it.
    QueueNotReady(u16),
    /// The device asks for a reset (DEVICE_NEEDS_RESET) or failed.
    DeviceNeedsReset { status: u32 },
    /// DRIVER_OK did not stick.
    DriverOkRefused { status: u32 },
    /// Posting the first buffers failed.
    Queue(QueueError),
}

impl From<QueueError> for InitError {
    fn from(error: QueueError) -> Self {
        InitError::Queue(error)
    }
}

impl core::fmt::Display for InitError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            InitError::ResetTimeout { status } => write!(out, "the status still reads {status:#x} after a reset"),
            InitError::MissingFeatures { missing, offered } => {
                write!(out, "the device lacks required features {missing:#x} (offers {offered:#x})")
            }
            InitError::FeaturesRefused { accepted, status } => {
                write!(out, "the device refused features {accepted:#x} (FEATURES_OK did not stick, status {status:#x})")
            }
            InitError::NoSuchQueue(queue) => write!(out, "queue {queue} does not exist (QueueNumMax 0)"),
            InitError::QueueAlreadyReady(queue) => write!(out, "queue {queue} was ready before setup"),
            InitError::QueueNotReady(queue) => write!(out, "queue {queue} did not become ready"),
            InitError::DeviceNeedsReset { status } => write!(out, "the device needs a reset (status {status:#x})"),
            InitError::DriverOkRefused { status } => write!(out, "DRIVER_OK did not stick (status {status:#x})"),
            InitError::Queue(error) => write!(out, "{error}"),
        }
    }
}

/// How long a reset may take to show in the status register.
pub const RESET_WAIT_MS: u64 = 1000;

/// One device's register block and the features negotiated with it.
pub struct Transport<R: Regs> {
    regs: R,
    features: u64,
    offered: u64,
}

impl<R: Regs> Transport<R> {
    pub fn new(regs: R) -> Transport<R> {
        Transport { regs, features: 0, offered: 0 }
    }

    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// What the device offered at the last negotiation.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    pub fn has_feature(&self, bit: u32) -> bool {
        self.features & feature::bit(bit) != 0
    }

    pub fn status(&self) -> u32 {
        self.regs.read32(reg::STATUS)
    }

    fn set_status(&self, bits: u32) {
        self.regs.write32(reg::STATUS, bits);
    }

    /// DEVICE_NEEDS_RESET or FAILED is set.
    pub fn needs_reset(&self) -> bool {
        self.status() & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0
    }

    /// Resets the device and waits until its status reads 0.
    pub fn reset<C: Clock>(&mut self, clock: &C) -> Result<(), InitError> {
        self.features = 0;
        self.set_status(0);
        let end = deadline(clock, RESET_WAIT_MS);
        loop {
            let now = self.status();
            if now == 0 {
                return Ok(());
            }
            if clock.now() > end {
                return Err(InitError::ResetTimeout { status: now });
            }
            clock.relax();
        }
    }

    /// Reads the device's 64 feature bits.
    pub fn device_features(&self) -> u64 {
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.regs.read32(reg::DEVICE_FEATURES);
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.regs.read32(reg::DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, then negotiate: accept what the device
    /// offers of `wanted`, fail if any of `required` is missing, set
    /// FEATURES_OK and check that it stuck. Returns the accepted set.
    /// Queues come next ([`Transport::setup_queue`]), then
    /// [`Transport::driver_ok`].
    pub fn begin_init<C: Clock>(&mut self, clock: &C, wanted: u64, required: u64) -> Result<u64, InitError> {
        self.reset(clock)?;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.device_features();
        self.offered = offered;
        let missing = required & !offered;
        if missing != 0 {
            self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
            return Err(InitError::MissingFeatures { missing, offered });
        }
        let accepted = offered & (wanted | required);
        self.regs.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.regs.write32(reg::DRIVER_FEATURES, accepted as u32);
        self.regs.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.regs.write32(reg::DRIVER_FEATURES, (accepted >> 32) as u32);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        let now = self.status();
        if now & status::FEATURES_OK == 0 {
            self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FAILED);
            return Err(InitError::FeaturesRefused { accepted, status: now });
        }
        self.features = accepted;
        Ok(accepted)
    }

    /// QueueNumMax of queue `index` (0: no such queue).
    pub fn queue_max(&self, index: u16) -> u32 {
        self.regs.write32(reg::QUEUE_SEL, u32::from(index));
        self.regs.read32(reg::QUEUE_NUM_MAX)
    }

    /// Tells the device where queue `index` lives and enables it.
    pub fn setup_queue(&self, index: u16, addrs: QueueAddrs) -> Result<(), InitError> {
        self.regs.write32(reg::QUEUE_SEL, u32::from(index));
        if self.regs.read32(reg::QUEUE_READY) != 0 {
            return Err(InitError::QueueAlreadyReady(index));
        }
        let max = self.regs.read32(reg::QUEUE_NUM_MAX);
        if max == 0 {
            return Err(InitError::NoSuchQueue(index));
        }
        self.regs.write32(reg::QUEUE_NUM, u32::from(addrs.size));
        for (low, value) in [(reg::QUEUE_DESC_LOW, addrs.desc), (reg::QUEUE_DRIVER_LOW, addrs.avail), (reg::QUEUE_DEVICE_LOW, addrs.used)] {
            self.regs.write32(low, value as u32);
            self.regs.write32(low + 4, (value >> 32) as u32);
        }
        self.regs.write32(reg::QUEUE_READY, 1);
        if self.regs.read32(reg::QUEUE_READY) != 1 {
            // A device that refuses the queue's addresses (outside guest
            // RAM, misaligned) may say so with DEVICE_NEEDS_RESET.
            let now = self.status();
            if now & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
                return Err(InitError::DeviceNeedsReset { status: now });
            }
            return Err(InitError::QueueNotReady(index));
        }
        Ok(())
    }

    /// Sets DRIVER_OK and checks that the device took it and does not ask
    /// for a reset.
    pub fn driver_ok(&self) -> Result<(), InitError> {
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        let now = self.status();
        if now & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
            return Err(InitError::DeviceNeedsReset { status: now });
        }
        if now & status::DRIVER_OK == 0 {
            return Err(InitError::DriverOkRefused { status: now });
        }
        Ok(())
    }

    /// Kicks queue `index`.
    pub fn notify(&self, index: u16) {
        // The ring writes must be visible before the device hears of them.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.regs.write32(reg::QUEUE_NOTIFY, u32::from(index));
    }

    /// Acknowledges whatever InterruptStatus shows (the guest polls; this
    /// only keeps the register tidy).
    pub fn ack_interrupts(&self) -> u32 {
        let pending = self.regs.read32(reg::INTERRUPT_STATUS);
        if pending != 0 {
            self.regs.write32(reg::INTERRUPT_ACK, pending);
        }
        pending
    }

    /// Reads config space consistently: `read` runs until ConfigGeneration
    /// is the same before and after it (at most a few tries).
    pub fn read_config<T>(&self, mut read: impl FnMut(&R) -> T) -> T {
        let mut tries = 0;
        loop {
            let before = self.regs.read32(reg::CONFIG_GENERATION);
            let value = read(&self.regs);
            let after = self.regs.read32(reg::CONFIG_GENERATION);
            tries += 1;
            if before == after || tries >= 8 {
                return value;
            }
        }
    }

    /// A u32 of config space at `offset`.
    pub fn config_u32(&self, offset: usize) -> u32 {
        self.read_config(|regs| regs.read32(reg::CONFIG + offset))
    }

    /// A u64 of config space at `offset`, as two 32-bit reads (low first)
    /// under one generation.
    pub fn config_u64(&self, offset: usize) -> u64 {
        self.read_config(|regs| {
            let low = regs.read32(reg::CONFIG + offset);
            let high = regs.read32(reg::CONFIG + offset + 4);
            u64::from(high) << 32 | u64::from(low)
        })
    }

    /// `N` bytes of config space at `offset`, one byte read each.
    pub fn config_bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        self.read_config(|regs| core::array::from_fn(|index| regs.read8(reg::CONFIG + offset + index)))
    }
}
