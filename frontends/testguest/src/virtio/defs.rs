//! Numbers from the virtio 1.2 specification that the drivers use: the
//! virtio-mmio (version 2) register block, device status bits, feature
//! bits, split-ring flags and the blk, net and console device formats.
//!
//! Kept here rather than taken from `virtio-bindings` so that the guest's
//! nested `--offline` build needs no crate beyond `pvabi`. Shared with the
//! host crate (`frontends::virtio`), whose tests use them too.

/// virtio-mmio register offsets (spec 4.2.2, "version 2" layout).
pub mod reg {
    /// "virt" as a little-endian u32.
    pub const MAGIC_VALUE: usize = 0x000;
    /// 2 for virtio 1.x ("modern"); 1 is the legacy layout, not supported.
    pub const VERSION: usize = 0x004;
    /// Device type; 0 = no device in this slot.
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00c;
    /// 32 feature bits, selected by [`DEVICE_FEATURES_SEL`].
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    /// Largest size of the selected queue; 0 = the queue does not exist.
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    /// Write the queue index to notify ("kick") the device.
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    pub const CONFIG_GENERATION: usize = 0x0fc;
    /// Device-specific configuration space starts here.
    pub const CONFIG: usize = 0x100;
}

/// [`reg::MAGIC_VALUE`]'s content.
pub const MAGIC: u32 = 0x7472_6976;
/// [`reg::VERSION`] of the modern layout.
pub const MMIO_VERSION_MODERN: u32 = 2;

/// Device status bits (spec 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Feature bits (numbers, not masks).
pub mod feature {
    /// Indirect descriptors (never accepted by these drivers).
    pub const RING_INDIRECT_DESC: u32 = 28;
    /// `used_event` / `avail_event` (spec 2.7.10).
    pub const RING_EVENT_IDX: u32 = 29;
    /// The device is a virtio 1.x device; required.
    pub const VERSION_1: u32 = 32;
    /// The device's DMA goes through a platform IOMMU or translation;
    /// accepted when offered (the guest's addresses are physical).
    pub const ACCESS_PLATFORM: u32 = 33;
    /// Packed rings (never accepted: the drivers use split rings).
    pub const RING_PACKED: u32 = 34;

    pub const BLK_SIZE_MAX: u32 = 1;
    pub const BLK_SEG_MAX: u32 = 2;
    pub const BLK_RO: u32 = 5;
    pub const BLK_BLK_SIZE: u32 = 6;
    pub const BLK_FLUSH: u32 = 9;

    pub const NET_MAC: u32 = 5;

    /// The mask of feature bit `bit`.
    pub const fn bit(bit: u32) -> u64 {
        1 << bit
    }
}

/// Device IDs (spec 5).
pub mod device_id {
    pub const NONE: u32 = 0;
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;

    /// A short name for `id`, for the probe listing.
    pub const fn name(id: u32) -> &'static str {
        match id {
            NONE => "empty",
            NET => "net",
            BLOCK => "blk",
            CONSOLE => "console",
            4 => "entropy",
            5 => "balloon",
            8 => "scsi",
            9 => "9p",
            16 => "gpu",
            18 => "input",
            19 => "vsock",
            26 => "fs",
            _ => "other",
        }
    }
}

/// Split virtqueue flags (spec 2.7).
pub mod ring {
    /// The descriptor continues in `next`.
    pub const DESC_F_NEXT: u16 = 1;
    /// The device writes into this buffer (else it reads from it).
    pub const DESC_F_WRITE: u16 = 2;
    pub const DESC_F_INDIRECT: u16 = 4;
    /// In `avail.flags`: the driver wants no interrupts (without EVENT_IDX).
    pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// In `used.flags`: the device wants no notifications (without
    /// EVENT_IDX).
    pub const USED_F_NO_NOTIFY: u16 = 1;
}

/// virtio-blk (spec 5.2).
pub mod blk {
    pub const SECTOR_SIZE: usize = 512;
    pub const T_IN: u32 = 0;
    pub const T_OUT: u32 = 1;
    pub const T_FLUSH: u32 = 4;
    pub const T_GET_ID: u32 = 8;
    pub const S_OK: u8 = 0;
    pub const S_IOERR: u8 = 1;
    pub const S_UNSUPP: u8 = 2;
    /// Bytes of the answer to GET_ID.
    pub const ID_BYTES: usize = 20;
    /// Config offsets: capacity (u64, in 512-byte sectors), size_max,
    /// seg_max, blk_size (u32 each).
    pub const CONFIG_CAPACITY: usize = 0;
    pub const CONFIG_SIZE_MAX: usize = 8;
    pub const CONFIG_SEG_MAX: usize = 12;
    pub const CONFIG_BLK_SIZE: usize = 20;
    /// The one request queue.
    pub const QUEUE: u16 = 0;

    /// A name for a request status.
    pub const fn status_name(status: u8) -> &'static str {
        match status {
            S_OK => "OK",
            S_IOERR => "IOERR",
            S_UNSUPP => "UNSUPP",
            _ => "invalid status",
        }
    }
}

/// virtio-net (spec 5.1).
pub mod net {
    /// `struct virtio_net_hdr_v1` (flags, gso_type, hdr_len, gso_size,
    /// csum_start, csum_offset, num_buffers): 12 bytes, all zero for a
    /// plain frame. With VERSION_1 it precedes every frame, both ways.
    pub const HDR_BYTES: usize = 12;
    /// Config offset of the MAC address (with `NET_MAC`).
    pub const CONFIG_MAC: usize = 0;
    pub const RX_QUEUE: u16 = 0;
    pub const TX_QUEUE: u16 = 1;
}

/// virtio-console (spec 5.3), single port (no MULTIPORT).
pub mod console {
    pub const RX_QUEUE: u16 = 0;
    pub const TX_QUEUE: u16 = 1;
}

/// Whether the side that last saw index `old` and now published `new` must
/// notify the other, which asked to hear when index `event` is passed
/// (`vring_need_event` of the spec, 2.7.10): true iff `event` lies in
/// `[old, new)`, in wrapping u16 arithmetic.
pub const fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
