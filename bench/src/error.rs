//! What can go wrong in a benchmark run.

use std::io;
use std::path::PathBuf;

/// A benchmark that could not be run, or produced nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line argument is wrong.
    #[error("bad argument: {0}")]
    Usage(String),
    /// The hypervisor binary is not there and could not be built.
    #[error("the hypervisor binary cannot be found or built: {0}")]
    NoHypervisor(String),
    /// The test guest image is not there.
    #[error("the test guest image {0} is not a file (name it with --testguest PATH or SPLITPV_TESTGUEST)")]
    NoTestGuest(PathBuf),
    /// /dev/kvm cannot be opened.
    #[error("/dev/kvm cannot be used by this process: {0}")]
    NoKvm(io::Error),
    /// A process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// The program.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// A dom0 backend could not be started.
    #[error("cannot start the {what} backend: {source}")]
    Backend {
        /// Which backend.
        what: String,
        /// Why.
        source: dom0::backends::BackendError,
    },
    /// A guest run did not end with the PASS line it should have printed.
    #[error("the guest run `{cmdline}` failed (exit code {code:?}): {detail}")]
    GuestFailed {
        /// The guest's command line.
        cmdline: String,
        /// The hypervisor's exit code.
        code: Option<i32>,
        /// The last lines it printed.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("cannot write or read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw the plot {path}: {detail}")]
    Plot {
        /// The PNG.
        path: PathBuf,
        /// What plotters said.
        detail: String,
    },
    /// The PTE validator refused the baseline's own updates.
    #[error("the PTE validator baseline failed: {0}")]
    Validator(String),
    /// A Linux boot of the boot-time comparison never reached init.
    #[error("boot-time: {0}")]
    Boot(String),
    /// `bench profile`: perf failed or gave nothing usable.
    #[error("profile: {0}")]
    Profile(String),
    /// Some other OS call failed.
    #[error("{what} failed: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}
