#!/bin/sh
# l3_nat_down.sh TAP OUT-IF: undo l3_nat_up.sh exactly (the logic, shared
# with up, is in l3_nat_up.sh).
exec sh "$(dirname "$0")/l3_nat_up.sh" --down "$@"
