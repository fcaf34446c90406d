//! Builds the freestanding test guest (`testguest/`) with a nested cargo.
//!
//! The guest is a separate package, not a workspace member, because it
//! needs code-generation flags no host crate may get: no red zone (the
//! guest's exception handlers run on the interrupted stack), static
//! relocation (linked at a fixed address, no loader to relocate it) and
//! `panic=abort` (no unwinder). The only Rust target installed is the host's,
//! so the guest is built for x86_64-unknown-linux-gnu and made freestanding
//! by its linker script and link arguments (see testguest/build.rs).
//!
//! The nested cargo gets its own target directory inside OUT_DIR and an
//! environment cleaned of everything the outer cargo passes to build
//! scripts that would redirect or reconfigure it. The path of the built ELF
//! reaches lib.rs as `TESTGUEST_ELF`.

use std::env;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest is x86-64 machine code whatever the host; naming the target
/// explicitly also keeps the guest flags away from the guest's build
/// script, which cargo then builds for the host without them.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Code-generation flags of the guest, for every crate in its graph.
const GUEST_RUSTFLAGS: &[&str] = &["-Cno-redzone=yes", "-Crelocation-model=static", "-Cpanic=abort"];

/// Environment variables the outer cargo sets or honours that must not
/// reach the nested one besides the `CARGO_*` family (see `keeps_cargo_var`).
const DROPPED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    // clippy and similar drivers wrap only the workspace they were run on.
    "RUSTC_WORKSPACE_WRAPPER",
    // Build-script inputs of the frontends package itself.
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
];

/// Which `CARGO_*` variables the nested cargo may see: the user's cargo
/// home and network settings, terminal settings and the jobserver, so the
/// nested build shares the outer build's job slots instead of adding its own.
/// The rest (CARGO_TARGET_DIR, CARGO_BUILD_*, CARGO_ENCODED_RUSTFLAGS,
/// CARGO_PROFILE_*, CARGO_TARGET_<triple>_*, CARGO_MANIFEST_DIR, CARGO_PKG_*,
/// CARGO_CFG_*, ...) describes the outer build and is dropped.
fn keeps_cargo_var(name: &str) -> bool {
    name == "CARGO_HOME"
        || name == "CARGO_MAKEFLAGS"
        || ["CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_", "CARGO_TERM_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cargo = env::var_os("CARGO").expect("cargo sets CARGO for build scripts");
    let guest_dir = manifest_dir.join("testguest");
    let abi_dir = manifest_dir.join("../hypervisor/abi");

    // The nested cargo tracks its own inputs precisely; these tell the
    // outer cargo when to run it at all. Directories are scanned
    // recursively. Cargo.lock is left out: the nested cargo may rewrite it
    // after a Cargo.toml change, which would trigger one more needless run.
    for input in [
        guest_dir.join("Cargo.toml"),
        guest_dir.join("build.rs"),
        guest_dir.join("linker.ld"),
        guest_dir.join("src"),
        abi_dir.join("Cargo.toml"),
        abi_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    let target_dir = out_dir.join("testguest-target");
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--offline")
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&guest_dir);
    for (name, _) in env::vars_os() {
        let Some(name_str) = name.to_str() else { continue };
        let is_cargo_var = name_str.starts_with("CARGO_") || name_str.starts_with("__CARGO");
        if (is_cargo_var && !keeps_cargo_var(name_str)) || DROPPED_VARS.contains(&name_str) {
            command.env_remove(&name);
        }
    }
    command.env("CARGO_ENCODED_RUSTFLAGS", GUEST_RUSTFLAGS.join("\x1f"));

    let output = command.output().unwrap_or_else(|error| {
        panic!("cannot run {} to build the test guest: {error}", PathBuf::from(&cargo).display())
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!("{stderr}");
        panic!(
            "building the test guest failed ({}); cargo's output is above. To reproduce: {}",
            output.status,
            describe(&command)
        );
    }
    // Guest warnings would otherwise vanish with the build script's output.
    for line in stderr.lines().filter(|line| line.starts_with("warning:")) {
        println!("cargo:warning=testguest: {}", line.trim_start_matches("warning:").trim());
    }

    let elf = target_dir.join(GUEST_TARGET).join("release").join("testguest");
    check_elf_header(&elf);
    println!("cargo:rustc-env=TESTGUEST_ELF={}", elf.display());
}

/// Fails the build unless `path` starts like an x86-64 ELF64 executable.
/// (The unit tests in lib.rs check the image in depth.)
fn check_elf_header(path: &Path) {
    let mut header = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .unwrap_or_else(|error| panic!("the test guest build produced no readable {}: {error}", path.display()));
    const ELFCLASS64: u8 = 2;
    const ET_EXEC: u16 = 2;
    const EM_X86_64: u16 = 62;
    let object_type = u16::from_le_bytes([header[16], header[17]]);
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || header[4] != ELFCLASS64 || object_type != ET_EXEC || machine != EM_X86_64 {
        panic!("{} is not an x86-64 ELF64 executable", path.display());
    }
}

/// A shell command reproducing the nested build (the cleaned environment
/// aside), for error messages.
fn describe(command: &Command) -> String {
    let args: Vec<String> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
    format!(
        "cd {} && CARGO_ENCODED_RUSTFLAGS=\"$(printf -- '{}')\" {} {}",
        command.get_current_dir().map_or_else(|| ".".into(), |dir| dir.display().to_string()),
        GUEST_RUSTFLAGS.join("\\x1f"),
        PathBuf::from(command.get_program()).display(),
        args.join(" ")
    )
}
