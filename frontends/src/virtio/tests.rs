//! Host tests of the guest's virtio code against simulated devices.

use super::args::{BenchOp, NetRole, VirtioArgs};
use super::blk::{Blk, BlkError, RequestHeader};
use super::defs::{blk, feature, ring as rflags, status, vring_need_event};
use super::hostile::{hostile_workload, Case, Outcome};
use super::net::{parse_mac, TestFrame, FRAME_BYTES, KIND_PING, KIND_PONG};
use super::pattern::{self, Mismatch};
use super::ring::{pick_queue_size, queue_bytes, Buf, QueueAddrs, QueueError, Used, Virtqueue};
use super::sim::{BadChain, Kind, Memory, SimDevice, SimPlatform, OUTSIDE};
use super::transport::{probe, InitError, Probe, Transport};
use super::workloads::{bench_workload, blk_workload, console_workload, net_workload, probe_workload, Platform};

// --- the event-index rule --------------------------------------------------

#[test]
fn need_event_is_true_iff_the_event_index_was_passed() {
    // The other side wants to hear when index 5 is passed.
    assert!(vring_need_event(5, 6, 5));
    assert!(vring_need_event(5, 10, 3));
    assert!(!vring_need_event(5, 5, 3), "5 is not yet passed: new == 5 means entries 3 and 4");
    assert!(!vring_need_event(5, 9, 6), "5 was passed before `old`");
    assert!(!vring_need_event(5, 5, 5), "nothing new");
    // Wrapping.
    assert!(vring_need_event(0xffff, 1, 0xfffe));
    assert!(vring_need_event(0, 1, 0xffff));
    assert!(!vring_need_event(2, 1, 0xffff));
    // Exhaustive against the definition: event in [old, new).
    for old in [0u16, 1, 100, 0xfff0, 0xffff] {
        for added in 0u16..40 {
            let new = old.wrapping_add(added);
            for delta in 0u16..60 {
                let event = old.wrapping_add(delta).wrapping_sub(10);
                let passed = event.wrapping_sub(old) < added;
                assert_eq!(vring_need_event(event, new, old), passed, "event {event} new {new} old {old}");
            }
        }
    }
}

#[test]
fn queue_sizes_are_powers_of_two_within_the_limit() {
    assert_eq!(pick_queue_size(0), 0);
    assert_eq!(pick_queue_size(1), 1);
    assert_eq!(pick_queue_size(255), 128);
    assert_eq!(pick_queue_size(256), 256);
    assert_eq!(pick_queue_size(1024), 256);
    assert_eq!(pick_queue_size(u32::MAX), 256);
    assert_eq!(queue_bytes(256), 8192 + 6 + 8 * 256);
}

// --- the ring against a minimal device -------------------------------------

/// The device side of one split ring, written out by hand: takes avail
/// entries, walks chains and completes them in any order.
struct RingDevice {
    addrs: QueueAddrs,
    last_avail: u16,
    used_idx: u16,
}

impl RingDevice {
    fn new(addrs: QueueAddrs) -> RingDevice {
        RingDevice { addrs, last_avail: 0, used_idx: 0 }
    }

    fn r16(addr: u64) -> u16 {
        unsafe { std::ptr::read_volatile(addr as *const u16) }
    }

    fn w16(addr: u64, value: u16) {
        unsafe { std::ptr::write_volatile(addr as *mut u16, value) }
    }

    fn n(&self) -> u64 {
        u64::from(self.addrs.size)
    }

    /// Heads made available since the last call.
    fn take(&mut self) -> Vec<u16> {
        let idx = Self::r16(self.addrs.avail + 2);
        let mut heads = Vec::new();
        while self.last_avail != idx {
            heads.push(Self::r16(self.addrs.avail + 4 + 2 * (u64::from(self.last_avail) % self.n())));
            self.last_avail = self.last_avail.wrapping_add(1);
        }
        heads
    }

    /// The chain at `head`: (addr, len, flags) per descriptor.
    fn chain(&self, head: u16) -> Vec<(u64, u32, u16)> {
        let mut out = Vec::new();
        let mut index = head;
        loop {
            let at = self.addrs.desc + 16 * u64::from(index);
            let (addr, len, flags, next) = unsafe {
                (
                    std::ptr::read_volatile(at as *const u64),
                    std::ptr::read_volatile((at + 8) as *const u32),
                    Self::r16(at + 12),
                    Self::r16(at + 14),
                )
            };
            out.push((addr, len, flags));
            assert!(out.len() <= self.addrs.size as usize, "the driver built a looping chain");
            if flags & rflags::DESC_F_NEXT == 0 {
                return out;
            }
            index = next;
        }
    }

    fn complete(&mut self, head: u16, len: u32) {
        let slot = u64::from(self.used_idx) % self.n();
        unsafe {
            std::ptr::write_volatile((self.addrs.used + 4 + 8 * slot) as *mut u32, u32::from(head));
            std::ptr::write_volatile((self.addrs.used + 8 + 8 * slot) as *mut u32, len);
        }
        self.used_idx = self.used_idx.wrapping_add(1);
        Self::w16(self.addrs.used + 2, self.used_idx);
    }

