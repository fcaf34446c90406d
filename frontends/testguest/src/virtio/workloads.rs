//! The virtio workloads (`workload=virtio-*`), written against a
//! [`Platform`] so that the host tests can run them on simulated devices.
//! Every workload prints its findings as `VIRTIO…` lines and ends with one
//! `VIRTIO-<MODE> PASS …` or `VIRTIO-<MODE> FAIL: …` line; it returns
//! whether it passed.

use core::fmt::{self, Write};

use super::args::{BenchOp, NetRole, VirtioArgs};
use super::blk::{Blk, BlkError};
use super::console::Console;
use super::defs::{blk, device_id};
use super::net::{Mac, Net, TestFrame, BROADCAST, FRAME_BYTES, KIND_PING, KIND_PONG, MAX_FRAME};
use super::pattern;
use super::ring::DmaRegion;
use super::transport::{deadline, probe, Clock, Probe, Regs, Transport};

/// What the workloads need from their surroundings.
pub trait Platform: Clock {
    type Regs: Regs;
    /// Number of virtio-mmio slots.
    fn slot_count(&self) -> u32;
    /// Guest-physical address of slot `index` (for the listing).
    fn slot_address(&self, index: u32) -> u64;
    /// The register block of slot `index`.
    fn slot(&self, index: u32) -> Self::Regs;
    /// Prints one line.
    fn line(&self, args: fmt::Arguments<'_>);
    /// Memory the devices can reach, for queues and buffers (page-aligned;
    /// at least [`DMA_BYTES`]).
    fn dma(&self) -> DmaRegion;
    /// An address that is not guest RAM (nor anything else a device can
    /// reach), page-aligned, with at least 1 MiB after it that is not
    /// either.
    fn outside_ram(&self) -> u64;
    /// The TSC rate, if known (for rates in the bench and net output).
    fn tsc_khz(&self) -> Option<u64>;
}

/// DMA memory the workloads need at most: one device plus the largest
/// bench buffer.
pub const DMA_BYTES: usize = 1 << 20;
/// Largest `bench.size`.
pub const BENCH_MAX_SIZE: u64 = 512 << 10;
/// Sectors per request of the virtio-blk workload.
pub const CHUNK_SECTORS: usize = 8;
const CHUNK_BYTES: usize = CHUNK_SECTORS * blk::SECTOR_SIZE;

macro_rules! say {
    ($p:expr, $($arg:tt)*) => {
        $p.line(format_args!($($arg)*))
    };
}

/// Prints the FAIL line and returns false.
macro_rules! fail {
    ($p:expr, $mode:literal, $($arg:tt)*) => {{
        $p.line(format_args!("VIRTIO-{} FAIL: {}", $mode, format_args!($($arg)*)));
        return false;
    }};
}

/// The `nth` device (0-based, in slot order) with `id`: its slot and
/// registers, or how many such devices there are.
pub fn find_device<P: Platform>(p: &P, id: u32, nth: u64) -> Result<(u32, P::Regs), u64> {
    let mut seen = 0;
    for slot in 0..p.slot_count() {
        let regs = p.slot(slot);
        if let Probe::Device { device_id, .. } = probe(&regs) {
            if device_id == id {
                if seen == nth {
                    return Ok((slot, regs));
                }
                seen += 1;
            }
        }
    }
    Err(seen)
}

/// `virtio-probe`: lists the slots; passes if there is at least one
/// device.
pub fn probe_workload<P: Platform>(p: &P) -> bool {
    let mut devices = 0;
    for slot in 0..p.slot_count() {
        let regs = p.slot(slot);
        let address = p.slot_address(slot);
        match probe(&regs) {
            Probe::Device { device_id, vendor_id } => {
                devices += 1;
                let features = Transport::new(regs).device_features();
                say!(
                    p,
                    "VIRTIO slot {slot} at {address:#x}: {} (device id {device_id}), vendor {vendor_id:#x}, features {features:#x}",
                    device_id::name(device_id)
                );
            }
            Probe::Empty => say!(p, "VIRTIO slot {slot} at {address:#x}: empty (device id 0)"),
            Probe::NotVirtio { magic } => say!(p, "VIRTIO slot {slot} at {address:#x}: no virtio-mmio device (magic {magic:#x})"),
            Probe::UnsupportedVersion { version, device_id } => say!(
                p,
                "VIRTIO slot {slot} at {address:#x}: virtio-mmio version {version} (only 2 is supported), device id {device_id}"
            ),
        }
    }
    if devices == 0 {
        say!(p, "VIRTIO no devices");
        fail!(p, "PROBE", "no devices in {} slots", p.slot_count());
    }
    say!(p, "VIRTIO-PROBE PASS: {devices} device(s)");
    true
}

/// Brings up the `nth` blk device, printing its facts; `None` (after a
/// FAIL line) if there is none or it does not come up.
fn open_blk<P: Platform>(p: &P, mode: &str, nth: u64, event_idx: bool, timeout_ms: u64, memory: &mut DmaRegion) -> Option<(u32, Blk<P::Regs>)> {
    let (slot, regs) = match find_device(p, device_id::BLOCK, nth) {
        Ok(found) => found,
        Err(count) => {
            say!(p, "VIRTIO-{mode} FAIL: no virtio-blk device number {nth} ({count} found)");
            return None;
        }
    };
    let mut device = match Blk::new(regs, p, memory, event_idx) {
        Ok(device) => device,
        Err(error) => {
            say!(p, "VIRTIO-{mode} FAIL: blk in slot {slot}: {error}");
            return None;
        }
    };
    device.timeout_ms = timeout_ms;
    let config = *device.config();
    say!(
        p,
        "VIRTIO-{mode} slot {slot}: capacity {} sectors ({} KiB), read-only {}, flush {}, event-idx {}, queue size {}, features {:#x} of {:#x}",
        config.capacity,
        config.capacity / 2,
        config.read_only as u8,
        config.flush as u8,
        device.queue().event_idx() as u8,
        device.queue().size(),
        device.transport().features(),
        device.transport().offered()
    );
    Some((slot, device))
}

/// `virtio-blk`.
pub fn blk_workload<P: Platform>(p: &P, args: &VirtioArgs<'_>) -> bool {
    let mut memory = p.dma();
    let Some((_, mut device)) = open_blk(p, "BLK", args.blk_disk, args.event_idx, args.timeout_ms, &mut memory) else {
        return false;
    };
    let capacity = device.config().capacity;
    let buffer = memory.take(CHUNK_BYTES, 4096).expect("DMA pool too small");
    // SAFETY: the buffer is the workload's; the device touches it only
    // during the requests below, each waited for, while no slice is used.
    let data = unsafe { buffer.bytes_mut() };

    let mut id = [0u8; blk::ID_BYTES];
    match device.get_id(p, &mut id) {
        Ok(len) => say!(p, "VIRTIO-BLK id \"{}\"", Printable(&id[..len])),
        Err(BlkError::Status(blk::S_UNSUPP)) => say!(p, "VIRTIO-BLK id: GET_ID unsupported (UNSUPP)"),
        Err(error) => fail!(p, "BLK", "GET_ID: {error}"),
    }

    match device.read(p, capacity, &mut data[..blk::SECTOR_SIZE]) {
        Err(BlkError::Status(blk::S_IOERR)) => say!(p, "VIRTIO-BLK read beyond capacity (sector {capacity}): IOERR, as expected"),
        Ok(()) => fail!(p, "BLK", "reading sector {capacity}, beyond the capacity, succeeded"),
        Err(error) => fail!(p, "BLK", "reading sector {capacity}, beyond the capacity, gave {error}, expected IOERR"),
    }

    if args.blk_expect_ro {
        if let Err(error) = device.read(p, 0, &mut data[..blk::SECTOR_SIZE]) {
            fail!(p, "BLK", "reading sector 0: {error}");
        }
        // The sector's own contents: harmless should the write go through.
        match device.write(p, 0, &data[..blk::SECTOR_SIZE]) {
            Err(BlkError::Status(blk::S_IOERR)) => say!(
                p,
                "VIRTIO-BLK write to the read-only disk: IOERR, as expected (VIRTIO_BLK_F_RO {})",
                if device.config().read_only { "offered" } else { "NOT offered" }
            ),
            Ok(()) => fail!(p, "BLK", "a write to the read-only disk succeeded"),
            Err(error) => fail!(p, "BLK", "a write to the read-only disk gave {error}, expected IOERR"),
        }
    }

    let sectors = args.blk_sectors.min(capacity);
    if sectors < args.blk_sectors {
        say!(p, "VIRTIO-BLK only {sectors} of blk.sectors={} sectors exist", args.blk_sectors);
    }
    if let Some(seed) = args.blk_write {
        for first in (0..sectors).step_by(CHUNK_SECTORS) {
            let count = (sectors - first).min(CHUNK_SECTORS as u64) as usize;
            let chunk = &mut data[..count * blk::SECTOR_SIZE];
            pattern::fill(seed, first, chunk);
            if let Err(error) = device.write(p, first, chunk) {
                fail!(p, "BLK", "writing sectors {first}..{}: {error}", first + count as u64);
            }
        }
        if device.config().flush {
            if let Err(error) = device.flush(p) {
                fail!(p, "BLK", "flush: {error}");
            }
            say!(p, "VIRTIO-BLK wrote {sectors} sectors with seed {seed}, flushed");
        } else {
            say!(p, "VIRTIO-BLK wrote {sectors} sectors with seed {seed} (no VIRTIO_BLK_F_FLUSH: not flushed)");
        }
    }
    let check_seed = args.blk_verify.or(args.blk_write);
    for first in (0..sectors).step_by(CHUNK_SECTORS) {
        let count = (sectors - first).min(CHUNK_SECTORS as u64) as usize;
        let chunk = &mut data[..count * blk::SECTOR_SIZE];
        chunk.fill(0xa5);
        if let Err(error) = device.read(p, first, chunk) {
            fail!(p, "BLK", "reading sectors {first}..{}: {error}", first + count as u64);
        }
        if let Some(seed) = check_seed {
            if let Err((sector, mismatch)) = pattern::check(seed, first, chunk) {
                fail!(p, "BLK", "sector {sector} does not hold the pattern of seed {seed}: it holds {mismatch}");
            }
        }
    }
    match (args.blk_write, args.blk_verify) {
        (Some(seed), None) => say!(p, "VIRTIO-BLK read back {sectors} sectors: pattern of seed {seed} intact"),
        (_, Some(seed)) => say!(p, "VIRTIO-BLK verified {sectors} sectors: pattern of seed {seed} intact"),
        (None, None) => say!(p, "VIRTIO-BLK read {sectors} sectors"),
    }
    if device.transport().needs_reset() {
        fail!(p, "BLK", "the device set DEVICE_NEEDS_RESET (status {:#x})", device.transport().status());
    }
    say!(p, "VIRTIO-BLK PASS: capacity {capacity} sectors, {sectors} sectors checked, {} kicks", device.kicks);
    true
}

/// `virtio-net`.
pub fn net_workload<P: Platform>(p: &P, args: &VirtioArgs<'_>) -> bool {
    let (slot, regs) = match find_device(p, device_id::NET, 0) {
        Ok(found) => found,
        Err(_) => fail!(p, "NET", "no virtio-net device"),
    };
    let mut memory = p.dma();
    let fallback_mac = [0x52, 0x54, 0x00, 0x53, 0x50, slot as u8];
    let mut device = match Net::new(regs, p, &mut memory, args.event_idx, fallback_mac) {
        Ok(device) => device,
        Err(error) => fail!(p, "NET", "net in slot {slot}: {error}"),
    };
    device.timeout_ms = args.timeout_ms;
    let mac = device.mac();
    let role = match args.net_role {
        NetRole::Ping => "ping",
        NetRole::Pong => "pong",
    };
    say!(
        p,
        "VIRTIO-NET slot {slot}: mac {} ({}), role {role}, peer {}, count {}, features {:#x}",
        Mac(mac),
        if device.mac_from_device { "from the device" } else { "no VIRTIO_NET_F_MAC, made up" },
        Mac(args.net_peer),
        args.net_count,
        device.transport().features()
    );
    let mut frame = [0u8; MAX_FRAME];
    let mut ignored = 0u64;
    match args.net_role {
        NetRole::Ping => {
            let (mut min, mut max, mut sum) = (u64::MAX, 0u64, 0u64);
            for seq in 0..args.net_count {
                let seq = seq as u32;
                let mut ping = TestFrame { dst: args.net_peer, src: mac, kind: KIND_PING, seq, stamp: p.now() };
                let mut bytes = [0u8; FRAME_BYTES];
                let len = ping.encode(&mut bytes);
                if let Err(error) = device.send(p, &bytes[..len]) {
                    fail!(p, "NET", "sending frame {seq}: {error}");
                }
                // Until the first echo the peer may still be booting: resend.
                let first = seq == 0;
                let wait_ms = if first { args.net_wait_ms } else { args.timeout_ms };
                let end = deadline(p, wait_ms);
                let resend = |device: &mut Net<P::Regs>| {
                    if !first {
                        return true;
                    }
                    ping.stamp = p.now();
                    let len = ping.encode(&mut bytes);
                    device.send(p, &bytes[..len]).is_ok()
                };
                let wanted = |test: &TestFrame| test.kind == KIND_PONG && test.seq == seq;
                match wait_test_frame(p, &mut device, mac, &mut frame, &mut ignored, end, wanted, resend) {
                    Ok(Some(echo)) => {
                        let rtt = p.now().saturating_sub(echo.stamp);
                        min = min.min(rtt);
                        max = max.max(rtt);
                        sum += rtt;
                    }
                    Ok(None) => fail!(p, "NET", "no echo of frame {seq} within {wait_ms} ms ({ignored} other frames ignored)"),
                    Err(why) => fail!(p, "NET", "waiting for the echo of frame {seq}: {why}"),
                }
            }
            let count = args.net_count.max(1);
            let avg = sum / count;
            let micros = p.tsc_khz().map(|khz| avg * 1000 / khz.max(1));
            say!(
                p,
                "VIRTIO-NET PASS ping: {} echoes, round trip cycles min {} avg {avg} max {max}{}, {} frames ignored, {} kicks",
                args.net_count,
                if args.net_count == 0 { 0 } else { min },
                OptionalMicros(micros),
                ignored,
                device.kicks
            );
            true
        }
        NetRole::Pong => {
            let mut echoed = 0u64;
            if args.net_count == 0 {
                if let Err(error) = device.flush_tx(p) {
                fail!(p, "NET", "the last echo did not leave: {error}");
            }
            say!(p, "VIRTIO-NET PASS pong: echoed 0 frames");
                return true;
            }
            let last = (args.net_count - 1) as u32;
            loop {
                let wait_ms = if echoed == 0 { args.net_wait_ms } else { args.timeout_ms };
                let end = deadline(p, wait_ms);
                let wanted = |test: &TestFrame| test.kind == KIND_PING;
                match wait_test_frame(p, &mut device, mac, &mut frame, &mut ignored, end, wanted, |_| true) {
                    Ok(Some(ping)) => {
                        let mut bytes = [0u8; FRAME_BYTES];
                        let len = ping.echo(mac).encode(&mut bytes);
                        if let Err(error) = device.send(p, &bytes[..len]) {
                            fail!(p, "NET", "echoing frame {}: {error}", ping.seq);
                        }
                        echoed += 1;
                        if ping.seq == last {
                            break;
                        }
                    }
                    Ok(None) => fail!(p, "NET", "no ping frame within {wait_ms} ms after {echoed} echoes ({ignored} other frames ignored)"),
                    Err(why) => fail!(p, "NET", "waiting for a ping: {why}"),
                }
            }
            if let Err(error) = device.flush_tx(p) {
                fail!(p, "NET", "the last echo did not leave: {error}");
            }
            say!(p, "VIRTIO-NET PASS pong: echoed {echoed} frames (up to sequence number {last}), {ignored} frames ignored, {} kicks", device.kicks);
            true
        }
    }
}

/// Receives until a test frame for `mac` (or broadcast) arrives that
/// `wanted` accepts, or the deadline `end` passes (`Ok(None)`); other
/// frames are counted in `ignored`. `resend` runs every 100 ms of waiting.
#[allow(clippy::too_many_arguments)]
fn wait_test_frame<P: Platform>(
    p: &P,
    device: &mut Net<P::Regs>,
    mac: [u8; 6],
    frame: &mut [u8],
    ignored: &mut u64,
    end: u64,
    wanted: impl Fn(&TestFrame) -> bool,
    mut resend: impl FnMut(&mut Net<P::Regs>) -> bool,
) -> Result<Option<TestFrame>, &'static str> {
    let mut next_resend = deadline(p, 100);
    loop {
        while let Some(received) = device.receive(frame) {
            let Ok(len) = received else { return Err("receive failed") };
            match TestFrame::decode(&frame[..len]) {
                Some(test) if (test.dst == mac || test.dst == BROADCAST) && wanted(&test) => return Ok(Some(test)),
                _ => *ignored += 1,
            }
        }
        let now = p.now();
        if now > end {
            return Ok(None);
        }
        if now > next_resend {
            next_resend = deadline(p, 100);
            if device.needs_reset() {
                return Err("the device set DEVICE_NEEDS_RESET");
            }
            if !resend(device) {
                return Err("resending failed");
            }
        }
        p.relax();
    }
}

