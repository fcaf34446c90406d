//! virtio-blk driver (spec 5.2): one request queue; requests are a 16-byte
//! header (type, reserved, sector), the data buffers and a one-byte status
//! the device writes.
//!
//! Per-request memory (header and status) is indexed by the request's head
//! descriptor, so it needs no allocator: [`REQUEST_BYTES`] per queue entry.

use super::defs::{blk, feature};
use super::ring::{queue_bytes, Buf, DmaRegion, QueueError, Virtqueue, MAX_QUEUE_SIZE};
use super::transport::{deadline, Clock, InitError, Regs, Transport};

/// Most data segments of one request this driver builds.
pub const MAX_SEGMENTS: usize = 64;

/// Header plus status of one request slot (the status sits after all
/// headers).
pub const REQUEST_BYTES: usize = 16 + 1;

/// Shared memory one blk device needs: its queue (at most
/// [`MAX_QUEUE_SIZE`] entries) and the request slots, with alignment.
pub const MEMORY_BYTES: usize = queue_bytes(MAX_QUEUE_SIZE) + 4096 + REQUEST_BYTES * MAX_QUEUE_SIZE as usize + 64;

/// `struct virtio_blk_req`'s header, as the device reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub kind: u32,
    pub sector: u64,
}

impl RequestHeader {
    /// Little-endian wire form: type (u32), reserved (u32, 0), sector (u64).
    pub fn encode(&self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[8..].copy_from_slice(&self.sector.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; 16]) -> RequestHeader {
        RequestHeader {
            kind: u32::from_le_bytes(bytes[..4].try_into().unwrap()),
            sector: u64::from_le_bytes(bytes[8..].try_into().unwrap()),
        }
    }
}

/// What the device's config space and features say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkConfig {
    /// In 512-byte sectors.
    pub capacity: u64,
    pub size_max: Option<u32>,
    pub seg_max: Option<u32>,
    pub blk_size: Option<u32>,
    /// VIRTIO_BLK_F_RO was offered.
    pub read_only: bool,
    /// VIRTIO_BLK_F_FLUSH was negotiated.
    pub flush: bool,
}

/// A failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The device answered with this status (not OK).
    Status(u8),
    /// No completion within the wait.
    Timeout { ms: u64 },
    /// The device set DEVICE_NEEDS_RESET (or FAILED).
    NeedsReset { status: u32 },
    Queue(QueueError),
    /// A buffer larger than a descriptor can describe.
    TooLarge,
    /// The device completed a request with this used length, which is more
    /// than the request's writable buffers hold.
    BadLength(u32),
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BlkError::Status(status) => write!(out, "status {status} ({})", blk::status_name(status)),
            BlkError::Timeout { ms } => write!(out, "no completion within {ms} ms"),
            BlkError::NeedsReset { status } => write!(out, "DEVICE_NEEDS_RESET (status {status:#x})"),
            BlkError::Queue(error) => write!(out, "{error}"),
            BlkError::TooLarge => write!(out, "buffer too large"),
            BlkError::BadLength(len) => write!(out, "used length {len} larger than the writable buffers"),
        }
    }
}

impl From<QueueError> for BlkError {
    fn from(error: QueueError) -> Self {
        BlkError::Queue(error)
    }
}

/// A completed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub head: u16,
    pub status: u8,
    pub len: u32,
}

/// The features this driver accepts (plus `RING_EVENT_IDX` on request).
pub const WANTED_FEATURES: u64 = feature::bit(feature::VERSION_1)
    | feature::bit(feature::ACCESS_PLATFORM)
    | feature::bit(feature::BLK_RO)
    | feature::bit(feature::BLK_FLUSH)
    | feature::bit(feature::BLK_BLK_SIZE)
    | feature::bit(feature::BLK_SEG_MAX)
    | feature::bit(feature::BLK_SIZE_MAX);

