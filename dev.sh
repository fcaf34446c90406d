#!/usr/bin/env bash
# The two entry points of this repository, for people and for CI.
#
#   ./dev.sh run     build everything and boot a guest through the hypervisor
#   ./dev.sh test    build everything and run the whole test suite
#
# Both install what they need on a fresh Debian machine first (as root:
# apt packages; Rust itself must already be there).
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

setup() {
    if ! need_cmd cargo; then
        echo "cargo is missing: install Rust (rustup) first" >&2
        exit 1
    fi
    if ! need_cmd cc; then
        log "installing a C toolchain (the test guest is linked with cc)"
        apt_install build-essential
    fi
}

apt_updated=""
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $*; run as root or install them yourself" >&2
        exit 1
    fi
    if [ -z "$apt_updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

cmd_run() {
    setup
    log "building the hypervisor"
    cargo build --release -p hypervisor
    local info backend guest
    info=$(target/release/hypervisor info)
    backend=$(sed -n 's/^host backend: //p' <<<"$info")
    log "host backend: $backend"
    log "building the Linux guest (kernel + initramfs; cached after the first build)"
    guest=$(guest-patches/build.sh --print-dir)
    local cmdline="console=ttyS0 panic=-1"
    local args=(--kernel "$guest/bzImage" --initrd "$guest/initramfs.cpio.gz" --mem 512 --vcpus 2
        --cmdline "$cmdline" --name linux)
    case "$backend" in
    vmx | svm)
        log "booting Linux (2 vCPUs) through 'hypervisor run'; exit the shell to power off, Ctrl-] stops the domain"
        exec target/release/hypervisor run "${args[@]}" "$@"
        ;;
    *)
        # kvm_pvm (our machines): Linux is not PVM-aware and would run in
        # KVM's instruction emulator. Boot it on real hardware-assisted KVM
        # inside the nested-SVM rig instead.
        log "this host's KVM is '$backend': booting Linux inside the nested-SVM rig (tests/rig)"
        log "Ctrl-] stops the domain (then L1 stops); Ctrl-A x kills QEMU"
        local scenario
        scenario=$(mktemp --suffix=.scenario)
        printf '%s\n' "echo 'rig: L1 is up; starting the Linux guest through our hypervisor'" \
            "/bin/hypervisor run --kernel /guest/bzImage --initrd /guest/initramfs.cpio.gz --mem 512 --vcpus 2 --cmdline '$cmdline' --name linux --console-log /tmp/linux.console.log $*" \
            "rig_pass linux-shell" >"$scenario"
        tests/rig/rig.sh shell --scenario "$scenario" --bin target/release/hypervisor
        rm -f "$scenario"
        ;;
    esac
}

cmd_test() {
    setup
    log "running the test suite"
    cargo test --workspace "$@"
}

case "${1:-}" in
    run) shift; cmd_run "$@" ;;
    test) shift; cmd_test "$@" ;;
    *) echo "usage: $0 run|test [args...]" >&2; exit 2 ;;
esac
