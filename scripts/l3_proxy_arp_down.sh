#!/bin/sh
# l3_proxy_arp_down.sh TAP LAN-IF: undo l3_proxy_arp_up.sh exactly (the
# logic, shared with up, is in l3_proxy_arp_up.sh).
exec sh "$(dirname "$0")/l3_proxy_arp_up.sh" --down "$@"
