#!/bin/sh
# splitpv.test=panic: crash the kernel through sysrq (needs CONFIG_MAGIC_SYSRQ)
echo "SPLITPV-TEST panic: echo c > /proc/sysrq-trigger"
echo c > /proc/sysrq-trigger
