#!/bin/sh
# Tagged iptables rules shared by l3_nat_up.sh and l3_proxy_arp_up.sh;
# sourced, not run. Each rule carries an iptables comment that also records
# the state before the first taptun rule (see the scripts' headers).
# shellcheck shell=sh
# The sourcing script has already sourced taptun-args.sh (for die).
# shellcheck disable=SC2154

command -v iptables >/dev/null 2>&1 || die "iptables is not installed"
command -v iptables-save >/dev/null 2>&1 || die "iptables-save is not installed"
# iptables-legacy needs CAP_NET_RAW and a lock file in /run: not available to
# taptun@.service's hooks (user taptun, CAP_NET_ADMIN, read-only /run); the
# nftables one (Debian's default) talks netlink and needs CAP_NET_ADMIN only.
if [ "$(id -u)" != 0 ] && iptables -V 2>/dev/null | grep -q legacy; then
    die "iptables is iptables-legacy, which needs root (CAP_NET_RAW, /run/xtables.lock); for taptun@.service's hooks use the nftables one: update-alternatives --set iptables /usr/sbin/iptables-nft"
fi
fwd_file=/proc/sys/net/ipv4/ip_forward

ipt() { iptables -w "$@"; }

exists() { ip link show dev "$1" >/dev/null 2>&1; }

# Every taptun tag in the chains taptun uses.
all_tags() {
    {
        ipt -t filter -S FORWARD 2>/dev/null || true
        ipt -t nat -S POSTROUTING 2>/dev/null || true
    } | sed -n 's/.*--comment "\{0,1\}\(taptun:[^" ]*\).*/\1/p'
}

# field TAG KEY: the value of KEY=value in a colon-separated tag.
field() {
    printf '%s\n' "$1" | tr ':' '\n' | awk -v k="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }'
}

# our_rules TABLE CHAIN PREFIX: the rules whose tag starts with PREFIX.
our_rules() {
    { ipt -t "$1" -S "$2" 2>/dev/null || true; } | grep -F -e "--comment \"$3" -e "--comment $3" || true
}

# delete_rules TABLE CHAIN PREFIX
delete_rules() {
    our_rules "$1" "$2" "$3" | while IFS= read -r rule; do
        # -S prints the rule as the arguments that add it; the tag holds no
        # spaces, so dropping the quotes leaves the same words.
        # shellcheck disable=SC2046 # split into arguments on purpose
        ipt -t "$1" $(printf '%s\n' "$rule" | sed 's/^-A /-D /; s/"//g')
    done
}

# (iptables-save -t TABLE would print a missing table as if it existed.)
table_exists() { iptables-save 2>/dev/null | grep -q "^\*$1\$"; }

# True when the table holds nothing but built-in chains with ACCEPT
# policies: what iptables-nft creates on first use.
table_pristine() {
    ! iptables-save -t "$1" 2>/dev/null | grep -v '^#' |
        grep -Evq '^(\*[a-z]+|COMMIT|:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT .*)$'
}

drop_table() {
    if iptables -V 2>/dev/null | grep -q nf_tables && command -v nft >/dev/null 2>&1; then
        nft delete table ip "$1"
    else
        echo "$prog: note: the empty $1 table that up created stays (not nftables-based iptables, or no nft)" >&2
    fi
}

# first_field KEY TAG...: the first value of KEY among the tags.
first_field() {
    k=$1
    shift
    for t in "$@"; do
        v=$(field "$t" "$k")
        if [ -n "$v" ]; then
            echo "$v"
            return
        fi
    done
}

# new_tables LETTERS: for each table (f = filter, n = nat) it uses, print its
# letter if it did not exist before taptun's first rule.
new_tables() {
    res=""
    for l in $(printf '%s\n' "$1" | sed 's/./& /g'); do
        case $l in f) t=filter ;; n) t=nat ;; esac
        if ! table_exists "$t"; then
            res=$res$l
        else
            for tg in $(all_tags); do
                case $(field "$tg" nf) in
                *"$l"*)
                    res=$res$l
                    break
                    ;;
                esac
            done
        fi
    done
    echo "${res:--}"
}

# Under taptun@.service (user taptun, ProtectKernelTunables=yes) /proc/sys is
# read-only: there net.ipv4.ip_forward must come from a sysctl.d file.
# fwd_ok VALUE: true when ip_forward is VALUE or can be made so; else one line
# that names the fix.
fwd_ok() {
    [ "$(cat "$fwd_file")" = "$1" ] || [ -w "$fwd_file" ] && return 0
    echo "$prog: net.ipv4.ip_forward is $(cat "$fwd_file") and $fwd_file is read-only here (a service with ProtectKernelTunables=, or no CAP_NET_ADMIN); set it at boot, as root: echo net.ipv4.ip_forward=$1 >/etc/sysctl.d/90-taptun.conf && sysctl -p /etc/sysctl.d/90-taptun.conf" >&2
    return 1
}

# set_fwd VALUE: net.ipv4.ip_forward to VALUE; no write when it already is.
set_fwd() {
    fwd_ok "$1" || return 1
    [ "$(cat "$fwd_file")" = "$1" ] || echo "$1" >"$fwd_file"
}

# undo_common TAG: after our rules are gone, give ip_forward and the
# tables back unless another taptun rule still relies on them.
undo_common() {
    fwd=$(field "$1" fwd)
    nf=$(field "$1" nf)
    # shellcheck disable=SC2046
    if [ -z "$(first_field fwd $(all_tags))" ] && [ -n "$fwd" ]; then
        # The rules are gone already: a value that cannot go back is said
        # (set_fwd), not fatal.
        set_fwd "$fwd" || true
    fi
    for l in $(printf '%s\n' "$nf" | sed 's/./& /g'); do
        case $l in f) t=filter ;; n) t=nat ;; *) continue ;; esac
        if table_exists "$t" && table_pristine "$t"; then
            drop_table "$t"
        fi
    done
}