    fn set_avail_event(&self, value: u16) {
        Self::w16(self.addrs.used + 4 + 8 * self.n(), value);
    }

    fn set_no_notify(&self, on: bool) {
        Self::w16(self.addrs.used, if on { rflags::USED_F_NO_NOTIFY } else { 0 });
    }

    fn used_event(&self) -> u16 {
        Self::r16(self.addrs.avail + 4 + 2 * self.n())
    }

    fn avail_flags(&self) -> u16 {
        Self::r16(self.addrs.avail)
    }
}

fn queue(memory: &Memory, size: u16, event_idx: bool) -> Virtqueue {
    unsafe { Virtqueue::new(memory.region(), size, event_idx) }
}

#[test]
fn chains_reach_the_device_as_written_and_only_after_publish() {
    let memory = Memory::new(queue_bytes(8));
    let mut q = queue(&memory, 8, false);
    let mut device = RingDevice::new(q.addrs());
    let head = q.add(&[Buf::readable(0x1000, 16), Buf::writable(0x2000, 512), Buf::writable(0x3000, 1)]).unwrap();
    assert!(device.take().is_empty(), "not yet published");
    q.publish();
    assert_eq!(device.take(), vec![head]);
    assert_eq!(
        device.chain(head),
        vec![
            (0x1000, 16, rflags::DESC_F_NEXT),
            (0x2000, 512, rflags::DESC_F_NEXT | rflags::DESC_F_WRITE),
            (0x3000, 1, rflags::DESC_F_WRITE)
        ]
    );
    assert_eq!(q.num_free(), 5);
    assert_eq!(q.pop_used(), None);
    device.complete(head, 513);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: u32::from(head), len: 513 })));
    assert_eq!(q.num_free(), 8);
    assert_eq!(q.pop_used(), None);
}

#[test]
fn the_free_list_survives_out_of_order_completions_and_index_wraparound() {
    let memory = Memory::new(queue_bytes(16));
    let mut q = queue(&memory, 16, false);
    let mut device = RingDevice::new(q.addrs());
    let mut rng = 0x1234_5678u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut outstanding: Vec<(u16, u64)> = Vec::new();
    let mut completed = 0u64;
    let mut added = 0u64;
    // Far more than 65536 chains: the u16 indices wrap several times.
    while completed < 200_000 {
        // Add chains of 1..=3 buffers while they fit; the tag in the
        // address identifies the chain.
        loop {
            let len = (next() % 3 + 1) as usize;
            if q.num_free() < len as u16 {
                break;
            }
            let tag = next() & 0xffff_ffff;
            let bufs: Vec<Buf> = (0..len).map(|i| Buf::readable(tag << 8 | i as u64, 4)).collect();
            let head = q.add(&bufs).unwrap();
            outstanding.push((head, tag));
            added += 1;
            if next() % 4 == 0 {
                break;
            }
        }
        q.publish();
        let heads = device.take();
        for &head in &heads {
            let chain = device.chain(head);
            let &(_, tag) = outstanding.iter().find(|(h, _)| *h == head).expect("the device saw a head the driver did not add");
            for (i, (addr, _, _)) in chain.iter().enumerate() {
                assert_eq!(*addr, tag << 8 | i as u64, "chain {head} was corrupted");
            }
        }
        // Complete a random subset, in random order.
        // (Every outstanding chain has been seen by the device by now.)
        let mut pending: Vec<u16> = outstanding.iter().map(|(h, _)| *h).collect();
        pending.retain(|_| next() % 2 == 0);
        for head in pending {
            device.complete(head, 0);
        }
        while let Some(used) = q.pop_used() {
            let used = used.unwrap();
            let position = outstanding.iter().position(|(h, _)| u32::from(*h) == used.id).unwrap();
            outstanding.remove(position);
            completed += 1;
        }
        let in_descriptors: u16 = outstanding.iter().map(|&(head, _)| device.chain(head).len() as u16).sum();
        assert_eq!(q.num_free() + in_descriptors, 16, "descriptors leaked or doubly freed");
    }
    assert!(added > 3 * 65536, "the indices wrapped: {added} chains");
    assert_eq!(q.avail_idx(), added as u16);
    assert_eq!(q.last_used(), completed as u16);
}

#[test]
fn a_full_queue_and_an_empty_chain_are_refused() {
    let memory = Memory::new(queue_bytes(4));
    let mut q = queue(&memory, 4, false);
    assert_eq!(q.add(&[]), Err(QueueError::Empty));
    q.add(&[Buf::readable(1, 1), Buf::readable(2, 1), Buf::readable(3, 1)]).unwrap();
    assert_eq!(q.add(&[Buf::readable(4, 1), Buf::readable(5, 1)]), Err(QueueError::Full));
    assert!(q.add(&[Buf::readable(4, 1)]).is_ok());
    assert_eq!(q.next_head(), None);
}

