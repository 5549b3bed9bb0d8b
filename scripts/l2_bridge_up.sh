#!/bin/sh
# l2_bridge_up.sh TAP LAN-IF [BRIDGE]: put a taptun TAP and a LAN interface
# into one Linux bridge (STP off), so that the remote peer becomes a host on
# this LAN. l2_bridge_down.sh (a wrapper that runs this file with --down)
# undoes exactly what this did.
#
# Moving an interface that carries the host's addresses into a bridge would
# cut the host off, so its addresses (not the IPv6 link-local ones, which the
# kernel makes itself) and its routes (default route included; not the ones
# the kernel derives from addresses or router advertisements) move to the
# bridge, and back on --down. A bridge that this script creates gets the LAN
# interface's MAC address, so neighbours' ARP caches and DHCP reservations
# stay valid.
#
# A bridge's MTU is the smallest of its ports': taptun's TAP (1418 bytes by
# default) would shrink it below the LAN's and the bridge would drop every
# full-size frame the LAN's hosts send to the peer. So the TAP's MTU is
# raised to the LAN interface's when it is lower (never lowered), before the
# TAP joins the bridge; taptun follows its TAP's MTU and lets the underlay
# fragment what no longer fits one datagram. --down puts the old MTU back.
#
# What was done is recorded in $TAPTUN_STATE_DIR (default /run/taptun), one
# file per network namespace, bridge and TAP, written before anything
# changes: running up twice changes nothing the second time, and an up that
# failed half-way is completed by running it again (or undone by down).
# brctl is used when installed (TAPTUN_BRCTL names another command; empty
# means use ip), else ip link.
set -eu
# Recorded addresses and routes are split into words; never into file names.
set -f

mode=up
prog=l2_bridge_up.sh
if [ "${1-}" = --down ]; then
    mode=down
    prog=l2_bridge_down.sh
    shift
fi

usage() {
    cat <<EOF
usage: l2_bridge_up.sh TAP LAN-IF [BRIDGE]
       l2_bridge_down.sh TAP LAN-IF [BRIDGE]

up:   put TAP and LAN-IF into BRIDGE (default br0; created with STP off if
      missing), raise TAP's MTU to LAN-IF's if it is lower (so that the
      bridge keeps the LAN's MTU), move LAN-IF's addresses and routes to
      the bridge.
down: undo exactly that: ports out, TAP's old MTU back (if TAP still
      exists), addresses and routes back on LAN-IF, the bridge deleted if
      up created it.
State: \${TAPTUN_STATE_DIR:-/run/taptun}. Needs root (CAP_NET_ADMIN).
EOF
}

# shellcheck source=scripts/taptun-args.sh
. "$(dirname "$0")/taptun-args.sh"
help_if_asked "$@"
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    bad_args "wrong number of arguments"
fi
tap=$1
lan=$2
br=${3:-br0}

check_ifnames "$tap" "$lan" "$br"
if [ "$tap" = "$lan" ] || [ "$tap" = "$br" ] || [ "$lan" = "$br" ]; then
    bad_args "TAP, LAN-IF and BRIDGE must be three different interfaces"
fi

command -v ip >/dev/null 2>&1 || die "ip (iproute2) is not installed"
brctl=${TAPTUN_BRCTL-brctl}
if [ -n "$brctl" ] && command -v "$brctl" >/dev/null 2>&1; then
    use_brctl=1
else
    use_brctl=0
fi

# The state of a network namespace lives in the kernel, but the file system
# is shared between namespaces: key the state file by the namespace's inode.
nsid=$(readlink /proc/self/ns/net | tr -cd 0-9)
[ -n "$nsid" ] || die "cannot identify the network namespace (/proc/self/ns/net)"
statedir=${TAPTUN_STATE_DIR:-/run/taptun}
state=$statedir/l2_bridge.$nsid.$br.$tap

exists() { ip link show dev "$1" >/dev/null 2>&1; }
ifindex() { cat "/sys/class/net/$1/ifindex" 2>/dev/null || true; }
mtu_of() { cat "/sys/class/net/$1/mtu"; }
master_of() {
    if [ -e "/sys/class/net/$1/master" ]; then
        basename "$(readlink "/sys/class/net/$1/master")"
    fi
}
is_bridge() { [ -d "/sys/class/net/$1/bridge" ]; }
ports_of() { ls "/sys/class/net/$1/brif" 2>/dev/null || true; }