/// A virtio-blk device brought up and ready for requests.
pub struct Blk<R: Regs> {
    transport: Transport<R>,
    queue: Virtqueue,
    ring_memory: DmaRegion,
    /// `MAX_QUEUE_SIZE` headers, then `MAX_QUEUE_SIZE` status bytes.
    requests: DmaRegion,
    config: BlkConfig,
    want_event_idx: bool,
    /// How long a request may take.
    pub timeout_ms: u64,
    /// QueueNotify writes so far.
    pub kicks: u64,
}

impl<R: Regs> Blk<R> {
    /// Brings the device in `regs` up, taking its memory from `memory`.
    /// With `event_idx`, VIRTIO_RING_F_EVENT_IDX is negotiated if offered.
    pub fn new<C: Clock>(regs: R, clock: &C, memory: &mut DmaRegion, event_idx: bool) -> Result<Blk<R>, InitError> {
        let ring_memory = memory.take(queue_bytes(MAX_QUEUE_SIZE), 4096).expect("DMA pool too small for a blk queue");
        let requests = memory.take(REQUEST_BYTES * MAX_QUEUE_SIZE as usize, 64).expect("DMA pool too small for blk requests");
        // SAFETY: placeholder queue over memory this driver owns; replaced
        // by `reinit` before the device hears of it.
        let queue = unsafe { Virtqueue::new(ring_memory, 1, false) };
        let mut device = Blk {
            transport: Transport::new(regs),
            queue,
            ring_memory,
            requests,
            config: BlkConfig::default(),
            want_event_idx: event_idx,
            timeout_ms: 5000,
            kicks: 0,
        };
        device.reinit(clock)?;
        Ok(device)
    }

    /// Negotiates features (through FEATURES_OK); the queue is not set up.
    fn negotiate<C: Clock>(&mut self, clock: &C) -> Result<(), InitError> {
        let wanted = WANTED_FEATURES | if self.want_event_idx { feature::bit(feature::RING_EVENT_IDX) } else { 0 };
        let accepted = self.transport.begin_init(clock, wanted, feature::bit(feature::VERSION_1))?;
        let t = &self.transport;
        self.config = BlkConfig {
            capacity: t.config_u64(blk::CONFIG_CAPACITY),
            size_max: t.has_feature(feature::BLK_SIZE_MAX).then(|| t.config_u32(blk::CONFIG_SIZE_MAX)),
            seg_max: t.has_feature(feature::BLK_SEG_MAX).then(|| t.config_u32(blk::CONFIG_SEG_MAX)),
            blk_size: t.has_feature(feature::BLK_BLK_SIZE).then(|| t.config_u32(blk::CONFIG_BLK_SIZE)),
            read_only: accepted & feature::bit(feature::BLK_RO) != 0,
            flush: accepted & feature::bit(feature::BLK_FLUSH) != 0,
        };
        Ok(())
    }

    /// Resets the device and sets it up again from scratch (a new, empty
    /// queue).
    pub fn reinit<C: Clock>(&mut self, clock: &C) -> Result<(), InitError> {
        self.negotiate(clock)?;
        let size = super::ring::pick_queue_size(self.transport.queue_max(blk::QUEUE));
        if size == 0 {
            return Err(InitError::NoSuchQueue(blk::QUEUE));
        }
        let event_idx = self.transport.has_feature(feature::RING_EVENT_IDX);
        // SAFETY: the ring memory belongs to this driver; the device was
        // just reset, so it no longer uses the old queue.
        self.queue = unsafe { Virtqueue::new(self.ring_memory, size, event_idx) };
        self.requests.zero();
        self.transport.setup_queue(blk::QUEUE, self.queue.addrs())?;
        self.transport.driver_ok()
    }

