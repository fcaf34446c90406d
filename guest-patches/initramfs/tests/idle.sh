#!/bin/sh
# splitpv.test=idle: stay up until something ends the guest (dom0 shutdown
# presses the power button, which /init turns into a poweroff).
echo "SPLITPV-IDLE waiting"
while :; do sleep 3600; done
