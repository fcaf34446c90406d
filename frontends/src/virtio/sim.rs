//! Simulated virtio-mmio devices for the host tests: the register block of
//! a version-2 transport and blk, net and console devices that consume
//! available chains and write used entries as a real device (a vhost-user
//! backend) would, with knobs for the misbehaviour a test needs.
//!
//! "Guest memory" is the test process's memory: a descriptor's address is
//! a pointer. Addresses in [`OUTSIDE`]`..+4 GiB` (non-canonical, never a
//! pointer) stand for "outside guest RAM": the device refuses them and
//! never dereferences them. Devices work when the platform's `relax` runs
//! (or at once on a kick with [`SimDevice::immediate`]), so a driver sees
//! them asynchronously.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::defs::{self, blk, feature, reg, ring as rflags, status, vring_need_event};
use super::net::TestFrame;
use super::ring::DmaRegion;
use super::transport::{Clock, Regs};
use super::workloads::{Platform, DMA_BYTES};

/// The simulated disk's limits (as dom0's backend has them).
pub const SIZE_MAX: u32 = 64 * 1024;
pub const SEG_MAX: u32 = 126;

/// Start of the addresses that are not guest RAM.
pub const OUTSIDE: u64 = 0xdead_0000_0000_0000;

fn valid(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    addr != 0 && !(OUTSIDE..OUTSIDE + (1 << 32)).contains(&addr) && !(addr < OUTSIDE && end > OUTSIDE)
}

fn queue_in_ram(queue: &SimQueue) -> bool {
    let n = u64::from(queue.num);
    valid(queue.desc, 16 * n) && valid(queue.avail, 6 + 2 * n) && valid(queue.used, 6 + 8 * n)
}

// Guest-memory accessors (the caller validated the address).
fn rd16(addr: u64) -> u16 {
    unsafe { std::ptr::read_volatile(addr as *const u16) }
}
fn wr16(addr: u64, value: u16) {
    unsafe { std::ptr::write_volatile(addr as *mut u16, value) }
}
fn rd32(addr: u64) -> u32 {
    unsafe { std::ptr::read_volatile(addr as *const u32) }
}
fn wr32(addr: u64, value: u32) {
    unsafe { std::ptr::write_volatile(addr as *mut u32, value) }
}
fn rd64(addr: u64) -> u64 {
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}
fn read_bytes(addr: u64, len: usize) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}
fn write_bytes(addr: u64, bytes: &[u8]) {
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) }
}

/// What a device does with a chain it cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadChain {
    /// Sets DEVICE_NEEDS_RESET and stops the queue.
    NeedsReset,
    /// Drops it: no used entry.
    Drop,
    /// Returns it with used length 0 (status untouched).
    CompleteEmpty,
}

/// One descriptor as the device reads it.
#[derive(Clone, Copy, Debug)]
struct SimDesc {
    addr: u64,
    len: u32,
    writable: bool,
}

#[derive(Clone, Debug, Default)]
struct SimQueue {
    num_max: u32,
    num: u32,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_idx: u16,
    kicked: bool,
}

pub enum Kind {
    Blk { disk: Vec<u8>, read_only: bool, id: Vec<u8> },
    Net { mac: [u8; 6], echo: bool, inbox: VecDeque<Vec<u8>>, sent: Vec<Vec<u8>> },
    Console { input: VecDeque<u8>, output: Vec<u8> },
}

pub struct SimDevice {
    pub kind: Kind,
    pub offered: u64,
    pub driver_features: u64,
    device_sel: u32,
    driver_sel: u32,
    queue_sel: u32,
    pub status: u32,
    queues: Vec<SimQueue>,
    /// QueueNotify writes.
    pub notifications: u64,
    /// Interrupts the device would have raised (per the suppression rules).
    pub interrupts: u64,
    pub bad_chain: BadChain,
    /// Refuse FEATURES_OK whatever the features.
    pub refuse_features: bool,
    /// Work at once on QueueNotify instead of in `relax`.
    pub immediate: bool,
    /// Do not update `avail_event` (a device that stays "busy"), so that
    /// an EVENT_IDX driver must not kick again.
    pub freeze_avail_event: bool,
    /// Process nothing (a hung backend).
    pub stalled: bool,
    /// A lenient (broken) device: takes data in either direction and
    /// writes the status even into a read-only descriptor.
    pub lenient: bool,
    /// Resets seen (status written 0).
    pub resets: u64,
}

