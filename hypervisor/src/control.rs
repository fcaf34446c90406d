//! The control channel between dom0 and one `hypervisor run` process.
//!
//! dom0 creates a connected Unix stream socket pair, passes one end to the
//! hypervisor (`hypervisor run --control-fd N`) and keeps the other. Both
//! directions carry newline-delimited JSON objects with a `type` field:
//! dom0 sends [`ControlRequest`]s, the hypervisor sends [`ControlEvent`]s.
//!
//! - The hypervisor sends `started` when the domain's vCPUs are about to
//!   run (again after an `--on-reboot restart`), and `ended` just before
//!   it exits, whatever the reason (a domain that could not be built ends
//!   with reason `error`).
//! - `pause` is answered with `paused` once every vCPU has stopped
//!   running guest code, `unpause` with `unpaused`, `stats` with `stats`,
//!   `audit` with `audit` (the direct-paging audit, vCPUs paused meanwhile).
//! - `shutdown` presses the guest's power button (ACPI Generic Event
//!   Device); a guest that honours it powers off and the hypervisor sends
//!   `ended` with reason `poweroff`. `reboot` presses the same button and
//!   is remembered: the `ended` event then has reason `poweroff` and detail
//!   `reboot requested`, and dom0 starts the domain again. Neither has a
//!   reply of its own; a guest that ignores the button keeps running (dom0
//!   decides how long to wait before it kills the process).
//! - Every `pause`, `unpause`, `stats` and `audit` gets exactly one reply, in the
//!   order of the requests: the event above, or `error` if it cannot be
//!   carried out (the domain has ended, or a vCPU did not stop within
//!   10 s). `shutdown` and `reboot` never get one. A line that is not a
//!   request is answered with `error`.
//!
//! If dom0 closes its end (it died), the domain keeps running; the
//! hypervisor logs it once.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::DomainControl;

/// A request from dom0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Stop running the vCPUs; answered with [`ControlEvent::Paused`].
    Pause,
    /// Run them again; answered with [`ControlEvent::Unpaused`].
    Unpause,
    /// Ask the guest to power off (the power button); no reply.
    Shutdown,
    /// Ask the guest to power off so that dom0 restarts it; no reply.
    Reboot,
    /// Answered with [`ControlEvent::Stats`].
    Stats,
    /// Audit the direct-paging state with the vCPUs paused (and resumed
    /// after, unless they were paused); answered with
    /// [`ControlEvent::Audit`].
    Audit,
}

/// Counters of a running domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStats {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// CPU time the vCPU threads have used, summed, in nanoseconds.
    pub vcpu_time_ns: u64,
    /// VM exits of all vCPUs (KVM's `exits` statistic; 0 if the kernel has
    /// no binary statistics).
    pub exits: u64,
    /// The domain's RAM.
    pub memory_bytes: u64,
    /// The hypervisor process's resident set, guest RAM it touched
    /// included.
    pub rss_bytes: u64,
    /// Paging requests the frame table carried out: `mmu_update` requests
    /// (plain writes included) plus `mmuext_op` operations.
    #[serde(default)]
    pub paging_updates: u64,
    /// Paging requests it refused, every reason.
    #[serde(default)]
    pub paging_rejected: u64,
    /// Every non-zero direct-paging counter, by its `--stats` name.
    #[serde(default)]
    pub paging_counters: Vec<(String, u64)>,
}

/// A message to dom0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The domain starts running.
    Started {
        /// This process.
        pid: u32,
        /// The host's KVM: `vmx`, `svm` or `pvm`.
        backend: String,
    },
    /// Every vCPU has stopped.
    Paused,
    /// The vCPUs run again.
    Unpaused,
    /// The answer to [`ControlRequest::Stats`].
    Stats(DomainStats),
    /// The answer to [`ControlRequest::Audit`].
    Audit(crate::pv::audit::AuditReport),
    /// The domain ended; the process exits with `exit_code` right after.
    Ended {
        /// `poweroff`, `reboot`, `crash`, `guest-exit`, `timeout`, `stopped`
        /// or `error` (the domain could not be built or run).
        reason: String,
        /// The process's exit code (see `pvabi::exit_status`).
        exit_code: i32,
        /// A sentence for people; `reboot requested` for a poweroff that
        /// followed [`ControlRequest::Reboot`].
        detail: String,
    },
    /// A request could not be carried out.
    Error {
        /// Why.
        message: String,
    },
}

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// How long writing an event may block (dom0 not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The control socket could not be used.
#[derive(Debug, Error)]
pub enum ControlChannelError {
    /// The descriptor is not a connected Unix stream socket.
    #[error("file descriptor {fd} cannot be the {what}: {reason}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// What it was passed for.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Setting it up failed.
    #[error("setting up the control channel failed: {0}")]
    Io(#[from] io::Error),
}

/// Takes over `fd`, a Unix stream socket dom0 passed to this process as
/// its `what` (`--control-fd`, `--console-fd`), after checking that it is
/// one; marks it close-on-exec.
pub fn take_inherited_socket(fd: RawFd, what: &'static str) -> Result<UnixStream, ControlChannelError> {
    check_fd(fd, what)?;
    // SAFETY: `fd` is an open Unix stream socket (checked above) that
    // dom0 passed to this process for this purpose; nothing else in the
    // process owns it, so the UnixStream may close it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Keep it from leaking into anything this process might start.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(stream)
}

/// Checks that `fd` is an open Unix stream socket we may take.
fn check_fd(fd: RawFd, what: &'static str) -> Result<(), ControlChannelError> {
    let bad = |reason: &str| ControlChannelError::BadFd { fd, what, reason: reason.to_string() };
    if fd <= 2 {
        return Err(bad("descriptors 0, 1 and 2 are standard input and output"));
    }
    // SAFETY: `stat` is a plain C structure of integers, for which all
    // zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` structure, which `st` is; a closed
    // descriptor makes it fail with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(bad(&format!("it is not open ({})", io::Error::last_os_error())));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(bad("it is not a socket"));
    }
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for (opt, want, what) in [(libc::SO_DOMAIN, libc::AF_UNIX, "not a Unix socket"), (libc::SO_TYPE, libc::SOCK_STREAM, "not a stream socket")] {
        // SAFETY: getsockopt writes at most `len` bytes to `value`, an int
        // of that size.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut value as *mut libc::c_int).cast(), &mut len) };
        if r != 0 || value != want {
            return Err(bad(&format!("it is {what}")));
        }
    }
    Ok(())
}