#[test]
fn a_bogus_used_id_is_reported_not_trusted() {
    let memory = Memory::new(queue_bytes(4));
    let mut q = queue(&memory, 4, false);
    let mut device = RingDevice::new(q.addrs());
    let head = q.add(&[Buf::readable(1, 1)]).unwrap();
    q.publish();
    device.take();
    device.complete(3, 0); // never submitted
    assert_eq!(q.pop_used(), Some(Err(QueueError::BadUsedId(3))));
    device.complete(99, 0); // out of range
    assert_eq!(q.pop_used(), Some(Err(QueueError::BadUsedId(99))));
    device.complete(head, 0);
    assert!(matches!(q.pop_used(), Some(Ok(_))));
    assert_eq!(q.num_free(), 4);
}

#[test]
fn without_event_idx_kicks_follow_the_no_notify_flag() {
    let memory = Memory::new(queue_bytes(8));
    let mut q = queue(&memory, 8, false);
    let device = RingDevice::new(q.addrs());
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(q.kick_prepare());
    device.set_no_notify(true);
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(!q.kick_prepare());
    device.set_no_notify(false);
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(q.kick_prepare());
    // Interrupts are suppressed by default, with the flag.
    assert_eq!(device.avail_flags(), rflags::AVAIL_F_NO_INTERRUPT);
    q.set_suppress_interrupts(false);
    assert_eq!(device.avail_flags(), 0);
}

#[test]
fn with_event_idx_the_driver_kicks_only_when_avail_event_is_passed() {
    let memory = Memory::new(queue_bytes(16));
    let mut q = queue(&memory, 16, true);
    let mut device = RingDevice::new(q.addrs());
    // The device asks to hear about entry 0: the first batch kicks.
    device.set_avail_event(0);
    q.add(&[Buf::readable(1, 1)]).unwrap();
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(q.kick_prepare());
    // The device is busy and has not moved avail_event past 0: a second
    // batch (entries 2..4) does not pass it, no kick.
    q.add(&[Buf::readable(1, 1)]).unwrap();
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(!q.kick_prepare());
    // It consumed everything and wants to hear about entry 4 next.
    assert_eq!(device.take().len(), 4);
    device.set_avail_event(4);
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(q.kick_prepare());
    // It asks about entry 7 (say, after processing ahead): entries 5 and 6
    // do not kick, 7 does.
    device.set_avail_event(7);
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(!q.kick_prepare());
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(!q.kick_prepare());
    q.add(&[Buf::readable(1, 1)]).unwrap();
    assert!(q.kick_prepare());
    // Flags stay 0 with EVENT_IDX.
    assert_eq!(device.avail_flags(), 0);
}

#[test]
fn with_event_idx_used_event_suppresses_or_requests_interrupts() {
    let memory = Memory::new(queue_bytes(8));
    let mut q = queue(&memory, 8, true);
    let mut device = RingDevice::new(q.addrs());
    for round in 0..20u16 {
        let head = q.add(&[Buf::readable(1, 1)]).unwrap();
        q.publish();
        device.take();
        let old = round;
        device.complete(head, 0);
        // Suppressed: whatever the device's old index, the new entry does
        // not pass used_event.
        assert!(!vring_need_event(device.used_event(), old.wrapping_add(1), old));
        q.pop_used().unwrap().unwrap();
    }
    q.set_suppress_interrupts(false);
    assert_eq!(device.used_event(), q.last_used());
    let head = q.add(&[Buf::readable(1, 1)]).unwrap();
    q.publish();
    device.take();
    device.complete(head, 0);
    let new = q.used_idx();
    assert!(vring_need_event(device.used_event(), new, new.wrapping_sub(1)), "the next completion interrupts");
}

// --- transport --------------------------------------------------------------

#[test]
fn an_empty_slot_probes_as_empty_and_a_device_by_its_id() {
    let p = SimPlatform::new(vec![None, Some(SimDevice::blk(8, false))]);
    assert_eq!(probe(&p.slot(0)), Probe::Empty);
    assert!(matches!(probe(&p.slot(1)), Probe::Device { device_id: 2, .. }));
}

#[test]
fn initialisation_walks_the_status_sequence_and_negotiates() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(8, false))]);
    let mut memory = p.dma();
    let device = Blk::new(p.slot(0), &p, &mut memory, true).unwrap();
    let sim = p.device(0);
    assert_eq!(sim.status, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(
        sim.driver_features,
        feature::bit(feature::VERSION_1)
            | feature::bit(feature::RING_EVENT_IDX)
            | feature::bit(feature::BLK_FLUSH)
            | feature::bit(feature::BLK_SIZE_MAX)
            | feature::bit(feature::BLK_SEG_MAX)
    );
    assert_eq!((device.config().size_max, device.config().seg_max), (Some(65536), Some(126)));
    assert_eq!(device.config().capacity, 8);
    assert!(device.config().flush && !device.config().read_only);
    assert_eq!(device.queue().size(), 256);
    assert!(device.queue().event_idx());
}

#[test]
fn event_idx_is_optional() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(8, false))]);
    let mut memory = p.dma();
    let device = Blk::new(p.slot(0), &p, &mut memory, false).unwrap();
    assert!(!device.queue().event_idx());
    assert_eq!(p.device(0).driver_features & feature::bit(feature::RING_EVENT_IDX), 0);
}

