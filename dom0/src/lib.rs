//! dom0, the privileged management process.
//!
//! - [`config`]: xl.cfg-style files parsed into a [`config::DomainSpec`];
//! - [`daemon`]: the management daemon (domain table, one `hypervisor`
//!   process per domain, `on_*` actions);
//! - [`backends`]: the device side of the split drivers (vhost-user);
//! - [`protocol`], [`client`], [`paths`]: the management socket and the
//!   CLI's side of it (the `dom0` binary).

// Unsafe code is allowed only where a module opts in with a SAFETY comment
// per block (passing a file descriptor to a child process).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod client;
pub mod config;
pub mod daemon;
pub mod paths;
pub mod protocol;
