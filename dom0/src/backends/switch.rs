//! dom0's inter-domain L2 switch: a learning switch whose ports are net
//! backends.
//!
//! A frame goes to the port its destination MAC was last seen on; broadcast,
//! multicast and unknown unicast frames are flooded to every other port. A
//! port never receives its own frames. Each port has a bounded queue: when
//! it is full, frames for that port are dropped and counted. Each port
//! learns at most [`MAX_MACS_PER_PORT`] addresses, so a guest sending from
//! random addresses cannot grow the table without bound or push the other
//! ports' entries out.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frames a port's queue holds before it drops.
pub const PORT_QUEUE_FRAMES: usize = 256;
/// Addresses one port may have in the table.
pub const MAX_MACS_PER_PORT: usize = 64;

/// An inter-domain learning switch. Create it with [`Switch::new`], then
/// give each net backend `NetPort::Switch(switch.clone())`.
#[derive(Debug)]
pub struct Switch {
    name: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    ports: HashMap<u64, Arc<PortShared>>,
    /// MAC → port id.
    macs: HashMap<[u8; 6], u64>,
    /// Port id → how many addresses it has in `macs`.
    learned: HashMap<u64, usize>,
}

#[derive(Debug)]
struct PortShared {
    queue: Mutex<VecDeque<Vec<u8>>>,
    event: EventFd,
    queued: AtomicU64,
    dropped: AtomicU64,
}

/// Counters of one switch port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames queued for this port.
    pub queued: u64,
    /// Frames for this port dropped because its queue was full.
    pub dropped: u64,
}

impl Switch {
    /// A switch with no ports.
    pub fn new(name: impl Into<String>) -> Arc<Switch> {
        Arc::new(Switch {
            name: name.into(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The switch's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many ports are attached.
    pub fn port_count(&self) -> usize {
        self.lock().ports.len()
    }

    /// Attaches a new port; it leaves the switch when dropped.
    pub fn attach(self: &Arc<Self>) -> io::Result<SwitchPort> {
        let shared = Arc::new(PortShared {
            queue: Mutex::new(VecDeque::new()),
            event: EventFd::new(EFD_NONBLOCK)?,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.ports.insert(id, shared.clone());
        Ok(SwitchPort {
            switch: self.clone(),
            id,
            shared,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: recover.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forward(&self, from: u64, frame: &[u8]) {
        if frame.len() < 14 {
            return;
        }
        let dst: [u8; 6] = frame[0..6].try_into().expect("6 bytes");
        let src: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        let mut inner = self.lock();
        if src[0] & 1 == 0 {
            inner.learn(src, from);
        }
        let target = if dst[0] & 1 == 0 {
            inner.macs.get(&dst).copied()
        } else {
            None
        };
        match target {
            Some(to) if to == from => {}
            Some(to) => {
                if let Some(port) = inner.ports.get(&to) {
                    port.push(frame);
                }
            }
            None => {
                for (&id, port) in &inner.ports {
                    if id != from {
                        port.push(frame);
                    }
                }
            }
        }
    }
}

impl Inner {
    fn learn(&mut self, mac: [u8; 6], port: u64) {
        match self.macs.get(&mac).copied() {
            Some(p) if p == port => {}
            old => {
                if self.learned.get(&port).copied().unwrap_or(0) >= MAX_MACS_PER_PORT {
                    return;
                }
                if let Some(old) = old {
                    if let Some(n) = self.learned.get_mut(&old) {
                        *n -= 1;
                    }
                }
                self.macs.insert(mac, port);
                *self.learned.entry(port).or_default() += 1;
            }
        }
    }
}

impl PortShared {
    fn push(&self, frame: &[u8]) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= PORT_QUEUE_FRAMES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(frame.to_vec());
        self.queued.fetch_add(1, Ordering::Relaxed);
        drop(q);
        // Nonblocking: fails only if the counter would overflow, and then
        // the port is already signalled.
        let _ = self.event.write(1);
    }
}

/// One port of a [`Switch`].
#[derive(Debug)]
pub struct SwitchPort {
    switch: Arc<Switch>,
    id: u64,
    shared: Arc<PortShared>,
}

impl SwitchPort {
    /// Sends a frame into the switch.
    pub fn send(&self, frame: &[u8]) {
        self.switch.forward(self.id, frame);
    }

    /// Takes the next frame queued for this port.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Signalled (nonblocking eventfd) whenever a frame is queued for this
    /// port.
    pub fn event(&self) -> &EventFd {
        &self.shared.event
    }

    /// This port's counters.
    pub fn stats(&self) -> PortStats {
        PortStats {
            queued: self.shared.queued.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        let mut inner = self.switch.lock();
        inner.ports.remove(&self.id);
        inner.learned.remove(&self.id);
        let id = self.id;
        inner.macs.retain(|_, p| *p != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, tag]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_floods_and_never_reflects() {
        let sw = Switch::new("s");
        let a = sw.attach().unwrap();
        let b = sw.attach().unwrap();
        let c = sw.attach().unwrap();
        assert_eq!(sw.port_count(), 3);
        // Unknown destination: flooded to b and c, not back to a.
        a.send(&frame(B, A, 1));
        assert!(a.try_recv().is_none());
        assert_eq!(b.try_recv().unwrap(), frame(B, A, 1));
        assert_eq!(c.try_recv().unwrap(), frame(B, A, 1));
        assert_eq!(b.event().read().unwrap(), 1);
        // b answers: a is known now, so only a gets it.
        b.send(&frame(A, B, 2));
        assert_eq!(a.try_recv().unwrap(), frame(A, B, 2));
        assert!(c.try_recv().is_none());
        // And b is known to a.
        a.send(&frame(B, A, 3));
        assert_eq!(b.try_recv().unwrap(), frame(B, A, 3));
        assert!(c.try_recv().is_none());
        // Broadcast floods.
        c.send(&frame(BCAST, [2, 0, 0, 0, 0, 0xc], 4));
        assert!(a.try_recv().is_some() && b.try_recv().is_some() && c.try_recv().is_none());
        // A frame to the sender's own address goes nowhere.
        a.send(&frame(A, A, 5));
        assert!(a.try_recv().is_none() && b.try_recv().is_none() && c.try_recv().is_none());
        // Runts are ignored.
        a.send(&[1, 2, 3]);
        assert!(b.try_recv().is_none());
        drop(c);
        assert_eq!(sw.port_count(), 2);
    }

    #[test]
    fn bounded_queue_counts_drops() {
        let sw = Switch::new("s");
        let a = sw.attach().unwrap();
        let b = sw.attach().unwrap();
        for i in 0..PORT_QUEUE_FRAMES + 5 {
            a.send(&frame(BCAST, A, i as u8));
        }
        let st = b.stats();
        assert_eq!(st.queued, PORT_QUEUE_FRAMES as u64);
        assert_eq!(st.dropped, 5);
    }

    #[test]
    fn learning_is_bounded_per_port() {
        let sw = Switch::new("s");
        let a = sw.attach().unwrap();
        let _b = sw.attach().unwrap();
        for i in 0..1000u32 {
            let [_, x, y, z] = i.to_be_bytes();
            a.send(&frame(BCAST, [2, 1, 0, x, y, z], 0));
        }
        assert_eq!(sw.lock().macs.len(), MAX_MACS_PER_PORT);
        drop(a);
        assert!(sw.lock().macs.is_empty());
    }
}
