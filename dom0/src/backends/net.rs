//! virtio-net: receive queue 0, transmit queue 1, a 12-byte
//! `virtio_net_hdr_v1` in front of every frame (VIRTIO_F_VERSION_1, no
//! offloads): stripped on transmit, a zeroed one (with `num_buffers` = 1)
//! prepended on receive.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::Queue;

use super::chain::{self, ChainError};
use super::queue::{self, Counters, Outcome, QueueError, Step};
use super::switch::SwitchPort;
use super::tap::Tap;
use super::Mem;

/// The header in front of every frame.
pub const NET_HDR_LEN: usize = 12;
/// The largest frame carried: a 65535-byte MTU plus an Ethernet header with
/// a VLAN tag.
pub const MAX_FRAME: usize = 65535 + 18;
/// The smallest frame accepted from the guest: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Frames waiting for receive buffers before new ones are dropped.
pub const RX_QUEUE_FRAMES: usize = 256;
/// Most descriptors in one transmit or receive chain.
const MAX_DESCRIPTORS: usize = 64;

/// Where a vif's frames go.
#[derive(Debug)]
pub(crate) enum Port {
    Tap(Tap),
    Switch(SwitchPort),
    /// Tests: frames sent are collected here.
    #[cfg(test)]
    Sink(Mutex<Vec<Vec<u8>>>),
}

impl Port {
    /// The fd the worker polls for incoming frames.
    pub fn event_fd(&self) -> Option<RawFd> {
        match self {
            Port::Tap(t) => Some(t.as_raw_fd()),
            Port::Switch(p) => Some(p.event().as_raw_fd()),
            #[cfg(test)]
            Port::Sink(_) => None,
        }
    }

    /// Sends a frame; false if it was dropped.
    fn send(&self, frame: &[u8]) -> bool {
        match self {
            Port::Tap(t) => match t.send(frame) {
                Ok(sent) => sent,
                Err(e) => {
                    tracing::debug!(tap = t.name(), error = %e, "tap write failed");
                    false
                }
            },
            Port::Switch(p) => {
                p.send(frame);
                true
            }
            #[cfg(test)]
            Port::Sink(v) => {
                v.lock().unwrap().push(frame.to_vec());
                true
            }
        }
    }
}

/// A virtio-net device.
#[derive(Debug)]
pub(crate) struct NetDevice {
    mac: [u8; 6],
    pub port: Port,
    /// Frames waiting for the guest's receive buffers.
    rx: Mutex<VecDeque<Vec<u8>>>,
    /// Where frames are read from the tap.
    tap_buf: Mutex<Vec<u8>>,
}

impl NetDevice {
    pub fn new(mac: [u8; 6], port: Port) -> NetDevice {
        NetDevice {
            mac,
            port,
            rx: Mutex::new(VecDeque::new()),
            tap_buf: Mutex::new(Vec::new()),
        }
    }

