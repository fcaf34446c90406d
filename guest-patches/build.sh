#!/usr/bin/env bash
# guest-patches/build.sh - reproducible build of the SplitPV Linux guest.
#
#   build.sh                  guest (L2) kernel + initramfs
#   build.sh --l1             L1 kernel of the nested-SVM test rig (tests/rig/)
#   build.sh ... --print-dir  print the output directory on stdout (after building if needed)
#   build.sh --initramfs-only FILE   only (re)build the guest initramfs into FILE
#
# Kernel: Debian's linux-source-6.12. The guest's is patched with the
# quilt-style `series` (patches/*.patch, applied in order with patch -p1),
# and the hypervisor's ABI header include/splitpv/abi.h is copied into the
# tree as include/splitpv/abi.h (the patches include it; it is not in any
# patch, so the header stays the one source). Configured with
# `make tinyconfig` + config/guest.cfg + `make olddefconfig`; the L1 kernel
# is built from the unpatched source with config/l1-base.cfg +
# config/l1-kvm.cfg, so that guest patches and guest.cfg changes do not
# rebuild it. Every option of the fragments is verified in .config.
#
# Outputs: ${SPLITPV_CACHE:-$HOME/.cache/splitpv}/guest-<hash>/ (vmlinux,
# bzImage, initramfs.cpio.gz, config, build.log, SHA256SUMS) and, for --l1,
# .../l1-<hash>/ (the same without the initramfs). The hash covers everything
# an output depends on (src_key, kernel_key, guest_key: for the guest the
# series, patches and ABI header; for L1 only the unpatched source), so a
# re-run with nothing changed only hashes and checks. Unpacked (and, for
# the guest, patched) sources are cached as .../src-<src_key>/. The guest kernel itself is cached apart in
# .../kernel-guest-<hash>/ (guest-<hash> hard-links it), so changing only the
# init/test scripts or busybox rebuilds only the initramfs. Every output is
# built in a temporary directory renamed into place when complete, so a
# killed build never leaves a half-written cache entry.
#
# Environment: SPLITPV_CACHE (cache root), SPLITPV_JOBS (make -j, default 2),
# SPLITPV_VERBOSE=1 (also show the kernel build output on stderr).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
CACHE=${SPLITPV_CACHE:-$HOME/.cache/splitpv}
JOBS=${SPLITPV_JOBS:-2}
SRC_PKG=linux-source-6.12
SRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
EPOCH=0 # mtime of every file in the initramfs
PKGS=(linux-source-6.12 busybox-static flex bison bc libelf-dev libssl-dev cpio gcc
      libc6-dev make xz-utils gzip patch binutils perl tar findutils util-linux coreutils)

MODE=guest
PRINT_DIR=0
INITRAMFS_ONLY=

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,8s/^# \{0,1\}//p' "$SELF" >&2; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--l1) MODE=l1 ;;
	--print-dir) PRINT_DIR=1 ;;
	--initramfs-only) [ $# -ge 2 ] || usage; INITRAMFS_ONLY=$2; shift ;;
	-h | --help) usage 0 ;;
	*) echo "build.sh: unknown argument: $1" >&2; usage ;;
	esac
	shift
done

# ---------------------------------------------------------------- packages
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

ensure_packages() {
	local missing=() p
	for p in "${PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing packages (install them or run as root): ${missing[*]}"
	log "installing: ${missing[*]}"
	mkdir -p "$CACHE"
	local fd
	exec {fd}>"$CACHE/.apt.lock"
	flock "$fd"
	local apt=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
	# `apt-get update` only when the package lists do not know a package yet
	# (fresh machine) or an install from stale lists fails.
	local need_update=0
	for p in "${missing[@]}"; do
		[[ $(apt-cache policy "$p" 2>/dev/null) == *"Candidate: "[0-9]* ]] || need_update=1
	done
	[ $need_update = 1 ] && { log "apt-get update"; apt-get update -q >&2; }
	if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2; then
		[ $need_update = 1 ] && die "apt-get install ${missing[*]} failed"
		log "install failed; apt-get update and retry"
		apt-get update -q >&2
		DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
	fi
	exec {fd}>&-
	for p in "${missing[@]}"; do pkg_installed "$p" || die "package $p did not install"; done
}

# ---------------------------------------------------------------- inputs
# patch file names from `series` (comments, blank lines ignored; first word of a line)
series_patches() {
	[ -f "$HERE/series" ] || return 0
	sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]].*//' "$HERE/series" | grep -v '^$' || true
}

sha() { sha256sum | cut -c1-16; }

fragments() {
	if [ "$MODE" = l1 ]; then
		echo "$HERE/config/l1-base.cfg"
		echo "$HERE/config/l1-kvm.cfg"
	else
		echo "$HERE/config/guest.cfg"
	fi
}