impl SimDevice {
    fn new(kind: Kind, offered: u64, queues: usize) -> SimDevice {
        SimDevice {
            kind,
            offered: offered | feature::bit(feature::VERSION_1) | feature::bit(feature::RING_EVENT_IDX),
            driver_features: 0,
            device_sel: 0,
            driver_sel: 0,
            queue_sel: 0,
            status: 0,
            queues: vec![SimQueue { num_max: 256, ..SimQueue::default() }; queues],
            notifications: 0,
            interrupts: 0,
            bad_chain: BadChain::NeedsReset,
            refuse_features: false,
            immediate: false,
            freeze_avail_event: false,
            stalled: false,
            lenient: false,
            resets: 0,
        }
    }

    pub fn blk(sectors: u64, read_only: bool) -> SimDevice {
        let offered = feature::bit(feature::BLK_FLUSH)
            | feature::bit(feature::BLK_SIZE_MAX)
            | feature::bit(feature::BLK_SEG_MAX)
            | if read_only { feature::bit(feature::BLK_RO) } else { 0 };
        SimDevice::new(Kind::Blk { disk: vec![0; sectors as usize * blk::SECTOR_SIZE], read_only, id: b"sim-disk-0".to_vec() }, offered, 1)
    }

    pub fn net(mac: [u8; 6], echo: bool) -> SimDevice {
        SimDevice::new(Kind::Net { mac, echo, inbox: VecDeque::new(), sent: Vec::new() }, feature::bit(feature::NET_MAC), 2)
    }

    pub fn console(input: &[u8]) -> SimDevice {
        SimDevice::new(Kind::Console { input: input.iter().copied().collect(), output: Vec::new() }, 0, 2)
    }

    fn negotiated(&self, bit: u32) -> bool {
        self.driver_features & feature::bit(bit) != 0
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.resets += 1;
        for queue in &mut self.queues {
            *queue = SimQueue { num_max: queue.num_max, ..SimQueue::default() };
        }
    }

    fn config_bytes(&self) -> Vec<u8> {
        match &self.kind {
            Kind::Blk { disk, .. } => {
                let mut config = vec![0u8; 24];
                config[..8].copy_from_slice(&((disk.len() / blk::SECTOR_SIZE) as u64).to_le_bytes());
                config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
                config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
                config
            }
            Kind::Net { mac, .. } => {
                let mut config = mac.to_vec();
                config.extend_from_slice(&[1, 0]);
                config
            }
            Kind::Console { .. } => vec![0; 12],
        }
    }

    fn device_id(&self) -> u32 {
        match self.kind {
            Kind::Blk { .. } => defs::device_id::BLOCK,
            Kind::Net { .. } => defs::device_id::NET,
            Kind::Console { .. } => defs::device_id::CONSOLE,
        }
    }

