use super::*;
use crate::backends::queue::Counters;
use crate::backends::testutil::{mem, r, temp_path, w, Driver, BUF, OUTSIDE};
use std::sync::atomic::Ordering;
use virtio_queue::QueueOwnedT;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Where tests put things in guest memory.
const HDR: u64 = BUF;
const DATA: u64 = BUF + 0x1000;
const STATUS: u64 = BUF + 0x800;

struct Image {
    path: std::path::PathBuf,
}

impl Image {
    /// A file of `len` bytes where byte i is `i % 251`.
    fn new(len: usize) -> Image {
        let path = temp_path("blk.img");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, data).unwrap();
        Image { path }
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    fn disk(&self, read_only: bool) -> Disk {
        Disk::open(&self.path, read_only, false, "dom1-xvda").unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn header(drv: &Driver, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    drv.write(HDR, &h);
    // A status the device must overwrite.
    drv.write(STATUS, &[0xee]);
}

fn status(drv: &Driver) -> u8 {
    drv.read(STATUS, 1)[0]
}

fn run(disk: &Disk, drv: &mut Driver, c: &Counters) -> Outcome {
    disk.process_queue(&mut drv.q, drv.mem, c).unwrap()
}

#[test]
fn config_space_and_features() {
    let img = Image::new(4096 + 100);
    let disk = img.disk(false);
    assert_eq!(
        disk.capacity_sectors, 8,
        "the 100-byte tail is not addressable"
    );
    let c = disk.config();
    assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 8);
    assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), SIZE_MAX);
    assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), SEG_MAX);
    assert_eq!(disk.features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(disk.features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_ne!(img.disk(true).features() & (1 << VIRTIO_BLK_F_RO), 0);
    assert!(Disk::open(&img.path, false, false, "012345678901234567890").is_err());
}

#[test]
fn read_write_flush_get_id_round_trips() {
    let img = Image::new(64 * 1024);
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();

    // Read sectors 2..4 into two data descriptors.
    header(&drv, VIRTIO_BLK_T_IN, 2);
    let head = drv.add(&[r(HDR, 16), w(DATA, 512), w(DATA + 512, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used(), vec![(u32::from(head), 1025)]);
    assert_eq!(status(&drv), OK);
    assert_eq!(drv.read(DATA, 1024), img.contents()[1024..2048]);

    // Write sector 5 from memory.
    drv.write(DATA, &[0x5a; 512]);
    header(&drv, VIRTIO_BLK_T_OUT, 5);
    let head = drv.add(&[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used(), vec![(u32::from(head), 1)]);
    assert_eq!(status(&drv), OK);
    let file = img.contents();
    assert_eq!(file[5 * 512..6 * 512], [0x5a; 512]);
    assert_eq!(file[6 * 512], ((6 * 512) % 251) as u8);

    // Flush.
    header(&drv, VIRTIO_BLK_T_FLUSH, 0);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 1);
    assert_eq!(status(&drv), OK);

    // GET_ID: 20 bytes, NUL-padded.
    header(&drv, VIRTIO_BLK_T_GET_ID, 0);
    drv.write(DATA, &[0xff; 20]);
    drv.add(&[r(HDR, 16), w(DATA, 20), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 21);
    assert_eq!(status(&drv), OK);
    let mut want = b"dom1-xvda".to_vec();
    want.resize(20, 0);
    assert_eq!(drv.read(DATA, 20), want);

    assert_eq!(c.requests.load(Ordering::Relaxed), 4);
    assert_eq!(c.bytes.load(Ordering::Relaxed), 1024 + 512 + 20);
    assert_eq!(c.errors.load(Ordering::Relaxed), 0);
}

#[test]
fn any_layout_and_indirect_descriptors() {
    let img = Image::new(8192);
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    // Header split over two descriptors; data and status in one.
    header(&drv, VIRTIO_BLK_T_IN, 1);
    drv.add(&[r(HDR, 10), r(HDR + 10, 6), w(DATA, 513)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 513);
    assert_eq!(drv.read(DATA, 512), img.contents()[512..1024]);
    assert_eq!(drv.read(DATA + 512, 1)[0], OK);

    // The same through an indirect table.
    header(&drv, VIRTIO_BLK_T_IN, 3);
    let head = drv.indirect_chain(BUF + 0x8000, &[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    drv.publish(head);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used(), vec![(u32::from(head), 513)]);
    assert_eq!(status(&drv), OK);
    assert_eq!(drv.read(DATA, 512), img.contents()[1536..2048]);
}

#[test]
fn out_of_range_sectors_fail_and_leave_the_file_alone() {
    let img = Image::new(4096 + 300);
    let before = img.contents();
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    drv.write(DATA, &[0xaa; 1024]);
    // Sector 8 is the unaddressable tail.
    for (sector, len) in [
        (8u64, 512u32),
        (7, 1024),
        (u64::MAX, 512),
        (u64::MAX / 512, 512),
    ] {
        header(&drv, VIRTIO_BLK_T_OUT, sector);
        drv.add(&[r(HDR, 16), r(DATA, len), w(STATUS, 1)]);
        run(&disk, &mut drv, &c);
        assert_eq!(drv.used()[0].1, 1);
        assert_eq!(status(&drv), IOERR, "sector {sector}");
        header(&drv, VIRTIO_BLK_T_IN, sector);
        drv.add(&[r(HDR, 16), w(DATA, len), w(STATUS, 1)]);
        run(&disk, &mut drv, &c);
        assert_eq!(drv.used()[0].1, 1);
        assert_eq!(status(&drv), IOERR, "sector {sector}");
    }
    // Not a whole number of sectors.
    header(&drv, VIRTIO_BLK_T_OUT, 0);
    drv.add(&[r(HDR, 16), r(DATA, 100), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    assert_eq!(img.contents(), before);
    assert_eq!(c.errors.load(Ordering::Relaxed), 9);
}

#[test]
fn read_only_disk_refuses_writes_and_flushes() {
    let img = Image::new(4096);
    let before = img.contents();
    let disk = img.disk(true);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    header(&drv, VIRTIO_BLK_T_OUT, 0);
    drv.add(&[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    header(&drv, VIRTIO_BLK_T_FLUSH, 0);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    // Reads work.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), OK);
    assert_eq!(img.contents(), before);
}

#[test]
fn unsupported_types_answer_unsupp() {
    let img = Image::new(4096);
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    header(&drv, 11 /* DISCARD */, 0);
    drv.add(&[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), UNSUPP);
}

#[test]
fn wrong_direction_descriptors_fail() {
    let img = Image::new(4096);
    let before = img.contents();
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    drv.write(DATA, &[0x11; 512]);
    // A read whose data buffer is device-readable.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    assert_eq!(drv.read(DATA, 512), [0x11; 512], "nothing read into it");
    // A write whose data buffer is device-writable.
    header(&drv, VIRTIO_BLK_T_OUT, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    // A device-readable descriptor after a device-writable one.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), r(DATA + 512, 16), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), IOERR);
    // A device-readable status: nowhere to answer, the request is dropped.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), r(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used().last().unwrap().1, 0);
    assert_eq!(status(&drv), 0xee);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
    assert_eq!(img.contents(), before);
}

#[test]
fn descriptors_outside_ram_fail() {
    let img = Image::new(4096);
    let before = img.contents();
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    // Data outside RAM, and data straddling its end.
    for (addr, len) in [(OUTSIDE, 512), (crate::backends::testutil::RAM - 256, 512)] {
        header(&drv, VIRTIO_BLK_T_IN, 0);
        drv.add(&[r(HDR, 16), w(addr, len), w(STATUS, 1)]);
        run(&disk, &mut drv, &c);
        assert_eq!(drv.used()[0].1, 1);
        assert_eq!(status(&drv), IOERR);
        header(&drv, VIRTIO_BLK_T_OUT, 0);
        drv.add(&[r(HDR, 16), r(addr, len), w(STATUS, 1)]);
        run(&disk, &mut drv, &c);
        assert_eq!(status(&drv), IOERR);
    }
    // An address that wraps around.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(u64::MAX - 100, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 1);
    assert_eq!(status(&drv), IOERR);
    // The status byte outside RAM: dropped.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(OUTSIDE, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 0);
    // The header outside RAM.
    drv.add(&[r(OUTSIDE, 16), w(DATA, 512), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 1);
    assert_eq!(status(&drv), IOERR);
    // An indirect table outside RAM: no chain at all, dropped.
    let head = drv.chain(&[r(0, 0)]);
    drv.store(head, OUTSIDE, 48, VRING_DESC_F_INDIRECT as u16, 0);
    drv.publish(head);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used(), vec![(u32::from(head), 0)]);
    assert_eq!(img.contents(), before);
    assert_eq!(c.errors.load(Ordering::Relaxed), 8);
}

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

#[test]
fn looping_and_overlong_chains_are_dropped() {
    let img = Image::new(4096);
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    header(&drv, VIRTIO_BLK_T_IN, 0);
    // 0 → 1 → 2 → 1 → …
    drv.store(0, HDR, 16, NEXT, 1);
    drv.store(1, DATA, 512, NEXT | WRITE, 2);
    drv.store(2, STATUS, 1, NEXT | WRITE, 1);
    drv.publish(0);
    // A next index outside the table.
    drv.store(3, HDR, 16, NEXT, 200);
    drv.publish(3);
    // A head index outside the table: cannot even be returned.
    drv.publish(999);
    let o = run(&disk, &mut drv, &c);
    assert_eq!(o.used, 2);
    assert_eq!(drv.used(), vec![(0, 0), (3, 0)]);
    assert_eq!(status(&drv), 0xee, "no status for a broken chain");
    assert_eq!(c.errors.load(Ordering::Relaxed), 3);

    // More descriptors than a request may have (in a 256-entry queue).
    let mut drv = Driver::new(&m, 256);
    header(&drv, VIRTIO_BLK_T_IN, 0);
    let mut descs = vec![r(HDR, 16)];
    descs.extend((0..MAX_DESCRIPTORS).map(|_| w(DATA, 512)));
    descs.push(w(STATUS, 1));
    drv.add(&descs);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 0);
    assert_eq!(status(&drv), 0xee);

    // Fewer descriptors, but more data than a request may carry (the
    // descriptors overlap, so it fits in the guest's 1 MiB).
    let mut descs = vec![r(HDR, 16)];
    descs.extend((0..SEG_MAX + 1).map(|_| w(DATA, SIZE_MAX)));
    descs.push(w(STATUS, 1));
    drv.add(&descs);
    run(&disk, &mut drv, &c);
    assert_eq!(drv.used()[0].1, 1);
    assert_eq!(status(&drv), IOERR);

    // A data descriptor larger than size_max.
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, SIZE_MAX + 512), w(STATUS, 1)]);
    let big = Image::new(4 * SIZE_MAX as usize);
    big.disk(false).process_queue(&mut drv.q, &m, &c).unwrap();
    assert_eq!(status(&drv), IOERR);
}

#[test]
fn chain_walk_reports_how_it_ended() {
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    drv.add(&[r(HDR, 16), w(OUTSIDE, 8), w(STATUS, 1)]);
    let chain = drv.q.iter(&m).unwrap().next().unwrap();
    let walk = chain::walk(&m, chain, 8);
    assert_eq!(walk.end, chain::End::Complete);
    assert_eq!(
        walk.check(1 << 20),
        Err(ChainError::OutsideRam {
            index: 1,
            addr: OUTSIDE,
            len: 8
        })
    );
    assert_eq!(walk.status_byte(), Some(GuestAddress(STATUS)));
    drv.add(&[r(HDR, 16), w(DATA, 8), w(STATUS, 1)]);
    let chain = drv.q.iter(&m).unwrap().next().unwrap();
    assert_eq!(chain::walk(&m, chain, 2).end, chain::End::TooMany);
}

#[test]
fn broken_queues_are_reported() {
    let img = Image::new(4096);
    let disk = img.disk(false);
    let m = mem();
    let c = Counters::default();

    // The available index jumps more than the queue size ahead.
    let mut drv = Driver::new(&m, 16);
    header(&drv, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    drv.set_avail_idx(17);
    assert!(matches!(
        disk.process_queue(&mut drv.q, &m, &c),
        Err(QueueError::AvailIndex)
    ));

    // Rings outside guest RAM (or straddling its end).
    for addr in [OUTSIDE, crate::backends::testutil::RAM - 64] {
        let mut drv = Driver::new(&m, 16);
        drv.q.try_set_used_ring_address(GuestAddress(addr)).unwrap();
        assert!(matches!(
            disk.process_queue(&mut drv.q, &m, &c),
            Err(QueueError::Invalid)
        ));
        let mut drv = Driver::new(&m, 16);
        drv.q
            .try_set_desc_table_address(GuestAddress(addr & !15))
            .unwrap();
        assert!(matches!(
            disk.process_queue(&mut drv.q, &m, &c),
            Err(QueueError::Invalid)
        ));
    }
}

#[test]
fn event_idx_suppresses_and_requests_notifications() {
    let img = Image::new(4096);
    let disk = img.disk(false);
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    drv.event_idx();
    let c = Counters::default();
    // The driver wants an interrupt only after used index 5.
    drv.set_used_event(5);
    for _ in 0..3 {
        header(&drv, VIRTIO_BLK_T_FLUSH, 0);
        drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    }
    let o = run(&disk, &mut drv, &c);
    assert_eq!(
        o,
        Outcome {
            used: 3,
            notify: false
        }
    );
    // The device asks to be kicked for the next request.
    assert_eq!(drv.avail_event(), 3);
    // Now it wants one at used index 3 → 4.
    drv.set_used_event(3);
    header(&drv, VIRTIO_BLK_T_FLUSH, 0);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    let o = run(&disk, &mut drv, &c);
    assert_eq!(
        o,
        Outcome {
            used: 1,
            notify: true
        }
    );
    assert_eq!(drv.avail_event(), 4);
    // Without EVENT_IDX every batch notifies.
    let mut drv = Driver::new(&m, 16);
    header(&drv, VIRTIO_BLK_T_FLUSH, 0);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    assert!(run(&disk, &mut drv, &c).notify);
    // Nothing done, nothing to notify.
    assert_eq!(run(&disk, &mut drv, &c), Outcome::default());
}

#[test]
fn direct_io_when_the_file_system_allows_it() {
    let img = Image::new(64 * 1024);
    let disk = match Disk::open(&img.path, false, true, "d") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping: O_DIRECT not supported here: {e}");
            return;
        }
    };
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let c = Counters::default();
    drv.write(DATA, &[0x77; 4096]);
    header(&drv, VIRTIO_BLK_T_OUT, 8);
    drv.add(&[r(HDR, 16), r(DATA, 4096), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), OK);
    // 512-byte aligned but not 4 KiB aligned: works either way.
    header(&drv, VIRTIO_BLK_T_IN, 9);
    drv.add(&[r(HDR, 16), w(DATA + 8192, 1024), w(STATUS, 1)]);
    run(&disk, &mut drv, &c);
    assert_eq!(status(&drv), OK);
    assert_eq!(drv.read(DATA + 8192, 1024), [0x77; 1024]);
    assert_eq!(img.contents()[4096..8192], [0x77; 4096]);
}