#[test]
fn features_ok_that_does_not_stick_is_an_error() {
    let mut sim = SimDevice::blk(8, false);
    sim.refuse_features = true;
    let p = SimPlatform::new(vec![Some(sim)]);
    let mut memory = p.dma();
    let error = Blk::new(p.slot(0), &p, &mut memory, true).err().unwrap();
    assert!(matches!(error, InitError::FeaturesRefused { .. }), "{error}");
    assert_ne!(p.device(0).status & status::FAILED, 0, "the driver gives up with FAILED");
}

#[test]
fn a_device_without_version_1_is_refused() {
    let mut sim = SimDevice::blk(8, false);
    sim.offered &= !feature::bit(feature::VERSION_1);
    let p = SimPlatform::new(vec![Some(sim)]);
    let mut transport = Transport::new(p.slot(0));
    let error = transport.begin_init(&p, 0, feature::bit(feature::VERSION_1)).unwrap_err();
    assert_eq!(error, InitError::MissingFeatures { missing: feature::bit(feature::VERSION_1), offered: p.device(0).offered });
}

#[test]
fn a_queue_outside_ram_makes_driver_ok_fail_with_needs_reset() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(8, false))]);
    let mut memory = p.dma();
    let mut device = Blk::new(p.slot(0), &p, &mut memory, true).unwrap();
    let addrs = QueueAddrs { desc: OUTSIDE, ..device.queue().addrs() };
    let error = device.reinit_with_queue_at(&p, addrs).unwrap_err();
    assert!(matches!(error, InitError::DeviceNeedsReset { .. }), "{error}");
    device.reinit(&p).unwrap();
    let mut sector = [0u8; 512];
    device.read(&p, 0, &mut sector).unwrap();
}

// --- blk ----------------------------------------------------------------------

#[test]
fn request_headers_encode_as_the_spec_lays_them_out() {
    let header = RequestHeader { kind: blk::T_OUT, sector: 0x0102_0304_0506_0708 };
    let bytes = header.encode();
    assert_eq!(bytes, [1, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(RequestHeader::decode(&bytes), header);
}

#[test]
fn blk_reads_writes_flushes_and_reports_errors() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(64, false))]);
    let mut memory = p.dma();
    let mut device = Blk::new(p.slot(0), &p, &mut memory, true).unwrap();
    let mut data = vec![0u8; 4096];
    pattern::fill(9, 8, &mut data);
    device.write(&p, 8, &data).unwrap();
    device.flush(&p).unwrap();
    let mut back = vec![0u8; 4096];
    device.read(&p, 8, &mut back).unwrap();
    assert_eq!(back, data);
    if let Kind::Blk { disk, .. } = &p.device(0).kind {
        assert_eq!(&disk[8 * 512..16 * 512], &data[..]);
    };
    assert_eq!(device.read(&p, 64, &mut back[..512]), Err(BlkError::Status(blk::S_IOERR)));
    assert_eq!(device.read(&p, 60, &mut back), Err(BlkError::Status(blk::S_IOERR)), "runs past the end");
    let mut id = [0u8; blk::ID_BYTES];
    assert_eq!(device.get_id(&p, &mut id), Ok(10));
    assert_eq!(&id[..10], b"sim-disk-0");
    // Event index: the device always caught up, so every request kicked.
    assert_eq!(device.kicks, p.device(0).notifications);
    assert_eq!(p.device(0).interrupts, 0, "interrupts stay suppressed");
}

#[test]
fn a_stalled_device_times_out() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(8, false))]);
    let mut memory = p.dma();
    let mut device = Blk::new(p.slot(0), &p, &mut memory, true).unwrap();
    device.timeout_ms = 20;
    p.device(0).stalled = true;
    let mut sector = [0u8; 512];
    assert_eq!(device.read(&p, 0, &mut sector), Err(BlkError::Timeout { ms: 20 }));
}

fn args() -> VirtioArgs<'static> {
    VirtioArgs { timeout_ms: 50, hostile_wait_ms: 20, net_wait_ms: 200, console_wait_ms: 50, ..VirtioArgs::DEFAULT }
}