    pub fn read(&mut self, offset: usize) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => defs::MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.device_id(),
            reg::VENDOR_ID => 0x5350_4b56,
            reg::DEVICE_FEATURES => match self.device_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |queue| queue.num_max),
            reg::QUEUE_READY => queue.map_or(0, |queue| queue.ready as u32),
            reg::INTERRUPT_STATUS => u32::from(self.interrupts > 0),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            offset if offset >= reg::CONFIG => {
                let config = self.config_bytes();
                let at = offset - reg::CONFIG;
                let mut word = [0u8; 4];
                for (index, byte) in word.iter_mut().enumerate() {
                    *byte = config.get(at + index).copied().unwrap_or(0);
                }
                u32::from_le_bytes(word)
            }
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: usize, value: u32) {
        let selected = self.queue_sel as usize;
        let set_half = |slot: &mut u64, high: bool| {
            if high {
                *slot = (*slot & 0xffff_ffff) | u64::from(value) << 32;
            } else {
                *slot = (*slot & !0xffff_ffff) | u64::from(value);
            }
        };
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_sel = value,
            reg::DRIVER_FEATURES => match self.driver_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | u64::from(value) << 32,
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(queue) = self.queues.get_mut(selected) {
                    queue.num = value;
                }
            }
            reg::QUEUE_READY => {
                if let Some(queue) = self.queues.get_mut(selected) {
                    // As the hypervisor does: rings outside guest RAM are
                    // refused with DEVICE_NEEDS_RESET.
                    if value == 1 && !queue_in_ram(queue) {
                        self.status |= status::DEVICE_NEEDS_RESET;
                    } else {
                        queue.ready = value == 1;
                    }
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                if let Some(queue) = self.queues.get_mut(selected) {
                    set_half(&mut queue.desc, offset == reg::QUEUE_DESC_HIGH);
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                if let Some(queue) = self.queues.get_mut(selected) {
                    set_half(&mut queue.avail, offset == reg::QUEUE_DRIVER_HIGH);
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH => {
                if let Some(queue) = self.queues.get_mut(selected) {
                    set_half(&mut queue.used, offset == reg::QUEUE_DEVICE_HIGH);
                }
            }
            reg::QUEUE_NOTIFY => {
                self.notifications += 1;
                if let Some(queue) = self.queues.get_mut(value as usize) {
                    queue.kicked = true;
                }
                if self.immediate {
                    self.step();
                }
            }
            reg::STATUS => self.write_status(value),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let acceptable = self.driver_features & !self.offered == 0 && self.negotiated(feature::VERSION_1);
            if self.refuse_features || !acceptable {
                value &= !status::FEATURES_OK;
            }
        }
        if value & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0 {
            // (Checked again, as a vhost-user backend would at
            // SET_VRING_ADDR.)
            if self.queues.iter().any(|queue| queue.ready && !queue_in_ram(queue)) {
                value |= status::DEVICE_NEEDS_RESET;
            }
        }
        self.status = value | (self.status & status::DEVICE_NEEDS_RESET);
    }

    fn running(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0 && !self.stalled
    }

    /// Does the device's work: processes every queue (kicked or not, as a
    /// polling backend may).
    pub fn step(&mut self) {
        if !self.running() {
            return;
        }
        for index in 0..self.queues.len() {
            if self.queues[index].ready {
                self.process(index);
            }
        }
    }

    fn event_idx(&self) -> bool {
        self.negotiated(feature::RING_EVENT_IDX)
    }

    /// Reads the chain at `head`: its descriptors, or None if malformed.
    fn chain(&self, queue: &SimQueue, head: u16) -> Option<Vec<SimDesc>> {
        let n = queue.num as u16;
        let mut index = head;
        let mut chain = Vec::new();
        let mut seen_writable = false;
        loop {
            if index >= n || chain.len() >= n as usize {
                return None;
            }
            let at = queue.desc + 16 * u64::from(index);
            let (addr, len, flags, next) = (rd64(at), rd32(at + 8), rd16(at + 12), rd16(at + 14));
            let writable = flags & rflags::DESC_F_WRITE != 0;
            if !valid(addr, u64::from(len)) || flags & rflags::DESC_F_INDIRECT != 0 || (seen_writable && !writable && !self.lenient) {
                return None;
            }
            seen_writable |= writable;
            chain.push(SimDesc { addr, len, writable });
            if flags & rflags::DESC_F_NEXT == 0 {
                return Some(chain);
            }
            index = next;
        }
    }

    fn push_used(&mut self, index: usize, head: u16, len: u32) {
        let event_idx = self.event_idx();
        let queue = &mut self.queues[index];
        let n = queue.num as u16;
        let slot = u64::from(queue.used_idx % n);
        wr32(queue.used + 4 + 8 * slot, u32::from(head));
        wr32(queue.used + 8 + 8 * slot, len);
        let old = queue.used_idx;
        queue.used_idx = old.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        wr16(queue.used + 2, queue.used_idx);
        let interrupt = if event_idx {
            let used_event = rd16(queue.avail + 4 + 2 * u64::from(n));
            vring_need_event(used_event, queue.used_idx, old)
        } else {
            rd16(queue.avail) & rflags::AVAIL_F_NO_INTERRUPT == 0
        };
        if interrupt {
            self.interrupts += 1;
        }
    }

    fn process(&mut self, index: usize) {
        loop {
            if !self.running() {
                return;
            }
            let queue = self.queues[index].clone();
            let n = queue.num as u16;
            let avail_idx = rd16(queue.avail + 2);
            if avail_idx == queue.last_avail {
                if self.event_idx() && !self.freeze_avail_event {
                    wr16(queue.used + 4 + 8 * u64::from(n), queue.last_avail);
                }
                self.queues[index].kicked = false;
                // The rx side of net and console: deliver what is waiting
                // only into posted buffers; nothing more to take here.
                return;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let head = rd16(queue.avail + 4 + 2 * u64::from(queue.last_avail % n));
            // Receive queues wait for data before taking a buffer.
            if !self.has_input_for(index) {
                return;
            }
            self.queues[index].last_avail = queue.last_avail.wrapping_add(1);
            let Some(chain) = self.chain(&queue, head) else {
                match self.bad_chain {
                    BadChain::NeedsReset => self.status |= status::DEVICE_NEEDS_RESET,
                    BadChain::Drop => {}
                    BadChain::CompleteEmpty => self.push_used(index, head, 0),
                }
                continue;
            };
            match self.handle(index, &chain) {
                Some(len) => self.push_used(index, head, len),
                None => match self.bad_chain {
                    BadChain::NeedsReset => self.status |= status::DEVICE_NEEDS_RESET,
                    BadChain::Drop => {}
                    BadChain::CompleteEmpty => self.push_used(index, head, 0),
                },
            }
        }
    }

    /// Whether queue `index` is a receive queue with something to deliver
    /// (or not a receive queue at all).
    fn has_input_for(&self, index: usize) -> bool {
        match &self.kind {
            Kind::Blk { .. } => true,
            Kind::Net { inbox, .. } => index != 0 || !inbox.is_empty(),
            Kind::Console { input, .. } => index != 0 || !input.is_empty(),
        }
    }

    /// Carries out one well-formed chain; the used length, or None if the
    /// request is malformed beyond a status.
    fn handle(&mut self, index: usize, chain: &[SimDesc]) -> Option<u32> {
        let lenient = self.lenient;
        let flush = self.negotiated(feature::BLK_FLUSH);
        match &mut self.kind {
            Kind::Blk { disk, read_only, id } => {
                let (header, rest) = chain.split_first()?;
                let (status_desc, data) = rest.split_last()?;
                if header.writable || header.len < 16 || status_desc.len < 1 || !(status_desc.writable || lenient) {
                    return None;
                }
                let bytes = read_bytes(header.addr, 16);
                let request = super::blk::RequestHeader::decode(bytes[..16].try_into().unwrap());
                let sectors = (disk.len() / blk::SECTOR_SIZE) as u64;
                let total: u64 = data.iter().map(|desc| u64::from(desc.len)).sum();
                let mut written = 0u32;
                let status = match request.kind {
                    blk::T_IN | blk::T_OUT => {
                        let writing = request.kind == blk::T_OUT;
                        let direction_ok = lenient || data.iter().all(|desc| desc.writable != writing);
                        let end = request.sector.checked_mul(512).and_then(|start| start.checked_add(total));
                        let out_of_range = end.is_none_or(|end| end > sectors * 512);
                        let too_big = data.len() > SEG_MAX as usize || data.iter().any(|desc| desc.len > SIZE_MAX);
                        if too_big || !direction_ok || total % 512 != 0 || out_of_range || (writing && *read_only) {
                            blk::S_IOERR
                        } else {
                            let mut at = (request.sector * 512) as usize;
                            for desc in data {
                                let len = desc.len as usize;
                                if writing {
                                    disk[at..at + len].copy_from_slice(&read_bytes(desc.addr, len));
                                } else {
                                    write_bytes(desc.addr, &disk[at..at + len]);
                                    written += desc.len;
                                }
                                at += len;
                            }
                            blk::S_OK
                        }
                    }
                    blk::T_FLUSH if flush => blk::S_OK,
                    blk::T_GET_ID => match data.first() {
                        Some(desc) if desc.writable && desc.len as usize >= blk::ID_BYTES => {
                            let mut answer = [0u8; blk::ID_BYTES];
                            answer[..id.len()].copy_from_slice(id);
                            write_bytes(desc.addr, &answer);
                            written += blk::ID_BYTES as u32;
                            blk::S_OK
                        }
                        _ => blk::S_IOERR,
                    },
                    _ => blk::S_UNSUPP,
                };
                write_bytes(status_desc.addr, &[status]);
                Some(written + 1)
            }
            Kind::Net { mac, echo, inbox, sent } => {
                if index == 0 {
                    let frame = inbox.pop_front()?;
                    let buffer = chain.first().filter(|desc| desc.writable)?;
                    let mut bytes = vec![0u8; defs::net::HDR_BYTES];
                    bytes.extend_from_slice(&frame);
                    bytes.truncate(buffer.len as usize);
                    write_bytes(buffer.addr, &bytes);
                    Some(bytes.len() as u32)
                } else {
                    let mut bytes = Vec::new();
                    for desc in chain.iter().filter(|desc| !desc.writable) {
                        bytes.extend(read_bytes(desc.addr, desc.len as usize));
                    }
                    let frame = bytes.get(defs::net::HDR_BYTES..)?.to_vec();
                    if *echo {
                        if let Some(test) = TestFrame::decode(&frame) {
                            if test.kind == super::net::KIND_PING {
                                let mut echoed = vec![0u8; super::net::FRAME_BYTES];
                                test.echo(*mac).encode(&mut echoed);
                                inbox.push_back(echoed);
                            }
                        }
                    }
                    sent.push(frame);
                    Some(0)
                }
            }
            Kind::Console { input, output } => {
                if index == 0 {
                    let buffer = chain.first().filter(|desc| desc.writable)?;
                    let take = input.len().min(buffer.len as usize);
                    let bytes: Vec<u8> = input.drain(..take).collect();
                    write_bytes(buffer.addr, &bytes);
                    Some(bytes.len() as u32)
                } else {
                    for desc in chain.iter().filter(|desc| !desc.writable) {
                        output.extend(read_bytes(desc.addr, desc.len as usize));
                    }
                    Some(0)
                }
            }
        }
    }
}

/// Slots with devices (None: an empty slot).
pub struct SimBus {
    pub slots: Vec<Option<SimDevice>>,
}

impl SimBus {
    pub fn new(devices: Vec<Option<SimDevice>>) -> Rc<RefCell<SimBus>> {
        Rc::new(RefCell::new(SimBus { slots: devices }))
    }

    pub fn step(&mut self) {
        for device in self.slots.iter_mut().flatten() {
            device.step();
        }
    }
}

pub struct SimRegs {
    bus: Rc<RefCell<SimBus>>,
    slot: usize,
}

impl Regs for SimRegs {
    fn read32(&self, offset: usize) -> u32 {
        match &mut self.bus.borrow_mut().slots[self.slot] {
            Some(device) => device.read(offset),
            // An empty slot: a transport with DeviceID 0.
            None => match offset {
                reg::MAGIC_VALUE => defs::MAGIC,
                reg::VERSION => 2,
                _ => 0,
            },
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        if let Some(device) = &mut self.bus.borrow_mut().slots[self.slot] {
            device.write(offset, value);
        }
    }

    fn read8(&self, offset: usize) -> u8 {
        let word = self.read32(offset & !3);
        (word >> (8 * (offset & 3))) as u8
    }
}

/// A page-aligned, zeroed allocation that stands for guest RAM.
pub struct Memory {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Memory {
    pub fn new(len: usize) -> Memory {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Memory { ptr, layout }
    }

    pub fn region(&self) -> DmaRegion {
        DmaRegion { ptr: self.ptr, len: self.layout.size() }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// The test platform: a tick per `relax`, 1000 ticks per "millisecond".
pub struct SimPlatform {
    pub bus: Rc<RefCell<SimBus>>,
    pub ticks: Cell<u64>,
    pub memory: Memory,
    pub lines: RefCell<Vec<String>>,
}

impl SimPlatform {
    pub fn new(devices: Vec<Option<SimDevice>>) -> SimPlatform {
        SimPlatform { bus: SimBus::new(devices), ticks: Cell::new(0), memory: Memory::new(DMA_BYTES), lines: RefCell::new(Vec::new()) }
    }

    /// The output so far, one line each.
    pub fn output(&self) -> String {
        self.lines.borrow().join("\n")
    }

    /// Device `slot` (panics if empty).
    pub fn device(&self, slot: usize) -> std::cell::RefMut<'_, SimDevice> {
        std::cell::RefMut::map(self.bus.borrow_mut(), |bus| bus.slots[slot].as_mut().expect("no device in that slot"))
    }
}

impl Clock for SimPlatform {
    fn now(&self) -> u64 {
        self.ticks.get()
    }

    fn ticks_per_ms(&self) -> u64 {
        1000
    }

    fn relax(&self) {
        self.ticks.set(self.ticks.get() + 1);
        self.bus.borrow_mut().step();
    }
}

impl Platform for SimPlatform {
    type Regs = SimRegs;

    fn slot_count(&self) -> u32 {
        self.bus.borrow().slots.len() as u32
    }

    fn slot_address(&self, index: u32) -> u64 {
        0xd800_0000 + u64::from(index) * 0x1000
    }

    fn slot(&self, index: u32) -> SimRegs {
        SimRegs { bus: self.bus.clone(), slot: index as usize }
    }

    fn line(&self, args: std::fmt::Arguments<'_>) {
        let line = args.to_string();
        println!("{line}");
        self.lines.borrow_mut().push(line);
    }

    fn dma(&self) -> DmaRegion {
        self.memory.region()
    }

    fn outside_ram(&self) -> u64 {
        OUTSIDE
    }

    fn tsc_khz(&self) -> Option<u64> {
        Some(1000)
    }
}
