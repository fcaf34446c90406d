//! The domain's 16550 UART (vm-superio), its output streamed to the console
//! and appended to the domain's console log.

use std::fs::File;
use std::io::{self, Write};

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::{BusDevice, BusRequest};

/// Raises the UART's interrupt by signalling an eventfd. With an in-kernel
/// irqchip the eventfd is registered as an irqfd for the UART's IRQ line;
/// without one nobody listens and the guest polls.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where console bytes go: the hypervisor's stdout and the log file.
pub struct ConsoleSink {
    stdout: Option<io::Stdout>,
    log: Option<File>,
}

impl ConsoleSink {
    /// Writes to stdout (if `echo`) and to `log` (if any).
    pub fn new(echo: bool, log: Option<File>) -> ConsoleSink {
        ConsoleSink { stdout: echo.then(io::stdout), log }
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A console that cannot be written (closed stdout, full disk) must
        // not stop the guest: drop the bytes, as a UART with nothing
        // attached does.
        if let Some(out) = &mut self.stdout {
            let mut out = out.lock();
            let _ = out.write_all(buf).and_then(|()| out.flush());
        }
        if let Some(log) = &mut self.log {
            let _ = log.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// COM1.
pub struct SerialPort {
    uart: Serial<EventFdTrigger, NoEvents, ConsoleSink>,
}

impl SerialPort {
    /// A UART raising `interrupt` and writing to `sink`.
    pub fn new(interrupt: EventFd, sink: ConsoleSink) -> SerialPort {
        SerialPort { uart: Serial::new(EventFdTrigger(interrupt), sink) }
    }

    /// Queues bytes typed by the user for the guest to read.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers; wider reads see the first one.
        data.fill(0);
        if let Ok(reg) = u8::try_from(offset) {
            data[0] = self.uart.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
        if let (Ok(reg), Some(&byte)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.uart.write(reg, byte) {
                tracing::warn!("serial port write failed: {e:?}");
            }
        }
        BusRequest::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn output_reaches_the_log() {
        let path = std::env::temp_dir().join(format!("serial-test-{}.log", std::process::id()));
        let log = File::create(&path).unwrap();
        let mut port = SerialPort::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), ConsoleSink::new(false, Some(log)));
        for b in b"hi\n" {
            port.write(0, &[*b]);
        }
        // LSR: transmitter empty.
        let mut lsr = [0u8];
        port.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        let mut s = String::new();
        File::open(&path).unwrap().read_to_string(&mut s).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s, "hi\n");
    }
}
