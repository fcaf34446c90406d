//! `virtio-hostile`: malformed requests to a virtio-blk device, one at a
//! time on a freshly set-up queue, each followed by a kick and a bounded
//! wait; then a reset, a new setup and a valid read that must still work.
//! Last, a queue whose descriptor table lies outside guest RAM.
//!
//! A case passes if the device refused the request — answered with a
//! status other than OK, completed it without writing a status it must
//! not write, never completed it, or set DEVICE_NEEDS_RESET — and served
//! the valid read after the reset.

use super::args::VirtioArgs;
use super::blk::{Blk, RequestHeader};
use super::defs::{blk, ring::DESC_F_NEXT, ring::DESC_F_WRITE};
use super::ring::{Desc, QueueAddrs};
use super::transport::{deadline, Regs};
use super::workloads::{Platform, CHUNK_SECTORS};

/// The malformed requests, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// A read whose data descriptor points outside guest RAM.
    DescOutsideRam,
    /// header → data → header → …: a two-descriptor loop.
    ChainLoop,
    /// Every descriptor of the queue chained, the last pointing back to the
    /// second: more links than the queue has entries, no short cycle.
    ChainTooLong,
    /// A `next` index beyond the queue.
    NextOutOfRange,
    /// A write whose data descriptor is device-writable (must be readable).
    DataWrongDirection,
    /// A read whose status descriptor is not device-writable.
    StatusNotWritable,
    /// A well-formed read of the sector at the capacity.
    SectorBeyondCapacity,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::DescOutsideRam,
        Case::ChainLoop,
        Case::ChainTooLong,
        Case::NextOutOfRange,
        Case::DataWrongDirection,
        Case::StatusNotWritable,
        Case::SectorBeyondCapacity,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Case::DescOutsideRam => "desc-outside-ram",
            Case::ChainLoop => "chain-loop",
            Case::ChainTooLong => "chain-too-long",
            Case::NextOutOfRange => "next-out-of-range",
            Case::DataWrongDirection => "data-wrong-direction",
            Case::StatusNotWritable => "status-not-writable",
            Case::SectorBeyondCapacity => "sector-beyond-capacity",
        }
    }
}

/// What the device did with a hostile request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed, with this status byte (0xff: left untouched).
    Completed { status: u8, len: u32 },
    /// Completed another head than the one submitted.
    WrongHead { id: u32 },
    /// No completion within the wait.
    NoCompletion,
    /// DEVICE_NEEDS_RESET (or FAILED) in the status register.
    NeedsReset { status: u32 },
}

/// The status byte's value before the device writes it.
pub const UNTOUCHED: u8 = 0xff;

impl Outcome {
    /// Whether the device refused the request of `case`.
    pub fn refused(self, case: Case) -> bool {
        match self {
            Outcome::NoCompletion | Outcome::NeedsReset { .. } => true,
            // A status written into a buffer the device may only read.
            Outcome::Completed { status, .. } if case == Case::StatusNotWritable => status == UNTOUCHED,
            Outcome::Completed { status, .. } => status != blk::S_OK,
            Outcome::WrongHead { .. } => false,
        }
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Outcome::Completed { status: UNTOUCHED, len } => write!(out, "completed without a status (used length {len})"),
            Outcome::Completed { status, len } => write!(out, "completed with status {} (used length {len})", blk::status_name(status)),
            Outcome::WrongHead { id } => write!(out, "completed descriptor {id}, which was not submitted"),
            Outcome::NoCompletion => write!(out, "no completion"),
            Outcome::NeedsReset { status } => write!(out, "DEVICE_NEEDS_RESET (status {status:#x})"),
        }
    }
}

/// Waits up to `wait_ms` for the completion of head 0 or for
/// DEVICE_NEEDS_RESET.
fn await_outcome<P: Platform>(p: &P, device: &mut Blk<P::Regs>, wait_ms: u64) -> Outcome {
    let end = deadline(p, wait_ms);
    let mut next_status_check = 0;
    loop {
        if let Some(used) = device.queue_mut().pop_used_raw() {
            if used.id != 0 {
                return Outcome::WrongHead { id: used.id };
            }
            return Outcome::Completed { status: device.status_byte(0), len: used.len };
        }
        let now = p.now();
        if now >= next_status_check {
            next_status_check = deadline(p, 5);
            if device.transport().needs_reset() {
                return Outcome::NeedsReset { status: device.transport().status() };
            }
        }
        if now > end {
            return Outcome::NoCompletion;
        }
        p.relax();
    }
}