# the ABI header the patches include (copied into the guest's source tree)
ABI_HEADER="$HERE/include/splitpv/abi.h"

initramfs_files() { (cd "$HERE/initramfs" && find . -type f | LC_ALL=C sort); }

# the source tree of $MODE: the guest's is patched, L1's is not
src_key() {
	{
		echo "pkg $SRC_PKG $(dpkg-query -W -f='${Version}' "$SRC_PKG")"
		if [ "$MODE" = l1 ]; then
			echo "unpatched"
		else
			echo "series"; cat "$HERE/series" 2>/dev/null || true
			local p
			for p in $(series_patches); do
				[ -f "$HERE/patches/$p" ] || die "series names patches/$p, which does not exist"
				echo "patch $p $(sha256sum <"$HERE/patches/$p")"
			done
			echo "abi.h $(sha256sum <"$ABI_HEADER")"
		fi
	} | sha
}

gcc_version() { gcc --version | sed -n 1p; }

# everything the kernel of $MODE depends on
kernel_key() {
	{
		echo "mode $MODE"
		echo "src $SRC_KEY"
		echo "build.sh $(sha256sum <"$SELF")"
		echo "gcc $(gcc_version)"
		echo "binutils $(dpkg-query -W -f='${Version}' binutils)"
		local f
		for f in $(fragments); do echo "fragment $(basename "$f") $(sha256sum <"$f")"; done
	} | sha
}

# the guest output: its kernel + busybox + init/test scripts
guest_key() {
	{
		echo "kernel $KKEY"
		echo "busybox $(dpkg-query -W -f='${Version}' busybox-static) $(sha256sum </bin/busybox)"
		local f
		for f in $(initramfs_files); do echo "initramfs $f $(sha256sum <"$HERE/initramfs/$f")"; done
	} | sha
}

# ---------------------------------------------------------------- source tree
# $CACHE/src-<key>: unpacked linux-source; for the guest with the series
# applied and the ABI header copied in
prepare_source() {
	SRC_DIR="$CACHE/src-$SRC_KEY"
	[ -d "$SRC_DIR" ] && return 0
	local fd
	exec {fd}>"$CACHE/.src-$SRC_KEY.lock"
	flock "$fd"
	if [ ! -d "$SRC_DIR" ]; then
		rm -rf "$CACHE/.tmp-src-$SRC_KEY".* # leftovers of killed runs (we hold the lock)
		local tmp t0=$SECONDS
		tmp=$(mktemp -d "$CACHE/.tmp-src-$SRC_KEY.XXXXXX")
		trap 'rm -rf "$tmp"' EXIT
		trap 'exit 130' INT TERM HUP
		log "unpacking $SRC_TARBALL"
		tar -xf "$SRC_TARBALL" -C "$tmp"
		local top
		top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d)
		[ -n "$top" ] && [ "$(echo "$top" | wc -l)" = 1 ] && [ -f "$top/Makefile" ] ||
			die "unexpected layout of $SRC_TARBALL"
		local p n=0
		if [ "$MODE" != l1 ]; then
			for p in $(series_patches); do
				log "applying patches/$p"
				patch -p1 -d "$top" --batch --forward --fuzz=0 --no-backup-if-mismatch -i "$HERE/patches/$p" >&2 ||
					die "patch patches/$p does not apply (series entry $((n + 1)))"
				n=$((n + 1))
			done
			install -D -m 644 "$ABI_HEADER" "$top/include/splitpv/abi.h"
		fi
		mv -T "$top" "$SRC_DIR"
		rm -rf "$tmp"
		trap - EXIT
		log "source ready in $((SECONDS - t0)) s ($n patches): $SRC_DIR"
	fi
	exec {fd}>&-
}