    /// Resets the device and negotiates, but sets queue 0 up at `addrs`
    /// (for the hostile workload: a queue the device must refuse), then
    /// DRIVER_OK. The driver's own queue is fresh and empty, so requests
    /// can still be written into its memory.
    pub fn reinit_with_queue_at<C: Clock>(&mut self, clock: &C, addrs: super::ring::QueueAddrs) -> Result<(), InitError> {
        self.negotiate(clock)?;
        let size = super::ring::pick_queue_size(self.transport.queue_max(blk::QUEUE));
        if size == 0 {
            return Err(InitError::NoSuchQueue(blk::QUEUE));
        }
        let event_idx = self.transport.has_feature(feature::RING_EVENT_IDX);
        // SAFETY: as in `reinit`.
        self.queue = unsafe { Virtqueue::new(self.ring_memory, size, event_idx) };
        self.requests.zero();
        self.transport.setup_queue(blk::QUEUE, super::ring::QueueAddrs { size, ..addrs })?;
        self.transport.driver_ok()
    }

    pub fn config(&self) -> &BlkConfig {
        &self.config
    }

    pub fn transport(&self) -> &Transport<R> {
        &self.transport
    }

    pub fn queue(&self) -> &Virtqueue {
        &self.queue
    }

    pub fn queue_mut(&mut self) -> &mut Virtqueue {
        &mut self.queue
    }

    /// Address of request slot `head`'s header.
    pub fn header_addr(&self, head: u16) -> u64 {
        self.requests.addr() + 16 * u64::from(head)
    }

    /// Address of request slot `head`'s status byte.
    pub fn status_addr(&self, head: u16) -> u64 {
        self.requests.addr() + 16 * u64::from(MAX_QUEUE_SIZE) + u64::from(head)
    }