/// `virtio-console`.
pub fn console_workload<P: Platform>(p: &P, args: &VirtioArgs<'_>) -> bool {
    let (slot, regs) = match find_device(p, device_id::CONSOLE, 0) {
        Ok(found) => found,
        Err(_) => fail!(p, "CONSOLE", "no virtio-console device"),
    };
    let mut memory = p.dma();
    let mut device = match Console::new(regs, p, &mut memory, args.event_idx) {
        Ok(device) => device,
        Err(error) => fail!(p, "CONSOLE", "console in slot {slot}: {error}"),
    };
    device.timeout_ms = args.timeout_ms;
    let mut text = LineBuffer::new();
    let _ = writeln!(text, "SPLITPV-VCONSOLE hello from {}", Printable(args.console_name));
    if let Err(error) = device.write(p, text.bytes()) {
        fail!(p, "CONSOLE", "writing the hello line: {error}");
    }
    say!(p, "VIRTIO-CONSOLE slot {slot}: wrote \"SPLITPV-VCONSOLE hello from {}\", waiting {} ms for a line of input", Printable(args.console_name), args.console_wait_ms);
    let mut line = LineInput::new();
    let mut chunk = [0u8; super::console::BUFFER_BYTES];
    let end = deadline(p, args.console_wait_ms);
    'receive: loop {
        while let Some(received) = device.read(&mut chunk) {
            let count = match received {
                Ok(count) => count,
                Err(error) => fail!(p, "CONSOLE", "reading: {error}"),
            };
            if line.feed(&chunk[..count]) {
                break 'receive;
            }
        }
        if p.now() > end {
            if device.needs_reset() {
                fail!(p, "CONSOLE", "the device set DEVICE_NEEDS_RESET");
            }
            fail!(p, "CONSOLE", "no line of input within {} ms ({} bytes of a partial line)", args.console_wait_ms, line.line().len());
        }
        p.relax();
    }
    let mut echo = LineBuffer::new();
    let _ = write!(echo, "SPLITPV-VCONSOLE echo: ");
    echo.push_bytes(line.line());
    echo.push_bytes(b"\n");
    if let Err(error) = device.write(p, echo.bytes()) {
        fail!(p, "CONSOLE", "writing the echo: {error}");
    }
    say!(p, "VIRTIO-CONSOLE PASS: echoed \"{}\"", Printable(line.line()));
    true
}

