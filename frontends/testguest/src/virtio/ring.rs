//! A split virtqueue (spec 2.7) in memory shared with the device, driver
//! side: descriptor table, available ring, used ring, a free list of
//! descriptors and the event-index rules.
//!
//! Addresses: the guest is identity-mapped, so a pointer's value is the
//! guest-physical address the device uses. The host tests keep that
//! convention (their simulated device dereferences the same values).
//! Every access to shared memory is volatile; [`fence`]s order the
//! driver's writes against the device's reads as the spec's memory
//! barriers ask (on x86 all but the store→load one before a kick decision
//! are compiler barriers).

use core::ptr;
use core::sync::atomic::{fence, Ordering};

use super::defs::{ring as flags, vring_need_event};

/// Largest queue size the drivers use (the device may allow more).
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Bytes of shared memory a queue of `size` entries takes in this layout:
/// the descriptor table at 0, the available ring right after it, the used
/// ring on the next 4 KiB boundary.
pub const fn queue_bytes(size: u16) -> usize {
    used_offset(size) + used_bytes(size)
}

const fn avail_offset(size: u16) -> usize {
    16 * size as usize
}

const fn avail_bytes(size: u16) -> usize {
    6 + 2 * size as usize
}

const fn used_offset(size: u16) -> usize {
    (avail_offset(size) + avail_bytes(size) + 4095) & !4095
}

const fn used_bytes(size: u16) -> usize {
    6 + 8 * size as usize
}

/// The largest power of two not above `min(max, MAX_QUEUE_SIZE)`; 0 if
/// `max` is 0 (split-ring sizes are powers of two).
pub fn pick_queue_size(max: u32) -> u16 {
    let limit = max.min(u32::from(MAX_QUEUE_SIZE));
    if limit == 0 {
        0
    } else {
        1 << (31 - limit.leading_zeros())
    }
}

/// A range of memory the device can reach: a pointer whose value is also
/// its device-visible address, and its length.
#[derive(Clone, Copy, Debug)]
pub struct DmaRegion {
    pub ptr: *mut u8,
    pub len: usize,
}

impl DmaRegion {
    /// The device-visible address of the first byte.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Takes `len` bytes aligned to `align` (a power of two) off the front,
    /// zeroed. `None` if the region is too small.
    pub fn take(&mut self, len: usize, align: usize) -> Option<DmaRegion> {
        let start = self.ptr as usize;
        let aligned = start.checked_add(align - 1)? & !(align - 1);
        let skip = aligned - start;
        if skip.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: `skip + len <= self.len`, so both pointers stay inside
        // (or one past) the region, which its creator vouched for.
        let (taken, rest) = unsafe { (self.ptr.add(skip), self.ptr.add(skip + len)) };
        let taken = DmaRegion { ptr: taken, len };
        self.ptr = rest;
        self.len -= skip + len;
        taken.zero();
        Some(taken)
    }

    /// Fills the region with zeros.
    pub fn zero(&self) {
        // SAFETY: the region is writable memory of `len` bytes (the
        // creator's promise), shared only with a device not yet told of it
        // or reset.
        unsafe { ptr::write_bytes(self.ptr, 0, self.len) };
    }

    /// The region as a byte slice.
    ///
    /// # Safety
    /// No device may write to the region while the slice lives.
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the caller excludes concurrent device writes; the region
        // is valid memory of `len` bytes.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The region as a mutable byte slice.
    ///
    /// # Safety
    /// No device may access the region while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self) -> &mut [u8] {
        // SAFETY: as for `bytes`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// One descriptor as the driver writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A buffer of a request: where, how long, and whether the device writes
/// it (else it reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

impl Buf {
    /// A buffer the device reads.
    pub fn readable(addr: u64, len: usize) -> Buf {
        Buf { addr, len: len as u32, device_writes: false }
    }

    /// A buffer the device writes.
    pub fn writable(addr: u64, len: usize) -> Buf {
        Buf { addr, len: len as u32, device_writes: true }
    }
}

/// One entry of the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor of the chain the device completed.
    pub id: u32,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}

