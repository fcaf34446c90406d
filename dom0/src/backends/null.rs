//! The null device: virtio-blk on the driver's side, nothing behind it.
//!
//! Every well-formed request completes at once with status OK and no file
//! is touched: what is left is the cost of the ring itself (descriptor
//! walks, the used ring, kicks and interrupts), which is what the ring
//! benchmark (`bench/`) measures. Requests are checked exactly as the
//! real virtio-blk device checks them ([`super::blk::parse`]), so a
//! malformed one still gets IOERR or is dropped.
//!
//! Two knobs:
//! - `touch_data`: a read fills the driver's buffers (with zeros) and a
//!   write reads them into a scratch buffer, one copy per request as a
//!   memory-speed disk would make; without it only the status byte is
//!   written.
//! - `poll`: after the queue runs dry the worker keeps looking at the
//!   available ring for this long, with notifications off (the
//!   VRING_USED_F_NO_NOTIFY flag, or with EVENT_IDX an `avail_event` left
//!   behind), before it turns them back on and sleeps on the kick eventfd.
//!   A driver that keeps submitting then never kicks. This lives here only:
//!   the other devices run the plain loop of `queue::run`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::blk::{self, Op, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
use super::chain;
use super::queue::{Counters, Outcome, QueueError};
use super::Mem;

/// The GET_ID answer of every null device.
const SERIAL: &[u8] = b"splitpv-null";

/// A null virtio-blk device.
#[derive(Debug)]
pub(crate) struct NullDisk {
    capacity_sectors: u64,
    touch_data: bool,
    poll: Duration,
    /// Zeros for reads, room for writes (one worker thread: never
    /// contended).
    scratch: Mutex<Vec<u8>>,
}

impl NullDisk {
    pub fn new(capacity_sectors: u64, touch_data: bool, poll: Duration) -> NullDisk {
        NullDisk {
            capacity_sectors,
            touch_data,
            poll,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// How long the worker polls after the queue runs dry.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// The device feature bits (virtio-blk part): those of a writable blk
    /// device.
    pub fn features(&self) -> u64 {
        1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_SIZE_MAX | 1 << VIRTIO_BLK_F_FLUSH
    }

    /// The configuration space, laid out as the blk device's.
    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 36];
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// Serves the request queue once: everything available is completed.
    /// With `keep_polling` notifications stay off afterwards (the caller
    /// comes back soon); without it they are turned on again, with the
    /// usual re-check for requests that slipped in.
    pub fn process_queue(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
        keep_polling: bool,
    ) -> Result<Outcome, QueueError> {
        if !q.is_valid(mem) {
            return Err(QueueError::Invalid);
        }
        let mut used = 0u32;
        loop {
            q.disable_notification(mem)?;
            loop {
                let chain = q.iter(mem)?.next();
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let walk = chain::walk(mem, chain, blk::MAX_DESCRIPTORS);
                let len = self.handle(mem, &walk, counters);
                match q.add_used(mem, head, len) {
                    Ok(()) => used += 1,
                    Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                        tracing::debug!(head, "dropping a chain whose head index is out of range");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if keep_polling || !q.enable_notification(mem)? {
                break;
            }
        }
        let notify = used > 0 && q.needs_notification(mem)?;
        Ok(Outcome { used, notify })
    }

    /// Completes one request; returns the bytes written into the chain.
    fn handle(&self, mem: &Mem, walk: &chain::Walk, counters: &Counters) -> u32 {
        const OK: u8 = VIRTIO_BLK_S_OK as u8;
        Counters::add(&counters.requests, 1);
        let (status_at, code, used) = match blk::parse(mem, walk, self.capacity_sectors) {
            Ok(plan) => {
                let len = chain::total(&plan.data);
                let (code, written) = match plan.op {
                    Op::Read { .. } if self.touch_data => {
                        self.with_scratch(len, |buf| match chain::scatter(mem, &plan.data, buf) {
                            Ok(n) => (OK, n),
                            Err(_) => (VIRTIO_BLK_S_IOERR as u8, 0),
                        })
                    }
                    Op::Write { .. } if self.touch_data => {
                        self.with_scratch(len, |buf| match chain::gather(mem, &plan.data, buf) {
                            Ok(()) => (OK, 0),
                            Err(_) => (VIRTIO_BLK_S_IOERR as u8, 0),
                        })
                    }
                    // Untouched buffers: the driver gets whatever was there.
                    Op::Read { .. } => (OK, len),
                    Op::Write { .. } | Op::Flush => (OK, 0),
                    Op::GetId => {
                        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
                        id[..SERIAL.len()].copy_from_slice(SERIAL);
                        match chain::scatter(mem, &plan.data, &id) {
                            Ok(n) => (OK, n),
                            Err(_) => (VIRTIO_BLK_S_IOERR as u8, 0),
                        }
                    }
                    Op::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP as u8, 0),
                };
                if code == OK {
                    Counters::add(&counters.bytes, len as u64);
                } else {
                    counters.error();
                }
                (Some(plan.status), code, written + 1)
            }
            Err(bad) => {
                tracing::debug!(head = walk.head, error = %bad.error, "refusing a request to the null device");
                counters.error();
                (bad.status, bad.code, 1)
            }
        };
        blk::complete(mem, status_at, code, used, counters)
    }

    fn with_scratch<R>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() < len {
            buf.resize(len, 0);
        }
        f(&mut buf[..len])
    }
}

/// The deadline of a polling period that starts now (`None`: no polling).
pub(crate) fn poll_deadline(poll: Duration) -> Option<Instant> {
    (!poll.is_zero()).then(|| Instant::now() + poll)
}

/// Sectors of a null device of `bytes` bytes (a tail shorter than a
/// sector is not addressable).
pub(crate) fn sectors(bytes: u64) -> u64 {
    bytes / SECTOR_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::testutil::{mem, r, w, Driver, BUF};
    use std::sync::atomic::Ordering;
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};

