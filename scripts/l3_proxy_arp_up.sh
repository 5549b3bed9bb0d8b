#!/bin/sh
# l3_proxy_arp_up.sh TAP LAN-IF [PEER-IP...]: make the taptun peer behind TAP
# a host of LAN-IF's IPv4 network without a bridge: this host answers ARP for
# the peer's address on the LAN (and for the LAN's addresses on the TAP) and
# routes between the two. The peer takes an address of the LAN's network on
# its TAP; each PEER-IP gets a host route through TAP here.
# l3_proxy_arp_down.sh (a wrapper that runs this file with --down) undoes it.
#
# Unlike tinytaptunnel's scripts, which flush the filter table, this touches
# nothing but its own rules and routes. The rules carry an iptables comment
#   taptun:l3_proxy_arp:TAP:LAN-IF:fwd=V:nf=T:pa=XY
# that records what the namespace was like before: V is net.ipv4.ip_forward
# before the first taptun rule, T the iptables tables that did not exist
# (f = filter, - = none), X and Y the proxy_arp settings of TAP and LAN-IF.
# The host routes carry the route protocol number 246 (ip route ... proto
# 246). Nothing is kept on disk; the state of each network namespace lives
# in it. Running up twice adds nothing the second time; down removes exactly
# the tagged rules and routes and puts the settings back.
set -eu
set -f

mode=up
prog=l3_proxy_arp_up.sh
if [ "${1-}" = --down ]; then
    mode=down
    prog=l3_proxy_arp_down.sh
    shift
fi

usage() {
    cat <<EOF
usage: l3_proxy_arp_up.sh TAP LAN-IF [PEER-IP...]
       l3_proxy_arp_down.sh TAP LAN-IF

up:   enable IPv4 forwarding and proxy ARP on TAP and LAN-IF, accept
      forwarding between them (rules first in FORWARD, tagged
      "taptun:l3_proxy_arp:TAP:LAN-IF:..."), add a host route through TAP
      for each PEER-IP (an address of LAN-IF's network that the peer uses).
down: remove exactly those rules and routes, restore ip_forward and
      proxy_arp.
Needs root (CAP_NET_ADMIN) and iptables.
EOF
}

# shellcheck source=scripts/taptun-args.sh
. "$(dirname "$0")/taptun-args.sh"
help_if_asked "$@"
if [ $# -lt 2 ] || { [ "$mode" = down ] && [ $# -ne 2 ]; }; then
    bad_args "wrong number of arguments"
fi
tap=$1
lan=$2
shift 2
check_ifnames "$tap" "$lan"
[ "$tap" != "$lan" ] || bad_args "TAP and LAN-IF must differ"
for c in "$@"; do
    case $c in
    *.*.*.*) ;;
    *) bad_args "bad PEER-IP '$c'" ;;
    esac
    case $c in
    *[!0-9./]*) bad_args "bad PEER-IP '$c'" ;;
    esac
done

# ---- tagged iptables rules: shared with l3_nat_up.sh ----
# shellcheck source=scripts/taptun-rules.sh
. "$(dirname "$0")/taptun-rules.sh"

# ---- l3_proxy_arp ----

prefix="taptun:l3_proxy_arp:$tap:$lan:"
rtproto=246
pa_file() { echo "/proc/sys/net/ipv4/conf/$1/proxy_arp"; }

