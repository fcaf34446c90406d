#!/bin/sh
# splitpv.test=info: basic facts about the guest, then power off
echo "SPLITPV-INFO uname: $(uname -a)"
echo "SPLITPV-INFO cpus: $(grep -c '^processor' /proc/cpuinfo)"
echo "SPLITPV-INFO $(grep '^MemTotal' /proc/meminfo)"
echo "SPLITPV-INFO cmdline: $(cat /proc/cmdline)"
echo "SPLITPV-INFO-DONE"
poweroff -f