/// What went wrong with a queue operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors for the chain.
    Full,
    /// A chain of no buffers.
    Empty,
    /// The device returned a head that is out of range or not in flight.
    BadUsedId(u32),
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QueueError::Full => write!(out, "the queue has no free descriptors"),
            QueueError::Empty => write!(out, "a request without buffers"),
            QueueError::BadUsedId(id) => write!(out, "the device completed descriptor {id}, which is not an outstanding request"),
        }
    }
}

/// The three guest-physical addresses a transport hands the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddrs {
    pub size: u16,
    pub desc: u64,
    /// The available ring ("driver area").
    pub avail: u64,
    /// The used ring ("device area").
    pub used: u64,
}

/// The driver side of a split virtqueue.
pub struct Virtqueue {
    size: u16,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    event_idx: bool,
    /// Head of the free list (`size` when empty).
    free_head: u16,
    num_free: u16,
    /// Next free descriptor after each free one, and the chain links of
    /// descriptors in flight: the driver's own copy, so that a device that
    /// scribbles over the table cannot corrupt the free list.
    next: [u16; MAX_QUEUE_SIZE as usize],
    /// Descriptors in the chain each in-flight head starts (0: not in
    /// flight).
    chain_len: [u16; MAX_QUEUE_SIZE as usize],
    /// The driver's available index (published with [`Virtqueue::publish`]).
    avail_idx: u16,
    /// Chains added since the last kick decision.
    num_added: u16,
    /// Next used index to consume.
    last_used: u16,
    /// Interrupt suppression (the default: the drivers poll).
    suppress_interrupts: bool,
}

