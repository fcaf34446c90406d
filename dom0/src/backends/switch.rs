//! dom0's inter-domain L2 switch; its ports are net backends.
//!
//! Every port is bound to its domain's MAC address (the vif's `mac`) when it
//! is attached, so the switch knows where each address is from the start
//! instead of learning it from traffic. A frame goes to the port that has its
//! destination address; broadcast and multicast frames are flooded to every
//! other port; unicast to an address no port has goes nowhere. A port never
//! receives its own frames.
//!
//! Anti-spoofing: a frame whose source address is not its port's is dropped
//! and counted, so a guest cannot take another domain's traffic by sending
//! from its address (as it could in a learning switch), nor grow the table;
//! two ports cannot have the same address. Each port has a bounded queue:
//! when it is full, frames for that port are dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frames a port's queue holds before it drops.
pub const PORT_QUEUE_FRAMES: usize = 256;

/// An inter-domain switch. Create it with [`Switch::new`], then give each
/// net backend `NetPort::Switch(switch.clone())`.
#[derive(Debug)]
pub struct Switch {
    name: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    ports: HashMap<u64, Arc<PortShared>>,
    /// MAC → port id, one entry per port.
    macs: HashMap<[u8; 6], u64>,
}

#[derive(Debug)]
struct PortShared {
    mac: [u8; 6],
    queue: Mutex<VecDeque<Vec<u8>>>,
    event: EventFd,
    queued: AtomicU64,
    dropped: AtomicU64,
    spoofed: AtomicU64,
}

/// Counters of one switch port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames queued for this port.
    pub queued: u64,
    /// Frames for this port dropped because its queue was full.
    pub dropped: u64,
    /// Frames this port sent from another source address, dropped.
    pub spoofed: u64,
}

/// A port could not be attached.
#[derive(Debug, Error)]
pub enum SwitchError {
    /// Another port has the address.
    #[error("the MAC address {mac} is already on switch {switch} (every vif on a switch needs its own)")]
    MacInUse {
        /// The switch.
        switch: String,
        /// The address, as aa:bb:cc:dd:ee:ff.
        mac: String,
    },
    /// The address is a multicast (group) address.
    #[error("the MAC address {0} is a multicast address, which no vif may have")]
    Multicast(String),
    /// The port's eventfd could not be created.
    #[error("creating the port's eventfd failed: {0}")]
    EventFd(#[from] io::Error),
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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

    /// Attaches a new port bound to `mac`; it leaves the switch when dropped.
    pub fn attach(self: &Arc<Self>, mac: [u8; 6]) -> Result<SwitchPort, SwitchError> {
        if mac[0] & 1 != 0 {
            return Err(SwitchError::Multicast(mac_text(&mac)));
        }
        let shared = Arc::new(PortShared {
            mac,
            queue: Mutex::new(VecDeque::new()),
            event: EventFd::new(EFD_NONBLOCK)?,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            spoofed: AtomicU64::new(0),
        });
        let mut inner = self.lock();
        if inner.macs.contains_key(&mac) {
            return Err(SwitchError::MacInUse { switch: self.name.clone(), mac: mac_text(&mac) });
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.ports.insert(id, shared.clone());
        inner.macs.insert(mac, id);
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

    fn forward(&self, from: &PortShared, from_id: u64, frame: &[u8]) {
        if frame.len() < 14 {
            return;
        }
        let dst: [u8; 6] = frame[0..6].try_into().expect("6 bytes");
        let src: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        if src != from.mac {
            from.spoofed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let inner = self.lock();
        if dst[0] & 1 == 0 {
            match inner.macs.get(&dst) {
                Some(&to) if to != from_id => {
                    if let Some(port) = inner.ports.get(&to) {
                        port.push(frame);
                    }
                }
                // To itself, or to an address no port has.
                _ => {}
            }
        } else {
            for (&id, port) in &inner.ports {
                if id != from_id {
                    port.push(frame);
                }
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
        self.switch.forward(&self.shared, self.id, frame);
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
            spoofed: self.shared.spoofed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        let mut inner = self.switch.lock();
        inner.ports.remove(&self.id);
        inner.macs.remove(&self.shared.mac);
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
    const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn forwards_by_bound_address_floods_broadcast_and_never_reflects() {
        let sw = Switch::new("s");
        let a = sw.attach(A).unwrap();
        let b = sw.attach(B).unwrap();
        let c = sw.attach(C).unwrap();
        assert_eq!(sw.port_count(), 3);
        // b's address is known before b ever sent: only b gets it.
        a.send(&frame(B, A, 1));
        assert_eq!(b.try_recv().unwrap(), frame(B, A, 1));
        assert!(a.try_recv().is_none() && c.try_recv().is_none());
        assert_eq!(b.event().read().unwrap(), 1);
        b.send(&frame(A, B, 2));
        assert_eq!(a.try_recv().unwrap(), frame(A, B, 2));
        assert!(c.try_recv().is_none());
        // Broadcast floods to the others.
        c.send(&frame(BCAST, C, 4));
        assert!(a.try_recv().is_some() && b.try_recv().is_some() && c.try_recv().is_none());
        // To the sender's own address, or to an address nobody has: nowhere.
        a.send(&frame(A, A, 5));
        a.send(&frame([2, 9, 9, 9, 9, 9], A, 6));
        assert!(a.try_recv().is_none() && b.try_recv().is_none() && c.try_recv().is_none());
        // Runts are ignored.
        a.send(&[1, 2, 3]);
        assert!(b.try_recv().is_none());
        drop(c);
        assert_eq!(sw.port_count(), 2);
        // Its address is free again.
        assert!(sw.attach(C).is_ok());
    }

    #[test]
    fn a_port_cannot_send_as_another_or_take_its_address() {
        let sw = Switch::new("lan");
        let a = sw.attach(A).unwrap();
        let b = sw.attach(B).unwrap();
        let mallory = sw.attach(C).unwrap();
        // Mallory claims a's address: dropped, counted, and a's traffic
        // still goes to a only.
        mallory.send(&frame(B, A, 1));
        mallory.send(&frame(BCAST, [2, 1, 2, 3, 4, 5], 2));
        assert!(a.try_recv().is_none() && b.try_recv().is_none());
        assert_eq!(mallory.stats().spoofed, 2);
        b.send(&frame(A, B, 3));
        assert_eq!(a.try_recv().unwrap(), frame(A, B, 3));
        assert!(mallory.try_recv().is_none());
        // Nor can a second port be bound to a's address, or to a group one.
        let e = sw.attach(A).unwrap_err();
        assert_eq!(e.to_string(), "the MAC address 02:00:00:00:00:0a is already on switch lan (every vif on a switch needs its own)");
        assert!(matches!(sw.attach(BCAST), Err(SwitchError::Multicast(_))));
        assert_eq!(sw.port_count(), 3);
    }

    #[test]
    fn bounded_queue_counts_drops() {
        let sw = Switch::new("s");
        let a = sw.attach(A).unwrap();
        let b = sw.attach(B).unwrap();
        for i in 0..PORT_QUEUE_FRAMES + 5 {
            a.send(&frame(BCAST, A, i as u8));
        }
        let st = b.stats();
        assert_eq!(st.queued, PORT_QUEUE_FRAMES as u64);
        assert_eq!(st.dropped, 5);
        assert_eq!(a.stats().spoofed, 0);
    }
}