#[test]
fn blk_workload_writes_then_a_new_life_verifies_the_pattern() {
    let p = SimPlatform::new(vec![None, Some(SimDevice::blk(128, false))]);
    assert!(blk_workload(&p, &VirtioArgs { blk_write: Some(7), blk_sectors: 100, ..args() }), "{}", p.output());
    let out = p.output();
    assert!(out.contains("VIRTIO-BLK id \"sim-disk-0\""), "{out}");
    assert!(out.contains("read beyond capacity (sector 128): IOERR, as expected"), "{out}");
    assert!(out.contains("wrote 100 sectors with seed 7, flushed"), "{out}");
    assert!(out.ends_with("VIRTIO-BLK PASS: capacity 128 sectors, 100 sectors checked, 29 kicks"), "{out}");
    if let Kind::Blk { disk, .. } = &p.device(1).kind {
        assert_eq!(pattern::check(7, 0, &disk[..100 * 512]), Ok(()));
        assert!(disk[100 * 512..].iter().all(|&b| b == 0), "nothing beyond blk.sectors");
    };
    // The same disk in a "new domain": a fresh driver and reset device.
    let disk = match std::mem::replace(&mut p.device(1).kind, Kind::Console { input: Default::default(), output: vec![] }) {
        Kind::Blk { disk, .. } => disk,
        _ => unreachable!(),
    };
    let mut next_life = SimDevice::blk(128, false);
    next_life.kind = Kind::Blk { disk, read_only: true, id: b"again".to_vec() };
    next_life.offered |= feature::bit(feature::BLK_RO);
    let p2 = SimPlatform::new(vec![Some(next_life)]);
    assert!(blk_workload(&p2, &VirtioArgs { blk_verify: Some(7), blk_sectors: 100, blk_expect_ro: true, ..args() }), "{}", p2.output());
    let out = p2.output();
    assert!(out.contains("write to the read-only disk: IOERR, as expected (VIRTIO_BLK_F_RO offered)"), "{out}");
    assert!(out.contains("verified 100 sectors: pattern of seed 7 intact"), "{out}");
    // Another seed does not verify, and the message says what is there.
    p2.lines.borrow_mut().clear();
    assert!(!blk_workload(&p2, &VirtioArgs { blk_verify: Some(8), ..args() }));
    assert!(p2.output().contains("VIRTIO-BLK FAIL: sector 0 does not hold the pattern of seed 8: it holds the pattern of seed 7 for sector 0"), "{}", p2.output());
}

#[test]
fn blk_workload_fails_if_a_read_only_disk_takes_writes() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(16, false))]);
    assert!(!blk_workload(&p, &VirtioArgs { blk_expect_ro: true, ..args() }));
    assert!(p.output().ends_with("VIRTIO-BLK FAIL: a write to the read-only disk succeeded"), "{}", p.output());
}

#[test]
fn blk_workload_without_a_disk_fails_cleanly() {
    let p = SimPlatform::new(vec![None, Some(SimDevice::net([2; 6], false))]);
    assert!(!blk_workload(&p, &args()));
    assert_eq!(p.output(), "VIRTIO-BLK FAIL: no virtio-blk device number 0 (0 found)");
}

#[test]
fn blk_workload_without_event_idx_also_passes() {
    let p = SimPlatform::new(vec![Some(SimDevice::blk(64, false))]);
    assert!(blk_workload(&p, &VirtioArgs { event_idx: false, blk_write: Some(1), ..args() }), "{}", p.output());
    assert!(p.output().contains("event-idx 0"), "{}", p.output());
}

// --- pattern ------------------------------------------------------------------

#[test]
fn the_pattern_is_deterministic_and_differs_per_seed_and_sector() {
    let mut a = [0u8; 512];
    let mut b = [0u8; 512];
    pattern::fill_sector(1, 2, &mut a);
    pattern::fill_sector(1, 2, &mut b);
    assert_eq!(a, b);
    pattern::fill_sector(1, 3, &mut b);
    assert_ne!(a[24..], b[24..]);
    pattern::fill_sector(2, 2, &mut b);
    assert_ne!(a[24..], b[24..]);
    assert_eq!(&a[..8], b"SPVBLK01");
    // Golden bytes, so that a change of the pattern is noticed (disks
    // written by one version are verified by another).
    assert_eq!(&a[24..32], &[0x08, 0xe3, 0xcd, 0x2c, 0x97, 0x94, 0x6f, 0x80][..], "{:02x?}", &a[24..32]);
}

#[test]
fn mismatches_say_what_the_sector_holds() {
    let mut data = [0u8; 512];
    assert_eq!(pattern::check_sector(5, 0, &data), Err(Mismatch::Zeros));
    pattern::fill_sector(4, 0, &mut data);
    assert_eq!(pattern::check_sector(5, 0, &data), Err(Mismatch::OtherPattern { seed: 4, sector: 0 }));
    pattern::fill_sector(5, 1, &mut data);
    assert_eq!(pattern::check_sector(5, 0, &data), Err(Mismatch::OtherPattern { seed: 5, sector: 1 }));
    pattern::fill_sector(5, 0, &mut data);
    assert_eq!(pattern::check_sector(5, 0, &data), Ok(()));
    data[300] ^= 1;
    assert!(matches!(pattern::check_sector(5, 0, &data), Err(Mismatch::Corrupt { offset: 300, .. })));
    data.fill(0x41);
    assert!(matches!(pattern::check_sector(5, 0, &data), Err(Mismatch::Foreign { offset: 0, .. })));
    let mut two = [0u8; 1024];
    pattern::fill(5, 10, &mut two);
    two[600] ^= 0xff;
    assert!(matches!(pattern::check(5, 10, &two), Err((11, Mismatch::Corrupt { .. }))));
}

// --- hostile ------------------------------------------------------------------

