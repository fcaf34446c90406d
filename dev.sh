#!/usr/bin/env bash
# The two entry points of this repository, for people and for CI.
#
#   ./dev.sh run     build everything and boot a Linux guest through dom0
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

# A Linux domain for dom0: a persistent 64 MiB disk, a port on dom0's
# switch "lan", and our PV console (hvc0) as its console. $1: guest build dir,
# $2: where the disk image lives, $3: output file.
write_linux_cfg() {
    cat >"$3" <<EOF
name = "linux"
memory = 512
vcpus = 2
kernel = "$1/bzImage"
ramdisk = "$1/initramfs.cpio.gz"
# the PV console (console_io hypercalls, no emulated UART) from the first
# kernel message on, and the shell on it: 'dom0 console' shows it, dom0's
# domains/ID/serial.log keeps it; the virtio-console is hvc1
cmdline = "earlyprintk=splitpv console=hvc0 panic=-1"
# direct paging: every page-table update of the kernel and of every process
# goes through the hypervisor's validated mmu_update/mmuext_op (patch 0008)
paging = "direct"
disk = [ '$2/linux-disk.img,raw,xvda,rw' ]
vif = [ 'switch=lan' ]
EOF
}

cmd_run() {
    setup
    log "building the hypervisor and dom0"
    cargo build --release -p hypervisor -p dom0
    local info backend guest
    info=$(target/release/hypervisor info)
    backend=$(sed -n 's/^host backend: //p' <<<"$info")
    log "host backend: $backend"
    log "building the Linux guest (kernel + initramfs; cached after the first build)"
    guest=$(guest-patches/build.sh --print-dir)
    case "$backend" in
    vmx | svm)
        local state="${XDG_STATE_HOME:-$HOME/.local/state}/splitpv"
        mkdir -p "$state"
        [ -f "$state/linux-disk.img" ] || truncate -s 64M "$state/linux-disk.img"
        write_linux_cfg "$guest" "$state" "$state/linux.cfg"
        target/release/dom0 destroy linux >/dev/null 2>&1 || true
        log "creating the domain through dom0 (disk $state/linux-disk.img, vif on switch lan, PV console hvc0)"
        log "exit the shell or run poweroff to end it; Ctrl-] detaches (then: dom0 destroy linux)"
        exec target/release/dom0 create "$state/linux.cfg" -c "$@"
        ;;
    *)
        # kvm_pvm (our machines): Linux is not PVM-aware and would run in
        # KVM's instruction emulator. Run dom0 and the guest on real
        # hardware-assisted KVM inside the nested-SVM rig instead.
        log "this host's KVM is '$backend': running dom0 and the Linux guest inside the nested-SVM rig (tests/rig)"
        log "exit the shell or run poweroff to end it (then L1 stops); Ctrl-] detaches; Ctrl-A x kills QEMU"
        local scenario
        scenario=$(mktemp --suffix=.scenario)
        {
            declare -f write_linux_cfg
            echo "echo 'rig: L1 is up; creating the Linux guest through dom0'"
            echo "dd if=/dev/zero of=/tmp/linux-disk.img bs=1M count=64 2>/dev/null"
            echo "write_linux_cfg /guest /tmp /tmp/linux.cfg"
            echo "dom0 create /tmp/linux.cfg -c $*"
            echo "dom0 list"
            echo "rig_pass linux-shell"
        } >"$scenario"
        tests/rig/rig.sh shell --scenario "$scenario" --bin target/release/hypervisor --bin target/release/dom0
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