/// Writes the descriptors of `case` into the (fresh) queue, head 0, and
/// publishes and kicks it. `scratch` is a sector-sized buffer in RAM.
fn post_case<R: Regs>(device: &mut Blk<R>, case: Case, scratch: u64, outside_ram: u64) {
    let capacity = device.config().capacity;
    let size = device.queue().size();
    let (kind, sector) = match case {
        Case::DataWrongDirection => (blk::T_OUT, 0),
        Case::SectorBeyondCapacity => (blk::T_IN, capacity),
        _ => (blk::T_IN, 0),
    };
    device.prepare_slot(0, RequestHeader { kind, sector });
    let header = |next| Desc { addr: device.header_addr(0), len: 16, flags: DESC_F_NEXT, next };
    let header_desc = header(1);
    let status_addr = device.status_addr(0);
    let sector_bytes = blk::SECTOR_SIZE as u32;
    let writable_data = |next| Desc { addr: scratch, len: sector_bytes, flags: DESC_F_WRITE | DESC_F_NEXT, next };
    let status = Desc { addr: status_addr, len: 1, flags: DESC_F_WRITE, next: 0 };
    let queue = device.queue_mut();
    match case {
        Case::DescOutsideRam => {
            queue.write_desc_raw(0, header_desc);
            queue.write_desc_raw(1, Desc { addr: outside_ram, ..writable_data(2) });
            queue.write_desc_raw(2, status);
        }
        Case::ChainLoop => {
            queue.write_desc_raw(0, header_desc);
            queue.write_desc_raw(1, writable_data(0));
        }
        Case::ChainTooLong => {
            queue.write_desc_raw(0, header_desc);
            for index in 1..size {
                let next = if index + 1 == size { 1 } else { index + 1 };
                queue.write_desc_raw(index, writable_data(next));
            }
        }
        Case::NextOutOfRange => {
            queue.write_desc_raw(0, Desc { next: size + 7, ..header_desc });
        }
        Case::DataWrongDirection => {
            // The data would be the sector's own contents (read before), so
            // a device that takes the write anyway changes nothing.
            queue.write_desc_raw(0, header_desc);
            queue.write_desc_raw(1, writable_data(2));
            queue.write_desc_raw(2, status);
        }
        Case::StatusNotWritable => {
            queue.write_desc_raw(0, header_desc);
            queue.write_desc_raw(1, writable_data(2));
            queue.write_desc_raw(2, Desc { flags: 0, ..status });
        }
        Case::SectorBeyondCapacity => {
            queue.write_desc_raw(0, header_desc);
            queue.write_desc_raw(1, writable_data(2));
            queue.write_desc_raw(2, status);
        }
    }
    queue.push_avail_raw(0);
    queue.publish();
    device.notify();
}

/// Resets and sets the device up again, then reads sector 0 and compares
/// it with `expected`. An error text if any of it fails.
fn recover<P: Platform>(p: &P, device: &mut Blk<P::Regs>, scratch: &mut [u8], expected: &[u8]) -> Result<(), &'static str> {
    if device.reinit(p).is_err() {
        return Err("the device did not come up again after a reset");
    }
    scratch.fill(0x5a);
    if device.read(p, 0, scratch).is_err() {
        return Err("a valid read failed after the reset");
    }
    if scratch != expected {
        return Err("a valid read after the reset returned other data than before");
    }
    Ok(())
}