# `ip -o addr show dev FROM` lines -> the arguments of `ip addr add` that
# recreate them (configuration only: flags such as secondary, dynamic or
# tentative are states the kernel derives). IPv6 link-local and temporary
# (privacy) addresses are skipped: the kernel makes those itself.
addr_args() {
    awk -v from="$1" '
    {
        fam = $3
        if (fam != "inet" && fam != "inet6") next
        if (fam == "inet6" && (/ scope link / || / temporary /)) next
        out = fam " " $4
        for (i = 5; i <= NF; i++) {
            w = $i
            sub(/\\$/, "", w)
            if (w == "") continue
            if (w == "peer" || w == "brd" || w == "scope" || w == "metric" || w == "proto") {
                out = out " " w " " $(i + 1); i++
            } else if (w == "valid_lft" || w == "preferred_lft") {
                v = $(i + 1); sub(/sec$/, "", v); out = out " " w " " v; i++
            } else if (w == "noprefixroute" || w == "nodad" || w == "home" || w == "mngtmpaddr" || w == "autojoin") {
                out = out " " w
            } else if (fam == "inet" && (w == from || index(w, from ":") == 1)) {
                # Labels are per device (lan0:x on br0 is br0:x): keep the
                # suffix, % stands for the device.
                out = out " label %" substr(w, length(from) + 1)
            }
        }
        print out
    }'
}

# `ip -o route show dev D` lines (main table) -> the arguments that recreate
# them, for the routes someone configured: not the ones the kernel derives
# from addresses (proto kernel) or router advertisements (proto ra).
route_args() {
    awk '
    / proto kernel / || / proto ra / || /^multicast / || /^fe80::/ { next }
    / nexthop / || /^nhid / || / nhid / { print "skip " $0; next }
    {
        out = ""
        for (i = 1; i <= NF; i++) {
            w = $i
            if (w == "linkdown" || w == "dead" || w == "offload" || w == "trap" || w == "rt_offload" || w == "rt_trap" || w == "rt_offload_failed") continue
            if (w == "expires") { v = $(i + 1); sub(/sec$/, "", v); out = out " expires " v; i++; continue }
            out = out " " w
        }
        sub(/^ /, "", out)
        print out
    }'
}

has_addr() { # DEV FAMILY ADDR/PREFIX
    ip -o addr show dev "$1" 2>/dev/null | awk -v f="$2" -v a="$3" '$3 == f && $4 == a { found = 1 } END { exit !found }'
}

# Move the recorded addresses and routes from $1 to $2. Every step checks
# first, so that a repeated or interrupted move finishes cleanly. Returns
# non-zero when something did not arrive.
move_config() {
    from=$1
    to=$2
    rc=0
    # Lifetimes count down: where an address still exists, take its
    # current arguments rather than the recorded ones.
    cur=$(ip -o addr show dev "$from" 2>/dev/null | addr_args "$from")
    # Routes go first (a route through a gateway needs the address), and
    # must be deleted by hand: IPv6 keeps routes whose address is gone.
    while read -r key fam r; do
        [ "$key" = route ] || continue
        # A lifetime is no part of what identifies a route.
        r=$(printf '%s\n' "$r" | sed 's/ expires [0-9]*//')
        # shellcheck disable=SC2086 # the recorded route is a list of words
        ip "$fam" route del $r dev "$from" 2>/dev/null || true
    done <"$state"
    while read -r key fam a _; do
        [ "$key" = addr ] || continue
        if has_addr "$from" "$fam" "$a"; then
            # Deleting a primary IPv4 address may take its secondaries
            # along: they are re-added below from the record.
            ip addr del "$a" dev "$from" 2>/dev/null || true
        fi
    done <"$state"
    # In recorded order, so that primary addresses stay primary.
    while read -r key fam a args; do
        [ "$key" = addr ] || continue
        has_addr "$to" "$fam" "$a" && continue
        now=$(printf '%s\n' "$cur" | awk -v f="$fam" -v a="$a" '$1 == f && $2 == a { $1 = ""; $2 = ""; print; exit }')
        [ -z "$now" ] || args=$now
        args=$(printf '%s\n' "$args" | sed "s/label %/label $to/")
        # shellcheck disable=SC2086 # a list of words
        if ! ip addr add "$a" $args dev "$to"; then
            echo "$prog: could not add $a to $to" >&2
            rc=1
        fi
    done <"$state"
    while read -r key fam r; do
        [ "$key" = route ] || continue
        # shellcheck disable=SC2086
        if ! ip "$fam" route replace $r dev "$to"; then
            echo "$prog: could not add route '$r' on $to" >&2
            rc=1
        fi
    done <"$state"
    return "$rc"
}

