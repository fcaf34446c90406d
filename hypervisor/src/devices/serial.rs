//! The domain's 16550 UART (vm-superio), its output streamed to the console
//! and appended to the domain's console log.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::{BusDevice, BusRequest};
use super::console_log::BoundedLog;

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

/// The last bytes the guest printed, kept so the hypervisor can say why a
/// guest died (for example a Linux panic message before a reset).
#[derive(Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<Vec<u8>>>);

impl ConsoleTail {
    /// How much is kept.
    pub const KEEP: usize = 16 * 1024;

    fn push(&self, buf: &[u8]) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(buf);
        if t.len() > 2 * Self::KEEP {
            let cut = t.len() - Self::KEEP;
            t.drain(..cut);
        }
    }

    /// The kept output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// If the guest printed a Linux kernel panic, its message: the panic
    /// line and what followed, at most `max_lines` lines.
    pub fn linux_panic(&self, max_lines: usize) -> Option<String> {
        let text = self.text();
        let at = text.rfind("Kernel panic - not syncing")?;
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        Some(text[start..].lines().take(max_lines).collect::<Vec<_>>().join("\n"))
    }
}

/// Where the console's live output goes, besides the log and the tail.
enum Echo {
    /// Nowhere.
    None,
    /// The hypervisor's stdout (`hypervisor run` in a terminal).
    Stdout(io::Stdout),
    /// dom0's console socket (`--console-fd`).
    Socket {
        stream: UnixStream,
        /// Bytes dropped because dom0 was not reading.
        dropped: u64,
    },
}

/// Where console bytes go: stdout or dom0's console socket, the log file,
/// and the kept tail.
pub struct ConsoleSink {
    echo: Echo,
    log: Option<BoundedLog>,
    tail: ConsoleTail,
}

impl ConsoleSink {
    /// Writes to stdout (if `echo`), to `log` (if any; bounded in size and
    /// rate) and to `tail`.
    pub fn new(echo: bool, log: Option<BoundedLog>, tail: ConsoleTail) -> ConsoleSink {
        ConsoleSink { echo: if echo { Echo::Stdout(io::stdout()) } else { Echo::None }, log, tail }
    }

    /// Sends the live output to `stream` (dom0's console socket) instead
    /// of stdout.
    pub fn echo_to(&mut self, stream: UnixStream) {
        self.echo = Echo::Socket { stream, dropped: 0 };
    }
}

/// Writes `buf` to `stream` without blocking: a vCPU must not wait for
/// dom0. Returns how many bytes could not be written (the socket buffer
/// was full, or dom0 has gone).
fn send_nonblocking(stream: &UnixStream, mut buf: &[u8]) -> usize {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        match send(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    buf.len()
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A console that cannot be written (closed stdout, full disk) must
        // not stop the guest: drop the bytes, as a UART with nothing
        // attached does.
        match &mut self.echo {
            Echo::None => {}
            Echo::Stdout(out) => {
                let mut out = out.lock();
                let _ = out.write_all(buf).and_then(|()| out.flush());
            }
            Echo::Socket { stream, dropped } => {
                let lost = send_nonblocking(stream, buf);
                if lost > 0 {
                    if *dropped == 0 {
                        tracing::warn!("dom0 is not reading the console: dropping output (the console log keeps it)");
                    }
                    *dropped += lost as u64;
                }
            }
        }
        if let Some(log) = &mut self.log {
            let _ = log.write_at(buf, std::time::Instant::now());
        }
        self.tail.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`ConsoleSink`] shared by the UART and the PV console.
pub struct SharedSink(pub Arc<Mutex<ConsoleSink>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// COM1.
pub struct SerialPort {
    uart: Serial<EventFdTrigger, NoEvents, SharedSink>,
}

impl SerialPort {
    /// A UART raising `interrupt` and writing to `sink`.
    pub fn new(interrupt: EventFd, sink: Arc<Mutex<ConsoleSink>>) -> SerialPort {
        SerialPort { uart: Serial::new(EventFdTrigger(interrupt), SharedSink(sink)) }
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
    use std::fs::File;
    use std::io::Read;

    #[test]
    fn output_reaches_the_log() {
        let path = std::env::temp_dir().join(format!("serial-test-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = BoundedLog::open(&path).unwrap();
        let sink = Arc::new(Mutex::new(ConsoleSink::new(false, Some(log), ConsoleTail::default())));
        let mut port = SerialPort::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), sink);
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

    #[test]
    fn the_console_socket_gets_the_output_and_never_blocks_the_writer() {
        let (ours, dom0) = UnixStream::pair().unwrap();
        let tail = ConsoleTail::default();
        let mut sink = ConsoleSink::new(false, None, tail.clone());
        sink.echo_to(ours);
        sink.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 6];
        (&dom0).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        // dom0 stops reading: far more than a socket buffer still returns
        // at once (the live stream drops, the tail keeps the latest).
        let chunk = [b'x'; 64 * 1024];
        for _ in 0..256 {
            assert_eq!(sink.write(&chunk).unwrap(), chunk.len());
        }
        assert!(matches!(&sink.echo, Echo::Socket { dropped, .. } if *dropped > 0));
        assert!(tail.text().ends_with("xxxx"));
        // dom0 gone: still no error for the guest.
        drop(dom0);
        assert_eq!(sink.write(b"after\n").unwrap(), 6);
    }

    #[test]
    fn finds_a_linux_panic_in_the_tail() {
        let tail = ConsoleTail::default();
        tail.push(b"[    1.0] Run /init\n[    1.2] Kernel panic - not syncing: Attempted to kill init!\n[    1.2] CPU: 0 PID: 1\nmore\n");
        let p = tail.linux_panic(2).unwrap();
        assert_eq!(p, "[    1.2] Kernel panic - not syncing: Attempted to kill init!\n[    1.2] CPU: 0 PID: 1");
        assert!(ConsoleTail::default().linux_panic(5).is_none());
        let big = ConsoleTail::default();
        for _ in 0..10_000 {
            big.push(b"0123456789");
        }
        assert!(big.text().len() <= 2 * ConsoleTail::KEEP);
    }
}
