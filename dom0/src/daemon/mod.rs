//! `dom0 daemon`: owns the host side of every domain.
//!
//! It keeps the domain table, answers the management socket
//! ([`crate::protocol`]), starts one `hypervisor` process per domain with a
//! control socketpair and the vhost-user sockets of the domain's backends,
//! notices when a process ends (whatever the reason, `kill -9` included)
//! and applies `on_poweroff` / `on_reboot` / `on_crash`.
//!
//! Concurrency: one tokio task per client connection, one per domain life
//! (waiting for its process) and one per control channel. The table is a
//! std mutex never held across an await.

mod console;
mod control;
mod domain;
mod host;
mod server;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use server::run;

/// The daemon could not start or serve.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A directory could not be created.
    #[error("creating {path} failed: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Another daemon holds the lock.
    #[error("another dom0 daemon is already running (it holds {0})")]
    AlreadyRunning(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("locking {path} failed: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The management socket could not be bound.
    #[error("listening on {path} failed: {source}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The tokio runtime could not be built.
    #[error("starting the async runtime failed: {0}")]
    Runtime(io::Error),
}