#[test]
fn outcomes_count_as_refused_unless_the_device_did_the_bad_thing() {
    let ok = Outcome::Completed { status: blk::S_OK, len: 513 };
    let ioerr = Outcome::Completed { status: blk::S_IOERR, len: 1 };
    let untouched = Outcome::Completed { status: super::hostile::UNTOUCHED, len: 0 };
    for case in Case::ALL {
        assert!(!ok.refused(case), "{case:?}");
        assert!(Outcome::NoCompletion.refused(case));
        assert!(Outcome::NeedsReset { status: 0x4f }.refused(case));
        assert!(untouched.refused(case));
        assert!(!Outcome::WrongHead { id: 3 }.refused(case));
    }
    assert!(ioerr.refused(Case::SectorBeyondCapacity));
    assert!(!ioerr.refused(Case::StatusNotWritable), "any status written into a read-only buffer is a violation");
}

fn hostile_with(policy: BadChain) -> (bool, String) {
    let mut sim = SimDevice::blk(64, false);
    sim.bad_chain = policy;
    if let Kind::Blk { disk, .. } = &mut sim.kind {
        pattern::fill(3, 0, &mut disk[..512]);
    }
    let p = SimPlatform::new(vec![Some(sim)]);
    let passed = hostile_workload(&p, &args());
    let out = p.output();
    let device = p.device(0);
    if let Kind::Blk { disk, .. } = &device.kind {
        assert_eq!(pattern::check(3, 0, &disk[..512]), Ok(()), "sector 0 must survive");
    }
    (passed, out)
}

#[test]
fn hostile_requests_to_a_strict_device_are_all_refused() {
    for policy in [BadChain::NeedsReset, BadChain::Drop, BadChain::CompleteEmpty] {
        let (passed, out) = hostile_with(policy);
        assert!(passed, "{policy:?}:\n{out}");
        for case in Case::ALL {
            assert!(out.contains(&format!("VIRTIO-HOSTILE {}: ", case.name())), "{out}");
        }
        assert!(out.contains("VIRTIO-HOSTILE sector-beyond-capacity: completed with status IOERR"), "{out}");
        assert!(out.contains("VIRTIO-HOSTILE data-wrong-direction: completed with status IOERR"), "{out}");
        assert!(out.contains("VIRTIO-HOSTILE queue-outside-ram: setup refused: the device needs a reset"), "{out}");
        assert!(out.ends_with("VIRTIO-HOSTILE PASS: all 8 hostile requests refused, the device kept serving valid requests"), "{out}");
    }
    let (_, out) = hostile_with(BadChain::NeedsReset);
    assert!(out.contains("VIRTIO-HOSTILE chain-loop: DEVICE_NEEDS_RESET"), "{out}");
    let (_, out) = hostile_with(BadChain::Drop);
    assert!(out.contains("VIRTIO-HOSTILE chain-too-long: no completion; refused; a valid read works after a reset"), "{out}");
    let (_, out) = hostile_with(BadChain::CompleteEmpty);
    assert!(out.contains("VIRTIO-HOSTILE next-out-of-range: completed without a status"), "{out}");
}

#[test]
fn a_lenient_device_fails_the_hostile_workload() {
    let mut sim = SimDevice::blk(64, false);
    sim.lenient = true;
    let p = SimPlatform::new(vec![Some(sim)]);
    assert!(!hostile_workload(&p, &args()));
    let out = p.output();
    assert!(out.contains("VIRTIO-HOSTILE data-wrong-direction: completed with status OK (used length 1); FAILED: the device accepted it"), "{out}");
    assert!(out.contains("VIRTIO-HOSTILE status-not-writable: completed with status OK"), "{out}");
    assert!(out.ends_with("VIRTIO-HOSTILE FAIL: 2 of 8 cases failed"), "{out}");
}

// --- net ------------------------------------------------------------------------

#[test]
fn test_frames_round_trip_and_echo() {
    let frame = TestFrame { dst: [0xff; 6], src: [2, 0, 0, 0, 0, 1], kind: KIND_PING, seq: 0x01020304, stamp: 99 };
    let mut bytes = [0u8; FRAME_BYTES];
    assert_eq!(frame.encode(&mut bytes), 60);
    assert_eq!(&bytes[12..14], &[0x88, 0xb5]);
    assert_eq!(TestFrame::decode(&bytes), Some(frame));
    let echo = frame.echo([2, 0, 0, 0, 0, 2]);
    assert_eq!((echo.dst, echo.src, echo.kind, echo.seq, echo.stamp), ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], KIND_PONG, 0x01020304, 99));
    bytes[12] = 0x08;
    assert_eq!(TestFrame::decode(&bytes), None, "another EtherType");
    assert_eq!(parse_mac(b"52:54:00:ab:CD:0f"), Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]));
    assert_eq!(parse_mac(b"52-54-00-ab-cd-0f"), Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]));
    for bad in [&b"52:54:00:ab:cd"[..], b"52:54:00:ab:cd:0f:11", b"5:54:00:ab:cd:0f", b"zz:54:00:ab:cd:0f", b""] {
        assert_eq!(parse_mac(bad), None, "{bad:?}");
    }
}

