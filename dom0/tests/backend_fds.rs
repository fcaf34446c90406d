//! A backend's life leaves no file descriptor behind in dom0 (each domain
//! life starts a backend per device: a leak of one descriptor per life
//! ends, some thousand lives later, at the daemon's fd limit). Its own
//! test binary: it counts the process's descriptors, which other tests'
//! threads would change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dom0::backends::{self, BackendSpec};
use vhost::vhost_user::Frontend;
use vhost::VhostBackend;

/// The process's open descriptors by kind (eventfd, socket, ...).
fn fds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy().into_owned();
            let kind = t.split(':').next().unwrap_or("").to_string();
            let kind = if t.starts_with("anon_inode:") { t } else { kind };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
}

fn life(n: usize, connect: bool) {
    let socket = std::env::temp_dir().join(format!("dom0-fds-{}-{n}.sock", std::process::id()));
    let image: PathBuf = std::env::temp_dir().join(format!("dom0-fds-{}-{n}.img", std::process::id()));
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let backend = backends::start(
        BackendSpec::Blk { path: image.clone(), read_only: false, serial: "fds".into(), direct: false },
        &socket,
    )
    .unwrap();
    if connect {
        let fe = Frontend::connect(&socket, 1).unwrap();
        fe.set_owner().unwrap();
        let features = fe.get_features().unwrap();
        fe.set_features(features).unwrap();
        drop(fe);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !backend.is_finished() {
            assert!(Instant::now() < deadline, "the backend did not end after its frontend left");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(backend);
    let _ = std::fs::remove_file(&image);
}

#[test]
fn backend_lives_leave_no_descriptor_behind() {
    // one life first: lazily created process-wide descriptors are not leaks
    life(0, true);
    let before = fds();
    for n in 1..=5 {
        life(n, true);
        life(100 + n, false);
    }
    let after = fds();
    assert_eq!(before, after, "descriptors before and after 10 backend lives");
}