/// dom0's control channel: a reader thread that answers requests, and a
/// writer for events.
#[derive(Clone)]
pub struct ControlChannel {
    writer: Arc<Mutex<Option<UnixStream>>>,
    target: Arc<Mutex<Option<DomainControl>>>,
    closed: Arc<AtomicBool>,
}

impl ControlChannel {
    /// Takes over the inherited socket `fd` (`--control-fd`).
    pub fn from_fd(fd: RawFd) -> Result<ControlChannel, ControlChannelError> {
        let stream = take_inherited_socket(fd, "control channel")?;
        Ok(ControlChannel::from_stream(stream)?)
    }

    /// Serves the control protocol on `stream`.
    pub fn from_stream(stream: UnixStream) -> io::Result<ControlChannel> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let reader = stream.try_clone()?;
        let channel = ControlChannel { writer: Arc::new(Mutex::new(Some(stream))), target: Arc::new(Mutex::new(None)), closed: Arc::new(AtomicBool::new(false)) };
        let c = channel.clone();
        std::thread::Builder::new().name("control".into()).spawn(move || c.serve(reader))?;
        Ok(channel)
    }

    /// Requests now go to this domain.
    pub fn attach(&self, control: DomainControl) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(control);
    }

    /// No domain runs (between a reboot and the next start).
    pub fn detach(&self) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends an event; a channel dom0 closed swallows it.
    pub fn send(&self, event: &ControlEvent) {
        let mut line = serde_json::to_string(event).expect("control events serialize");
        line.push('\n');
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = w.as_mut() else { return };
        if let Err(e) = stream.write_all(line.as_bytes()) {
            self.closed_once(&format!("writing to it failed: {e}"));
            *w = None;
        }
    }

    fn closed_once(&self, why: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            tracing::warn!("dom0's control channel is gone ({why}); the domain keeps running");
        }
    }

    fn serve(&self, stream: UnixStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) => {
                    self.closed_once("dom0 closed it");
                    return;
                }
                Ok(_) if !line.ends_with(b"\n") && line.len() as u64 >= MAX_LINE => {
                    self.send(&ControlEvent::Error { message: format!("a request longer than {MAX_LINE} bytes was ignored; the channel is closed") });
                    self.closed_once("an overlong request");
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.closed_once(&format!("reading from it failed: {e}"));
                    return;
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let reply = match serde_json::from_str::<ControlRequest>(text) {
                Ok(req) => self.handle(req),
                Err(e) => Some(ControlEvent::Error { message: format!("the request {text:?} is not valid: {e}") }),
            };
            if let Some(reply) = reply {
                self.send(&reply);
            }
        }
    }

    fn handle(&self, req: ControlRequest) -> Option<ControlEvent> {
        let target = self.target.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let ControlRequest::Shutdown | ControlRequest::Reboot = req {
            // Never a reply, so dom0 can match each reply to its pause,
            // unpause or stats request in order. The only failure is a
            // domain that is ending anyway (and says so with `ended`).
            let result = match &target {
                Some(d) if req == ControlRequest::Reboot => d.request_reboot(),
                Some(d) => d.request_shutdown(),
                None => Ok(()),
            };
            if let Err(e) = result {
                tracing::info!("control request {req:?} dropped: {e}");
            }
            return None;
        }
        let Some(domain) = target else {
            return Some(ControlEvent::Error { message: "no domain is running".into() });
        };
        let result = match req {
            ControlRequest::Pause => domain.pause().map(|()| ControlEvent::Paused),
            ControlRequest::Unpause => domain.unpause().map(|()| ControlEvent::Unpaused),
            ControlRequest::Stats => Ok(ControlEvent::Stats(domain.stats())),
            ControlRequest::Audit => domain.audit().map(|r| {
                eprintln!("hypervisor: paging audit (asked by dom0): {r}");
                ControlEvent::Audit(r)
            }),
            ControlRequest::Shutdown | ControlRequest::Reboot => unreachable!("handled above"),
        };
        Some(result.unwrap_or_else(|e| ControlEvent::Error { message: e.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format() {
        assert_eq!(serde_json::to_string(&ControlRequest::Pause).unwrap(), r#"{"type":"pause"}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(r#"{"type":"unpause"}"#).unwrap(), ControlRequest::Unpause);
        assert_eq!(serde_json::from_str::<ControlRequest>(r#"{"type":"reboot"}"#).unwrap(), ControlRequest::Reboot);
        assert!(serde_json::from_str::<ControlRequest>(r#"{"type":"destroy"}"#).is_err());
        let started = ControlEvent::Started { pid: 42, backend: "pvm".into() };
        assert_eq!(serde_json::to_string(&started).unwrap(), r#"{"type":"started","pid":42,"backend":"pvm"}"#);
        let stats = ControlEvent::Stats(DomainStats { vcpus: 2, vcpu_time_ns: 5, exits: 7, memory_bytes: 1 << 20, rss_bytes: 4096, paging_updates: 9, paging_rejected: 1, paging_counters: vec![("audits".into(), 1)] });
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(json, r#"{"type":"stats","vcpus":2,"vcpu_time_ns":5,"exits":7,"memory_bytes":1048576,"rss_bytes":4096,"paging_updates":9,"paging_rejected":1,"paging_counters":[["audits",1]]}"#);
        assert_eq!(serde_json::from_str::<ControlEvent>(&json).unwrap(), stats);
        // From a hypervisor without the paging counters.
        let old = r#"{"type":"stats","vcpus":2,"vcpu_time_ns":5,"exits":7,"memory_bytes":1048576,"rss_bytes":4096}"#;
        assert!(matches!(serde_json::from_str::<ControlEvent>(old).unwrap(), ControlEvent::Stats(DomainStats { paging_updates: 0, .. })));
        let ended = ControlEvent::Ended { reason: "poweroff".into(), exit_code: 0, detail: "reboot requested".into() };
        assert_eq!(serde_json::to_string(&ended).unwrap(), r#"{"type":"ended","reason":"poweroff","exit_code":0,"detail":"reboot requested"}"#);
        assert_eq!(serde_json::to_string(&ControlEvent::Error { message: "m".into() }).unwrap(), r#"{"type":"error","message":"m"}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(r#"{"type":"audit"}"#).unwrap(), ControlRequest::Audit);
        let audit = ControlEvent::Audit(crate::pv::audit::AuditReport { clean: true, walked: vec![(0, 0x1000)], tables: 4, findings: vec![], total_findings: 0 });
        let json = serde_json::to_string(&audit).unwrap();
        assert_eq!(json, r#"{"type":"audit","clean":true,"walked":[[0,4096]],"tables":4,"findings":[],"total_findings":0}"#);
        assert_eq!(serde_json::from_str::<ControlEvent>(&json).unwrap(), audit);
    }

    fn read_event(r: &mut BufReader<UnixStream>) -> ControlEvent {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn requests_without_a_domain_and_garbage_are_errors() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let channel = ControlChannel::from_stream(ours).unwrap();
        let mut r = BufReader::new(theirs.try_clone().unwrap());
        let mut w = theirs;
        // shutdown has no reply: the first reply is the pause's.
        w.write_all(b"{\"type\":\"shutdown\"}\n{\"type\":\"pause\"}\n\nnot json\n").unwrap();
        assert_eq!(read_event(&mut r), ControlEvent::Error { message: "no domain is running".into() });
        assert!(matches!(read_event(&mut r), ControlEvent::Error { message } if message.contains("not json")));
        channel.send(&ControlEvent::Paused);
        assert_eq!(read_event(&mut r), ControlEvent::Paused);
        drop(w);
        drop(r);
        // dom0 went away: sending is silently dropped.
        std::thread::sleep(Duration::from_millis(50));
        channel.send(&ControlEvent::Unpaused);
        channel.send(&ControlEvent::Unpaused);
    }

    #[test]
    fn only_unix_stream_sockets_are_taken() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert!(matches!(ControlChannel::from_fd(fd), Err(ControlChannelError::BadFd { .. })));
        assert!(matches!(ControlChannel::from_fd(1), Err(ControlChannelError::BadFd { .. })));
        assert!(matches!(ControlChannel::from_fd(100_000), Err(ControlChannelError::BadFd { .. })));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = ControlChannel::from_fd(std::os::fd::AsRawFd::as_raw_fd(&udp)).err().unwrap();
        assert!(e.to_string().contains("not a Unix socket"), "{e}");
    }
}
