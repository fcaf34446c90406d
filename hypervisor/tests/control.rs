//! dom0's control channel (`hypervisor run --control-fd`), end to end with
//! the freestanding test guest: started, pause/unpause, stats, the power
//! button requests, ended, and dom0 going away.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hypervisor::control::{ControlEvent, ControlRequest, DomainStats};

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// A `hypervisor run` with the other end of its control socket.
struct Hypervisor {
    child: Child,
    events: BufReader<UnixStream>,
    requests: UnixStream,
}

/// The descriptor number the child gets its control socket on.
const CONTROL_FD: i32 = 3;

impl Hypervisor {
    fn spawn(cmdline: &str, extra: &[&str]) -> Hypervisor {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hypervisor"));
        cmd.args(["run", "--kernel", frontends::TESTGUEST_ELF, "--mem", "64", "--console-log", "/dev/null", "--timeout", "120"])
            .args(["--cmdline", cmdline, "--control-fd", &CONTROL_FD.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls async-signal-safe functions (dup2, fcntl) on
        // descriptors that exist in the child.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 clears close-on-exec on the copy; a socket that is
                // already descriptor 3 needs it cleared by hand.
                let r = if fd == CONTROL_FD { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(fd, CONTROL_FD) };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd.spawn().expect("the hypervisor starts");
        drop(theirs);
        ours.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Hypervisor { child, events: BufReader::new(ours.try_clone().unwrap()), requests: ours }
    }

    fn send(&mut self, req: ControlRequest) {
        let mut line = serde_json::to_string(&req).unwrap();
        line.push('\n');
        self.requests.write_all(line.as_bytes()).unwrap();
    }

    fn next(&mut self) -> ControlEvent {
        let mut line = String::new();
        let n = self.events.read_line(&mut line).expect("an event within a minute");
        assert!(n > 0, "the control channel closed; hypervisor said:\n{}", self.stderr());
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not an event: {e}"))
    }

    fn request(&mut self, req: ControlRequest) -> ControlEvent {
        self.send(req);
        self.next()
    }

    fn stats(&mut self) -> DomainStats {
        match self.request(ControlRequest::Stats) {
            ControlEvent::Stats(s) => s,
            other => panic!("expected stats, got {other:?}"),
        }
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the hypervisor did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            if self.child.try_wait().ok().flatten().is_some() {
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
            }
        }
        s
    }
}

#[test]
fn pause_unpause_stats_and_ended() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    // About 4.5 s of guest time on our hosts: long enough to pause it in
    // the middle, short enough to end by itself.
    let mut hv = Hypervisor::spawn("workload=compute iterations=1e10", &[]);
    match hv.next() {
        ControlEvent::Started { pid, backend } => {
            assert_eq!(pid, hv.child.id());
            assert_eq!(backend, hypervisor::backend::detect().backend.name());
        }
        other => panic!("expected started, got {other:?}"),
    }
    let s0 = hv.stats();
    assert_eq!((s0.vcpus, s0.memory_bytes), (1, 64 << 20));
    assert!(s0.rss_bytes > 0);
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(hv.request(ControlRequest::Pause), ControlEvent::Paused);
    let a = hv.stats();
    assert!(a.vcpu_time_ns > s0.vcpu_time_ns, "the guest ran before the pause: {s0:?} {a:?}");
    std::thread::sleep(Duration::from_millis(500));
    let b = hv.stats();
    // A paused vCPU thread only wakes now and then to look for TLB
    // shootdowns: microseconds, not the 500 ms a running loop would use.
    assert!(b.vcpu_time_ns - a.vcpu_time_ns < 50_000_000, "the paused vCPU used CPU: {a:?} {b:?}");
    assert_eq!(hv.request(ControlRequest::Pause), ControlEvent::Paused, "pausing twice is harmless");

    assert_eq!(hv.request(ControlRequest::Unpause), ControlEvent::Unpaused);
    std::thread::sleep(Duration::from_millis(300));
    let c = hv.stats();
    assert!(c.vcpu_time_ns > b.vcpu_time_ns + 10_000_000, "the vCPU runs again: {b:?} {c:?}");
    assert!(c.exits >= a.exits);

    // The power button: no reply of its own (this guest does not poll it),
    // and the next answer is the next request's.
    hv.send(ControlRequest::Shutdown);
    assert!(matches!(hv.next_after_stats(), ControlEvent::Stats(_)));

    match hv.next() {
        ControlEvent::Ended { reason, exit_code, detail } => {
            assert_eq!((reason.as_str(), exit_code), ("guest-exit", 0), "{detail}");
            assert_eq!(detail, "the guest exited with status 0");
        }
        other => panic!("expected ended, got {other:?}"),
    }
    let (code, stderr) = hv.wait();
    assert_eq!(code, Some(0), "{stderr}");
}

impl Hypervisor {
    fn next_after_stats(&mut self) -> ControlEvent {
        self.request(ControlRequest::Stats)
    }
}

#[test]
fn a_reboot_request_is_reported_with_the_poweroff() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    // The guest powers off as soon as it runs; starting paused lets the
    // request come first.
    let mut hv = Hypervisor::spawn("workload=pv-poweroff", &["--paused"]);
    assert!(matches!(hv.next(), ControlEvent::Started { .. }));
    hv.send(ControlRequest::Reboot);
    assert_eq!(hv.request(ControlRequest::Unpause), ControlEvent::Unpaused);
    assert_eq!(hv.next(), ControlEvent::Ended { reason: "poweroff".into(), exit_code: 0, detail: "reboot requested".into() });
    let (code, stderr) = hv.wait();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn dom0_going_away_leaves_the_domain_running() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let mut hv = Hypervisor::spawn("workload=compute iterations=3e8", &[]);
    assert!(matches!(hv.next(), ControlEvent::Started { .. }));
    // dom0 dies: both ends of its socket close.
    let Hypervisor { child, events, requests } = hv;
    drop(events);
    drop(requests);
    let hv = Hypervisor { child, events: BufReader::new(UnixStream::pair().unwrap().0), requests: UnixStream::pair().unwrap().0 };
    let (code, stderr) = hv.wait();
    assert_eq!(code, Some(0), "the guest finished its work: {stderr}");
    assert_eq!(stderr.matches("control channel is gone").count(), 1, "logged once: {stderr}");
}

#[test]
fn a_domain_that_cannot_be_built_ends_with_an_error_event() {
    let mut hv = Hypervisor::spawn("", &["--device", "blk:/nonexistent/splitpv-test.sock"]);
    match hv.next() {
        ControlEvent::Ended { reason, exit_code, detail } => {
            assert_eq!(reason, "error");
            if kvm_usable() {
                assert_eq!(exit_code, pvabi::exit_status::EXIT_CODE_HOST_ERROR);
                assert!(detail.contains("device 0 (blk)") && detail.contains("does not exist"), "{detail}");
            }
        }
        other => panic!("expected ended, got {other:?}"),
    }
    let (code, _) = hv.wait();
    assert_eq!(code, Some(pvabi::exit_status::EXIT_CODE_HOST_ERROR));
}

#[test]
fn a_control_fd_that_is_not_a_socket_is_a_usage_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_hypervisor"))
        .args(["run", "--kernel", frontends::TESTGUEST_ELF, "--control-fd", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be the control channel"));
    let o = Command::new(env!("CARGO_BIN_EXE_hypervisor")).args(["run", "--kernel", frontends::TESTGUEST_ELF, "--paused"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "--paused needs --control-fd");
}
