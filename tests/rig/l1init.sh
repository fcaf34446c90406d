#!/bin/sh
# /init (PID 1) of the rig's L1 Linux (assembled by tests/rig/rig.sh).
# Reports the KVM/SVM state, then runs /scenario.sh (rig.sh run) or an
# interactive shell (rig.sh shell), then resets the VM (QEMU -no-reboot exits).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM="${TERM:-vt100}"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || echo "RIG-L1: cannot mount devtmpfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
hostname splitpv-rig-l1
echo "RIG-L1-READY uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"

echo "RIG-L1: cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -E 'svm|npt|nrip_save|hypervisor' | tr '\n' ' ')"
dmesg | grep -i -E 'kvm|svm|nested paging|tsc' | sed 's/^/RIG-L1: dmesg: /'
KVM_OK=0
if [ -c /dev/kvm ]; then
	KVM_OK=1
	echo "RIG-L1: /dev/kvm present"
else
	echo "RIG-L1: /dev/kvm MISSING"
fi
p=/sys/module/kvm_amd/parameters
np=unknown
dmesg | grep -q 'kvm_amd: Nested Paging enabled' && np=enabled
dmesg | grep -q 'kvm_amd: Nested Paging disabled' && np=disabled
[ $KVM_OK = 1 ] || np="n/a (kvm_amd did not initialise)"
echo "RIG-L1: kvm_amd nested paging: $np (params npt=$(cat $p/npt 2>/dev/null) nested=$(cat $p/nested 2>/dev/null) nrips=$(cat $p/nrips 2>/dev/null))"
export RIG_GUEST_DIR=/guest RIG_KVM_OK=$KVM_OK
# rig.sh's watchdog: a line every 5 s while L1 makes progress (it stops
# QEMU when they stop: L1 froze under TCG). Not in interactive runs.
if grep -q -w rig.heartbeat=1 /proc/cmdline; then
	(while :; do echo "RIG-HEARTBEAT $(cut -d' ' -f1 /proc/uptime)"; sleep 5; done) &
	echo $! >/run/rig-heartbeat.pid
fi

if [ -f /scenario.sh ]; then
	[ $KVM_OK = 1 ] || echo "RIG-RESULT l1-kvm FAIL /dev/kvm missing in L1 (kvm_amd did not initialise: check -cpu ...,+svm and CONFIG_KVM_AMD=y)"
	echo "RIG-SCENARIO-START uptime=$(cut -d' ' -f1 /proc/uptime)"
	( . /rig/lib.sh; . /scenario.sh )
	rc=$?
	[ $rc = 0 ] || echo "RIG-RESULT scenario-exit FAIL the scenario script exited with status $rc"
	echo "RIG-SCENARIO-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
else
	echo "RIG-L1: no scenario: interactive shell (binaries in /bin, L2 guest in /guest; exit to stop the VM)"
	# ENV: the interactive shell also gets the rig_* helpers
	ENV=/rig/lib.sh setsid cttyhack sh -l
fi
sync
echo "RIG-L1-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
# reboot=t: triple fault; QEMU runs with -no-reboot, so it exits
reboot -f
sleep 5
