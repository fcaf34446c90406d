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
    log "building the hypervisor and the test guest"
    cargo build --release -p hypervisor -p frontends
    local guest
    guest=$(cargo run -q --release -p frontends --bin guest-image)
    local info
    info=$(target/release/hypervisor info)
    log "${info%%$'\n'*}"
    log "booting the test guest (2 vCPUs) through 'hypervisor run'"
    exec target/release/hypervisor run --kernel "$guest" --mem 128 --vcpus 2 \
        --cmdline "workload=compute iterations=1000000000" --stats "$@"
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