/// `virtio-hostile`.
pub fn hostile_workload<P: Platform>(p: &P, args: &VirtioArgs<'_>) -> bool {
    let mut memory = p.dma();
    let (slot, regs) = match super::workloads::find_device(p, super::defs::device_id::BLOCK, args.blk_disk) {
        Ok(found) => found,
        Err(count) => {
            p.line(format_args!("VIRTIO-HOSTILE FAIL: no virtio-blk device number {} ({count} found)", args.blk_disk));
            return false;
        }
    };
    let mut device = match Blk::new(regs, p, &mut memory, args.event_idx) {
        Ok(device) => device,
        Err(error) => {
            p.line(format_args!("VIRTIO-HOSTILE FAIL: blk in slot {slot}: {error}"));
            return false;
        }
    };
    device.timeout_ms = args.timeout_ms;
    let scratch_region = memory.take(CHUNK_SECTORS * blk::SECTOR_SIZE, 4096).expect("DMA pool too small");
    // SAFETY: the workload's own memory; the device writes it only during
    // requests, and every slice use below happens between them (or after
    // a reset).
    let scratch = unsafe { &mut scratch_region.bytes_mut()[..blk::SECTOR_SIZE] };
    let mut sector0 = [0u8; blk::SECTOR_SIZE];
    if let Err(error) = device.read(p, 0, scratch) {
        p.line(format_args!("VIRTIO-HOSTILE FAIL: reading sector 0 before the hostile requests: {error}"));
        return false;
    }
    sector0.copy_from_slice(scratch);
    let outside_ram = p.outside_ram();
    p.line(format_args!(
        "VIRTIO-HOSTILE blk in slot {slot}: capacity {} sectors, queue size {}, waiting {} ms per request, outside-RAM address {outside_ram:#x}",
        device.config().capacity,
        device.queue().size(),
        args.hostile_wait_ms
    ));
    let mut failures = 0;
    let mut cases = 0;
    for case in Case::ALL {
        cases += 1;
        // A fresh queue for every case, its descriptor 0 the head.
        if let Err(error) = device.reinit(p) {
            p.line(format_args!("VIRTIO-HOSTILE {}: FAILED: the device did not come up: {error}", case.name()));
            failures += 1;
            continue;
        }
        // For the write case the data are sector 0's own contents.
        scratch.copy_from_slice(&sector0);
        post_case(&mut device, case, scratch_region.addr(), outside_ram);
        let outcome = await_outcome(p, &mut device, args.hostile_wait_ms);
        let refused = outcome.refused(case);
        let recovered = recover(p, &mut device, scratch, &sector0);
        let verdict = match (refused, recovered) {
            (true, Ok(())) => "refused; a valid read works after a reset",
            (false, _) => "FAILED: the device accepted it",
            (true, Err(why)) => why,
        };
        if !refused || recovered.is_err() {
            failures += 1;
        }
        let marker = if refused && recovered.is_err() { "FAILED: " } else { "" };
        p.line(format_args!("VIRTIO-HOSTILE {}: {outcome}; {marker}{verdict}", case.name()));
    }

    // A queue whose descriptor table is outside guest RAM.
    cases += 1;
    let name = "queue-outside-ram";
    let fresh = device.queue().addrs();
    let addrs = QueueAddrs { desc: outside_ram, ..fresh };
    let outcome = match device.reinit_with_queue_at(p, addrs) {
        Err(error) => QueueOutcome::SetupRefused(error),
        Ok(()) => {
            // A valid read in the driver's own table, which the device was
            // told is elsewhere: it cannot find it.
            let data = super::ring::Buf::writable(scratch_region.addr(), blk::SECTOR_SIZE);
            match device.submit(blk::T_IN, 0, Some(data)) {
                Ok(_) => {
                    device.queue_mut().publish();
                    device.notify();
                    QueueOutcome::Request(await_outcome(p, &mut device, args.hostile_wait_ms))
                }
                Err(_) => QueueOutcome::Request(Outcome::NoCompletion),
            }
        }
    };
    let refused = match outcome {
        QueueOutcome::SetupRefused(_) => true,
        QueueOutcome::Request(Outcome::NoCompletion | Outcome::NeedsReset { .. }) => true,
        QueueOutcome::Request(_) => false,
    };
    let recovered = recover(p, &mut device, scratch, &sector0);
    if !refused || recovered.is_err() {
        failures += 1;
    }
    let verdict = match (refused, recovered) {
        (true, Ok(())) => "refused; a valid read works after a reset",
        (false, _) => "FAILED: the device used a descriptor table outside guest RAM",
        (true, Err(why)) => why,
    };
    let marker = if refused && recovered.is_err() { "FAILED: " } else { "" };
    p.line(format_args!("VIRTIO-HOSTILE {name}: {outcome}; {marker}{verdict}"));

    if failures == 0 {
        p.line(format_args!("VIRTIO-HOSTILE PASS: all {cases} hostile requests refused, the device kept serving valid requests"));
        true
    } else {
        p.line(format_args!("VIRTIO-HOSTILE FAIL: {failures} of {cases} cases failed"));
        false
    }
}

/// What happened to the queue outside guest RAM.
#[derive(Clone, Copy, Debug)]
enum QueueOutcome {
    /// Setup or DRIVER_OK already failed.
    SetupRefused(super::transport::InitError),
    Request(Outcome),
}

impl core::fmt::Display for QueueOutcome {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QueueOutcome::SetupRefused(error) => write!(out, "setup refused: {error}"),
            QueueOutcome::Request(outcome) => write!(out, "DRIVER_OK accepted, a request: {outcome}"),
        }
    }
}