# saved_pa IF: IF's proxy_arp before the first taptun rule that set it (from
# the tags of the proxy-ARP rules that name IF), empty if none does.
saved_pa() {
    for t in $(all_tags); do
        case $t in taptun:l3_proxy_arp:*) ;; *) continue ;; esac
        pa=$(field "$t" pa)
        t=${t#taptun:l3_proxy_arp:}
        if [ "${t%%:*}" = "$1" ]; then
            echo "${pa%?}"
            return
        fi
        t=${t#*:}
        if [ "${t%%:*}" = "$1" ]; then
            echo "${pa#?}"
            return
        fi
    done
}

our_routes() {
    ip -o -4 route show dev "$tap" proto "$rtproto" 2>/dev/null | awk '{ print $1 }'
}

do_up() {
    exists "$tap" || die "no interface $tap (is taptun running?)"
    exists "$lan" || die "no interface $lan"
    # Refuse before changing anything: a route to a peer address that
    # someone else made is not ours to replace.
    for p in "$@"; do
        if ip -o -4 addr show | awk -v a="${p%/*}" 'index($4, a "/") == 1 { f = 1 } END { exit !f }'; then
            die "$p is an address of this host, not of the peer"
        fi
        r=$(ip -o route show exact "$p" 2>/dev/null || true)
        if [ -n "$r" ] && ! ip -o route show exact "$p" dev "$tap" proto "$rtproto" | grep -q .; then
            die "a route to $p exists already: $r"
        fi
    done
    # shellcheck disable=SC2046
    fwd=$(first_field fwd $(all_tags))
    [ -n "$fwd" ] || fwd=$(cat "$fwd_file")
    pt=$(saved_pa "$tap")
    [ -n "$pt" ] || pt=$(cat "$(pa_file "$tap")")
    pl=$(saved_pa "$lan")
    [ -n "$pl" ] || pl=$(cat "$(pa_file "$lan")")
    # Before any change: sysctls that cannot be set fail here.
    fwd_ok 1 || exit 1
    for f in "$(pa_file "$tap")" "$(pa_file "$lan")"; do
        [ "$(cat "$f")" = 1 ] || [ -w "$f" ] ||
            die "$f is read-only here (a service with ProtectKernelTunables=, or no CAP_NET_ADMIN): run $prog as root, not from taptun@.service's up hook"
    done
    tag="${prefix}fwd=$fwd:nf=$(new_tables f):pa=$pt$pl"

    rule_out="FORWARD -i $tap -o $lan -m comment --comment $tag -j ACCEPT"
    rule_in="FORWARD -i $lan -o $tap -m comment --comment $tag -j ACCEPT"
    present=0
    # shellcheck disable=SC2086 # rules are lists of words
    for r in "$rule_out" "$rule_in"; do ipt -C $r 2>/dev/null && present=$((present + 1)); done
    have=$(our_rules filter FORWARD "$prefix" | wc -l)
    if [ "$present" -ne 2 ] || [ "$have" -ne 2 ]; then
        # Half there (an interrupted up): start over.
        delete_rules filter FORWARD "$prefix"
        # shellcheck disable=SC2046 # rules are lists of words
        ipt -I $(printf '%s\n' "$rule_in" | sed 's/^FORWARD/FORWARD 1/')
        # shellcheck disable=SC2046
        ipt -I $(printf '%s\n' "$rule_out" | sed 's/^FORWARD/FORWARD 1/')
    fi
    for p in "$@"; do
        if ! ip -o route show exact "$p" dev "$tap" proto "$rtproto" | grep -q .; then
            ip route add "$p" dev "$tap" proto "$rtproto"
        fi
    done
    set_fwd 1
    for f in "$(pa_file "$tap")" "$(pa_file "$lan")"; do
        [ "$(cat "$f")" = 1 ] || echo 1 >"$f"
    done
    echo "$prog: proxy ARP between $tap and $lan; routes to ${*:-(none)} through $tap; ip_forward 1 (was $fwd)"
}

do_down() {
    tag=$(our_rules filter FORWARD "$prefix" | sed -n 's/.*--comment "\{0,1\}\(taptun:[^" ]*\).*/\1/p' | head -n 1)
    routes=$(our_routes)
    if [ -z "$tag" ] && [ -z "$routes" ]; then
        echo "$prog: nothing to undo for $tap and $lan"
        return
    fi
    for r in $routes; do
        ip route del "$r" dev "$tap" proto "$rtproto"
    done
    [ -n "$tag" ] || return 0
    delete_rules filter FORWARD "$prefix"
    pa=$(field "$tag" pa)
    # Give an interface its proxy_arp back unless another taptun proxy-ARP
    # rule still names it. (A TAP that taptun removed took its setting along.)
    if [ -z "$(saved_pa "$tap")" ] && [ -e "$(pa_file "$tap")" ] && [ -n "$pa" ]; then
        echo "${pa%?}" >"$(pa_file "$tap")"
    fi
    if [ -z "$(saved_pa "$lan")" ] && [ -e "$(pa_file "$lan")" ] && [ -n "$pa" ]; then
        echo "${pa#?}" >"$(pa_file "$lan")"
    fi
    undo_common "$tag"
    echo "$prog: proxy ARP between $tap and $lan undone; ip_forward $(cat "$fwd_file")"
}

if [ "$mode" = up ]; then do_up "$@"; else do_down; fi