#[test]
fn ping_gets_every_echo_from_an_echoing_peer() {
    let p = SimPlatform::new(vec![Some(SimDevice::net([2, 0, 0, 0, 0, 9], true))]);
    assert!(net_workload(&p, &VirtioArgs { net_count: 40, ..args() }), "{}", p.output());
    let out = p.output();
    assert!(out.contains("mac 02:00:00:00:00:09 (from the device), role ping, peer ff:ff:ff:ff:ff:ff"), "{out}");
    assert!(out.contains("VIRTIO-NET PASS ping: 40 echoes, round trip cycles min "), "{out}");
    let device = p.device(0);
    if let Kind::Net { sent, .. } = &device.kind {
        assert_eq!(sent.len(), 40);
        for (seq, frame) in sent.iter().enumerate() {
            let frame = TestFrame::decode(frame).unwrap();
            assert_eq!((frame.seq, frame.kind, frame.src), (seq as u32, KIND_PING, [2, 0, 0, 0, 0, 9]));
        }
    }
}

#[test]
fn ping_without_a_peer_fails_with_a_clear_line() {
    let p = SimPlatform::new(vec![Some(SimDevice::net([2; 6], false))]);
    assert!(!net_workload(&p, &VirtioArgs { net_count: 3, ..args() }));
    assert!(p.output().ends_with("VIRTIO-NET FAIL: no echo of frame 0 within 200 ms (0 other frames ignored)"), "{}", p.output());
    // The first frame was resent while waiting for the peer.
    let device = p.device(0);
    if let Kind::Net { sent, .. } = &device.kind {
        assert!(sent.len() > 1, "{}", sent.len());
    }
}

#[test]
fn pong_echoes_every_ping_to_its_sender() {
    let me = [2, 0, 0, 0, 0, 7];
    let peer = [2, 0, 0, 0, 0, 8];
    let mut sim = SimDevice::net(me, false);
    if let Kind::Net { inbox, .. } = &mut sim.kind {
        inbox.push_back(vec![0u8; 60]); // not a test frame: ignored
        for seq in [0u32, 0, 1, 2] {
            let mut bytes = vec![0u8; FRAME_BYTES];
            TestFrame { dst: [0xff; 6], src: peer, kind: KIND_PING, seq, stamp: 5 }.encode(&mut bytes);
            inbox.push_back(bytes);
        }
    }
    let p = SimPlatform::new(vec![Some(sim)]);
    assert!(net_workload(&p, &VirtioArgs { net_role: NetRole::Pong, net_count: 3, ..args() }), "{}", p.output());
    assert!(p.output().contains("VIRTIO-NET PASS pong: echoed 4 frames (up to sequence number 2), 1 frames ignored"), "{}", p.output());
    let device = p.device(0);
    if let Kind::Net { sent, .. } = &device.kind {
        let echoes: Vec<TestFrame> = sent.iter().map(|frame| TestFrame::decode(frame).unwrap()).collect();
        assert_eq!(echoes.len(), 4);
        assert!(echoes.iter().all(|echo| echo.dst == peer && echo.src == me && echo.kind == KIND_PONG));
    }
}

// --- console ----------------------------------------------------------------------

#[test]
fn console_says_hello_and_echoes_a_line() {
    let p = SimPlatform::new(vec![Some(SimDevice::console(b"\r\nhi there\nrest"))]);
    assert!(console_workload(&p, &VirtioArgs { console_name: b"dom7", ..args() }), "{}", p.output());
    assert!(p.output().ends_with("VIRTIO-CONSOLE PASS: echoed \"hi there\""), "{}", p.output());
    let device = p.device(0);
    if let Kind::Console { output, .. } = &device.kind {
        assert_eq!(String::from_utf8_lossy(output), "SPLITPV-VCONSOLE hello from dom7\nSPLITPV-VCONSOLE echo: hi there\n");
    }
}

#[test]
fn console_without_input_times_out() {
    let p = SimPlatform::new(vec![Some(SimDevice::console(b"no newline"))]);
    assert!(!console_workload(&p, &args()));
    assert!(p.output().ends_with("VIRTIO-CONSOLE FAIL: no line of input within 50 ms (10 bytes of a partial line)"), "{}", p.output());
}

// --- probe and bench ----------------------------------------------------------------

#[test]
fn probe_lists_devices_and_fails_cleanly_without_any() {
    let p = SimPlatform::new((0..8).map(|_| None).collect());
    assert!(!probe_workload(&p));
    let out = p.output();
    assert!(out.contains("VIRTIO slot 7 at 0xd8007000: empty (device id 0)"), "{out}");
    assert!(out.ends_with("VIRTIO no devices\nVIRTIO-PROBE FAIL: no devices in 8 slots"), "{out}");

    let p = SimPlatform::new(vec![Some(SimDevice::blk(8, false)), None, Some(SimDevice::net([2; 6], false)), Some(SimDevice::console(b""))]);
    assert!(probe_workload(&p));
    let out = p.output();
    assert!(out.contains("VIRTIO slot 0 at 0xd8000000: blk (device id 2)"), "{out}");
    assert!(out.contains("VIRTIO slot 2 at 0xd8002000: net (device id 1)"), "{out}");
    assert!(out.contains("VIRTIO slot 3 at 0xd8003000: console (device id 3)"), "{out}");
    assert!(out.ends_with("VIRTIO-PROBE PASS: 3 device(s)"), "{out}");
}

