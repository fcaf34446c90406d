use super::*;
use crate::backends::testutil::{mem, r, w, Driver, BUF, OUTSIDE};
use std::sync::atomic::Ordering;

fn device() -> ConsoleDevice {
    ConsoleDevice {
        handle: ConsoleHandle::new().unwrap(),
    }
}

#[test]
fn tx_goes_to_scrollback_and_clients() {
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let dev = device();
    let c = Counters::default();
    let early = dev.handle.attach();
    drv.write(BUF, b"hello ");
    drv.write(BUF + 0x100, b"world\n");
    drv.add(&[r(BUF, 6), r(BUF + 0x100, 6)]);
    let o = dev.process_tx(&mut drv.q, &m, &c).unwrap();
    assert_eq!(o.used, 1);
    assert_eq!(drv.used(), vec![(0, 0)]);
    assert_eq!(early.try_recv().unwrap(), b"hello world\n");
    assert!(early.scrollback.is_empty());
    let late = dev.handle.attach();
    assert_eq!(late.scrollback, b"hello world\n");
    assert_eq!(dev.handle.scrollback(), b"hello world\n");
    // Bad chains are dropped and counted.
    drv.add(&[w(BUF, 6)]);
    drv.add(&[r(OUTSIDE, 6)]);
    dev.process_tx(&mut drv.q, &m, &c).unwrap();
    assert_eq!(c.errors.load(Ordering::Relaxed), 2);
    assert!(early.try_recv().is_none());
    // A client that went away does not stop output.
    drop(early);
    drv.add(&[r(BUF, 6)]);
    dev.process_tx(&mut drv.q, &m, &c).unwrap();
    assert_eq!(
        late.recv_timeout(Duration::from_secs(1)).unwrap(),
        b"hello "
    );
}

#[test]
fn scrollback_is_bounded() {
    let dev = device();
    dev.handle.output(vec![b'a'; SCROLLBACK_BYTES - 10]);
    dev.handle.output(vec![b'b'; 20]);
    let sb = dev.handle.scrollback();
    assert_eq!(sb.len(), SCROLLBACK_BYTES);
    assert_eq!(sb[SCROLLBACK_BYTES - 20..], [b'b'; 20]);
    assert_eq!(sb[0], b'a');
    dev.handle.output(vec![b'c'; SCROLLBACK_BYTES + 5]);
    assert_eq!(dev.handle.scrollback(), vec![b'c'; SCROLLBACK_BYTES]);
}

#[test]
fn input_waits_for_buffers() {
    let m = mem();
    let mut drv = Driver::new(&m, 16);
    let dev = device();
    let c = Counters::default();
    assert_eq!(dev.handle.send_input(b"ls -l\n"), 6);
    assert_eq!(dev.handle.input_event().read().unwrap(), 1);
    // No buffer yet: nothing happens, the input stays.
    assert_eq!(
        dev.process_rx(&mut drv.q, &m, &c).unwrap(),
        Outcome::default()
    );
    // A 4-byte buffer and then a larger one.
    drv.add(&[w(BUF, 4)]);
    drv.add(&[w(BUF + 0x100, 64)]);
    drv.add(&[w(BUF + 0x200, 64)]);
    let o = dev.process_rx(&mut drv.q, &m, &c).unwrap();
    assert_eq!(o.used, 2);
    assert_eq!(drv.used(), vec![(0, 4), (1, 2)]);
    assert_eq!(drv.read(BUF, 4), b"ls -");
    assert_eq!(drv.read(BUF + 0x100, 2), b"l\n");
    // The third buffer waits for more input.
    dev.handle.send_input(b"q");
    dev.process_rx(&mut drv.q, &m, &c).unwrap();
    assert_eq!(drv.used(), vec![(2, 1)]);
    // Input is bounded.
    assert_eq!(
        dev.handle.send_input(&vec![0; INPUT_BYTES + 1]),
        INPUT_BYTES
    );
    assert_eq!(dev.handle.send_input(b"x"), 0);
}
