#!/usr/bin/env bash
# tests/rig/rig.sh - the hardware-assisted test rig.
#
# Runs an L1 Linux (kvm_amd built in) under QEMU TCG with an emulated AMD SVM
# CPU with nested paging, so binaries passed with --bin get a real /dev/kvm
# (the host's /dev/kvm is kvm_pvm, on which Linux guests cannot run).
#
#   rig.sh run --scenario FILE [--bin PATH ...] [--file SRC:DEST ...] [--timeout S] [--log FILE]
#   rig.sh shell [--scenario FILE] [--bin PATH ...] [--timeout S] [--log FILE]
#                                  (interactive: L1 runs FILE on the console, or a shell)
#   rig.sh selftest [--timeout S] [--log FILE]    (kvm_smoke in L1; needs no hypervisor)
#   rig.sh guest [--test NAME] [--timeout S] [--log FILE]
#                                  (the L2 guest straight on QEMU TCG, no KVM: checks the guest build)
#
# L1 holds: /bin (busybox + the --bin binaries, with their shared libraries at
# the paths ldd gives), /guest (the L2 vmlinux, bzImage, initramfs.cpio.gz,
# config from guest-patches/build.sh), /scenario.sh, /rig/lib.sh (helpers),
# and each --file SRC copied to the absolute path DEST (data files: firmware, configuration).
# A scenario reports "RIG-RESULT <name> PASS" / "RIG-RESULT <name> FAIL <reason>";
# `run` exits 0 iff there is at least one result and no FAIL (a timeout, a
# scenario that does not finish or exits non-zero counts as a FAIL).
#
# Environment: SPLITPV_CACHE (cache root, default ~/.cache/splitpv),
# RIG_TSC_KHZ (override the host TSC rate), RIG_L1_DIR (use this built L1 kernel directory), RIG_GUEST_DIR (the same for the guest),
# RIG_CPU (default qemu64,+svm,+npt),
# RIG_MEM (L1 MiB, default 2048).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
ROOT=$(cd "$HERE/../.." && pwd)
BUILD="$ROOT/guest-patches/build.sh"
CACHE=${SPLITPV_CACHE:-$HOME/.cache/splitpv}
CPU=${RIG_CPU:-qemu64,+svm,+npt}
MEM=${RIG_MEM:-2048}

log() { echo "rig: $*" >&2; }
die() { echo "rig: ERROR: $*" >&2; exit 2; }
usage() { sed -n '2,23s/^# \{0,1\}//p' "$SELF" >&2; exit "${1:-2}"; }

[ $# -ge 1 ] || usage
CMD=$1
shift
SCENARIO="" TIMEOUT="" LOGFILE="" TEST=""
BINS=()
FILES=()
while [ $# -gt 0 ]; do
	case "$1" in
	--scenario) SCENARIO=${2:?--scenario needs a file}; shift ;;
	--bin) BINS+=("${2:?--bin needs a path}"); shift ;;
	--file) FILES+=("${2:?--file needs SRC:DEST}"); shift ;;
	--timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
	--log) LOGFILE=${2:?--log needs a file}; shift ;;
	--test) TEST=${2:?--test needs a name}; shift ;;
	-h | --help) usage 0 ;;
	*) echo "rig: unknown argument: $1" >&2; usage ;;
	esac
	shift
done
case "$CMD" in
run) [ -n "$SCENARIO" ] || die "run needs --scenario FILE"
	[ -f "$SCENARIO" ] || die "no such scenario: $SCENARIO" ;;
