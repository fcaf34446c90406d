//! The console behind `console_io`: output goes where the UART's goes
//! (stdout, the console log, the kept tail); input comes from the same
//! console input as the UART's.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::ConsoleSink;

/// Most console input kept for a guest that does not read it.
const INPUT_MAX: usize = 64 * 1024;

/// Shared by the UART, `console_io` and the console input thread.
#[derive(Clone)]
pub struct PvConsole {
    sink: Arc<Mutex<ConsoleSink>>,
    input: Arc<(Mutex<VecDeque<u8>>, Condvar)>,
    /// The guest has read input through `console_io` (so it reads its
    /// console there, not from the UART).
    reader: Arc<AtomicBool>,
    /// Signalled when input arrives: an irqfd for GSI
    /// `pvabi::console::IRQ` in domains with an interrupt controller.
    irq: Option<Arc<EventFd>>,
}

impl PvConsole {
    /// A console writing to `sink`.
    pub fn new(sink: Arc<Mutex<ConsoleSink>>) -> PvConsole {
        PvConsole {
            sink,
            input: Arc::new((Mutex::new(VecDeque::new()), Condvar::new())),
            reader: Arc::new(AtomicBool::new(false)),
            irq: None,
        }
    }

    /// Signals `irq` whenever input arrives (the guest's console interrupt).
    pub fn with_irq(mut self, irq: EventFd) -> PvConsole {
        self.irq = Some(Arc::new(irq));
        self
    }

    /// Writes guest output.
    pub fn write(&self, bytes: &[u8]) {
        let _ = self.sink.lock().unwrap_or_else(|p| p.into_inner()).write_all(bytes);
    }

    /// Queues console input; the oldest bytes go if nobody reads.
    pub fn push_input(&self, bytes: &[u8]) {
        let (q, cv) = &*self.input;
        let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(bytes);
        let excess = q.len().saturating_sub(INPUT_MAX);
        q.drain(..excess);
        cv.notify_all();
        drop(q);
        if let (Some(irq), false) = (&self.irq, bytes.is_empty()) {
            if let Err(e) = irq.write(1) {
                tracing::warn!("the console interrupt could not be raised: {e}");
            }
        }
    }

    /// Takes up to `max` bytes of input.
    pub fn read_input(&self, max: usize) -> Vec<u8> {
        self.reader.store(true, Ordering::Relaxed);
        let mut q = self.input.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Whether the guest reads its console input through `console_io`
    /// (it has asked for input at least once).
    pub fn has_reader(&self) -> bool {
        self.reader.load(Ordering::Relaxed)
    }

    /// Waits until input is available or `timeout` passes; true if input
    /// is waiting.
    pub fn wait_input(&self, timeout: Duration) -> bool {
        let (q, cv) = &*self.input;
        let q = q.lock().unwrap_or_else(|p| p.into_inner());
        let (q, _) = cv.wait_timeout_while(q, timeout, |q| q.is_empty()).unwrap_or_else(|p| p.into_inner());
        !q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial::ConsoleTail;

    #[test]
    fn input_is_queued_and_a_reader_is_noticed() {
        let c = PvConsole::new(Arc::new(Mutex::new(ConsoleSink::new(false, None, ConsoleTail::default()))));
        assert!(!c.has_reader());
        c.push_input(b"ls\n");
        assert_eq!(c.read_input(2), b"ls");
        assert!(c.has_reader());
        assert_eq!(c.read_input(10), b"\n");
        assert!(c.read_input(10).is_empty());
    }

    #[test]
    fn input_raises_the_console_interrupt() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let seen = irq.try_clone().unwrap();
        let c = PvConsole::new(Arc::new(Mutex::new(ConsoleSink::new(false, None, ConsoleTail::default())))).with_irq(irq);
        assert!(seen.read().is_err(), "nothing before input");
        c.push_input(b"");
        assert!(seen.read().is_err(), "no interrupt for no input");
        c.push_input(b"a");
        c.push_input(b"b");
        assert_eq!(seen.read().unwrap(), 2);
    }
}
