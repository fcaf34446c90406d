//! The test guest's virtio-mmio drivers (`testguest/src/virtio/`),
//! compiled for the host: the same `no_std` files, so that their ring
//! logic, request encoding and workloads are unit-tested here against
//! simulated devices (`sim.rs`), and so that host code can check what a
//! guest wrote (e.g. [`pattern::check`] on a disk image after
//! `workload=virtio-blk blk.write=SEED`).
//!
//! Only the guest's `mod.rs` (volatile MMIO, the TSC, its DMA memory) is
//! not shared.

#[path = "../../testguest/src/virtio/args.rs"]
pub mod args;
#[path = "../../testguest/src/virtio/blk.rs"]
pub mod blk;
#[path = "../../testguest/src/virtio/console.rs"]
pub mod console;
#[path = "../../testguest/src/virtio/defs.rs"]
pub mod defs;
#[path = "../../testguest/src/virtio/hostile.rs"]
pub mod hostile;
#[path = "../../testguest/src/virtio/net.rs"]
pub mod net;
#[path = "../../testguest/src/virtio/pattern.rs"]
pub mod pattern;
#[path = "../../testguest/src/virtio/ring.rs"]
pub mod ring;
#[path = "../../testguest/src/virtio/transport.rs"]
pub mod transport;
#[path = "../../testguest/src/virtio/workloads.rs"]
pub mod workloads;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