impl Virtqueue {
    /// Lays a queue of `size` entries (a power of two, at most
    /// [`MAX_QUEUE_SIZE`]) out in `memory` (at least [`queue_bytes`] bytes,
    /// 4 KiB-aligned) and zeroes it. With `event_idx`, the queue follows
    /// VIRTIO_RING_F_EVENT_IDX (which both sides must have negotiated).
    ///
    /// # Safety
    /// `memory` must be valid for the queue's lifetime and used by nothing
    /// else but the device this queue is handed to.
    pub unsafe fn new(memory: DmaRegion, size: u16, event_idx: bool) -> Virtqueue {
        assert!(size.is_power_of_two() && size <= MAX_QUEUE_SIZE, "queue size {size}");
        assert!(memory.len >= queue_bytes(size) && memory.ptr as usize & 4095 == 0, "queue memory too small or misaligned");
        let region = DmaRegion { ptr: memory.ptr, len: queue_bytes(size) };
        region.zero();
        let mut queue = Virtqueue {
            size,
            desc: memory.ptr,
            // SAFETY: both offsets lie inside `queue_bytes(size)`.
            avail: unsafe { memory.ptr.add(avail_offset(size)) },
            used: unsafe { memory.ptr.add(used_offset(size)) },
            event_idx,
            free_head: 0,
            num_free: size,
            next: [0; MAX_QUEUE_SIZE as usize],
            chain_len: [0; MAX_QUEUE_SIZE as usize],
            avail_idx: 0,
            num_added: 0,
            last_used: 0,
            suppress_interrupts: true,
        };
        for index in 0..size {
            queue.next[index as usize] = index + 1;
        }
        queue.write_interrupt_suppression();
        queue
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains added and not yet returned by [`Virtqueue::pop_used`].
    pub fn in_flight(&self) -> u16 {
        self.size - self.num_free
    }

    pub fn addrs(&self) -> QueueAddrs {
        QueueAddrs { size: self.size, desc: self.desc as u64, avail: self.avail as u64, used: self.used as u64 }
    }

    /// The head the next [`Virtqueue::add`] will use (`None` if no
    /// descriptor is free), so that per-request memory can be indexed by it.
    pub fn next_head(&self) -> Option<u16> {
        (self.num_free > 0).then_some(self.free_head)
    }

    // --- raw shared-memory accessors -------------------------------------

    fn read_u16(base: *mut u8, offset: usize) -> u16 {
        // SAFETY: callers pass offsets inside the queue's memory (see the
        // layout functions); u16 fields are 2-aligned in it.
        unsafe { ptr::read_volatile(base.add(offset).cast::<u16>()) }
    }

    fn write_u16(base: *mut u8, offset: usize, value: u16) {
        // SAFETY: as for `read_u16`.
        unsafe { ptr::write_volatile(base.add(offset).cast::<u16>(), value) }
    }

    fn read_u32(base: *mut u8, offset: usize) -> u32 {
        // SAFETY: as for `read_u16`; u32 fields are 4-aligned.
        unsafe { ptr::read_volatile(base.add(offset).cast::<u32>()) }
    }

    /// Writes descriptor `index` as is: no free-list bookkeeping. For
    /// malformed chains (the hostile workload), on a queue that is thrown
    /// away afterwards.
    pub fn write_desc_raw(&mut self, index: u16, desc: Desc) {
        assert!(index < self.size);
        let at = 16 * index as usize;
        // SAFETY: descriptor `index` lies inside the table; 16-aligned.
        unsafe {
            ptr::write_volatile(self.desc.add(at).cast::<u64>(), desc.addr);
            ptr::write_volatile(self.desc.add(at + 8).cast::<u32>(), desc.len);
        }
        Self::write_u16(self.desc, at + 12, desc.flags);
        Self::write_u16(self.desc, at + 14, desc.next);
    }

    /// Reads descriptor `index` back (tests and diagnostics).
    pub fn read_desc(&self, index: u16) -> Desc {
        assert!(index < self.size);
        let at = 16 * index as usize;
        // SAFETY: as for `write_desc_raw`.
        let addr = unsafe { ptr::read_volatile(self.desc.add(at).cast::<u64>()) };
        Desc { addr, len: Self::read_u32(self.desc, at + 8), flags: Self::read_u16(self.desc, at + 12), next: Self::read_u16(self.desc, at + 14) }
    }

    /// Puts `head` into the next available-ring slot without bookkeeping
    /// (see [`Virtqueue::write_desc_raw`]); publish with
    /// [`Virtqueue::publish`].
    pub fn push_avail_raw(&mut self, head: u16) {
        let slot = self.avail_idx % self.size;
        Self::write_u16(self.avail, 4 + 2 * slot as usize, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.num_added = self.num_added.wrapping_add(1);
    }

    // --- the driver's side of the protocol --------------------------------

    /// Adds a chain of `bufs` (device-readable ones first, as the spec
    /// asks) to the descriptor table and the available ring, not yet
    /// visible to the device: [`Virtqueue::publish`] makes it so. Returns
    /// the head descriptor.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, QueueError> {
        if bufs.is_empty() {
            return Err(QueueError::Empty);
        }
        if bufs.len() > self.num_free as usize {
            return Err(QueueError::Full);
        }
        let head = self.free_head;
        let mut index = head;
        for (position, buf) in bufs.iter().enumerate() {
            let following = self.next[index as usize];
            let last = position + 1 == bufs.len();
            let flags = if buf.device_writes { flags::DESC_F_WRITE } else { 0 } | if last { 0 } else { flags::DESC_F_NEXT };
            self.write_desc_raw(index, Desc { addr: buf.addr, len: buf.len, flags, next: if last { 0 } else { following } });
            if last {
                self.free_head = following;
            } else {
                index = following;
            }
        }
        self.num_free -= bufs.len() as u16;
        self.chain_len[head as usize] = bufs.len() as u16;
        self.push_avail_raw(head);
        Ok(head)
    }

    /// Makes every chain added so far visible to the device: the available
    /// index is written after the ring entries and descriptors.
    pub fn publish(&mut self) {
        fence(Ordering::Release);
        Self::write_u16(self.avail, 2, self.avail_idx);
    }

    /// Publishes, then decides whether the device must be notified about
    /// the chains added since the last decision: with EVENT_IDX iff the
    /// device's `avail_event` lies among them ([`vring_need_event`]), else
    /// iff the device has not set `VRING_USED_F_NO_NOTIFY`. The caller
    /// writes QueueNotify when this returns true.
    pub fn kick_prepare(&mut self) -> bool {
        self.publish();
        let new = self.avail_idx;
        let old = new.wrapping_sub(self.num_added);
        self.num_added = 0;
        // The device may be going idle right now: our index must be
        // visible before we read its wish (store→load: a full fence).
        fence(Ordering::SeqCst);
        if self.event_idx {
            vring_need_event(self.avail_event(), new, old)
        } else {
            Self::read_u16(self.used, 0) & flags::USED_F_NO_NOTIFY == 0
        }
    }

    /// The device's `avail_event` (meaningful with EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        Self::read_u16(self.used, 4 + 8 * self.size as usize)
    }