/// `virtio-bench`.
pub fn bench_workload<P: Platform>(p: &P, args: &VirtioArgs<'_>) -> bool {
    let size = args.bench_size;
    if size == 0 || size & (blk::SECTOR_SIZE as u64 - 1) != 0 || size > BENCH_MAX_SIZE {
        fail!(p, "BENCH", "bench.size={size} must be a multiple of 512 from 512 to {BENCH_MAX_SIZE}");
    }
    let mut memory = p.dma();
    let Some((_, mut device)) = open_blk(p, "BENCH", args.blk_disk, args.event_idx, args.timeout_ms, &mut memory) else {
        return false;
    };
    let Some(buffer) = memory.take(size as usize, 4096) else {
        fail!(p, "BENCH", "no room for a {size}-byte buffer");
    };
    let sectors_per_request = size / blk::SECTOR_SIZE as u64;
    let capacity = device.config().capacity;
    if capacity < sectors_per_request {
        fail!(p, "BENCH", "the disk ({capacity} sectors) is smaller than one request");
    }
    if args.bench_op == BenchOp::Write && device.config().read_only {
        fail!(p, "BENCH", "bench.op=write on a read-only disk");
    }
    // Two batches may be in flight.
    let most = (u64::from(device.queue().size()) / device.descriptors_for(size) / 2).max(1);
    let batch = args.bench_batch.clamp(1, most);
    if batch != args.bench_batch {
        say!(p, "VIRTIO-BENCH batch {} does not fit the queue of {}: using {batch}", args.bench_batch, device.queue().size());
    }
    let (kind, device_writes, op) = match args.bench_op {
        BenchOp::Read => (blk::T_IN, true, "read"),
        BenchOp::Write => (blk::T_OUT, false, "write"),
    };
    let slots = capacity / sectors_per_request;
    let count = args.bench_count;
    let kicks_before = device.kicks;
    let (mut submitted, mut completed, mut in_flight, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let start = p.now();
    let mut progress_deadline = deadline(p, args.timeout_ms);
    while completed < count {
        if in_flight <= batch && submitted < count {
            let n = batch.min(count - submitted);
            for _ in 0..n {
                let sector = (submitted % slots) * sectors_per_request;
                let data = super::ring::Buf { addr: buffer.addr(), len: size as u32, device_writes };
                if let Err(error) = device.submit(kind, sector, Some(data)) {
                    fail!(p, "BENCH", "submitting request {submitted}: {error}");
                }
                submitted += 1;
            }
            in_flight += n;
            batches += 1;
            device.kick();
        }
        let mut progressed = false;
        while let Some(completion) = device.poll() {
            match completion {
                Ok(done) if done.status == blk::S_OK => {}
                Ok(done) => fail!(p, "BENCH", "request {completed} completed with status {} ({})", done.status, blk::status_name(done.status)),
                Err(error) => fail!(p, "BENCH", "{error}"),
            }
            completed += 1;
            in_flight -= 1;
            progressed = true;
        }
        if progressed {
            progress_deadline = deadline(p, args.timeout_ms);
        } else if p.now() > progress_deadline {
            fail!(p, "BENCH", "no completion within {} ms ({completed} of {count} done, {in_flight} in flight)", args.timeout_ms);
        } else {
            p.relax();
        }
    }
    let cycles = p.now().saturating_sub(start).max(1);
    let kicks = device.kicks - kicks_before;
    let mut rate = LineBuffer::new();
    match p.tsc_khz() {
        Some(khz) => {
            let per_second = u128::from(count) * u128::from(khz) * 1000 / u128::from(cycles);
            let bytes_per_second = per_second * u128::from(size);
            let _ = write!(rate, "req_per_s={per_second} MiB_per_s={}", bytes_per_second >> 20);
        }
        None => {
            let _ = write!(rate, "req_per_s=unknown (TSC rate unknown)");
        }
    }
    say!(
        p,
        "VIRTIO-BENCH PASS: op={op} size={size} batch={batch} count={count} eventidx={} cycles={cycles} {} kicks={kicks} batches={batches}",
        device.queue().event_idx() as u8,
        Printable(rate.bytes())
    );
    true
}

/// Bytes shown as text: printable ASCII as is, the rest as `\xNN`.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            match byte {
                b'"' | b'\\' => write!(out, "\\{}", byte as char)?,
                0x20..=0x7e => out.write_char(byte as char)?,
                _ => write!(out, "\\x{byte:02x}")?,
            }
        }
        Ok(())
    }
}