#[test]
fn bench_counts_requests_and_kicks() {
    for event_idx in [false, true] {
        let p = SimPlatform::new(vec![Some(SimDevice::blk(1024, false))]);
        let a = VirtioArgs { event_idx, bench_size: 8192, bench_batch: 8, bench_count: 1000, ..args() };
        assert!(bench_workload(&p, &a), "{}", p.output());
        let out = p.output();
        assert!(out.contains(&format!("VIRTIO-BENCH PASS: op=read size=8192 batch=8 count=1000 eventidx={}", event_idx as u8)), "{out}");
        let kicks: u64 = out.split("kicks=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((1..=125).contains(&kicks), "one kick per batch at most: {kicks}");
        assert!(out.contains("req_per_s="), "{out}");
    }
    // 512 KiB requests: eight 64 KiB segments each (the device's size_max).
    let p = SimPlatform::new(vec![Some(SimDevice::blk(4096, false))]);
    assert!(bench_workload(&p, &VirtioArgs { bench_size: 512 << 10, bench_count: 20, ..args() }), "{}", p.output());
    assert!(p.output().contains("batch 16 does not fit the queue of 256: using 12"), "{}", p.output());
    let p = SimPlatform::new(vec![Some(SimDevice::blk(64, false))]);
    assert!(bench_workload(&p, &VirtioArgs { bench_op: BenchOp::Write, bench_count: 10, ..args() }), "{}", p.output());
    assert!(!bench_workload(&p, &VirtioArgs { bench_size: 1000, ..args() }));
}

#[test]
fn with_a_busy_device_event_idx_saves_kicks() {
    // A device that never advances avail_event past its first value: the
    // EVENT_IDX driver kicks once, the other on every batch.
    let run = |event_idx: bool| {
        let mut sim = SimDevice::blk(1024, false);
        sim.freeze_avail_event = true;
        let p = SimPlatform::new(vec![Some(sim)]);
        let mut memory = p.dma();
        let mut device = Blk::new(p.slot(0), &p, &mut memory, event_idx).unwrap();
        let mut sector = [0u8; 512];
        for _ in 0..10 {
            device.read(&p, 1, &mut sector).unwrap();
        }
        device.kicks
    };
    assert_eq!(run(false), 10);
    assert_eq!(run(true), 1);
}

// --- command line -------------------------------------------------------------------

#[test]
fn virtio_options_parse_from_the_command_line() {
    use crate::cmdline::{parse, CmdlineError, Workload};
    let options = parse(b"workload=virtio-blk blk.write=1e3 blk.sectors=128 blk.expect-ro virtio.eventidx=0 net.peer=52:54:00:00:00:01 net.role=pong console.name=dom3 bench.op=write other=1").unwrap();
    assert_eq!(options.workload, Workload::VirtioBlk);
    let v = options.virtio;
    assert_eq!((v.blk_write, v.blk_sectors, v.blk_expect_ro, v.event_idx), (Some(1000), 128, true, false));
    assert_eq!((v.net_peer, v.net_role, v.console_name, v.bench_op), ([0x52, 0x54, 0, 0, 0, 1], NetRole::Pong, &b"dom3"[..], BenchOp::Write));
    assert_eq!(options.ignored_count, 1);
    assert_eq!(parse(b"net.peer=broadcast").unwrap().virtio.net_peer, [0xff; 6]);
    assert!(!parse(b"blk.expect-ro=0").unwrap().virtio.blk_expect_ro);
    assert_eq!(parse(b"").unwrap().virtio, VirtioArgs::DEFAULT);
    for workload in ["virtio-probe", "virtio-blk", "virtio-net", "virtio-console", "virtio-hostile", "virtio-bench"] {
        assert!(parse(format!("workload={workload}").as_bytes()).is_ok(), "{workload}");
    }
    assert_eq!(parse(b"net.role=both"), Err(CmdlineError::BadValue { key: b"net.role", value: b"both", expected: "ping or pong" }));
    assert!(matches!(parse(b"blk.write=x"), Err(CmdlineError::BadValue { .. })));
    assert!(matches!(parse(b"net.peer=1:2:3"), Err(CmdlineError::BadValue { .. })));
    assert!(matches!(parse(b"bench.eventidx=2"), Err(CmdlineError::BadValue { .. })));
}

#[test]
fn line_input_skips_leading_line_ends_and_stops_at_the_first_end() {
    use super::workloads::LineInput;
    let mut l = LineInput::new();
    assert!(!l.feed(b"\r\n\nhel"));
    assert_eq!(l.line(), b"hel");
    assert!(l.feed(b"lo\r\nrest"));
    assert_eq!(l.line(), b"hello");
    // Longer than the buffer: the excess is dropped, the line still ends.
    let mut long = LineInput::new();
    assert!(!long.feed(&[b'x'; 300]));
    assert!(long.feed(b"\n"));
    assert_eq!(long.line().len(), 256);
}
