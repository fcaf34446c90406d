//! virtio-net driver (spec 5.1) and the test frames of the virtio-net
//! workload.
//!
//! Queue 0 receives, queue 1 transmits. Every frame, both ways, is preceded
//! by the 12-byte `virtio_net_hdr_v1` (all zero: no offloads are
//! negotiated, nor mergeable receive buffers, so each receive buffer holds
//! a whole frame). The driver posts [`RX_BUFFERS`] receive buffers of
//! [`BUFFER_BYTES`] and keeps up to [`TX_BUFFERS`] frames in flight.

use super::defs::{feature, net};
use super::ring::{queue_bytes, Buf, DmaRegion, QueueError, Virtqueue, MAX_QUEUE_SIZE};
use super::transport::{deadline, Clock, InitError, Regs, Transport};

/// The test frames' EtherType (IEEE 802 local experimental 2).
pub const ETHERTYPE: u16 = 0x88b5;
/// First payload bytes of a test frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SPVN";
pub const KIND_PING: u8 = 1;
pub const KIND_PONG: u8 = 2;
/// Length of a test frame (the Ethernet minimum without FCS).
pub const FRAME_BYTES: usize = 60;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Bytes per receive and transmit buffer (header plus a 1514-byte frame,
/// rounded up).
pub const BUFFER_BYTES: usize = 2048;
pub const RX_BUFFERS: usize = 16;
pub const TX_BUFFERS: usize = 8;
/// Largest frame (without the virtio header) the driver sends or takes.
pub const MAX_FRAME: usize = BUFFER_BYTES - net::HDR_BYTES;

/// Shared memory one net device needs.
pub const MEMORY_BYTES: usize = 2 * queue_bytes(MAX_QUEUE_SIZE) + (RX_BUFFERS + TX_BUFFERS) * BUFFER_BYTES + 3 * 4096;

/// A test frame's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestFrame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub kind: u8,
    pub seq: u32,
    /// The sender's timestamp (ping), copied back by the echo.
    pub stamp: u64,
}

impl TestFrame {
    /// Writes the frame into `out` (at least [`FRAME_BYTES`]); returns its
    /// length. Layout: dst, src, EtherType 0x88b5, "SPVN", kind, 0, seq
    /// (u32 LE), stamp (u64 LE), zero padding.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let frame = &mut out[..FRAME_BYTES];
        frame.fill(0);
        frame[0..6].copy_from_slice(&self.dst);
        frame[6..12].copy_from_slice(&self.src);
        frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        frame[14..18].copy_from_slice(&FRAME_MAGIC);
        frame[18] = self.kind;
        frame[20..24].copy_from_slice(&self.seq.to_le_bytes());
        frame[24..32].copy_from_slice(&self.stamp.to_le_bytes());
        FRAME_BYTES
    }

    /// Parses a received frame; `None` if it is not one of ours.
    pub fn decode(frame: &[u8]) -> Option<TestFrame> {
        if frame.len() < 32 || frame[12..14] != ETHERTYPE.to_be_bytes() || frame[14..18] != FRAME_MAGIC {
            return None;
        }
        Some(TestFrame {
            dst: frame[0..6].try_into().unwrap(),
            src: frame[6..12].try_into().unwrap(),
            kind: frame[18],
            seq: u32::from_le_bytes(frame[20..24].try_into().unwrap()),
            stamp: u64::from_le_bytes(frame[24..32].try_into().unwrap()),
        })
    }

    /// The echo of this frame from `me`: back to its sender, kind PONG.
    pub fn echo(&self, me: [u8; 6]) -> TestFrame {
        TestFrame { dst: self.src, src: me, kind: KIND_PONG, ..*self }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &[u8]) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(|&byte| byte == b':' || byte == b'-');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        let text = core::str::from_utf8(part).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Displays a MAC address.
pub struct Mac(pub [u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(out, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// The features this driver accepts (plus `RING_EVENT_IDX` on request).
pub const WANTED_FEATURES: u64 =
    feature::bit(feature::VERSION_1) | feature::bit(feature::ACCESS_PLATFORM) | feature::bit(feature::NET_MAC);

/// A failed send or receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    Queue(QueueError),
    /// No transmit buffer came back within the wait.
    TxTimeout,
    NeedsReset { status: u32 },
    FrameTooLong(usize),
}

impl core::fmt::Display for NetError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            NetError::Queue(error) => write!(out, "{error}"),
            NetError::TxTimeout => write!(out, "the device did not complete a transmission in time"),
            NetError::NeedsReset { status } => write!(out, "DEVICE_NEEDS_RESET (status {status:#x})"),
            NetError::FrameTooLong(len) => write!(out, "a {len}-byte frame does not fit a buffer"),
        }
    }
}

