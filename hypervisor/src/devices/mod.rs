//! Devices the hypervisor process emulates itself, and the buses that route
//! guest port I/O and MMIO to them.
//!
//! Only what must be synchronous with the vCPU lives here (the UART, the
//! debug-exit port, the power button, the virtio-mmio register blocks).
//! Real device work (block, network, console) happens in dom0's backends
//! over shared-memory queues ([`vhost_user`]).

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod console_log;
pub mod debug_exit;
pub mod ged;
pub mod i8042;
pub mod serial;
pub mod vhost_user;
pub mod virtio_mmio;

pub use bus::{Bus, BusDevice, BusError, BusRequest};
