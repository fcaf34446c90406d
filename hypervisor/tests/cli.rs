//! The `hypervisor` command line: argument checking and host reports.
//! Booting real guests is tested end to end in the `tests/` crate.

use std::path::PathBuf;
use std::process::{Command, Output};

fn hypervisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypervisor")).args(args).output().expect("the hypervisor binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("hv-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn kvm_available() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

#[test]
fn info_names_the_backend_the_host_has() {
    if !kvm_available() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let o = hypervisor(&["info", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected = hypervisor::backend::detect().backend.name();
    assert_eq!(report["backend"], expected);
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(report["backend"], "pvm");
        assert_eq!(report["pvm_signature_confirmed"], true, "MSR 0x4b564d11 must read PVM on a kvm_pvm host");
    }
    let caps = report["capabilities"].as_array().unwrap();
    assert!(caps.iter().any(|c| c["name"] == "KVM_CAP_USER_MEMORY" && c["value"].as_i64() > Some(0)));
    let human = hypervisor(&["info"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&format!("host backend: {expected}")));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let k = temp_file("any.elf", b"\x7fELF");
    let k = k.to_str().unwrap();
    for (args, needle) in [
        (vec!["run", "--kernel", k, "--vcpus", "0"], "0 vCPUs is out of range"),
        (vec!["run", "--kernel", k, "--mem", "1"], "memory of 1 MiB is out of range"),
        (vec!["run", "--kernel", k, "--name", "../etc"], "is not valid"),
        (vec!["run", "--kernel", k, "--timeout=0"], "not a positive number"),
        (vec!["run", "--kernel", k, "--timeout=-3"], "not a positive number"),
        (vec!["run", "--kernel", k, "--mem", "lots"], "invalid value 'lots'"),
        (vec!["run", "--kernel", k, "--device", "disk:/run/x.sock"], "device \"disk:/run/x.sock\" is not valid"),
        (vec!["run", "--kernel", k, "--device", "blk"], "KIND:SOCKET"),
        (
            vec!["run", "--kernel", k, "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a", "--device", "blk:/a"],
            "at most 8 virtio devices",
        ),
        (vec!["run"], "--kernel"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let o = hypervisor(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: expected {needle:?} in {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn unusable_kernels_are_refused_with_a_reason() {
    if !kvm_available() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let not_elf = temp_file("notelf", b"MZ this is not an ELF file");
    let truncated = temp_file("trunc.elf", b"\x7fELF\x02\x01\x01");
    let missing = std::env::temp_dir().join("hv-cli-does-not-exist.elf");
    for (path, needle) in [
        (not_elf, "not an ELF image"),
        (truncated, "truncated"),
        (missing, "reading the kernel image"),
    ] {
        let o = hypervisor(&["run", "--kernel", path.to_str().unwrap(), "--console-log", "/dev/null"]);
        assert_eq!(o.status.code(), Some(pvabi::exit_status::EXIT_CODE_HOST_ERROR), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "expected {needle:?} in {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    if !kvm_available() {
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    // `hypervisor info | head -1`: the reader goes away before we write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_hypervisor")).arg("info").stdout(writer).output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
