//! Link arguments of the guest image.
//!
//! They live here rather than in the flags frontends/build.rs passes so that
//! this package's own fingerprint tracks the linker script: editing
//! `linker.ld` reruns this script and relinks the guest.

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{manifest_dir}/linker.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        // No C runtime, no libc, no dynamic loader: the image is entered at
        // `_start` by the hypervisor's ELF loader.
        "-nostartfiles",
        "-nostdlib",
        "-static",
        // Only the PT_LOAD program headers the linker script names.
        &format!("-Wl,-T,{script}"),
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=4096",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
