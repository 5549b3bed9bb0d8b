#!/bin/sh
# l3_nat_up.sh TAP OUT-IF [SOURCE-CIDR...]: route what arrives through a
# taptun TAP out of OUT-IF, masqueraded behind OUT-IF's address.
# l3_nat_down.sh (a wrapper that runs this file with --down) undoes it.
#
# Unlike tinytaptunnel's scripts, which flush the filter and nat tables, this
# touches nothing but its own rules, each tagged with an iptables comment
#   taptun:l3_nat:TAP:OUT-IF:fwd=V:nf=T
# that also records what the namespace was like before the first taptun
# rule: V is net.ipv4.ip_forward, T the iptables tables that did not exist
# (f = filter, n = nat, - = none). The state lives in the kernel, next to the
# rules it describes: nothing on disk, and one record per network namespace.
# Running up twice adds nothing the second time; down removes exactly the
# tagged rules, gives ip_forward its old value once no taptun rule needs it,
# and deletes a table that up created if it is empty again (nftables-based
# iptables only; Debian's default).
set -eu
set -f

mode=up
prog=l3_nat_up.sh
if [ "${1-}" = --down ]; then
    mode=down
    prog=l3_nat_down.sh
    shift
fi

usage() {
    cat <<EOF
usage: l3_nat_up.sh TAP OUT-IF [SOURCE-CIDR...]
       l3_nat_down.sh TAP OUT-IF

up:   enable IPv4 forwarding, accept forwarding TAP -> OUT-IF and the
      established/related return path, masquerade the TAP's IPv4 networks
      (or SOURCE-CIDR...) out of OUT-IF. Rules are inserted first in their
      chains and tagged "taptun:l3_nat:TAP:OUT-IF:...".
down: remove exactly those rules, restore net.ipv4.ip_forward.
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
out=$2
shift 2
check_ifnames "$tap" "$out"
[ "$tap" != "$out" ] || bad_args "TAP and OUT-IF must differ"
for c in "$@"; do
    case $c in
    */* | *.*.*.*) ;;
    *) bad_args "bad SOURCE-CIDR '$c'" ;;
    esac
    case $c in
    *[!0-9./]*) bad_args "bad SOURCE-CIDR '$c'" ;;
    esac
done

# ---- tagged iptables rules: shared with l3_proxy_arp_up.sh ----
# shellcheck source=scripts/taptun-rules.sh
. "$(dirname "$0")/taptun-rules.sh"

# ---- l3_nat ----

prefix="taptun:l3_nat:$tap:$out:"

do_up() {
    exists "$tap" || die "no interface $tap (is taptun running?)"
    exists "$out" || die "no interface $out"
    srcs=$*
    if [ -z "$srcs" ]; then
        srcs=$(ip -o -4 addr show dev "$tap" | awk '{ print $4 }')
        [ -n "$srcs" ] || die "$tap has no IPv4 address: give it one (taptun -a) or name the source network ($prog $tap $out 10.99.0.0/24)"
    fi
    # What the namespace was like before any taptun rule: from an earlier
    # up's tags if there are any (this one's included), else as it is now.
    # shellcheck disable=SC2046
    fwd=$(first_field fwd $(all_tags))
    [ -n "$fwd" ] || fwd=$(cat "$fwd_file")
    # Before any rule: a forwarding that cannot be switched on fails here.
    fwd_ok 1 || exit 1
    tag="${prefix}fwd=$fwd:nf=$(new_tables fn)"

    rule_out="FORWARD -i $tap -o $out -m comment --comment $tag -j ACCEPT"
    rule_back="FORWARD -i $out -o $tap -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment $tag -j ACCEPT"
    want=2
    present=0
    # shellcheck disable=SC2086 # rules are lists of words
    for r in "$rule_out" "$rule_back"; do ipt -C $r 2>/dev/null && present=$((present + 1)); done
    for s in $srcs; do
        want=$((want + 1))
        # shellcheck disable=SC2086
        ipt -t nat -C POSTROUTING -s "$s" -o "$out" -m comment --comment "$tag" -j MASQUERADE 2>/dev/null && present=$((present + 1))
    done
    have=$({
        our_rules filter FORWARD "$prefix"
        our_rules nat POSTROUTING "$prefix"
    } | wc -l)
    if [ "$present" -eq "$want" ] && [ "$have" -eq "$want" ]; then
        set_fwd 1
        echo "$prog: already up: $tap -> $out, masquerading $srcs"
        return
    fi
    # Half there (an interrupted up) or different sources: start over.
    delete_rules filter FORWARD "$prefix"
    delete_rules nat POSTROUTING "$prefix"
    # First in their chains, so that a DROP policy or a REJECT further down
    # does not stop the tunnel's traffic; the order of the rest is kept.
    # shellcheck disable=SC2046 # rules are lists of words
    ipt -I $(printf '%s\n' "$rule_back" | sed 's/^FORWARD/FORWARD 1/')
    # shellcheck disable=SC2046
    ipt -I $(printf '%s\n' "$rule_out" | sed 's/^FORWARD/FORWARD 1/')
    for s in $srcs; do
        ipt -t nat -I POSTROUTING 1 -s "$s" -o "$out" -m comment --comment "$tag" -j MASQUERADE
    done
    set_fwd 1
    echo "$prog: $tap -> $out forwarded, $srcs masqueraded; ip_forward 1 (was $fwd)"
}

do_down() {
    tag=$({
        our_rules filter FORWARD "$prefix"
        our_rules nat POSTROUTING "$prefix"
    } | sed -n 's/.*--comment "\{0,1\}\(taptun:[^" ]*\).*/\1/p' | head -n 1)
    if [ -z "$tag" ]; then
        echo "$prog: nothing to undo for $tap -> $out"
        return
    fi
    delete_rules filter FORWARD "$prefix"
    delete_rules nat POSTROUTING "$prefix"
    undo_common "$tag"
    echo "$prog: $tap -> $out rules removed; ip_forward $(cat "$fwd_file")"
}

if [ "$mode" = up ]; then do_up "$@"; else do_down; fi
