#!/bin/sh
# splitpv.test=reboot: reboot at once (reboot=t on the command line: triple fault)
echo "SPLITPV-TEST reboot: calling reboot -f"
reboot -f
