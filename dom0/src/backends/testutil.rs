//! A driver for the request-logic tests: guest memory, a virtqueue laid out
//! by `virtio_queue::mock::MockSplitQueue`, and helpers to publish chains
//! and read the used ring.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::Mem;

/// Guest RAM: 1 MiB at 0. Rings live at the bottom, buffers from 0x10000.
pub const RAM: u64 = 0x10_0000;
/// Where tests put buffers.
pub const BUF: u64 = 0x1_0000;
/// An address outside guest RAM.
pub const OUTSIDE: u64 = 0x20_0000;

pub fn mem() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
}

/// One descriptor as a test writes it.
#[derive(Clone, Copy, Debug)]
pub struct D {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// A device-readable descriptor.
pub fn r(addr: u64, len: u32) -> D {
    D {
        addr,
        len,
        write: false,
    }
}

/// A device-writable descriptor.
pub fn w(addr: u64, len: u32) -> D {
    D {
        addr,
        len,
        write: true,
    }
}

pub struct Driver<'a> {
    pub mem: &'a Mem,
    pub vq: MockSplitQueue<'a, Mem>,
    pub q: Queue,
    /// Our own used ring: the mock's starts inside the available ring's
    /// `used_event` field (and its last entries).
    used_addr: u64,
    size: u16,
    next_desc: u16,
    avail: u16,
    used_seen: u16,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a Mem, size: u16) -> Driver<'a> {
        Driver::at(mem, 0, size)
    }

    /// A queue whose rings start at `base`.
    pub fn at(mem: &'a Mem, base: u64, size: u16) -> Driver<'a> {
        let vq = MockSplitQueue::create(mem, GuestAddress(base), size);
        let mut q: Queue = vq.create_queue().unwrap();
        let used_addr = (vq.avail_addr().0 + 6 + 2 * u64::from(size) + 3) & !3;
        q.try_set_used_ring_address(GuestAddress(used_addr))
            .unwrap();
        Driver {
            mem,
            vq,
            q,
            used_addr,
            size,
            next_desc: 0,
            avail: 0,
            used_seen: 0,
        }
    }

    /// Stores a raw descriptor at `index`.
    pub fn store(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        self.vq
            .desc_table()
            .store(index, RawDescriptor::from(d))
            .unwrap();
    }

    /// Writes `descs` as one chain at the next free indexes; returns its
    /// head (not yet published).
    pub fn chain(&mut self, descs: &[D]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let index = (self.next_desc + i as u16) % self.size;
            let mut flags = if d.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.store(index, d.addr, d.len, flags, (index + 1) % self.size);
        }
        self.next_desc = (self.next_desc + descs.len() as u16) % self.size;
        head
    }

    /// Writes `descs` as an indirect table at `table` and a head descriptor
    /// pointing at it; returns the head (not yet published).
    pub fn indirect_chain(&mut self, table: u64, descs: &[D]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let mut flags = if d.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let raw = RawDescriptor::from(Descriptor::new(d.addr, d.len, flags, i as u16 + 1));
            self.mem
                .write_obj(raw, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let head = self.next_desc;
        self.store(
            head,
            table,
            16 * descs.len() as u32,
            VRING_DESC_F_INDIRECT as u16,
            0,
        );
        self.next_desc = (self.next_desc + 1) % self.size;
        head
    }

    /// Puts `head` in the available ring.
    pub fn publish(&mut self, head: u16) {
        self.vq
            .avail()
            .ring()
            .ref_at((self.avail % self.size) as usize)
            .unwrap()
            .store(head);
        self.avail = self.avail.wrapping_add(1);
        self.vq.avail().idx().store(self.avail);
    }

    /// Writes and publishes a chain.
    pub fn add(&mut self, descs: &[D]) -> u16 {
        let head = self.chain(descs);
        self.publish(head);
        head
    }

    /// Sets the available index directly (hostile drivers).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail = idx;
        self.vq.avail().idx().store(idx);
    }

    /// With EVENT_IDX: the driver wants an interrupt once the used index
    /// passes `idx`.
    pub fn set_used_event(&self, idx: u16) {
        let addr = self.vq.avail_addr().0 + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(idx, GuestAddress(addr)).unwrap();
    }

    /// What the device set as avail_event (EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let addr = self.used_addr + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// New used-ring entries since the last call: (head, len).
    pub fn used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used_addr + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used_addr + 4 + 8 * u64::from(self.used_seen % self.size);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    /// Turns EVENT_IDX on for the device side.
    pub fn event_idx(&mut self) {
        self.q.set_event_idx(true);
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// A unique path under the system temp directory.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "dom0-backends-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}