state_get() { sed -n "s/^$1 //p" "$state" | head -n 1; }

state_valid() {
    [ -f "$state" ] || return 1
    [ "$(state_get lan)" = "$lan" ] || return 1
    # A bridge deleted and made again (or a namespace whose inode was reused)
    # is not the bridge of this record.
    [ "$(state_get ifindex)" = "$(ifindex "$br")" ]
}

bridge_add() {
    if [ "$use_brctl" = 1 ]; then
        "$brctl" addbr "$br"
        "$brctl" stp "$br" off
    else
        ip link add name "$br" type bridge stp_state 0
    fi
}

port_add() {
    if [ "$use_brctl" = 1 ]; then "$brctl" addif "$br" "$1"; else ip link set dev "$1" master "$br"; fi
}

port_del() {
    if [ "$use_brctl" = 1 ]; then "$brctl" delif "$br" "$1"; else ip link set dev "$1" nomaster; fi
}

bridge_del() {
    ip link set dev "$br" down
    if [ "$use_brctl" = 1 ]; then "$brctl" delbr "$br"; else ip link del dev "$br"; fi
}

# The TAP's MTU up to the LAN interface's, when lower; before the TAP joins
# the bridge, so that the bridge's MTU never drops below the LAN's. The old
# MTU is recorded first ("tap_mtu OLD TAP-IFINDEX"), once per TAP: a TAP
# that taptun made again since (another ifindex) gets a new record.
raise_tap_mtu() {
    want=$(mtu_of "$lan")
    have=$(mtu_of "$tap")
    [ "$have" -lt "$want" ] || return 0
    idx=$(ifindex "$tap")
    rec=$(state_get tap_mtu)
    if [ "${rec#* }" != "$idx" ]; then
        grep -v '^tap_mtu ' "$state" >"$state.tmp" || true
        echo "tap_mtu $have $idx" >>"$state.tmp"
        mv "$state.tmp" "$state"
    fi
    ip link set dev "$tap" mtu "$want" || die "could not raise $tap's MTU from $have to $lan's $want; l2_bridge_down.sh $tap $lan $br undoes"
}

# Puts back the TAP's MTU recorded by raise_tap_mtu, if that TAP still exists.
restore_tap_mtu() {
    rec=$(state_get tap_mtu)
    [ -n "$rec" ] || return 0
    old=${rec% *}
    if [ "$(ifindex "$tap")" = "${rec#* }" ] && [ "$(mtu_of "$tap")" != "$old" ]; then
        ip link set dev "$tap" mtu "$old" || return 1
    fi
}