struct OptionalMicros(Option<u64>);

impl fmt::Display for OptionalMicros {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(micros) => write!(out, " (avg {micros} us)"),
            None => Ok(()),
        }
    }
}

/// One line of console input gathered from the chunks a console hands over,
/// without an allocator: line ends before any text are skipped, the line
/// ends at the first `\n` or `\r` after some (what follows it in that chunk
/// is dropped), and bytes beyond 256 are dropped.
pub struct LineInput {
    bytes: [u8; 256],
    len: usize,
}

impl LineInput {
    pub const fn new() -> LineInput {
        LineInput { bytes: [0; 256], len: 0 }
    }

    /// Takes a chunk of input; true once the line is complete.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            if byte == b'\n' || byte == b'\r' {
                if self.len > 0 {
                    return true;
                }
            } else if self.len < self.bytes.len() {
                self.bytes[self.len] = byte;
                self.len += 1;
            }
        }
        false
    }

    /// The line so far, without its end.
    pub fn line(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Default for LineInput {
    fn default() -> Self {
        LineInput::new()
    }
}

/// A line assembled without an allocator (cut at 512 bytes).
pub struct LineBuffer {
    bytes: [u8; 512],
    len: usize,
}

impl LineBuffer {
    pub fn new() -> LineBuffer {
        LineBuffer { bytes: [0; 512], len: 0 }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let room = self.bytes.len() - self.len;
        let take = bytes.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer::new()
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_bytes(text.as_bytes());
        Ok(())
    }
}