    /// The device feature bits (virtio-net part).
    pub fn features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS
    }

    /// struct virtio_net_config: mac, status (link up), one queue pair.
    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 12];
        c[0..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// Queues a frame for the guest; false (and counted) if the queue is
    /// full.
    pub fn queue_rx(&self, frame: Vec<u8>, counters: &Counters) -> bool {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.len() >= RX_QUEUE_FRAMES {
            Counters::add(&counters.dropped, 1);
            return false;
        }
        rx.push_back(frame);
        true
    }

    /// Moves frames that arrived on the port into the receive queue.
    /// Returns false if the port failed for good (the tap device is gone):
    /// its fd must no longer be polled.
    pub fn pull_port(&self, counters: &Counters) -> bool {
        match &self.port {
            Port::Tap(tap) => {
                let mut buf = self.tap_buf.lock().unwrap_or_else(|e| e.into_inner());
                buf.resize(MAX_FRAME, 0);
                // Level-triggered fd: drain it, dropping what does not fit.
                loop {
                    match tap.recv(&mut buf) {
                        Ok(Some(n)) => {
                            self.queue_rx(buf[..n].to_vec(), counters);
                        }
                        Ok(None) => return true,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::warn!(
                                tap = tap.name(),
                                error = %e,
                                "the tap device failed; the vif receives nothing more"
                            );
                            counters.error();
                            return false;
                        }
                    }
                }
            }
            Port::Switch(p) => {
                // Consume the wakeup first, so a frame queued meanwhile
                // signals again.
                let _ = p.event().read();
                // Leave frames in the switch's (bounded) port queue while
                // ours is full: they are taken once the guest posts buffers.
                let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
                while rx.len() < RX_QUEUE_FRAMES {
                    match p.try_recv() {
                        Some(f) => rx.push_back(f),
                        None => break,
                    }
                }
                true
            }
            #[cfg(test)]
            Port::Sink(_) => true,
        }
    }

    /// Fills the guest's receive buffers with waiting frames.
    pub fn process_rx(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
    ) -> Result<Outcome, QueueError> {
        if let Port::Switch(_) = self.port {
            self.pull_port(counters);
        }
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.is_empty() {
            return Ok(Outcome::default());
        }
        queue::run(q, mem, |c| {
            let walk = chain::walk(mem, c, MAX_DESCRIPTORS);
            let checked = walk.check_one_direction(u64::MAX, true);
            if let Err(e) = checked {
                tracing::debug!(head = walk.head, error = %e, "dropping a bad receive chain");
                counters.error();
                return Step::Used(0);
            }
            let pieces = walk.writable();
            let room = chain::total(&pieces);
            loop {
                let Some(frame) = rx.pop_front() else {
                    return Step::Stop;
                };
                if frame.len() + NET_HDR_LEN > room {
                    // Buffer too small for this frame: drop the frame, keep
                    // the buffer for the next one.
                    Counters::add(&counters.dropped, 1);
                    continue;
                }
                let mut hdr = [0u8; NET_HDR_LEN];
                // num_buffers: 1 (no VIRTIO_NET_F_MRG_RXBUF).
                hdr[10] = 1;
                let (hdr_pieces, data_pieces) = chain::split_at(&pieces, NET_HDR_LEN);
                let ok = chain::scatter(mem, &hdr_pieces, &hdr).is_ok()
                    && chain::scatter(mem, &data_pieces, &frame).is_ok();
                if !ok {
                    counters.error();
                    return Step::Used(0);
                }
                Counters::add(&counters.requests, 1);
                Counters::add(&counters.bytes, frame.len() as u64);
                return Step::Used((NET_HDR_LEN + frame.len()) as u32);
            }
        })
    }

    /// Sends the frames the guest queued for transmission.
    pub fn process_tx(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
    ) -> Result<Outcome, QueueError> {
        queue::run(q, mem, |c| {
            Counters::add(&counters.requests, 1);
            let walk = chain::walk(mem, c, MAX_DESCRIPTORS);
            let checked = walk
                .check_one_direction((NET_HDR_LEN + MAX_FRAME) as u64, false)
                .and_then(|()| {
                    if (walk.lengths().0 as usize) < NET_HDR_LEN + MIN_FRAME {
                        Err(ChainError::TooShort(
                            "less than a header and an Ethernet header",
                        ))
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = checked {
                tracing::debug!(head = walk.head, error = %e, "dropping a bad transmit chain");
                counters.error();
                return Step::Used(0);
            }
            let pieces = walk.readable();
            let (_, data) = chain::split_at(&pieces, NET_HDR_LEN);
            let mut frame = vec![0u8; chain::total(&data)];
            if chain::gather(mem, &data, &mut frame).is_err() {
                counters.error();
                return Step::Used(0);
            }
            if self.port.send(&frame) {
                Counters::add(&counters.bytes, frame.len() as u64);
            } else {
                Counters::add(&counters.dropped, 1);
            }
            Step::Used(0)
        })
    }
}

#[cfg(test)]
mod tests;
