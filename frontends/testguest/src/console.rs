//! Line output, shared by all vCPUs: on COM1 (a polled 16550), or through
//! the `console_io` hypercall once a workload switched to it.
//!
//! Every port access is a VM exit, and on a kvm_pvm host a costly one
//! (~74 µs), so the transmitter is not polled before every byte: once LSR
//! reports the transmit holding register empty, the whole transmit FIFO is
//! free and that many bytes are written before LSR is read again. With the
//! hypervisor's UART (always empty) that is one LSR read per 16 bytes; on a
//! real 16550 it is still correct.
//!
//! After [`use_console_io`], [`print_line`] assembles each line in a
//! buffer of `console::MAX_CHUNK` bytes and hands it to the hypervisor with
//! one `console_io(WRITE)`: one exit per line instead of one per byte
//! (longer lines take one call per buffer-full). Exception and panic
//! reports ([`print_line_from_fault`]) always use COM1, which needs no
//! buffer that the interrupted line might be using.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use pvabi::console::MAX_CHUNK;
use pvabi::ports::COM1;

use crate::arch::{inb, outb};
use crate::entry::{current_vcpu, MAX_VCPUS};
use crate::hypercall::{self, Hypercalls};
use crate::sync::RacyCell;

/// 16550 registers, as offsets from the base port.
mod reg {
    /// Transmit holding register (write, DLAB=0).
    pub const THR: u16 = 0;
    /// Divisor latch, low byte (DLAB=1).
    pub const DLL: u16 = 0;
    /// Interrupt enable register (DLAB=0).
    pub const IER: u16 = 1;
    /// Divisor latch, high byte (DLAB=1).
    pub const DLM: u16 = 1;
    /// FIFO control register (write).
    pub const FCR: u16 = 2;
    /// Interrupt identification register (read).
    pub const IIR: u16 = 2;
    /// Line control register.
    pub const LCR: u16 = 3;
    /// Modem control register.
    pub const MCR: u16 = 4;
    /// Line status register.
    pub const LSR: u16 = 5;
}

/// LSR: the transmit holding register (and with FIFOs, the FIFO) is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LCR: divisor latch access.
const LCR_DLAB: u8 = 1 << 7;
/// LCR: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0b011;
/// FCR: enable and clear both FIFOs.
const FCR_ENABLE_AND_CLEAR: u8 = 0b111;
/// IIR bits 7:6 set: the FIFOs are enabled (a 16550A, not an 8250).
const IIR_FIFOS_ENABLED: u8 = 0b1100_0000;
/// MCR: DTR and RTS; OUT2 stays clear so the UART raises no interrupt.
const MCR_DTR_RTS: u8 = 0b011;
/// Transmit FIFO depth of a 16550A.
const FIFO_DEPTH: u8 = 16;
/// Divisor for 115200 baud.
const DIVISOR_115200: u16 = 1;

/// The transmitter of one UART.
struct Uart {
    base: u16,
    /// Bytes that may be written before LSR must be read again.
    tx_room: u8,
    /// Bytes the transmitter takes once LSR says it is empty.
    tx_capacity: u8,
}

impl Uart {
    /// 115200 8N1, FIFOs on, interrupts off.
    fn init(&mut self) {
        outb(self.base + reg::IER, 0);
        outb(self.base + reg::LCR, LCR_DLAB);
        let [divisor_low, divisor_high] = DIVISOR_115200.to_le_bytes();
        outb(self.base + reg::DLL, divisor_low);
        outb(self.base + reg::DLM, divisor_high);
        outb(self.base + reg::LCR, LCR_8N1);
        outb(self.base + reg::FCR, FCR_ENABLE_AND_CLEAR);
        outb(self.base + reg::MCR, MCR_DTR_RTS);
        let fifos = inb(self.base + reg::IIR) & IIR_FIFOS_ENABLED == IIR_FIFOS_ENABLED;
        self.tx_capacity = if fifos { FIFO_DEPTH } else { 1 };
        self.tx_room = 0;
    }

    fn write_byte(&mut self, byte: u8) {
        while self.tx_room == 0 {
            if inb(self.base + reg::LSR) & LSR_THR_EMPTY != 0 {
                self.tx_room = self.tx_capacity;
            } else {
                core::hint::spin_loop();
            }
        }
        outb(self.base + reg::THR, byte);
        self.tx_room -= 1;
    }
}

impl Write for Uart {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(|byte| self.write_byte(byte));
        Ok(())
    }
}

/// The console lock: 0 when free, else 1 + the index of the owning vCPU
/// (`MAX_VCPUS` standing for "unknown vCPU"), so that an exception taken
/// while printing can tell that the lock is its own.
static OWNER: AtomicU32 = AtomicU32::new(0);

/// COM1's transmitter state; accessed only by the holder of [`OWNER`].
/// Until `init` runs it can still write, one byte per LSR poll.
static COM1_UART: RacyCell<Uart> = RacyCell::new(Uart { base: COM1, tx_room: 0, tx_capacity: 1 });

