//! The per-domain runtime of our Xen-style paravirtualized hypervisor on KVM.
//!
//! A [`domain::Domain`] is one KVM VM with memfd-backed guest RAM, one
//! thread per vCPU and the few devices that must be emulated synchronously.
//! It is built from a [`config::DomainConfig`]; the `hypervisor` binary runs
//! one domain in the foreground, and dom0 spawns one such process per
//! domain and talks to it over [`control`]. Split-driver devices are
//! virtio-mmio register blocks here whose device work runs in dom0
//! ([`devices::virtio_mmio`], [`devices::vhost_user`]).
//!
//! Layout, after Firecracker's `src/vmm`: pure logic ([`config`],
//! [`layout`], [`cpuid`], [`boot::elf`], [`backend`]) is kept apart from the
//! KVM plumbing in [`vstate`], so it is tested without /dev/kvm.
#![deny(missing_docs)]

mod abi_bytes;
pub mod backend;
pub mod boot;
pub mod config;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod domain;
pub mod host;
pub mod layout;
pub mod pv;
pub mod vstate;

pub use config::DomainConfig;
pub use domain::{Domain, DomainEnd, RunOptions, RunReport};
