use super::*;
use crate::backends::switch::Switch;
use crate::backends::testutil::{mem, r, w, Driver, BUF, OUTSIDE};
use std::sync::atomic::Ordering;

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

/// Puts `frame` (with a header) in guest memory at `at` and queues it on
/// the transmit queue, header and frame in separate descriptors.
fn transmit(drv: &mut Driver, at: u64, frame: &[u8]) {
    drv.write(at, &[0u8; NET_HDR_LEN]);
    drv.write(at + 0x100, frame);
    drv.add(&[r(at, NET_HDR_LEN as u32), r(at + 0x100, frame.len() as u32)]);
}

struct Vif<'m> {
    dev: NetDevice,
    tx: Driver<'m>,
    rx: Driver<'m>,
    c: Counters,
}

impl<'m> Vif<'m> {
    fn new(m: &'m Mem, mac: [u8; 6], port: Port) -> Vif<'m> {
        // The transmit rings at 0, the receive rings at 0x4000.
        let tx = Driver::new(m, 16);
        let rx = Driver::at(m, 0x4000, 16);
        Vif {
            dev: NetDevice::new(mac, port),
            tx,
            rx,
            c: Counters::default(),
        }
    }

    fn send(&mut self) -> Outcome {
        self.dev
            .process_tx(&mut self.tx.q, self.tx.mem, &self.c)
            .unwrap()
    }

    fn receive(&mut self) -> Outcome {
        self.dev
            .process_rx(&mut self.rx.q, self.rx.mem, &self.c)
            .unwrap()
    }
}

#[test]
fn config_space_has_mac_and_link_up() {
    let dev = NetDevice::new(A, Port::Sink(Default::default()));
    let c = dev.config();
    assert_eq!(c[0..6], A);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), 1);
    assert_ne!(dev.features() & (1 << VIRTIO_NET_F_MAC), 0);
}

#[test]
fn tx_strips_the_header() {
    let m = mem();
    let mut vif = Vif::new(&m, A, Port::Sink(Default::default()));
    let f = frame(B, A, b"hello");
    transmit(&mut vif.tx, BUF, &f);
    // Header and frame in one descriptor.
    let mut one = vec![0u8; NET_HDR_LEN];
    one.extend_from_slice(&f);
    vif.tx.write(BUF + 0x1000, &one);
    vif.tx.add(&[r(BUF + 0x1000, one.len() as u32)]);
    let o = vif.send();
    assert_eq!(o.used, 2);
    assert_eq!(vif.tx.used(), vec![(0, 0), (2, 0)]);
    let Port::Sink(sent) = &vif.dev.port else {
        unreachable!()
    };
    assert_eq!(*sent.lock().unwrap(), vec![f.clone(), f]);
    assert_eq!(vif.c.bytes.load(Ordering::Relaxed), 38);
}

#[test]
fn tx_refuses_bad_chains() {
    let m = mem();
    let mut vif = Vif::new(&m, A, Port::Sink(Default::default()));
    // Device-writable buffer on the transmit queue.
    vif.tx.add(&[r(BUF, 12), w(BUF + 0x100, 60)]);
    // Too short for an Ethernet header.
    vif.tx.add(&[r(BUF, 12), r(BUF + 0x100, 4)]);
    // Outside RAM.
    vif.tx.add(&[r(BUF, 12), r(OUTSIDE, 60)]);
    // Longer than any frame (overlapping descriptors).
    let big: Vec<_> = (0..3).map(|_| r(BUF, 30_000)).collect();
    vif.tx.add(&big);
    let o = vif.send();
    assert_eq!(o.used, 4);
    assert!(vif.tx.used().iter().all(|&(_, len)| len == 0));
    let Port::Sink(sent) = &vif.dev.port else {
        unreachable!()
    };
    assert!(sent.lock().unwrap().is_empty());
    assert_eq!(vif.c.errors.load(Ordering::Relaxed), 4);
}