    /// Writes slot `head`'s header and sets its status byte to 0xff (a
    /// value no device writes), so that an untouched status shows.
    pub fn prepare_slot(&mut self, head: u16, header: RequestHeader) {
        let bytes = header.encode();
        // SAFETY: both addresses lie in this driver's request memory, which
        // the device reads (header) or writes (status) only while a request
        // using the slot is in flight, and slot `head` is not.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.header_addr(head) as *mut u8, 16);
            core::ptr::write_volatile(self.status_addr(head) as *mut u8, 0xff);
        }
    }

    /// Slot `head`'s status byte.
    pub fn status_byte(&self, head: u16) -> u8 {
        // SAFETY: inside the request memory; a volatile read of a byte the
        // device may write.
        unsafe { core::ptr::read_volatile(self.status_addr(head) as *const u8) }
    }

    /// Largest data descriptor: the device's size_max, if it has one.
    pub fn segment_bytes(&self) -> u32 {
        match self.config.size_max {
            Some(max) if max >= blk::SECTOR_SIZE as u32 => max,
            _ => u32::MAX,
        }
    }

    /// Descriptors a request with `len` data bytes takes (header, data
    /// segments of at most [`Blk::segment_bytes`], status).
    pub fn descriptors_for(&self, len: u64) -> u64 {
        2 + len.div_ceil(u64::from(self.segment_bytes()))
    }

    /// Adds a request (not yet published): header, then `data` (if any)
    /// split into segments of at most size_max bytes, then the status
    /// byte. Returns its head.
    pub fn submit(&mut self, kind: u32, sector: u64, data: Option<Buf>) -> Result<u16, BlkError> {
        let head = self.queue.next_head().ok_or(BlkError::Queue(QueueError::Full))?;
        let mut chain = [Buf::readable(0, 0); 2 + MAX_SEGMENTS];
        chain[0] = Buf::readable(self.header_addr(head), 16);
        let mut count = 1;
        if let Some(data) = data {
            let segment = self.segment_bytes();
            let (mut addr, mut left) = (data.addr, data.len);
            while left > 0 {
                if count > MAX_SEGMENTS || self.config.seg_max.is_some_and(|max| count as u32 > max) {
                    return Err(BlkError::TooLarge);
                }
                let len = left.min(segment);
                chain[count] = Buf { addr, len, device_writes: data.device_writes };
                count += 1;
                addr += u64::from(len);
                left -= len;
            }
        }
        chain[count] = Buf::writable(self.status_addr(head), 1);
        count += 1;
        self.prepare_slot(head, RequestHeader { kind, sector });
        let added = self.queue.add(&chain[..count])?;
        debug_assert_eq!(added, head);
        Ok(head)
    }

    /// Publishes the submitted requests and notifies the device if the
    /// ring's rules ask for it. Returns whether it did.
    pub fn kick(&mut self) -> bool {
        if self.queue.kick_prepare() {
            self.notify();
            true
        } else {
            false
        }
    }

    /// Writes QueueNotify unconditionally.
    pub fn notify(&mut self) {
        self.transport.notify(blk::QUEUE);
        self.kicks += 1;
    }

    /// The next completion, if the device has one.
    pub fn poll(&mut self) -> Option<Result<Completion, BlkError>> {
        Some(match self.queue.pop_used()? {
            Ok(used) => {
                let head = used.id as u16;
                Ok(Completion { head, status: self.status_byte(head), len: used.len })
            }
            Err(error) => Err(error.into()),
        })
    }

    /// Waits for the completion of `head` (others that arrive are
    /// dropped), checking DEVICE_NEEDS_RESET now and then.
    pub fn wait_for<C: Clock>(&mut self, clock: &C, head: u16) -> Result<Completion, BlkError> {
        let ms = self.timeout_ms;
        let end = deadline(clock, ms);
        let mut next_status_check = deadline(clock, 10);
        loop {
            while let Some(completion) = self.poll() {
                let completion = completion?;
                if completion.head == head {
                    return Ok(completion);
                }
            }
            let now = clock.now();
            if now >= next_status_check || now > end {
                next_status_check = deadline(clock, 10);
                if self.transport.needs_reset() {
                    return Err(BlkError::NeedsReset { status: self.transport.status() });
                }
                if now > end {
                    return Err(BlkError::Timeout { ms });
                }
            }
            clock.relax();
        }
    }

    /// Submits one request, kicks, waits; Ok if the status is OK.
    fn one_request<C: Clock>(&mut self, clock: &C, kind: u32, sector: u64, data: Option<Buf>) -> Result<Completion, BlkError> {
        let head = self.submit(kind, sector, data)?;
        self.kick();
        let completion = self.wait_for(clock, head)?;
        if completion.status != blk::S_OK {
            return Err(BlkError::Status(completion.status));
        }
        Ok(completion)
    }

    /// Reads `buffer.len() / 512` sectors from `sector` into `buffer`.
    pub fn read<C: Clock>(&mut self, clock: &C, sector: u64, buffer: &mut [u8]) -> Result<(), BlkError> {
        let data = data_buf(buffer.as_mut_ptr() as u64, buffer.len(), true)?;
        let completion = self.one_request(clock, blk::T_IN, sector, Some(data))?;
        if completion.len as usize > buffer.len() + 1 {
            return Err(BlkError::BadLength(completion.len));
        }
        Ok(())
    }

    /// Writes `buffer` (whole sectors) at `sector`.
    pub fn write<C: Clock>(&mut self, clock: &C, sector: u64, buffer: &[u8]) -> Result<(), BlkError> {
        let data = data_buf(buffer.as_ptr() as u64, buffer.len(), false)?;
        self.one_request(clock, blk::T_OUT, sector, Some(data)).map(|_| ())
    }

    /// Flushes the device's write cache.
    pub fn flush<C: Clock>(&mut self, clock: &C) -> Result<(), BlkError> {
        self.one_request(clock, blk::T_FLUSH, 0, None).map(|_| ())
    }

    /// The device's ID string (up to 20 bytes; NUL-padded), and its length.
    pub fn get_id<C: Clock>(&mut self, clock: &C, id: &mut [u8; blk::ID_BYTES]) -> Result<usize, BlkError> {
        id.fill(0);
        let data = data_buf(id.as_mut_ptr() as u64, id.len(), true)?;
        self.one_request(clock, blk::T_GET_ID, 0, Some(data))?;
        Ok(id.iter().position(|&byte| byte == 0).unwrap_or(id.len()))
    }
}

fn data_buf(addr: u64, len: usize, device_writes: bool) -> Result<Buf, BlkError> {
    if len > u32::MAX as usize {
        return Err(BlkError::TooLarge);
    }
    Ok(Buf { addr, len: len as u32, device_writes })
}