do_up() {
    exists "$tap" || die "no interface $tap (is taptun running?)"
    exists "$lan" || die "no interface $lan"
    if exists "$br" && ! is_bridge "$br"; then
        die "$br exists and is not a bridge"
    fi
    tm=$(master_of "$tap")
    [ -z "$tm" ] || [ "$tm" = "$br" ] || die "$tap is already a port of $tm"
    lm=$(master_of "$lan")
    [ -z "$lm" ] || [ "$lm" = "$br" ] || die "$lan is already a port of $lm"

    if state_valid; then
        # Up ran before (maybe interrupted): the record stands, and every
        # step below checks before it changes anything.
        :
    else
        # Record first, change second: whatever happens next, down knows
        # what to restore.
        mkdir -p "$statedir"
        chmod 700 "$statedir"
        tmp=$state.tmp
        {
            echo "version 1"
            echo "lan $lan"
            if exists "$br"; then echo "created 0"; else echo "created 1"; fi
            if [ "$tm" = "$br" ]; then echo "tap_added 0"; else echo "tap_added 1"; fi
            if [ "$lm" = "$br" ]; then
                # The LAN interface is already in the bridge: its addresses
                # are where the user put them, nothing moves.
                echo "lan_added 0"
            else
                echo "lan_added 1"
                ip -o addr show dev "$lan" | addr_args "$lan" | sed 's/^/addr /'
                for fam in -4 -6; do
                    ip -o "$fam" route show dev "$lan" | route_args | while IFS= read -r r; do
                        case $r in
                        "skip "*) echo "$prog: not moving multipath route: ${r#skip }" >&2 ;;
                        *) echo "route $fam $r" ;;
                        esac
                    done
                done
            fi
            if ip link show dev "$lan" | head -n 1 | grep -q '[<,]UP[,>]'; then
                echo "lan_was_up 1"
            else
                echo "lan_was_up 0"
            fi
        } >"$tmp"
        if [ "$(sed -n 's/^created //p' "$tmp")" = 1 ]; then
            bridge_add
            # The bridge takes the LAN interface's MAC: its addresses move
            # here, and the LAN keeps seeing them at the same MAC.
            ip link set dev "$br" address "$(cat "/sys/class/net/$lan/address")"
        fi
        echo "ifindex $(ifindex "$br")" >>"$tmp"
        mv "$tmp" "$state"
    fi

    raise_tap_mtu
    [ "$(master_of "$lan")" = "$br" ] || port_add "$lan"
    [ "$(master_of "$tap")" = "$br" ] || port_add "$tap"
    ip link set dev "$lan" up
    ip link set dev "$tap" up
    ip link set dev "$br" up
    if [ "$(state_get lan_added)" = 1 ]; then
        move_config "$lan" "$br" || die "some addresses or routes did not move to $br (see above); l2_bridge_down.sh $tap $lan $br undoes"
    fi
    echo "$prog: $tap and $lan bridged in $br"
}

do_down() {
    if ! [ -f "$state" ]; then
        if [ "$(master_of "$tap")" = "$br" ]; then
            die "$tap is in $br but no state from l2_bridge_up.sh ($state); undo by hand"
        fi
        echo "$prog: nothing to undo for $tap in $br"
        exit 0
    fi
    [ "$(state_get lan)" = "$lan" ] || die "$state records LAN interface $(state_get lan), not $lan"
    rc=0
    if [ "$(state_get ifindex)" = "$(ifindex "$br")" ]; then
        if [ "$(state_get tap_added)" = 1 ] && [ "$(master_of "$tap")" = "$br" ]; then
            port_del "$tap"
        fi
        if [ "$(state_get lan_added)" = 1 ] && [ "$(master_of "$lan")" = "$br" ]; then
            port_del "$lan"
        fi
    else
        echo "$prog: $br is gone or was replaced; restoring $lan only" >&2
    fi
    if ! restore_tap_mtu; then
        echo "$prog: could not put $tap's MTU back to $(state_get tap_mtu | cut -d ' ' -f 1)" >&2
        rc=1
    fi
    if [ "$(state_get lan_added)" = 1 ] && exists "$lan"; then
        move_config "$br" "$lan" || rc=1
    fi
    if exists "$lan" && [ "$(state_get lan_was_up)" = 0 ]; then
        ip link set dev "$lan" down
    fi
    if [ "$(state_get created)" = 1 ] && [ "$(state_get ifindex)" = "$(ifindex "$br")" ]; then
        if [ -z "$(ports_of "$br")" ]; then
            bridge_del
        else
            echo "$prog: $br still has ports ($(ports_of "$br" | tr '\n' ' ')); not deleting it" >&2
        fi
    fi
    if [ "$rc" = 0 ]; then
        rm -f "$state"
        echo "$prog: $tap and $lan unbridged, $lan restored"
    else
        die "not everything came back to $lan (see above); state kept in $state"
    fi
}

if [ "$mode" = up ]; then do_up; else do_down; fi