    /// The device's used index.
    pub fn used_idx(&self) -> u16 {
        Self::read_u16(self.used, 2)
    }

    /// The available index published so far.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// The next used index this driver consumes.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Whether the device has completed chains not yet consumed.
    pub fn has_used(&self) -> bool {
        self.used_idx() != self.last_used
    }

    /// Takes the next completed chain off the used ring, if any, and
    /// returns its descriptors to the free list.
    pub fn pop_used(&mut self) -> Option<Result<Used, QueueError>> {
        let used = self.pop_used_raw()?;
        let head = used.id;
        if head >= u32::from(self.size) || self.chain_len[head as usize] == 0 {
            return Some(Err(QueueError::BadUsedId(head)));
        }
        let count = self.chain_len[head as usize];
        self.chain_len[head as usize] = 0;
        // Follow the driver's own links to the chain's last descriptor and
        // put the whole chain in front of the free list.
        let mut tail = head as u16;
        for _ in 1..count {
            tail = self.next[tail as usize];
        }
        self.next[tail as usize] = self.free_head;
        self.free_head = head as u16;
        self.num_free += count;
        Some(Ok(used))
    }

    /// Takes the next used entry without returning descriptors to the
    /// free list (for raw chains, see [`Virtqueue::write_desc_raw`]).
    pub fn pop_used_raw(&mut self) -> Option<Used> {
        if !self.has_used() {
            return None;
        }
        // The entry must be read after the index that announced it.
        fence(Ordering::Acquire);
        let slot = (self.last_used % self.size) as usize;
        let id = Self::read_u32(self.used, 4 + 8 * slot);
        let len = Self::read_u32(self.used, 8 + 8 * slot);
        self.last_used = self.last_used.wrapping_add(1);
        self.write_interrupt_suppression();
        Some(Used { id, len })
    }

    /// Asks the device for interrupts (`false`) or for none (`true`, the
    /// default; the guest polls). Without EVENT_IDX this is
    /// `VRING_AVAIL_F_NO_INTERRUPT`; with it, `used_event` is kept at the
    /// next index to consume (interrupts wanted) or one behind it, which
    /// the device's index never passes again before it wraps.
    pub fn set_suppress_interrupts(&mut self, suppress: bool) {
        self.suppress_interrupts = suppress;
        self.write_interrupt_suppression();
    }

    fn write_interrupt_suppression(&mut self) {
        if self.event_idx {
            let event = if self.suppress_interrupts { self.last_used.wrapping_sub(1) } else { self.last_used };
            Self::write_u16(self.avail, 4 + 2 * self.size as usize, event);
            Self::write_u16(self.avail, 0, 0);
        } else {
            Self::write_u16(self.avail, 0, if self.suppress_interrupts { flags::AVAIL_F_NO_INTERRUPT } else { 0 });
        }
    }

    /// `used_event` as last written (meaningful with EVENT_IDX).
    pub fn used_event(&self) -> u16 {
        Self::read_u16(self.avail, 4 + 2 * self.size as usize)
    }
}