    const HDR: u64 = BUF;
    const DATA: u64 = BUF + 0x1000;
    const STATUS: u64 = BUF + 0x800;
    const OK: u8 = VIRTIO_BLK_S_OK as u8;

    fn header(drv: &Driver, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        drv.write(HDR, &h);
        drv.write(STATUS, &[0xee]);
    }

    #[test]
    fn reads_writes_and_flushes_complete_with_ok() {
        for touch in [false, true] {
            let dev = NullDisk::new(sectors(1 << 20), touch, Duration::ZERO);
            let m = mem();
            let mut drv = Driver::new(&m, 16);
            let c = Counters::default();
            drv.write(DATA, &[0x5a; 4096]);
            header(&drv, VIRTIO_BLK_T_IN, 8);
            let head = drv.add(&[r(HDR, 16), w(DATA, 4096), w(STATUS, 1)]);
            let o = dev.process_queue(&mut drv.q, drv.mem, &c, false).unwrap();
            assert_eq!(o.used, 1);
            assert_eq!(drv.used(), vec![(u32::from(head), 4097)]);
            assert_eq!(drv.read(STATUS, 1)[0], OK);
            // Touched: zeros; untouched: what the driver left there.
            let want = if touch { 0 } else { 0x5a };
            assert!(drv.read(DATA, 4096).iter().all(|&b| b == want));

            header(&drv, VIRTIO_BLK_T_OUT, 16);
            drv.add(&[r(HDR, 16), r(DATA, 4096), w(STATUS, 1)]);
            assert_eq!(
                dev.process_queue(&mut drv.q, drv.mem, &c, false)
                    .unwrap()
                    .used,
                1
            );
            assert_eq!(drv.read(STATUS, 1)[0], OK);
            header(&drv, VIRTIO_BLK_T_FLUSH, 0);
            drv.add(&[r(HDR, 16), w(STATUS, 1)]);
            assert_eq!(
                dev.process_queue(&mut drv.q, drv.mem, &c, false)
                    .unwrap()
                    .used,
                1
            );
            assert_eq!(drv.read(STATUS, 1)[0], OK);
            assert_eq!(c.requests.load(Ordering::Relaxed), 3);
            assert_eq!(c.bytes.load(Ordering::Relaxed), 8192);
            assert_eq!(c.errors.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn requests_beyond_the_capacity_get_ioerr() {
        let dev = NullDisk::new(16, false, Duration::ZERO);
        let m = mem();
        let mut drv = Driver::new(&m, 16);
        let c = Counters::default();
        header(&drv, VIRTIO_BLK_T_IN, 12);
        drv.add(&[r(HDR, 16), w(DATA, 4096), w(STATUS, 1)]);
        dev.process_queue(&mut drv.q, drv.mem, &c, false).unwrap();
        assert_eq!(drv.read(STATUS, 1)[0], VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(c.errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn polling_keeps_notifications_off() {
        let dev = NullDisk::new(64, false, Duration::from_micros(50));
        let m = mem();
        let mut drv = Driver::new(&m, 16);
        drv.event_idx();
        let c = Counters::default();
        header(&drv, VIRTIO_BLK_T_IN, 0);
        drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
        dev.process_queue(&mut drv.q, drv.mem, &c, true).unwrap();
        // avail_event was not moved past the request: the next publish
        // does not cross it, so the driver does not kick.
        assert_eq!(drv.avail_event(), 0);
        dev.process_queue(&mut drv.q, drv.mem, &c, false).unwrap();
        assert_eq!(drv.avail_event(), 1);
    }

    #[test]
    fn config_reports_the_capacity() {
        let dev = NullDisk::new(2048, false, Duration::from_micros(50));
        assert_eq!(&dev.config()[0..8], &2048u64.to_le_bytes());
        assert_eq!(dev.poll(), Duration::from_micros(50));
        assert_eq!(poll_deadline(Duration::ZERO), None);
        assert!(poll_deadline(Duration::from_micros(1)).is_some());
    }
}
