//! The ring benchmark: virtio queues driven end to end, with baselines
//! measured in the same run, written up as a markdown report with plots.
//!
//! `cargo run --release -p bench -- [--quick] [--out docs/performance.md] [--rig]`
//!
//! - The frontend is the freestanding test guest (`workload=virtio-bench`,
//!   `virtio-net`, and the exit loops `io-loop`, `pv-null`,
//!   `pv-paging-bench`), each run in its own `hypervisor run` process
//!   ([`procs`]).
//! - The consumer is dom0's vhost-user backends, started in this process
//!   with `dom0::backends::start`: the null device, virtio-blk on a file
//!   (page cache and O_DIRECT), and virtio-net between two domains through
//!   dom0's switch ([`ring`]).
//! - Baselines ([`baseline`]): memcpy, an SPSC queue between two threads,
//!   the PTE validator in-process and plain memory writes.
//! - [`suite`] says what a full, quick, tiny or rig run measures and runs
//!   it; [`report`] writes the markdown, [`plot`] the PNGs.
//! - [`rig`] (`--rig`) runs the same benchmark inside the hardware-assisted
//!   rig (tests/rig, nested SVM under QEMU TCG) and reads back its
//!   [`summary`]; [`boot`] (`bench boot-time`, run there) times Linux boots
//!   on our hypervisor and on QEMU microvm.
//! - [`profile`] (`bench profile`) takes perf profiles of the runs behind
//!   the missed targets; the report includes their summaries.

pub mod baseline;
pub mod boot;
pub mod error;
pub mod plot;
pub mod procs;
pub mod profile;
pub mod report;
pub mod rig;
pub mod ring;
pub mod suite;
pub mod summary;

pub use error::BenchError;