shell | selftest | guest) ;;
-h | --help | help) usage 0 ;;
*) die "unknown command: $CMD (run, shell, selftest, guest)" ;;
esac
[ -z "$TIMEOUT" ] || [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout wants whole seconds"
for b in "${BINS[@]}"; do [ -f "$b" ] && [ -x "$b" ] || die "--bin $b: not an executable file"; done
for f in "${FILES[@]}"; do
	[[ $f == *:/* ]] && [ -f "${f%%:*}" ] || die "--file $f: want SRC:DEST with SRC a file and DEST an absolute path"
done

# ---------------------------------------------------------------- host setup
ensure_qemu() {
	command -v qemu-system-x86_64 >/dev/null && return 0
	[ "$(id -u)" = 0 ] || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
	log "installing qemu-system-x86"
	mkdir -p "$CACHE"
	local fd
	exec {fd}>"$CACHE/.apt.lock"
	flock "$fd"
	local apt=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 qemu-system-x86)
	if [[ $(apt-cache policy qemu-system-x86 2>/dev/null) != *"Candidate: "[0-9]* ]]; then
		apt-get update -q >&2
	fi
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2; } ||
		die "cannot install qemu-system-x86"
	exec {fd}>&-
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
}

# The host TSC rate in kHz (TCG's guest TSC is the host's, and L1 cannot
# calibrate it on microvm): dmesg's refined calibration, else its "Detected"
# line, else measured against CLOCK_MONOTONIC_RAW, else /proc/cpuinfo.
# Sets TSC and TSC_SRC (how it was found).
host_tsc_khz() {
	read -r TSC TSC_SRC <<<"$(tsc_khz_probe)"
}
tsc_khz_probe() { # prints "KHZ SOURCE"
	if [ -n "${RIG_TSC_KHZ:-}" ]; then echo "$RIG_TSC_KHZ RIG_TSC_KHZ"; return; fi
	local d mhz src="dmesg refined TSC calibration"
	d=$({ dmesg; journalctl -k -b -q --no-pager; } 2>/dev/null || true)
	mhz=$(sed -n 's/.*Refined TSC clocksource calibration: \([0-9][0-9.]*\) MHz.*/\1/p' <<<"$d" | tail -n 1)
	if [ -z "$mhz" ]; then
		mhz=$(sed -n 's/.*tsc: Detected \([0-9][0-9.]*\) MHz.*/\1/p' <<<"$d" | head -n 1)
		src="dmesg tsc: Detected"
	fi
	if [ -n "$mhz" ]; then
		awk -v m="$mhz" -v s="$src" 'BEGIN { printf "%d %s\n", m * 1000 + 0.5, s }'
		return
	fi
	local tool="$CACHE/rig-tools/tsc_khz" k
	if [ ! -x "$tool" ] || [ "$tool" -ot "$HERE/tsc_khz.c" ]; then
		mkdir -p "$CACHE/rig-tools"
		gcc -O2 -o "$tool.tmp" "$HERE/tsc_khz.c" 2>/dev/null && mv -f "$tool.tmp" "$tool"
	fi
	if [ -x "$tool" ] && k=$("$tool") && [ "${k:-0}" -gt 100000 ]; then
		echo "$k measured (rdtsc vs CLOCK_MONOTONIC_RAW)"
		return
	fi
	awk '/^cpu MHz/ { printf "%d /proc/cpuinfo cpu MHz\n", $4 * 1000 + 0.5; exit }' /proc/cpuinfo
}

build_kernels() {
	log "guest build (guest-patches/build.sh) ..."
	if [ -n "${RIG_GUEST_DIR:-}" ]; then GUEST_DIR=$RIG_GUEST_DIR; else GUEST_DIR=$("$BUILD" --print-dir); fi
	log "L1 kernel build (guest-patches/build.sh --l1) ..."
	if [ -n "${RIG_L1_DIR:-}" ]; then L1_DIR=$RIG_L1_DIR; else L1_DIR=$("$BUILD" --l1 --print-dir); fi
}

# ---------------------------------------------------------------- L1 initramfs
# The part that does not change per run (busybox, init, L2 guest files) is a
# cached uncompressed newc cpio; the per-run part (--bin binaries + libraries,
# scenario) is a second cpio appended to it (the kernel unpacks both).
cpio_dir() { # DIR OUT: reproducible newc archive of DIR
	find "$1" -exec touch -h -d @0 {} +
	(cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet) >"$2"
}

base_initramfs() {
	local key
	key=$({
		sha256sum "$SELF" "$HERE/l1init.sh" "$HERE/lib.sh" /bin/busybox | cut -d' ' -f1
		# by content: a RIG_GUEST_DIR that is rebuilt in place keeps its name
		echo "$GUEST_DIR"
		sha256sum "$GUEST_DIR"/* | cut -d' ' -f1
	} | sha256sum | cut -c1-16)
	BASE="$CACHE/rig-l1-base-$key.cpio"
	[ -s "$BASE" ] && return 0
	log "assembling the L1 base initramfs"
	# drop base archives and logs nobody used for a while
	find "$CACHE" -maxdepth 1 -name 'rig-l1-base-*.cpio' -mtime +2 -delete 2>/dev/null || true
	find "$CACHE/rig-logs" -maxdepth 1 -name '*.log' -mtime +14 -delete 2>/dev/null || true
	local st
	st=$(mktemp -d "${TMPDIR:-/tmp}/splitpv-rig-base.XXXXXX")
	(
		trap 'rm -rf "$st"' EXIT
		cd "$st"
		mkdir -p bin sbin usr/bin usr/sbin proc sys dev tmp run root etc mnt rig guest
		chmod 1777 tmp
		install -m 755 /bin/busybox bin/busybox
		local app
		for app in $(/bin/busybox --list-full); do
			[ -e "$app" ] || [ -L "$app" ] && continue
			mkdir -p "$(dirname "$app")"
			ln -s /bin/busybox "$app"
		done
		install -m 755 "$HERE/l1init.sh" init
		install -m 644 "$HERE/lib.sh" rig/lib.sh
		printf 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nPS1='\''rig-l1:$PWD# '\''\n' >etc/profile
		printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd
		printf 'root:x:0:\n' >etc/group
		local f
		for f in vmlinux bzImage initramfs.cpio.gz config; do cp "$GUEST_DIR/$f" guest/; done
		mknod -m 600 dev/console c 5 1
		mknod -m 666 dev/null c 1 3
		cpio_dir "$st" "$BASE.tmp.$$"
		mv -f "$BASE.tmp.$$" "$BASE"
	)
}

# add an executable and the shared libraries ldd finds for it to staging dir $1
APPLETS=""
add_binary() {
	local st=$1 bin=$2 name out lib libs
	name=$(basename "$bin")
	[ -n "$APPLETS" ] || APPLETS=$(/bin/busybox --list)
	if grep -qx -- "$name" <<<"$APPLETS"; then
		die "--bin $bin: '$name' would replace the busybox applet of that name in L1 /bin"
	fi
	install -m 755 "$bin" "$st/bin/$name"
	if ! out=$(ldd "$bin" 2>&1); then
		log "added $name (static)"
		return 0
	fi
	if grep -q '=> not found' <<<"$out"; then
		die "--bin $bin: ldd cannot find: $(awk '/=> not found/ { print $1 }' <<<"$out" | tr '\n' ' ')"
	fi
	# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x..)" and "/lib64/ld-linux-x86-64.so.2 (0x..)"
	libs=$(awk '/=> \// { print $3; next } /^[ \t]*\// { print $1 }' <<<"$out" | sort -u)
	for lib in $libs; do
		mkdir -p "$st$(dirname "$lib")"
		cp -L "$lib" "$st$lib"
	done
	log "added $name (dynamic, $(wc -w <<<"$libs") libraries: $(tr "\n" " " <<<"$libs"))"
}

run_initramfs() { # OUT
	local st
	st="$RUN_DIR/stage"
	mkdir -p "$st/bin"
	local b
	for b in "${BINS[@]}"; do add_binary "$st" "$b"; done
	local f dest
	for f in "${FILES[@]}"; do
		dest=${f#*:}
		mkdir -p "$st$(dirname "$dest")"
		cp -L "${f%%:*}" "$st$dest"
		chmod a+r "$st$dest"
		log "added $dest (from ${f%%:*})"
	done
	[ -n "$SCENARIO" ] && install -m 755 "$SCENARIO" "$st/scenario.sh"
	find "$st" -type f -path "$st/lib*" -exec chmod 755 {} +
	cpio_dir "$st" "$RUN_DIR/run.cpio"
	cat "$BASE" "$RUN_DIR/run.cpio" >"$1"
}

# ---------------------------------------------------------------- run QEMU
now() { echo "$EPOCHREALTIME"; }
span() { if [ -n "$1" ] && [ -n "$2" ]; then echo "$(elapsed "$1" "$2") s"; else echo "n/a"; fi; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# copy QEMU's serial output to stdout and the log, noting when markers appear
reader() {
	local line
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%$'\r'}
		# L1's heartbeat (rig.heartbeat=1, every 5 s) only feeds the watchdog
		case "$line" in RIG-HEARTBEAT*) now >"$RUN_DIR/heartbeat"; continue ;; esac
		printf '%s\n' "$line"
		printf '%s\n' "$line" >&3
		case "$line" in
		RIG-L1-READY* | RIG-SCENARIO-START* | RIG-SCENARIO-END* | RIG-L1-DONE* | SPLITPV-GUEST-READY*)
			echo "${line%% *} $(now)" >>"$RUN_DIR/marks" ;;
		*"reboot: Power off not available"* | *"reboot: System halted"* | *"reboot: Power down"*)
			# a guest booted directly (rig.sh guest) that powers off just halts
			# (no ACPI): stop its QEMU. Not done for L1, whose console also
			# carries the L2 guests' output.
			if [ "${STOP_ON_HALT:-0}" = 1 ] && [ -s "$RUN_DIR/qemu.pid" ]; then
				echo "GUEST-HALTED $(now)" >>"$RUN_DIR/marks"
				kill "$(cat "$RUN_DIR/qemu.pid")" 2>/dev/null || true
			fi ;;
		esac
	done
}

mark() { awk -v m="$1" '$1 == m { print $2; exit }' "$RUN_DIR/marks" 2>/dev/null; }

# Now and then L1 freezes under QEMU's TCG emulation of SVM: its clock and
# its own `timeout`s stop, and only the outer timeout would end the run.
# Non-interactive runs boot L1 with rig.heartbeat=1 (l1init.sh then prints
# RIG-HEARTBEAT every 5 s); once the first one came, FREEZE_SECS without
# one means L1 is frozen: dump the vCPU's registers through the QEMU
# monitor into the log (to find out why, one day), mark RIG-FROZEN and
# stop QEMU.
FREEZE_SECS=${RIG_FREEZE_SECS:-60}
watchdog() {
	local last
	while sleep 5; do
		last=$(cat "$RUN_DIR/heartbeat" 2>/dev/null) || continue
		[ -n "$last" ] || continue
		if awk -v a="$last" -v b="$(now)" -v m="$FREEZE_SECS" 'BEGIN { exit !(b - a >= m) }'; then
			echo "RIG-FROZEN $(now)" >>"$RUN_DIR/marks"
			{
				echo "# rig: L1 frozen (no heartbeat for $FREEZE_SECS s); QEMU monitor: info registers"
				python3 - "$RUN_DIR/monitor.sock" <<'PY' 2>&1 || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"info registers\n")
time.sleep(2)
out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except OSError:
    pass
print(out.decode(errors="replace"))
PY
			} >>"$LOG"
			[ -s "$RUN_DIR/qemu.pid" ] && kill "$(cat "$RUN_DIR/qemu.pid")" 2>/dev/null
			return
		fi
	done
}

# QEMU_ARGS set by the caller; interactive (1) keeps the terminal, else stdin is /dev/null
boot() {
	local interactive=$1 rc
	T_START=$(now)
	set +e
	if [ "$interactive" = 1 ]; then
		log "starting QEMU; the serial console is this terminal (exit the shell to stop; Ctrl-A x kills QEMU)"
		local watcher=""
		if [ "${STOP_ON_HALT:-0}" = 1 ]; then
			# the guest halts instead of powering off (no ACPI): stop QEMU then
			(
				while sleep 0.5; do
					if grep -q -E 'reboot: (Power off not available|System halted|Power down)' "$LOG"; then
						[ -s "$RUN_DIR/qemu.pid" ] && kill "$(cat "$RUN_DIR/qemu.pid")" 2>/dev/null
						break
					fi
				done
			) &
			watcher=$!
		fi
		if [ -n "$TIMEOUT" ]; then
			timeout --foreground -k 10 "$TIMEOUT" "${QEMU_ARGS[@]}" 2>&1 | tee -a "$LOG"
		else
			"${QEMU_ARGS[@]}" 2>&1 | tee -a "$LOG"
		fi
		rc=${PIPESTATUS[0]}
		[ -z "$watcher" ] || kill "$watcher" 2>/dev/null
	else
		watchdog &
		local dog=$!
		timeout -k 10 "${TIMEOUT:-600}" "${QEMU_ARGS[@]}" -monitor "unix:$RUN_DIR/monitor.sock,server,nowait" \
			</dev/null 2>&1 | reader 3>>"$LOG"
		rc=${PIPESTATUS[0]}
		kill "$dog" 2>/dev/null
	fi
	set -e
	T_END=$(now)
	QEMU_RC=$rc
}

# the log of this run: --log FILE, else $CACHE/rig-logs/<command>-<time>.log
default_log() {
	if [ -n "$LOGFILE" ]; then
		LOG=$LOGFILE
	else
		mkdir -p "$CACHE/rig-logs"
		LOG="$CACHE/rig-logs/$CMD-$(date +%Y%m%d-%H%M%S)-$$.log"
	fi
	: >"$LOG"
}

setup_run() {
	ensure_qemu
	build_kernels
	mkdir -p "$CACHE"
	RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/splitpv-rig.XXXXXX")
	trap 'rm -rf "$RUN_DIR"' EXIT
	trap 'exit 130' INT TERM HUP
	: >"$RUN_DIR/marks"
	default_log
	host_tsc_khz
	[ "${TSC:-0}" -gt 100000 ] 2>/dev/null || die "could not determine the host TSC rate (set RIG_TSC_KHZ)"
	log "host TSC $TSC kHz ($TSC_SRC)"
}

l1_boot() { # interactive
	base_initramfs
	run_initramfs "$RUN_DIR/initrd"
	log "L1: $L1_DIR/vmlinux, initrd $(($(stat -c %s "$RUN_DIR/initrd") / 1024)) KiB, L2 guest: $GUEST_DIR"
	local heartbeat=""
	[ "$1" = 1 ] || heartbeat=" rig.heartbeat=1" # for the watchdog (not in a person's terminal)
	QEMU_ARGS=(qemu-system-x86_64 -M microvm,accel=tcg -cpu "$CPU" -m "$MEM" -smp 1
		-nodefaults -no-user-config -nographic -serial stdio -no-reboot -pidfile "$RUN_DIR/qemu.pid"
		-kernel "$L1_DIR/vmlinux" -initrd "$RUN_DIR/initrd"
		# acpi=off: L1's base fragment (config/l1-base.cfg, a copy of the
		# guest's) has ACPI (our hypervisor's guests need it to power off);
		# QEMU microvm's ACPI tables make L1 lose its console, and L1 needs
		# no ACPI. highres=off: L1's tick stays a periodic LAPIC timer. With
		# one-shot timers (high resolution) L1 now and then froze while it ran
		# an L2 guest: idle in HLT with interrupts on, its next timer
		# interrupt lost under TCG's SVM emulation, nothing to wake it (2 runs
		# in 4 froze; none in 6 with highres=off). A periodic timer fires again.
		# RIG_L1_APPEND adds arguments (experiments).
		-append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=$TSC tsc=reliable acpi=off quiet highres=off$heartbeat${RIG_L1_APPEND:+ $RIG_L1_APPEND}")
	{ echo "# rig $CMD $(date -u +%FT%TZ)"; printf '# %q' "${QEMU_ARGS[@]}"; echo; } >>"$LOG"
	boot "$1"
}

summarize() {
	local results fails npass nfail t_ready t_start t_end
	results=$(grep -a -E '^RIG-RESULT [^ ]+ (PASS|FAIL)' "$LOG" || true)
	fails=$(grep -E '^RIG-RESULT [^ ]+ FAIL' <<<"$results" || true)
	local extra=()
	local frozen
	frozen=$(mark RIG-FROZEN)
	[ -z "$frozen" ] || extra+=("RIG-RESULT rig-frozen FAIL L1 stopped making progress (no heartbeat for $FREEZE_SECS s): QEMU stopped, registers in the log")
	[ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ] && extra+=("RIG-RESULT rig-timeout FAIL QEMU killed after ${TIMEOUT:-600} s")
	[ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ] || [ "$QEMU_RC" = 0 ] || [ -n "$frozen" ] ||
		extra+=("RIG-RESULT rig-qemu FAIL qemu-system-x86_64 exited with status $QEMU_RC")
	if [ -z "$(mark RIG-SCENARIO-END)" ] && [ "$QEMU_RC" != 124 ] && [ -z "$frozen" ]; then
		extra+=("RIG-RESULT rig-scenario-end FAIL the scenario did not finish (no RIG-SCENARIO-END: L1 crashed or hung?)")
	fi
	[ -n "$results" ] || extra+=("RIG-RESULT rig-results FAIL the scenario reported no RIG-RESULT line")
	local e
	for e in "${extra[@]}"; do
		echo "$e" >>"$LOG"
		results+=$'\n'"$e"
		fails+=$'\n'"$e"
	done
	results=$(grep -v '^$' <<<"$results" || true)
	fails=$(grep -v '^$' <<<"$fails" || true)
	npass=$(grep -c -E '^RIG-RESULT [^ ]+ PASS' <<<"$results" || true)
	nfail=$(grep -c . <<<"$fails" || true)
	t_ready=$(mark RIG-L1-READY) t_start=$(mark RIG-SCENARIO-START) t_end=$(mark RIG-SCENARIO-END)
	{
		echo "==================== rig summary ===================="
		sed -e 's/^RIG-RESULT /  /' <<<"$results"
		echo "  -- $npass PASS, $nfail FAIL"
		echo "  times: QEMU start -> L1 init $(span "$T_START" "$t_ready"), -> scenario start $(span "$T_START" "$t_start")," \
			"scenario $(span "$t_start" "$t_end"), QEMU total $(span "$T_START" "$T_END")"
		echo "  log: $LOG"
	} | tee -a "$LOG" >&2
	[ "$nfail" = 0 ] && [ "$npass" -gt 0 ]
}

# ---------------------------------------------------------------- commands
case "$CMD" in
run)
	setup_run
	l1_boot 0
	summarize && exit 0 || exit 1
	;;
shell)
	[ -z "$SCENARIO" ] || [ -f "$SCENARIO" ] || die "no such scenario: $SCENARIO"
	setup_run
	l1_boot 1
	exit 0
	;;
selftest)
	gcc_dir="$CACHE/rig-tools"
	mkdir -p "$gcc_dir"
	command -v gcc >/dev/null || "$BUILD" --print-dir >/dev/null # installs gcc & co
	gcc -O2 -Wall -static -o "$gcc_dir/kvm_smoke" "$HERE/kvm_smoke.c"
	gcc -O2 -Wall -o "$gcc_dir/kvm_smoke_dyn" "$HERE/kvm_smoke.c"
	exec "$SELF" run --scenario "$HERE/smoke.scenario" --bin "$gcc_dir/kvm_smoke" --bin "$gcc_dir/kvm_smoke_dyn" \
		${TIMEOUT:+--timeout "$TIMEOUT"} ${LOGFILE:+--log "$LOGFILE"}
	;;
guest)
	ensure_qemu
	log "guest build (guest-patches/build.sh) ..."
	GUEST_DIR=$("$BUILD" --print-dir)
	RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/splitpv-rig.XXXXXX")
	trap 'rm -rf "$RUN_DIR"' EXIT
	: >"$RUN_DIR/marks"
	default_log
	host_tsc_khz
	STOP_ON_HALT=1
	QEMU_ARGS=(qemu-system-x86_64 -M microvm,accel=tcg -cpu max -m 512 -smp 1
		-nodefaults -no-user-config -nographic -serial stdio -no-reboot -pidfile "$RUN_DIR/qemu.pid"
		-kernel "$GUEST_DIR/vmlinux" -initrd "$GUEST_DIR/initramfs.cpio.gz"
		-append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=$TSC tsc=reliable${TEST:+ splitpv.test=$TEST}")
	if [ -z "$TEST" ]; then
		boot 1
		exit 0
	fi
	boot 0
	t=$(mark SPLITPV-GUEST-READY)
	if [ -n "$t" ]; then
		how="reset"
		[ -n "$(mark GUEST-HALTED)" ] && how="halted (power off without ACPI), QEMU stopped"
		log "guest: SPLITPV-GUEST-READY after $(elapsed "$T_START" "$t") s; $how after $(elapsed "$T_START" "$T_END") s (QEMU status $QEMU_RC)"
		[ "$QEMU_RC" = 0 ] || exit 1
		exit 0
	fi
	log "guest: no SPLITPV-GUEST-READY (QEMU status $QEMU_RC); log: $LOG"
	exit 1
	;;
esac
