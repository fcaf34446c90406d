//! dom0, the privileged management process.
//!
//! So far this crate holds the domain configuration format ([`config`]):
//! xl.cfg-style files parsed into a [`config::DomainSpec`]. The daemon, the
//! CLI and the device backends will build on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