# ---------------------------------------------------------------- config check
# every option of the fragments (last fragment wins) must have its value in .config
verify_config() {
	local config=$1
	shift
	declare -A want=()
	local order=() f line name val
	for f in "$@"; do
		while IFS= read -r line || [ -n "$line" ]; do
			if [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set ]]; then
				name=${BASH_REMATCH[1]} val=n
			elif [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
				name=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
			else
				continue
			fi
			[ -n "${want[$name]+x}" ] || order+=("$name")
			want[$name]=$val
		done <"$f"
	done
	local bad=() have
	for name in "${order[@]}"; do
		val=${want[$name]}
		have=$(grep -E "^$name=" "$config" | sed -n '1s/^[^=]*=//p' || true)
		if [ "$val" = n ]; then
			[ -z "$have" ] || [ "$have" = n ] || bad+=("$name: wanted n, got $have")
		elif [ "$have" != "$val" ]; then
			bad+=("$name: wanted $val, got ${have:-<not set>}")
		fi
	done
	if [ ${#bad[@]} -gt 0 ]; then
		printf 'build.sh: config option dropped/changed by Kconfig: %s\n' "${bad[@]}" >&2
		return 1
	fi
	log "config verified: all ${#order[@]} fragment options present"
}

# ---------------------------------------------------------------- initramfs
# gzip'd newc cpio of a staging dir: fixed mtimes, uid/gid 0, sorted list, no gzip name/time
build_initramfs() {
	local out=$1 stage
	stage=$(mktemp -d "${TMPDIR:-/tmp}/splitpv-initramfs.XXXXXX")
	(
		set -euo pipefail
		trap 'rm -rf "$stage"' EXIT
		cd "$stage"
		mkdir -p bin sbin usr/bin usr/sbin proc sys dev tmp run root etc mnt tests
		chmod 1777 tmp
		chmod 700 root
		install -m 755 /bin/busybox bin/busybox
		local app
		for app in $(/bin/busybox --list-full); do
			[ -e "$app" ] || [ -L "$app" ] && continue
			mkdir -p "$(dirname "$app")"
			ln -s /bin/busybox "$app"
		done
		[ -L bin/cttyhack ] && [ -L bin/sh ] && [ -L sbin/poweroff ] ||
			die "busybox lacks sh/cttyhack/poweroff applets"
		install -m 755 "$HERE/initramfs/init" init
		install -m 644 "$HERE/initramfs/profile" etc/profile
		echo splitpv-guest >etc/hostname
		printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd
		printf 'root:x:0:\n' >etc/group
		local t
		for t in "$HERE"/initramfs/tests/*.sh; do install -m 755 "$t" "tests/$(basename "$t")"; done
		# the kernel opens /dev/console before devtmpfs is mounted
		mknod -m 600 dev/console c 5 1 || die "mknod dev/console failed (needs root)"
		mknod -m 666 dev/null c 1 3
		find . -exec touch -h -d "@$EPOCH" {} +
		find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
			cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -9 -n >"$out.tmp"
		mv -f "$out.tmp" "$out"
	)
}

if [ -n "$INITRAMFS_ONLY" ]; then
	ensure_packages
	build_initramfs "$INITRAMFS_ONLY"
	log "initramfs: $INITRAMFS_ONLY ($(stat -c %s "$INITRAMFS_ONLY") bytes, sha256 $(sha256sum <"$INITRAMFS_ONLY" | cut -c1-16))"
	exit 0
fi

# ---------------------------------------------------------------- kernel
KERNEL_FILES=(vmlinux bzImage config build.log)
has_files() { # DIR FILE...
	local d=$1 f
	shift
	for f; do [ -s "$d/$f" ] || return 1; done
}

# build the kernel of $MODE into $1 (unless there already), atomically
build_kernel() {
	local out=$1 name lock
	name=$(basename "$out")
	has_files "$out" "${KERNEL_FILES[@]}" && return 0
	exec {lock}>"$CACHE/.$name.lock"
	flock "$lock"
	if has_files "$out" "${KERNEL_FILES[@]}"; then
		exec {lock}>&-
		return 0
	fi
	rm -rf "$out" "$CACHE/.tmp-$name".* # incomplete leftovers of killed runs (we hold the lock)
	prepare_source
	TMP=$(mktemp -d "$CACHE/.tmp-$name.XXXXXX")
	trap 'rm -rf "$TMP"' EXIT
	trap 'exit 130' INT TERM HUP
	local obj="$TMP/obj" stage="$TMP/out"
	mkdir -p "$obj" "$stage"
	BLOG="$stage/build.log"
	local frags
	mapfile -t frags < <(fragments)
	{
		echo "# splitpv $MODE kernel build, key $KKEY"
		if [ "$MODE" = l1 ]; then
			echo "# source: $SRC_PKG $(dpkg-query -W -f='${Version}' "$SRC_PKG"), unpatched"
		else
			echo "# source: $SRC_PKG $(dpkg-query -W -f='${Version}' "$SRC_PKG"), patches: $(series_patches | tr '\n' ' ')+ include/splitpv/abi.h"
		fi
		echo "# fragments: ${frags[*]##*/}"
		echo "# $(gcc_version)"
	} >"$BLOG"
	export KBUILD_BUILD_TIMESTAMP="@$EPOCH" KBUILD_BUILD_USER=splitpv KBUILD_BUILD_HOST=splitpv KBUILD_BUILD_VERSION=1
	local kmake=(make -C "$SRC_DIR" O="$obj")
	log "configuring $MODE kernel (tinyconfig + ${frags[*]##*/})"
	run_logged "${kmake[@]}" tinyconfig || fail "make tinyconfig failed"
	run_logged "$SRC_DIR/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "${frags[@]}" ||
		fail "merge_config.sh failed"
	run_logged "${kmake[@]}" olddefconfig || fail "make olddefconfig failed"
	verify_config "$obj/.config" "${frags[@]}" 2>&1 | tee -a "$BLOG" >&2 ||
		die "the fragments ask for options that Kconfig dropped (see above); fix config/*.cfg"
	log "building $MODE kernel: nice -n 10 make -j$JOBS vmlinux bzImage (log: $BLOG while building)"
	local t=$SECONDS
	run_logged nice -n 10 "${kmake[@]}" -j"$JOBS" vmlinux bzImage || fail "kernel build failed"
	echo "# kernel build time: $((SECONDS - t)) s" >>"$BLOG"
	log "$MODE kernel built in $((SECONDS - t)) s"
	cp "$obj/vmlinux" "$stage/vmlinux"
	cp "$obj/arch/x86/boot/bzImage" "$stage/bzImage"
	cp "$obj/.config" "$stage/config"
	# PVH entry point: ELF note "Xen" of type 18 (XEN_ELFNOTE_PHYS32_ENTRY)
	local notes
	notes=$(readelf -n "$stage/vmlinux")
	grep -q -E '^ +Xen +0x[0-9a-f]+[[:space:]].*(0x00000012|PHYS32_ENTRY)' <<<"$notes" ||
		fail "vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note (PVH entry)"
	echo "# vmlinux has the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)" >>"$BLOG"
	(cd "$stage" && sha256sum vmlinux bzImage config) >"$stage/SHA256SUMS"
	mv -T "$stage" "$out" # atomic: the directory appears complete or not at all
	rm -rf "$TMP"
	trap - EXIT
	exec {lock}>&-
}

run_logged() {
	if [ "${SPLITPV_VERBOSE:-0}" = 1 ]; then
		"$@" 2>&1 | tee -a "$BLOG" >&2
	else
		"$@" >>"$BLOG" 2>&1
	fi
}

fail() {
	echo "----- last lines of $BLOG:" >&2
	tail -n 40 "$BLOG" >&2
	die "$*"
}

# ---------------------------------------------------------------- main
T0=$SECONDS
ensure_packages
mkdir -p "$CACHE"
SRC_KEY=$(src_key)
KKEY=$(kernel_key)
if [ "$MODE" = l1 ]; then
	OUT="$CACHE/l1-$KKEY"
	if has_files "$OUT" "${KERNEL_FILES[@]}"; then
		log "l1 up to date: $OUT ($((SECONDS - T0)) s)"
	else
		build_kernel "$OUT"
		log "l1 done in $((SECONDS - T0)) s: $OUT"
	fi
else
	KDIR="$CACHE/kernel-guest-$KKEY"
	OUT="$CACHE/guest-$(guest_key)"
	GUEST_FILES=("${KERNEL_FILES[@]}" initramfs.cpio.gz SHA256SUMS)
	if has_files "$OUT" "${GUEST_FILES[@]}"; then
		log "guest up to date: $OUT ($((SECONDS - T0)) s)"
	else
		build_kernel "$KDIR"
		exec {LOCK}>"$CACHE/.$(basename "$OUT").lock"
		flock "$LOCK"
		if ! has_files "$OUT" "${GUEST_FILES[@]}"; then
			rm -rf "$OUT" "$CACHE/.tmp-$(basename "$OUT")".*
			TMP=$(mktemp -d "$CACHE/.tmp-$(basename "$OUT").XXXXXX")
			trap 'rm -rf "$TMP"' EXIT
			trap 'exit 130' INT TERM HUP
			for f in vmlinux bzImage config; do ln "$KDIR/$f" "$TMP/$f" 2>/dev/null || cp "$KDIR/$f" "$TMP/$f"; done
			cp "$KDIR/build.log" "$TMP/build.log"
			log "building the guest initramfs"
			build_initramfs "$TMP/initramfs.cpio.gz"
			echo "# initramfs: $(stat -c %s "$TMP/initramfs.cpio.gz") bytes, busybox $(dpkg-query -W -f='${Version}' busybox-static)" >>"$TMP/build.log"
			(cd "$TMP" && sha256sum vmlinux bzImage config initramfs.cpio.gz) >"$TMP/SHA256SUMS"
			chmod 755 "$TMP"
			mv -T "$TMP" "$OUT"
			trap - EXIT
		fi
		exec {LOCK}>&-
		log "guest done in $((SECONDS - T0)) s: $OUT"
	fi
fi
[ $PRINT_DIR = 1 ] && echo "$OUT"
exit 0
