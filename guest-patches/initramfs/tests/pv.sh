#!/bin/sh
# splitpv.test=pv: what the SplitPVonKVM guest patches set up (or, on another
# hypervisor, that they stayed out of the way), then a plain `poweroff`
# (through /init, as a user would).
echo "SPLITPV-PV console: $(cat /sys/class/tty/console/active 2>/dev/null)"
echo "SPLITPV-PV clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
# the UART's transmit count: 0 when user space never wrote to ttyS0
echo "SPLITPV-PV ttyS0: $(grep '^0:' /proc/tty/driver/serial 2>/dev/null)"
dmesg | grep -E 'splitpv|Hypervisor detected' | sed 's/^/SPLITPV-PV dmesg: /'
echo "SPLITPV-PV-DONE"
poweroff
