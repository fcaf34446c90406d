#!/bin/sh
# splitpv.test=dom0: the split-driver devices dom0 gives a Linux guest.
# Options on the kernel command line:
#   splitpv.disk=write:SEED | verify:SEED   write (and flush) or check a
#                                           pattern in the first MiB of /dev/vda
#   splitpv.ip=ADDR/LEN                     configure eth0
#   splitpv.ping=ADDR                       ping ADDR (waits up to 60 s for it)
#   splitpv.stay=1                          stay up afterwards (until the power
#                                           button or `poweroff`)
# Prints SPLITPV-DOM0 <what> PASS|FAIL lines.
disk="" ip="" ping="" stay=""
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	splitpv.disk=*) disk="${arg#splitpv.disk=}" ;;
	splitpv.ip=*) ip="${arg#splitpv.ip=}" ;;
	splitpv.ping=*) ping="${arg#splitpv.ping=}" ;;
	splitpv.stay=*) stay="${arg#splitpv.stay=}" ;;
	esac
done
echo "SPLITPV-DOM0 devices: $(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
echo "SPLITPV-DOM0 block: $(cd /sys/block 2>/dev/null && echo vd*) net: $(cd /sys/class/net && echo *)"
# A line on every hvc that is not the console: the virtio-console dom0
# serves (hvc1 beside our PV console hvc0; hvc0 on other hypervisors).
echo "SPLITPV-DOM0 console: $(cat /sys/class/tty/console/active 2>/dev/null)"
active=" $(cat /sys/class/tty/console/active 2>/dev/null) "
for t in /sys/class/tty/hvc*; do
	[ -e "$t" ] || continue
	n=${t##*/}
	case "$active" in *" $n "*) continue ;; esac
	# (every hvc tty node exists; only those with a backend open)
	{ echo "SPLITPV-DOM0 virtio-console hello on $n" >"/dev/$n"; } 2>/dev/null && echo "SPLITPV-DOM0 wrote a line to $n"
done

pattern() { # SEED: 1 MiB of text that depends on the seed
	i=0
	while [ $i -lt 16384 ]; do
		printf 'splitpv seed %-8s line %-8d............................\n' "$1" $i
		i=$((i + 1))
	done | head -c 1048576
}

case "$disk" in
write:*)
	seed=${disk#write:}
	if pattern "$seed" | dd of=/dev/vda bs=65536 conv=fsync 2>/dev/null && sync; then
		echo "SPLITPV-DOM0 disk-write PASS (seed $seed, 1 MiB, fsync)"
	else
		echo "SPLITPV-DOM0 disk-write FAIL"
	fi
	;;
verify:*)
	seed=${disk#verify:}
	want=$(pattern "$seed" | md5sum | cut -d' ' -f1)
	have=$(dd if=/dev/vda bs=65536 count=16 2>/dev/null | md5sum | cut -d' ' -f1)
	if [ "$want" = "$have" ]; then
		echo "SPLITPV-DOM0 disk-verify PASS (seed $seed)"
	else
		echo "SPLITPV-DOM0 disk-verify FAIL (seed $seed: md5 $have, expected $want)"
	fi
	;;
esac

if [ -n "$ip" ]; then
	ip link set lo up
	ip addr add "$ip" dev eth0 && ip link set eth0 up && echo "SPLITPV-DOM0 eth0 $ip up ($(cat /sys/class/net/eth0/address))"
fi
if [ -n "$ping" ]; then
	i=0
	until ping -c 1 -W 1 "$ping" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -ge 60 ] && break
	done
	if ping -c 5 -W 2 "$ping" >/tmp/ping.out 2>&1; then
		echo "SPLITPV-DOM0 ping PASS $(tail -1 /tmp/ping.out)"
	else
		echo "SPLITPV-DOM0 ping FAIL: $(cat /tmp/ping.out)"
	fi
fi
echo "SPLITPV-DOM0 done"
if [ "$stay" = 1 ]; then
	echo "SPLITPV-IDLE waiting"
	while :; do sleep 3600; done
fi
poweroff -f
