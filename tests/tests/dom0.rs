//! The dom0 CLI and daemon end to end, with the freestanding test guest on
//! this host's KVM: lifecycle commands, crash reporting, bad input.

use std::time::Duration;

use systests::dom0::Dom0;
use systests::kvm_usable;

/// A test-guest workload that keeps the domain running for a long time.
const LONG_RUNNING: &str = "workload=compute iterations=1000000000000000";

fn id_of(d: &serde_json::Value) -> u64 {
    d["id"].as_u64().expect("domains have numeric IDs")
}

#[test]
fn list_pause_destroy_and_a_killed_hypervisor_is_reported() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("lifecycle");
    let a = dom0.testguest_config("alpha", LONG_RUNNING, "");
    // beta keeps its record when it crashes, so the report can be read.
    let b = dom0.testguest_config("beta", LONG_RUNNING, "on_crash = \"preserve\"");
    let created = dom0.ok(&["create", a.to_str().unwrap()]);
    assert!(created.stdout.contains("domain alpha created"), "{}", created.explain());
    dom0.ok(&["create", b.to_str().unwrap()]);

    let list = dom0.wait_for("both domains running", Duration::from_secs(20), |l| {
        l.len() == 2 && l.iter().all(|d| d["state"] == "running" && d["pid"].is_u64())
    });
    assert!(list.iter().all(|d| d["devices"].as_array().is_some_and(|v| v.iter().any(|x| x == "console"))), "{list:#?}");
    let text = dom0.ok(&["list"]).stdout;
    assert!(text.contains("alpha") && text.contains("beta") && text.contains("running"), "{text}");

    // A second domain of the same name is refused.
    let dup = dom0.cli(&["create", a.to_str().unwrap()]);
    assert_eq!(dup.code, Some(1), "{}", dup.explain());
    assert!(dup.stderr.contains("already exists"), "{}", dup.explain());

    // pause / unpause.
    dom0.ok(&["pause", "alpha"]);
    assert_eq!(dom0.domain("alpha").unwrap()["state"], "paused");
    dom0.ok(&["unpause", "alpha"]);
    assert_eq!(dom0.domain("alpha").unwrap()["state"], "running");

    // top: one refresh, machine-readable; vCPU time and memory are there.
    let top = dom0.ok(&["top", "-n", "1", "-d", "0.5", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(top.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", top.stdout));
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert!(r["vcpu_time_s"].as_f64().unwrap() > 0.0, "{r:#?}");
        assert_eq!(r["memory_mib"], 64);
        assert!(r["rss_mib"].as_f64().unwrap() > 0.0, "{r:#?}");
    }

    // info names the backend.
    let info = dom0.ok(&["info"]).stdout;
    assert!(info.contains("backend:") && info.contains("domains:            2"), "{info}");

    // destroy alpha: beta keeps running.
    let alpha_id = id_of(&dom0.domain("alpha").unwrap());
    dom0.ok(&["destroy", "alpha"]);
    assert!(dom0.domain("alpha").is_none());
    assert!(!dom0.run_dir().join("domains").join(alpha_id.to_string()).exists(), "the domain's files are removed");
    let beta = dom0.domain("beta").unwrap();
    assert_eq!(beta["state"], "running");

    // kill -9 of beta's hypervisor process: dom0 notices and says so.
    let pid = beta["pid"].as_u64().unwrap();
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let list = dom0.wait_for("beta's death to be noticed", Duration::from_secs(10), |l| {
        l.iter().any(|d| d["name"] == "beta" && d["state"] == "shutdown")
    });
    let beta = list.iter().find(|d| d["name"] == "beta").unwrap();
    let why = beta["last_end"].as_str().unwrap_or_default();
    assert!(why.contains("killed") && why.contains("signal 9"), "{beta:#?}");
    dom0.ok(&["destroy", "beta"]);
    assert!(dom0.list().is_empty());
}

#[test]
fn bad_configurations_and_names_get_clear_errors() {
    let dom0 = Dom0::new("errors");
    let bad = dom0.file("bad.cfg", b"name = \"x\"\nmemory = 64\nkernel = \"/nonexistent\"\nvcpu = 2\n");
    let r = dom0.cli(&["create", bad.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    assert!(r.stderr.contains("bad.cfg:4:1"), "the error points at the line and column: {}", r.explain());
    let r = dom0.cli(&["destroy", "nobody"]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    assert!(r.stderr.contains("no domain called"), "{}", r.explain());
    let r = dom0.cli(&["create"]);
    assert_eq!(r.code, Some(2), "usage errors exit 2: {}", r.explain());
}

#[test]
fn create_of_a_domain_that_cannot_be_built_fails_with_the_hypervisors_reason() {
    let dom0 = Dom0::new("create-fails");
    let text = dom0.file("notakernel", b"this is a text file, not a kernel\n");
    let cfg = dom0.file("broken.cfg", format!("name = \"broken\"\nmemory = 64\nkernel = \"{}\"\n", text.display()).as_bytes());
    let r = dom0.cli(&["create", cfg.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    assert!(!r.stdout.contains("created"), "it does not claim to have created the domain: {}", r.explain());
    assert!(
        r.stderr.contains("domain broken did not start") && r.stderr.contains("the file is not an ELF image"),
        "the hypervisor's reason is the answer: {}",
        r.explain()
    );
    // on_crash's default, destroy: nothing is left of it.
    assert!(dom0.list().is_empty(), "{:?}", dom0.list());
    // With on_crash = "preserve" it stays in the list, with the same reason.
    let kept = dom0.file("kept.cfg", format!("name = \"kept\"\nmemory = 64\nkernel = \"{}\"\non_crash = \"preserve\"\n", text.display()).as_bytes());
    let r = dom0.cli(&["create", kept.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    let d = dom0.domain("kept").expect("kept in the list");
    assert_eq!(d["state"], "shutdown", "{d}");
    assert!(d.to_string().contains("not an ELF image"), "the list says why: {d}");
    // A domain that does start is still created, and its name is free again after the failure.
    let ok = dom0.testguest_config("broken", LONG_RUNNING, "");
    dom0.ok(&["create", ok.to_str().unwrap()]);
    dom0.ok(&["destroy", "broken"]);
}

/// The dom0 daemon serving `run_dir` (the process holding its lock file).
fn daemon_pid(run_dir: &std::path::Path) -> u32 {
    let lock = run_dir.join("dom0.lock");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock)) {
            return pid;
        }
    }
    panic!("no process holds {}", lock.display());
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A short lifecycle soak: domains with a disk, a vif on a switch and the
/// console, created and destroyed again and again, leave nothing behind in
/// the daemon (each life starts three backends; one leaked descriptor per
/// backend life stopped dom0 after some thousands of lives).
#[test]
fn domain_lives_leave_no_descriptor_or_file_behind_in_the_daemon() {
    let dom0 = Dom0::new("lives");
    let disk = disk_image(&dom0, "lives", 1);
    let extra = format!("disk = [ '{},raw,xvda,rw' ]\nvif = [ 'switch=soak' ]", disk.display());
    let cfg = dom0.testguest_config("soak", LONG_RUNNING, &extra);
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    dom0.ok(&["destroy", "soak"]);
    let pid = daemon_pid(&dom0.run_dir());
    let before = open_fds(pid);
    for _ in 0..15 {
        dom0.ok(&["create", cfg.to_str().unwrap()]);
        dom0.ok(&["destroy", "soak"]);
    }
    // (a client connection the daemon has not closed yet may still count)
    let start = std::time::Instant::now();
    while open_fds(pid) != before && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(pid), before, "the daemon's descriptors after 15 more lives");
    let left: Vec<_> = std::fs::read_dir(dom0.run_dir().join("domains")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left of ended domains: {left:?}");
}

/// Waits until domain `name` has shut down (it was configured to be kept)
/// and returns its serial console log.
fn finished_log(dom0: &Dom0, name: &str, limit: Duration) -> String {
    let list = dom0.wait_for(&format!("{name} to finish"), limit, |l| {
        l.iter().any(|d| d["name"] == name && d["state"] == "shutdown")
    });
    let d = list.iter().find(|d| d["name"] == name).unwrap();
    dom0.serial_log(id_of(d))
}

/// A raw disk image of `mib` MiB of zeros.
fn disk_image(dom0: &Dom0, name: &str, mib: usize) -> std::path::PathBuf {
    dom0.file(name, &vec![0u8; mib << 20])
}

#[test]
fn a_disk_written_and_flushed_in_one_life_is_there_after_destroy_and_recreate() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("disk");
    let img = disk_image(&dom0, "disk.img", 1);
    let disk = format!("disk = [ 'format=raw, vdev=xvda, access=rw, target={}' ]\non_poweroff = \"preserve\"", img.display());
    let cfg = dom0.testguest_config("writer", "workload=virtio-blk blk.write=42 blk.sectors=64", &disk);
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    let log = finished_log(&dom0, "writer", Duration::from_secs(30));
    assert!(log.contains("VIRTIO-BLK PASS"), "{log}");
    dom0.ok(&["destroy", "writer"]);

    // The bytes are in the image file itself, as the guest wrote them.
    let bytes = std::fs::read(&img).unwrap();
    assert!(frontends::virtio::pattern::check(42, 0, &bytes[..64 * 512]).is_ok(), "the image holds the guest's pattern");

    // A new domain with the same disk, read-only this time, reads them back
    // and cannot write.
    let disk = format!("disk = [ '{},raw,xvda,r' ]\non_poweroff = \"preserve\"", img.display());
    let cfg = dom0.testguest_config("reader", "workload=virtio-blk blk.verify=42 blk.sectors=64", &disk);
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    let log = finished_log(&dom0, "reader", Duration::from_secs(30));
    assert!(log.contains("VIRTIO-BLK PASS"), "{log}");
    dom0.ok(&["destroy", "reader"]);
    let cfg = dom0.testguest_config("ro", "workload=virtio-blk blk.expect-ro", &disk);
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    let log = finished_log(&dom0, "ro", Duration::from_secs(30));
    assert!(log.contains("VIRTIO-BLK PASS"), "{log}");
    assert_eq!(std::fs::read(&img).unwrap(), bytes, "a read-only disk is never written");
}

#[test]
fn two_domains_exchange_frames_through_the_dom0_switch() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("switch");
    let keep = "on_poweroff = \"preserve\"";
    let pong = dom0.testguest_config(
        "pong",
        "workload=virtio-net net.role=pong net.count=50",
        &format!("vif = [ 'switch=lan, mac=02:00:00:00:00:02' ]\n{keep}"),
    );
    let ping = dom0.testguest_config(
        "ping",
        "workload=virtio-net net.role=ping net.peer=02:00:00:00:00:02 net.count=50",
        &format!("vif = [ 'switch=lan, mac=02:00:00:00:00:01' ]\n{keep}"),
    );
    dom0.ok(&["create", pong.to_str().unwrap()]);
    // Another domain cannot join the switch with pong's address (and so
    // cannot take its frames); pong keeps its port.
    let thief = dom0.testguest_config("thief", "workload=banner", "vif = [ 'switch=lan, mac=02:00:00:00:00:02' ]");
    let r = dom0.cli(&["create", thief.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    assert!(r.stderr.contains("the MAC address 02:00:00:00:00:02 is already on switch lan"), "{}", r.explain());
    assert!(!dom0.ok(&["list"]).stdout.contains("thief"), "a refused domain is not listed");
    dom0.ok(&["create", ping.to_str().unwrap()]);
    let log = finished_log(&dom0, "ping", Duration::from_secs(60));
    assert!(log.contains("VIRTIO-NET PASS ping: 50 echoes"), "{log}");
    let log = finished_log(&dom0, "pong", Duration::from_secs(30));
    assert!(log.contains("VIRTIO-NET PASS pong"), "{log}");
}

#[test]
fn the_console_command_shows_the_guest_and_sends_it_input() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("console");
    // The domain's own console (the default): the PV console and the UART,
    // relayed from the hypervisor. `create -c` attaches at once; the boot
    // lines the guest printed on its UART before it switched to console_io
    // are there too, and the typed line reaches console_io(READ).
    let cfg = dom0.testguest_config("pvtalker", "workload=pv-console-echo console.wait-ms=30000", "");
    let r = dom0.cli_with_input(&["create", cfg.to_str().unwrap(), "-c"], Some(b"first line\n"));
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.stdout.contains("domain pvtalker created"), "{}", r.explain());
    assert!(r.stdout.contains("testguest: SplitPVonKVM ABI"), "{}", r.explain());
    assert!(r.stdout.contains("SPLITPV-PVCONSOLE hello"), "{}", r.explain());
    assert!(r.stdout.contains("SPLITPV-PVCONSOLE echo: first line"), "{}", r.explain());

    // `console -t virtio`: the virtio-console served by dom0's backend, with
    // a script's input: the line goes to the guest, whose echo comes back;
    // the command ends when the domain does.
    let cfg = dom0.testguest_config("talker", "workload=virtio-console console.name=talker console.wait-ms=30000", "");
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    let r = dom0.cli_with_input(&["console", "-t", "virtio", "talker"], Some(b"hello from the test\n"));
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.stdout.contains("SPLITPV-VCONSOLE hello from talker"), "{}", r.explain());
    assert!(r.stdout.contains("SPLITPV-VCONSOLE echo: hello from the test"), "{}", r.explain());
    assert!(!r.stdout.contains("testguest: SplitPVonKVM ABI"), "the virtio-console shows the UART's output: {}", r.explain());

    // The PV console of the same kind of domain, with its input.
    let cfg = dom0.testguest_config("pvtalker2", "workload=pv-console-echo console.wait-ms=30000", "");
    dom0.ok(&["create", cfg.to_str().unwrap()]);
    let r = dom0.cli_with_input(&["console", "pvtalker2"], Some(b"second line\n"));
    assert_eq!(r.code, Some(0), "{}", r.explain());
    assert!(r.stdout.contains("SPLITPV-PVCONSOLE echo: second line"), "{}", r.explain());
}

#[test]
fn hostile_rings_are_refused_and_dom0_keeps_serving_another_domain() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("hostile");
    let keep = "on_poweroff = \"preserve\"\non_crash = \"preserve\"";
    let bad_img = disk_image(&dom0, "hostile.img", 1);
    let good_img = disk_image(&dom0, "good.img", 1);
    let hostile = dom0.testguest_config(
        "hostile",
        "workload=virtio-hostile",
        &format!("disk = [ '{},raw,xvda,w' ]\n{keep}", bad_img.display()),
    );
    let good = dom0.testguest_config(
        "good",
        "workload=virtio-blk blk.write=7 blk.sectors=256",
        &format!("disk = [ '{},raw,xvda,w' ]\n{keep}", good_img.display()),
    );
    dom0.ok(&["create", hostile.to_str().unwrap()]);
    dom0.ok(&["create", good.to_str().unwrap()]);
    let log = finished_log(&dom0, "hostile", Duration::from_secs(60));
    assert!(log.contains("VIRTIO-HOSTILE PASS"), "{log}");
    for case in ["desc-outside-ram", "chain-loop", "chain-too-long", "data-wrong-direction", "status-not-writable", "queue-outside-ram"] {
        assert!(log.contains(&format!("VIRTIO-HOSTILE {case}:")), "{case} missing:\n{log}");
    }
    let log = finished_log(&dom0, "good", Duration::from_secs(60));
    assert!(log.contains("VIRTIO-BLK PASS"), "{log}");
    // The hostile guest's disk holds nothing it did not write legitimately
    // outside the image: the image is still exactly 1 MiB.
    assert_eq!(std::fs::metadata(&bad_img).unwrap().len(), 1 << 20);
    // dom0 still answers and serves a new domain on the same switch of
    // disks.
    let again = dom0.testguest_config(
        "again",
        "workload=virtio-blk blk.verify=7 blk.sectors=256",
        &format!("disk = [ '{},raw,xvda,r' ]\n{keep}", good_img.display()),
    );
    dom0.ok(&["create", again.to_str().unwrap()]);
    let log = finished_log(&dom0, "again", Duration::from_secs(60));
    assert!(log.contains("VIRTIO-BLK PASS"), "{log}");
}

#[test]
fn shutdown_presses_the_power_button_and_reboot_starts_the_domain_again() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("power");
    let keep = "on_poweroff = \"preserve\"";
    let cfg = dom0.testguest_config("button", "workload=power-button", keep);
    // -p: created paused; it only starts waiting once unpaused.
    let r = dom0.ok(&["create", "-p", cfg.to_str().unwrap()]);
    assert!(r.stdout.contains("paused"), "{}", r.explain());
    dom0.wait_for("the paused domain to be built", Duration::from_secs(20), |l| {
        l.iter().any(|d| d["name"] == "button" && d["state"] == "paused")
    });
    dom0.ok(&["unpause", "button"]);

    // reboot: the guest powers off on the button, dom0 starts it again.
    let r = dom0.ok(&["reboot", "button"]);
    assert!(r.stdout.contains("reboot requested"), "{}", r.explain());
    let list = dom0.wait_for("the second life", Duration::from_secs(20), |l| {
        l.iter().any(|d| d["name"] == "button" && d["starts"] == 2 && d["state"] == "running")
    });
    let d = list.iter().find(|d| d["name"] == "button").unwrap();
    assert!(d["last_end"].as_str().unwrap().starts_with("poweroff"), "{d:#?}");

    // shutdown -w: answers once the domain has ended.
    let r = dom0.ok(&["shutdown", "-w", "--timeout", "30", "button"]);
    assert!(r.stdout.contains("has shut down: poweroff"), "{}", r.explain());
    let d = dom0.domain("button").unwrap();
    assert_eq!(d["state"], "shutdown", "{d:#?}");
    let log = dom0.serial_log(id_of(&d));
    assert!(log.contains("power button pressed"), "{log}");

    // A guest that ignores the button: shutdown -w gives up with a clear
    // error and the domain keeps running.
    let deaf = dom0.testguest_config("deaf", LONG_RUNNING, "");
    dom0.ok(&["create", deaf.to_str().unwrap()]);
    let r = dom0.cli(&["shutdown", "-w", "--timeout", "2", "deaf"]);
    assert_eq!(r.code, Some(1), "{}", r.explain());
    assert!(r.stderr.contains("did not shut down within 2 s"), "{}", r.explain());
    assert_eq!(dom0.domain("deaf").unwrap()["state"], "running");
}

#[test]
fn malformed_management_requests_get_an_error_and_the_daemon_keeps_serving() {
    use std::io::{Read, Write};
    let dom0 = Dom0::new("protocol");
    dom0.ok(&["list"]); // starts the daemon
    let sock = dom0.run_dir().join("dom0.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the management socket is private");
    let ask = |bytes: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    for bad in [&b"not json\n"[..], b"{\"op\":\"format_disk\"}\n", b"{\"op\":\"destroy\"}\n", b"\xff\xfe\n"] {
        let answer = ask(bad);
        assert!(answer.starts_with("{\"status\":\"error\""), "{bad:?} -> {answer}");
    }
    // A line longer than the limit, without a newline.
    let answer = ask(&vec![b'x'; (1 << 20) + 10]);
    assert!(answer.contains("at most"), "{answer}");
    // Still serving.
    dom0.ok(&["list"]);
}

/// Waits until the serial log of domain `id` contains `text`.
fn wait_for_console(dom0: &Dom0, id: u64, text: &str, limit: Duration) {
    let start = std::time::Instant::now();
    while !dom0.serial_log(id).contains(text) {
        assert!(start.elapsed() < limit, "no {text:?} on the console within {limit:?}:\n{}", dom0.serial_log(id));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_pauses_a_direct_paging_domain_checks_it_and_resumes_it() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("audit");
    let walker = dom0.testguest_config("walker", "workload=pv-paging-loop", "paging = \"direct\"");
    let plain = dom0.testguest_config("plain", LONG_RUNNING, "");
    dom0.ok(&["create", walker.to_str().unwrap()]);
    dom0.ok(&["create", plain.to_str().unwrap()]);
    dom0.wait_for("both domains running", Duration::from_secs(20), |l| l.len() == 2 && l.iter().all(|d| d["state"] == "running"));
    let id = id_of(&dom0.domain("walker").unwrap());
    wait_for_console(&dom0, id, "testguest: paging: looping", Duration::from_secs(20));

    let a = dom0.ok(&["audit", "walker"]);
    assert!(
        a.stdout.starts_with("domain walker: paging audit clean: the frame table's counts match live memory; walked vCPU 0 at CR3 0x"),
        "{}",
        a.explain()
    );
    let json = dom0.ok(&["audit", "walker", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    assert_eq!(report["clean"], true, "{report:#?}");
    assert_eq!(report["walked"].as_array().map(Vec::len), Some(1), "{report:#?}");
    assert!(report["tables"].as_u64().unwrap() >= 4, "{report:#?}");
    // Resumed: the guest keeps making paging hypercalls.
    assert_eq!(dom0.domain("walker").unwrap()["state"], "running");
    let log = dom0.hypervisor_log(id);
    assert!(log.contains("hypervisor: paging audit (asked by dom0): clean"), "{log}");

    // A paused domain is audited and stays paused.
    dom0.ok(&["pause", "walker"]);
    dom0.ok(&["audit", "walker"]);
    assert_eq!(dom0.domain("walker").unwrap()["state"], "paused");
    dom0.ok(&["unpause", "walker"]);

    // A native domain has nothing validated to walk.
    let p = dom0.ok(&["audit", "plain"]);
    assert!(p.stdout.contains("no vCPU has loaded a validated base pointer"), "{}", p.explain());
    let missing = dom0.cli(&["audit", "nosuch"]);
    assert_eq!(missing.code, Some(1), "{}", missing.explain());
    dom0.ok(&["destroy", "walker"]);
    dom0.ok(&["destroy", "plain"]);
}

#[test]
fn list_info_and_top_show_the_paging_mode_and_the_validators_rates() {
    if !kvm_usable() {
        eprintln!("skipped: /dev/kvm is not usable");
        return;
    }
    let dom0 = Dom0::new("paging-rates");
    let walker = dom0.testguest_config("walker", "workload=pv-paging-loop", "paging = \"direct\"\npaging_violation = \"report\"");
    let plain = dom0.testguest_config("plain", LONG_RUNNING, "");
    dom0.ok(&["create", walker.to_str().unwrap()]);
    dom0.ok(&["create", plain.to_str().unwrap()]);
    let list = dom0.wait_for("both domains running", Duration::from_secs(20), |l| l.len() == 2 && l.iter().all(|d| d["state"] == "running"));
    let mode = |name: &str| list.iter().find(|d| d["name"] == name).map(|d| d["paging"].clone());
    assert_eq!(mode("walker"), Some("direct".into()), "{list:#?}");
    assert_eq!(mode("plain"), Some("native".into()), "{list:#?}");
    let id = id_of(&dom0.domain("walker").unwrap());
    wait_for_console(&dom0, id, "testguest: paging: looping", Duration::from_secs(20));

    // info NAME: the mode, the policy and the hypervisor's counters.
    let info = dom0.ok(&["info", "walker", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap_or_else(|e| panic!("{e}: {}", info.stdout));
    assert_eq!(info["paging"], "direct", "{info:#?}");
    assert_eq!(info["paging_violation"], "report", "{info:#?}");
    let counter = |name: &str| {
        info["paging_counters"].as_array().and_then(|c| c.iter().find(|p| p[0] == name)).and_then(|p| p[1].as_u64()).unwrap_or(0)
    };
    assert!(counter("updates_applied") > 0 && counter("rejected_type_conflict") > 0, "{info:#?}");
    let text = dom0.ok(&["info", "walker"]).stdout;
    assert!(text.contains("paging:             direct") && text.contains("updates_applied="), "{text}");
    let text = dom0.ok(&["info", "plain"]).stdout;
    assert!(text.contains("paging:             native") && text.contains("(not checked: native paging)"), "{text}");

    // top: two validated updates and one refusal about every 1-2 ms.
    let top = dom0.ok(&["top", "-n", "1", "-d", "1", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(top.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", top.stdout));
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{rows:#?}")).clone();
    let (w, p) = (row("walker"), row("plain"));
    assert_eq!(w["paging"], "direct");
    let (updates, rejected) = (w["paging_updates_per_s"].as_f64().unwrap(), w["paging_rejected_per_s"].as_f64().unwrap());
    assert!(updates > 50.0 && rejected > 25.0 && updates > rejected, "{w:#?}");
    assert!(w["paging_updates"].as_u64().unwrap() > w["paging_rejected"].as_u64().unwrap(), "{w:#?}");
    assert_eq!((p["paging_updates_per_s"].as_f64(), p["paging_rejected_per_s"].as_f64()), (Some(0.0), Some(0.0)), "{p:#?}");
    let text = dom0.ok(&["top", "-n", "1", "-d", "0.5"]).stdout;
    assert!(text.contains("PT-UPD/s") && text.contains("direct"), "{text}");
    dom0.ok(&["destroy", "walker"]);
    dom0.ok(&["destroy", "plain"]);
}
