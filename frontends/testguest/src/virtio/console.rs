//! virtio-console driver (spec 5.3), single port: queue 0 receives bytes
//! from the host side, queue 1 transmits bytes to it.

use super::defs::{console, feature};
use super::ring::{queue_bytes, Buf, DmaRegion, QueueError, Virtqueue, MAX_QUEUE_SIZE};
use super::transport::{deadline, Clock, InitError, Regs, Transport};

pub const BUFFER_BYTES: usize = 512;
pub const RX_BUFFERS: usize = 4;

/// Shared memory one console device needs.
pub const MEMORY_BYTES: usize = 2 * queue_bytes(MAX_QUEUE_SIZE) + (RX_BUFFERS + 1) * BUFFER_BYTES + 3 * 4096;

/// The features this driver accepts (plus `RING_EVENT_IDX` on request):
/// no MULTIPORT, no SIZE, no EMERG_WRITE.
pub const WANTED_FEATURES: u64 = feature::bit(feature::VERSION_1) | feature::bit(feature::ACCESS_PLATFORM);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    Queue(QueueError),
    /// The device did not take transmitted bytes within the wait.
    TxTimeout { ms: u64 },
    NeedsReset { status: u32 },
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ConsoleError::Queue(error) => write!(out, "{error}"),
            ConsoleError::TxTimeout { ms } => write!(out, "the device did not take the output within {ms} ms"),
            ConsoleError::NeedsReset { status } => write!(out, "DEVICE_NEEDS_RESET (status {status:#x})"),
        }
    }
}

impl From<QueueError> for ConsoleError {
    fn from(error: QueueError) -> Self {
        ConsoleError::Queue(error)
    }
}

pub struct Console<R: Regs> {
    transport: Transport<R>,
    rx: Virtqueue,
    tx: Virtqueue,
    rx_buffers: DmaRegion,
    tx_buffer: DmaRegion,
    rx_buffer_of: [u8; MAX_QUEUE_SIZE as usize],
    pub timeout_ms: u64,
    pub kicks: u64,
}

impl<R: Regs> Console<R> {
    pub fn new<C: Clock>(regs: R, clock: &C, memory: &mut DmaRegion, event_idx: bool) -> Result<Console<R>, InitError> {
        let mut transport = Transport::new(regs);
        let wanted = WANTED_FEATURES | if event_idx { feature::bit(feature::RING_EVENT_IDX) } else { 0 };
        transport.begin_init(clock, wanted, feature::bit(feature::VERSION_1))?;
        let event_idx = transport.has_feature(feature::RING_EVENT_IDX);
        let mut make_queue = |index: u16| -> Result<Virtqueue, InitError> {
            let size = super::ring::pick_queue_size(transport.queue_max(index));
            if size == 0 {
                return Err(InitError::NoSuchQueue(index));
            }
            let region = memory.take(queue_bytes(size), 4096).expect("DMA pool too small for a console queue");
            // SAFETY: fresh memory from the pool, for this device only.
            let queue = unsafe { Virtqueue::new(region, size, event_idx) };
            transport.setup_queue(index, queue.addrs())?;
            Ok(queue)
        };
        let rx = make_queue(console::RX_QUEUE)?;
        let tx = make_queue(console::TX_QUEUE)?;
        let rx_buffers = memory.take(RX_BUFFERS * BUFFER_BYTES, 4096).expect("DMA pool too small for console buffers");
        let tx_buffer = memory.take(BUFFER_BYTES, 4096).expect("DMA pool too small for console buffers");
        let mut device = Console {
            transport,
            rx,
            tx,
            rx_buffers,
            tx_buffer,
            rx_buffer_of: [0; MAX_QUEUE_SIZE as usize],
            timeout_ms: 5000,
            kicks: 0,
        };
        for buffer in 0..RX_BUFFERS.min(device.rx.size() as usize) {
            device.post_rx(buffer)?;
        }
        device.transport.driver_ok()?;
        device.rx.publish();
        device.transport.notify(console::RX_QUEUE);
        device.kicks += 1;
        Ok(device)
    }

    pub fn transport(&self) -> &Transport<R> {
        &self.transport
    }

    fn rx_addr(&self, buffer: usize) -> u64 {
        self.rx_buffers.addr() + (buffer * BUFFER_BYTES) as u64
    }

    fn post_rx(&mut self, buffer: usize) -> Result<(), QueueError> {
        let head = self.rx.add(&[Buf::writable(self.rx_addr(buffer), BUFFER_BYTES)])?;
        self.rx_buffer_of[head as usize] = buffer as u8;
        Ok(())
    }

    /// Writes `bytes` to the transmit queue, a buffer-full at a time, each
    /// waited for.
    pub fn write<C: Clock>(&mut self, clock: &C, bytes: &[u8]) -> Result<(), ConsoleError> {
        for chunk in bytes.chunks(BUFFER_BYTES) {
            // SAFETY: the transmit buffer is not in flight (every previous
            // chunk was waited for) and holds BUFFER_BYTES.
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), self.tx_buffer.ptr, chunk.len()) };
            let head = self.tx.add(&[Buf::readable(self.tx_buffer.addr(), chunk.len())])?;
            if self.tx.kick_prepare() {
                self.transport.notify(console::TX_QUEUE);
                self.kicks += 1;
            }
            let end = deadline(clock, self.timeout_ms);
            loop {
                if let Some(used) = self.tx.pop_used() {
                    if used?.id == u32::from(head) {
                        break;
                    }
                    continue;
                }
                if clock.now() > end {
                    if self.transport.needs_reset() {
                        return Err(ConsoleError::NeedsReset { status: self.transport.status() });
                    }
                    return Err(ConsoleError::TxTimeout { ms: self.timeout_ms });
                }
                clock.relax();
            }
        }
        Ok(())
    }

    /// Copies received bytes into `out` and reposts the buffer; `None` if
    /// nothing arrived. Bytes beyond `out` are dropped.
    pub fn read(&mut self, out: &mut [u8]) -> Option<Result<usize, ConsoleError>> {
        let used = match self.rx.pop_used()? {
            Ok(used) => used,
            Err(error) => return Some(Err(error.into())),
        };
        let buffer = self.rx_buffer_of[used.id as usize] as usize;
        let len = (used.len as usize).min(BUFFER_BYTES).min(out.len());
        // SAFETY: the device completed the buffer and no longer writes it.
        unsafe { core::ptr::copy_nonoverlapping(self.rx_addr(buffer) as *const u8, out.as_mut_ptr(), len) };
        if let Err(error) = self.post_rx(buffer) {
            return Some(Err(error.into()));
        }
        if self.rx.kick_prepare() {
            self.transport.notify(console::RX_QUEUE);
            self.kicks += 1;
        }
        Some(Ok(len))
    }

    pub fn needs_reset(&self) -> bool {
        self.transport.needs_reset()
    }
}
