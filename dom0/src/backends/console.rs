//! virtio-console with one port (no VIRTIO_CONSOLE_F_MULTIPORT): receiveq 0
//! carries input to the guest, transmitq 1 carries the guest's output.
//!
//! Output goes to a [`ConsoleHandle`]: a bounded scrollback buffer plus a
//! broadcast to every attached [`ConsoleClient`]. Input pushed through the
//! handle waits in a bounded buffer until the guest posts receive buffers.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain;
use super::queue::{self, Counters, Outcome, QueueError, Step};
use super::Mem;

/// Bytes of output kept for clients that attach later.
pub const SCROLLBACK_BYTES: usize = 64 * 1024;
/// Bytes of input waiting for the guest before more are refused.
pub const INPUT_BYTES: usize = 64 * 1024;
/// Output chunks a client may fall behind before it misses output.
const CLIENT_CHUNKS: usize = 1024;
/// Largest transmit chain accepted.
const MAX_TX: u64 = 64 * 1024;
/// Most descriptors in one chain.
const MAX_DESCRIPTORS: usize = 64;

/// The dom0 side of a console: read the guest's output, push input. Cheap
/// to clone; stays usable after the backend has ended (the scrollback
/// remains readable).
#[derive(Clone, Debug)]
pub struct ConsoleHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    out: Mutex<Output>,
    input: Mutex<VecDeque<u8>>,
    /// Signalled when input is pushed; the backend's worker polls it.
    input_event: EventFd,
}

#[derive(Debug, Default)]
struct Output {
    scrollback: VecDeque<u8>,
    clients: Vec<SyncSender<Vec<u8>>>,
}

/// An attached reader of a console's output.
#[derive(Debug)]
pub struct ConsoleClient {
    /// The output from before the client attached (at most
    /// [`SCROLLBACK_BYTES`]).
    pub scrollback: Vec<u8>,
    rx: Receiver<Vec<u8>>,
}

impl ConsoleClient {
    /// Waits up to `timeout` for more output; `None` on timeout or when the
    /// console is gone.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// More output if some is waiting.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }

    /// Blocks for more output; `None` once the console is gone.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.rx.recv().ok()
    }
}

impl ConsoleHandle {
    pub(crate) fn new() -> std::io::Result<ConsoleHandle> {
        Ok(ConsoleHandle {
            shared: Arc::new(Shared {
                out: Mutex::new(Output::default()),
                input: Mutex::new(VecDeque::new()),
                input_event: EventFd::new(EFD_NONBLOCK)?,
            }),
        })
    }

    /// Attaches a client: it gets the scrollback and then every new chunk
    /// of output. A client that falls more than 1024 chunks behind misses
    /// output rather than slowing the guest down.
    pub fn attach(&self) -> ConsoleClient {
        let (tx, rx) = mpsc::sync_channel(CLIENT_CHUNKS);
        let mut out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        out.clients.push(tx);
        ConsoleClient {
            scrollback: out.scrollback.iter().copied().collect(),
            rx,
        }
    }

    /// The last [`SCROLLBACK_BYTES`] of output.
    pub fn scrollback(&self) -> Vec<u8> {
        let out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        out.scrollback.iter().copied().collect()
    }

    /// Queues input for the guest; returns how many bytes were taken (the
    /// rest does not fit in the [`INPUT_BYTES`] buffer).
    pub fn send_input(&self, bytes: &[u8]) -> usize {
        let mut input = self.shared.input.lock().unwrap_or_else(|e| e.into_inner());
        let n = bytes.len().min(INPUT_BYTES - input.len());
        input.extend(&bytes[..n]);
        drop(input);
        if n > 0 {
            let _ = self.shared.input_event.write(1);
        }
        n
    }

    pub(crate) fn input_event(&self) -> &EventFd {
        &self.shared.input_event
    }

    /// Takes all the input waiting for the guest (for a console that
    /// hands it on in one piece, like the domain's own console).
    pub(crate) fn take_input(&self) -> Vec<u8> {
        let _ = self.shared.input_event.read();
        let mut input = self.shared.input.lock().unwrap_or_else(|e| e.into_inner());
        input.drain(..).collect()
    }

    /// New output from the guest: into the scrollback and to every client.
    pub(crate) fn output(&self, bytes: Vec<u8>) {
        let mut out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        let sb = &mut out.scrollback;
        if bytes.len() >= SCROLLBACK_BYTES {
            sb.clear();
            sb.extend(&bytes[bytes.len() - SCROLLBACK_BYTES..]);
        } else {
            let excess = (sb.len() + bytes.len()).saturating_sub(SCROLLBACK_BYTES);
            sb.drain(..excess);
            sb.extend(&bytes);
        }
        out.clients.retain(|c| match c.try_send(bytes.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// A virtio-console device.
#[derive(Debug)]
pub(crate) struct ConsoleDevice {
    pub handle: ConsoleHandle,
}

impl ConsoleDevice {
    /// struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr,
    /// all unused without features.
    pub fn config(&self) -> Vec<u8> {
        vec![0u8; 12]
    }

    /// Takes the guest's output.
    pub fn process_tx(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
    ) -> Result<Outcome, QueueError> {
        queue::run(q, mem, |c| {
            Counters::add(&counters.requests, 1);
            let walk = chain::walk(mem, c, MAX_DESCRIPTORS);
            let checked = walk.check_one_direction(MAX_TX, false);
            if let Err(e) = checked {
                tracing::debug!(head = walk.head, error = %e, "dropping a bad console chain");
                counters.error();
                return Step::Used(0);
            }
            let pieces = walk.readable();
            let mut bytes = vec![0u8; chain::total(&pieces)];
            if chain::gather(mem, &pieces, &mut bytes).is_err() {
                counters.error();
                return Step::Used(0);
            }
            Counters::add(&counters.bytes, bytes.len() as u64);
            if !bytes.is_empty() {
                self.handle.output(bytes);
            }
            Step::Used(0)
        })
    }

    /// Fills the guest's receive buffers with waiting input.
    pub fn process_rx(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
    ) -> Result<Outcome, QueueError> {
        let _ = self.handle.shared.input_event.read();
        let mut input = self
            .handle
            .shared
            .input
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if input.is_empty() {
            return Ok(Outcome::default());
        }
        queue::run(q, mem, |c| {
            if input.is_empty() {
                return Step::Stop;
            }
            let walk = chain::walk(mem, c, MAX_DESCRIPTORS);
            let checked = walk.check_one_direction(u64::MAX, true);
            if let Err(e) = checked {
                tracing::debug!(head = walk.head, error = %e, "dropping a bad console chain");
                counters.error();
                return Step::Used(0);
            }
            let pieces = walk.writable();
            let n = chain::total(&pieces).min(input.len());
            let bytes: Vec<u8> = input.iter().take(n).copied().collect();
            match chain::scatter(mem, &pieces, &bytes) {
                Ok(n) => {
                    input.drain(..n);
                    Counters::add(&counters.requests, 1);
                    Counters::add(&counters.bytes, n as u64);
                    Step::Used(n as u32)
                }
                Err(_) => {
                    counters.error();
                    Step::Used(0)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
