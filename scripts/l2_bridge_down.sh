#!/bin/sh
# l2_bridge_down.sh TAP LAN-IF [BRIDGE]: undo l2_bridge_up.sh exactly (the
# logic, shared with up, is in l2_bridge_up.sh).
exec sh "$(dirname "$0")/l2_bridge_up.sh" --down "$@"