impl From<QueueError> for NetError {
    fn from(error: QueueError) -> Self {
        NetError::Queue(error)
    }
}

/// A virtio-net device with its receive buffers posted.
pub struct Net<R: Regs> {
    transport: Transport<R>,
    rx: Virtqueue,
    tx: Virtqueue,
    rx_buffers: DmaRegion,
    tx_buffers: DmaRegion,
    /// Which receive buffer each rx head holds.
    rx_buffer_of: [u8; MAX_QUEUE_SIZE as usize],
    tx_buffer_of: [u8; MAX_QUEUE_SIZE as usize],
    /// Bit i: transmit buffer i is free.
    tx_free: u32,
    tx_buffers_used: usize,
    mac: [u8; 6],
    /// The MAC came from the device's config space.
    pub mac_from_device: bool,
    pub timeout_ms: u64,
    /// QueueNotify writes so far.
    pub kicks: u64,
}

impl<R: Regs> Net<R> {
    /// Brings the device up: negotiates, sets up both queues, posts the
    /// receive buffers. `fallback_mac` is used if the device has no MAC
    /// feature.
    pub fn new<C: Clock>(regs: R, clock: &C, memory: &mut DmaRegion, event_idx: bool, fallback_mac: [u8; 6]) -> Result<Net<R>, InitError> {
        let mut transport = Transport::new(regs);
        let wanted = WANTED_FEATURES | if event_idx { feature::bit(feature::RING_EVENT_IDX) } else { 0 };
        transport.begin_init(clock, wanted, feature::bit(feature::VERSION_1))?;
        let mac_from_device = transport.has_feature(feature::NET_MAC);
        let mac = if mac_from_device { transport.config_bytes::<6>(net::CONFIG_MAC) } else { fallback_mac };
        let event_idx = transport.has_feature(feature::RING_EVENT_IDX);
        let mut make_queue = |index: u16| -> Result<Virtqueue, InitError> {
            let size = super::ring::pick_queue_size(transport.queue_max(index));
            if size == 0 {
                return Err(InitError::NoSuchQueue(index));
            }
            let region = memory.take(queue_bytes(size), 4096).expect("DMA pool too small for a net queue");
            // SAFETY: fresh memory from the pool, for this device only.
            let queue = unsafe { Virtqueue::new(region, size, event_idx) };
            transport.setup_queue(index, queue.addrs())?;
            Ok(queue)
        };
        let rx = make_queue(net::RX_QUEUE)?;
        let tx = make_queue(net::TX_QUEUE)?;
        let rx_buffers = memory.take(RX_BUFFERS * BUFFER_BYTES, 4096).expect("DMA pool too small for net buffers");
        let tx_buffers = memory.take(TX_BUFFERS * BUFFER_BYTES, 4096).expect("DMA pool too small for net buffers");
        let tx_buffers_used = TX_BUFFERS.min(tx.size() as usize);
        let mut device = Net {
            transport,
            rx,
            tx,
            rx_buffers,
            tx_buffers,
            rx_buffer_of: [0; MAX_QUEUE_SIZE as usize],
            tx_buffer_of: [0; MAX_QUEUE_SIZE as usize],
            tx_free: (1u32 << tx_buffers_used) - 1,
            tx_buffers_used,
            mac,
            mac_from_device,
            timeout_ms: 5000,
            kicks: 0,
        };
        // Buffers go in before DRIVER_OK, so that the device has them from
        // the start; the first kick tells it.
        for buffer in 0..RX_BUFFERS.min(device.rx.size() as usize) {
            device.post_rx(buffer)?;
        }
        device.transport.driver_ok()?;
        device.rx.publish();
        device.transport.notify(net::RX_QUEUE);
        device.kicks += 1;
        Ok(device)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn transport(&self) -> &Transport<R> {
        &self.transport
    }

    fn rx_addr(&self, buffer: usize) -> u64 {
        self.rx_buffers.addr() + (buffer * BUFFER_BYTES) as u64
    }

    fn tx_addr(&self, buffer: usize) -> u64 {
        self.tx_buffers.addr() + (buffer * BUFFER_BYTES) as u64
    }

    fn post_rx(&mut self, buffer: usize) -> Result<(), QueueError> {
        let head = self.rx.add(&[Buf::writable(self.rx_addr(buffer), BUFFER_BYTES)])?;
        self.rx_buffer_of[head as usize] = buffer as u8;
        Ok(())
    }

    /// Takes back transmit buffers the device is done with.
    fn reclaim_tx(&mut self) -> Result<(), NetError> {
        while let Some(used) = self.tx.pop_used() {
            let head = used?.id as usize;
            self.tx_free |= 1 << self.tx_buffer_of[head];
        }
        Ok(())
    }

    /// Sends `frame` (without virtio header), waiting for a free transmit
    /// buffer if all are in flight.
    pub fn send<C: Clock>(&mut self, clock: &C, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() > MAX_FRAME {
            return Err(NetError::FrameTooLong(frame.len()));
        }
        let end = deadline(clock, self.timeout_ms);
        self.reclaim_tx()?;
        while self.tx_free == 0 {
            if clock.now() > end {
                return Err(if self.transport.needs_reset() { NetError::NeedsReset { status: self.transport.status() } } else { NetError::TxTimeout });
            }
            clock.relax();
            self.reclaim_tx()?;
        }
        let buffer = self.tx_free.trailing_zeros() as usize;
        debug_assert!(buffer < self.tx_buffers_used);
        self.tx_free &= !(1 << buffer);
        let addr = self.tx_addr(buffer);
        // SAFETY: transmit buffer `buffer` is not in flight (its bit was
        // free), lies in this driver's memory and holds BUFFER_BYTES.
        unsafe {
            core::ptr::write_bytes(addr as *mut u8, 0, net::HDR_BYTES);
            core::ptr::copy_nonoverlapping(frame.as_ptr(), (addr as *mut u8).add(net::HDR_BYTES), frame.len());
        }
        let head = self.tx.add(&[Buf::readable(addr, net::HDR_BYTES + frame.len())])?;
        self.tx_buffer_of[head as usize] = buffer as u8;
        if self.tx.kick_prepare() {
            self.transport.notify(net::TX_QUEUE);
            self.kicks += 1;
        }
        Ok(())
    }

    /// Waits until the device has taken every frame sent so far (so that
    /// none is lost when the domain ends right after).
    pub fn flush_tx<C: Clock>(&mut self, clock: &C) -> Result<(), NetError> {
        let end = deadline(clock, self.timeout_ms);
        loop {
            self.reclaim_tx()?;
            if self.tx.in_flight() == 0 {
                return Ok(());
            }
            if clock.now() > end {
                return Err(if self.transport.needs_reset() { NetError::NeedsReset { status: self.transport.status() } } else { NetError::TxTimeout });
            }
            clock.relax();
        }
    }

    /// Copies the next received frame (without virtio header) into `out`
    /// and reposts its buffer; `None` if nothing arrived. A frame longer
    /// than `out` is cut.
    pub fn receive(&mut self, out: &mut [u8]) -> Option<Result<usize, NetError>> {
        let used = match self.rx.pop_used()? {
            Ok(used) => used,
            Err(error) => return Some(Err(error.into())),
        };
        let buffer = self.rx_buffer_of[used.id as usize] as usize;
        let written = (used.len as usize).min(BUFFER_BYTES);
        let frame_len = written.saturating_sub(net::HDR_BYTES).min(out.len());
        // SAFETY: the device completed this buffer, so it no longer writes
        // it; `frame_len + HDR_BYTES <= BUFFER_BYTES`.
        unsafe {
            core::ptr::copy_nonoverlapping((self.rx_addr(buffer) as *const u8).add(net::HDR_BYTES), out.as_mut_ptr(), frame_len);
        }
        if let Err(error) = self.post_rx(buffer) {
            return Some(Err(error.into()));
        }
        if self.rx.kick_prepare() {
            self.transport.notify(net::RX_QUEUE);
            self.kicks += 1;
        }
        Some(Ok(frame_len))
    }

    /// Whether the device asks for a reset.
    pub fn needs_reset(&self) -> bool {
        self.transport.needs_reset()
    }
}