fn owner_token() -> u32 {
    current_vcpu().unwrap_or(MAX_VCPUS) as u32 + 1
}

/// Takes the console lock; with `reentrant`, a lock this vCPU already
/// holds (an exception or panic in the middle of a line) counts as taken
/// instead of deadlocking. Returns whether the lock was newly acquired.
fn lock(reentrant: bool) -> bool {
    let me = owner_token();
    loop {
        match OWNER.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(owner) if reentrant && owner == me => return false,
            Err(_) => core::hint::spin_loop(),
        }
    }
}

/// Runs `f` with the UART, holding the console lock (see [`lock`]).
fn with_uart(reentrant: bool, f: impl FnOnce(&mut Uart)) {
    let acquired = lock(reentrant);
    // SAFETY: this vCPU holds the console lock (or already held it and is
    // the interrupted writer, which does not resume), so nothing else
    // touches the UART state.
    f(unsafe { &mut *COM1_UART.get() });
    if acquired {
        OWNER.store(0, Ordering::Release);
    }
}

/// Lines go through `console_io` (see [`use_console_io`]).
static USE_CONSOLE_IO: AtomicBool = AtomicBool::new(false);

/// A line on its way to `console_io`.
struct PvLine {
    bytes: [u8; MAX_CHUNK as usize],
    len: usize,
}

/// The line buffer of the `console_io` path; accessed only by the holder
/// of [`OWNER`], like the UART.
static PV_LINE: RacyCell<PvLine> = RacyCell::new(PvLine { bytes: [0; MAX_CHUNK as usize], len: 0 });

/// Writes through `console_io`, a buffer-full per call; what the
/// hypervisor refuses goes to COM1 instead, so that no output is lost.
struct PvWriter<'a> {
    line: &'a mut PvLine,
    hypercalls: Hypercalls,
    uart: &'a mut Uart,
}

impl PvWriter<'_> {
    fn push(&mut self, byte: u8) {
        if self.line.len == self.line.bytes.len() {
            self.flush();
        }
        self.line.bytes[self.line.len] = byte;
        self.line.len += 1;
    }

    fn flush(&mut self) {
        let pending = &self.line.bytes[..self.line.len];
        let mut done = 0;
        while done < pending.len() {
            match self.hypercalls.console_write(&pending[done..]) {
                Ok(written) if written > 0 => done += (written as usize).min(pending.len() - done),
                // An error, or no progress: the rest goes to the UART.
                _ => {
                    pending[done..].iter().for_each(|&byte| self.uart.write_byte(byte));
                    break;
                }
            }
        }
        self.line.len = 0;
    }
}

impl Write for PvWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(|byte| self.push(byte));
        Ok(())
    }
}

/// From now on, [`print_line`] writes through `console_io` (on every
/// vCPU). The token is the proof that the hypercall page is installed;
/// `print_line` gets its own from `hypercall::installed`.
pub fn use_console_io(_installed: Hypercalls) {
    USE_CONSOLE_IO.store(true, Ordering::Release);
}

/// Programs COM1. Called once by the boot vCPU before the other vCPUs may
/// print.
pub fn init() {
    with_uart(false, Uart::init);
}

/// Prints one line (a newline is appended) without interleaving with other
/// vCPUs' lines.
pub fn print_line(args: fmt::Arguments<'_>) {
    let console_io = if USE_CONSOLE_IO.load(Ordering::Acquire) { hypercall::installed() } else { None };
    with_uart(false, |uart| match console_io {
        Some(hypercalls) => {
            // SAFETY: this vCPU holds the console lock, which guards the
            // line buffer as it does the UART.
            let line = unsafe { &mut *PV_LINE.get() };
            let mut writer = PvWriter { line, hypercalls, uart };
            // Neither writer can fail.
            let _ = writer.write_fmt(args);
            writer.push(b'\n');
            writer.flush();
        }
        None => {
            let _ = uart.write_fmt(args);
            uart.write_byte(b'\n');
        }
    });
}

/// Like [`print_line`], for exception and panic reports: does not wait for
/// a lock this vCPU itself holds, and starts a new line in that case.
pub fn print_line_from_fault(args: fmt::Arguments<'_>) {
    let interrupted_own_line = OWNER.load(Ordering::Relaxed) == owner_token();
    with_uart(true, |uart| {
        if interrupted_own_line {
            uart.write_byte(b'\n');
        }
        let _ = uart.write_fmt(args);
        uart.write_byte(b'\n');
    });
}

/// Takes the console lock for good (or keeps it, if this vCPU holds it):
/// no line starts after this, and no other vCPU's line is cut short. For
/// the end of the domain.
pub fn silence() {
    lock(true);
}

/// `println!` for the guest: one atomic line on COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}

/// Displays bytes as a quoted-string body: printable ASCII as is, `"` and
/// `\` escaped, anything else as `\xNN`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
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
