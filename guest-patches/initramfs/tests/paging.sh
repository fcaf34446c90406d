#!/bin/sh
# splitpv.test=paging: a fork/exec/mmap-heavy workload (every page-table
# update of it goes through the hypervisor in a direct-paging domain), then
# power off. Each step prints SPLITPV-PAGING <step>: ok <seconds> or FAIL.
now() { cut -d' ' -f1 /proc/uptime; }
step() { # NAME T0 RESULT
	echo "SPLITPV-PAGING $1: $3 $(awk "BEGIN{printf \"%.2f\", $(now) - $2}") s"
}
dmesg | grep -E 'splitpv: (direct paging|SplitPVonKVM)' | sed 's/^/SPLITPV-PAGING dmesg: /'

t=$(now); i=0
while [ $i -lt 2000 ]; do /bin/true || break; i=$((i + 1)); done
[ $i = 2000 ] && step true-2000 "$t" ok || step true-2000 "$t" "FAIL after $i"

t=$(now); i=0; bad=0
while [ $i -lt 200 ]; do
	[ "$(echo hello | cat | tr a-z A-Z | wc -c)" = 6 ] || bad=$((bad + 1))
	i=$((i + 1))
done
[ $bad = 0 ] && step pipelines-200 "$t" ok || step pipelines-200 "$t" "FAIL $bad wrong"

t=$(now); i=0; bad=0
while [ $i -lt 100 ]; do
	[ "$(sh -c 'sh -c "sh -c \"echo deep\""')" = deep ] || bad=$((bad + 1))
	i=$((i + 1))
done
[ $bad = 0 ] && step nested-sh-100 "$t" ok || step nested-sh-100 "$t" "FAIL $bad wrong"

# a bounded fork bomb: 8 shells that each start 8 children at once, twice
t=$(now)
for round in 1 2; do
	for a in 1 2 3 4 5 6 7 8; do
		( for b in 1 2 3 4 5 6 7 8; do /bin/true & done; wait ) &
	done
	wait
done
step fork-bomb-128 "$t" ok

# large buffers: busybox dd maps and unmaps a bs-sized buffer per run
t=$(now); i=0; bad=0
while [ $i -lt 50 ]; do
	[ "$(dd if=/dev/zero bs=8M count=2 2>/dev/null | wc -c)" = 16777216 ] || bad=$((bad + 1))
	i=$((i + 1))
done
[ $bad = 0 ] && step mmap-munmap-50 "$t" ok || step mmap-munmap-50 "$t" "FAIL $bad wrong"

# a file copy on tmpfs, checked
t=$(now)
dd if=/dev/urandom of=/tmp/paging.src bs=64k count=256 2>/dev/null
cp /tmp/paging.src /tmp/paging.dst
if cmp -s /tmp/paging.src /tmp/paging.dst; then step tmpfs-copy-16M "$t" ok; else step tmpfs-copy-16M "$t" FAIL; fi
rm -f /tmp/paging.src /tmp/paging.dst

# on the virtio disk, when the domain has one (dom0 scenario)
if [ -b /dev/vda ]; then
	t=$(now)
	dd if=/dev/urandom of=/tmp/paging.src bs=64k count=64 2>/dev/null
	dd if=/tmp/paging.src of=/dev/vda bs=64k count=64 conv=fsync 2>/dev/null
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
	if dd if=/dev/vda bs=64k count=64 2>/dev/null | cmp -s - /tmp/paging.src; then
		step vda-copy-4M "$t" ok
	else
		step vda-copy-4M "$t" FAIL
	fi
	rm -f /tmp/paging.src
fi
echo "SPLITPV-PAGING-DONE"
poweroff -f