#[test]
fn switch_forwards_between_vifs() {
    // Three guests, three memories.
    let (ma, mb, mc) = (mem(), mem(), mem());
    let sw = Switch::new("lan");
    let mut a = Vif::new(&ma, A, Port::Switch(sw.attach(A).unwrap()));
    let mut b = Vif::new(&mb, B, Port::Switch(sw.attach(B).unwrap()));
    let mut c = Vif::new(&mc, C, Port::Switch(sw.attach(C).unwrap()));

    // b and c post receive buffers (header + frame in one buffer, and
    // header and frame split).
    b.rx.add(&[w(0x20000, 2048)]);
    c.rx.add(&[w(0x30000, 12), w(0x30100, 2000)]);
    // Nothing to deliver yet.
    assert_eq!(b.receive(), Outcome::default());

    // a broadcasts: b and c get it, a does not.
    let f1 = frame(BCAST, A, b"who has");
    transmit(&mut a.tx, BUF, &f1);
    a.send();
    a.receive();
    assert!(a.rx.used().is_empty());
    let o = b.receive();
    assert!(o.notify);
    assert_eq!(b.rx.used(), vec![(0, (NET_HDR_LEN + f1.len()) as u32)]);
    let got = b.rx.read(0x20000, NET_HDR_LEN + f1.len());
    assert_eq!(got[..NET_HDR_LEN], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(got[NET_HDR_LEN..], f1);
    c.receive();
    assert_eq!(c.rx.used(), vec![(0, (NET_HDR_LEN + f1.len()) as u32)]);
    assert_eq!(c.rx.read(0x30100, f1.len()), f1);

    // b answers a by unicast: only a gets it (a learnt nothing yet about
    // b, but the switch learnt a from the broadcast).
    a.rx.add(&[w(0x40000, 2048)]);
    c.rx.add(&[w(0x30000, 2048)]);
    let f2 = frame(A, B, b"a is here");
    transmit(&mut b.tx, BUF + 0x2000, &f2);
    b.send();
    a.receive();
    c.receive();
    assert_eq!(a.rx.used(), vec![(0, (NET_HDR_LEN + f2.len()) as u32)]);
    assert_eq!(a.rx.read(0x40000 + NET_HDR_LEN as u64, f2.len()), f2);
    assert!(c.rx.used().is_empty());
    assert_eq!(a.c.requests.load(Ordering::Relaxed), 2);
}

#[test]
fn frames_wait_for_buffers_and_too_small_buffers_drop_them() {
    let m = mem();
    let mut vif = Vif::new(&m, A, Port::Sink(Default::default()));
    let small = frame(A, B, &[1; 50]);
    let large = frame(A, B, &[2; 1400]);
    assert!(vif.dev.queue_rx(large.clone(), &vif.c));
    assert!(vif.dev.queue_rx(small.clone(), &vif.c));
    // No buffers: the frames wait.
    assert_eq!(vif.receive(), Outcome::default());
    // A 200-byte buffer: the large frame is dropped, the small one fits.
    vif.rx.add(&[w(0x20000, 200)]);
    let o = vif.receive();
    assert_eq!(o.used, 1);
    assert_eq!(vif.rx.used(), vec![(0, (NET_HDR_LEN + small.len()) as u32)]);
    assert_eq!(vif.c.dropped.load(Ordering::Relaxed), 1);
    // A device-readable receive buffer is refused.
    vif.dev.queue_rx(small.clone(), &vif.c);
    vif.rx.add(&[r(0x20000, 2048)]);
    vif.rx.add(&[w(0x20000, 2048)]);
    vif.receive();
    assert_eq!(
        vif.rx.used(),
        vec![(1, 0), (2, (NET_HDR_LEN + small.len()) as u32)]
    );
    assert_eq!(vif.c.errors.load(Ordering::Relaxed), 1);
    // The queue is bounded.
    for _ in 0..RX_QUEUE_FRAMES + 3 {
        vif.dev.queue_rx(small.clone(), &vif.c);
    }
    assert_eq!(vif.c.dropped.load(Ordering::Relaxed), 4);
}

#[test]
fn rx_with_event_idx_asks_for_a_kick_when_out_of_buffers() {
    let m = mem();
    let mut vif = Vif::new(&m, A, Port::Sink(Default::default()));
    vif.rx.event_idx();
    vif.rx.set_used_event(0);
    vif.rx.add(&[w(0x20000, 2048)]);
    for _ in 0..3 {
        vif.dev.queue_rx(frame(A, B, b"x"), &vif.c);
    }
    let o = vif.receive();
    assert_eq!(
        o,
        Outcome {
            used: 1,
            notify: true
        }
    );
    // Out of buffers with frames waiting: the device wants a kick as soon
    // as the driver adds one.
    assert_eq!(vif.rx.avail_event(), 1);
    vif.rx.add(&[w(0x20000, 2048)]);
    vif.rx.add(&[w(0x21000, 2048)]);
    let o = vif.receive();
    assert_eq!(o.used, 2);
}
