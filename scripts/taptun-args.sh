#!/bin/sh
# Argument handling shared by l2_bridge_up.sh, l3_nat_up.sh and
# l3_proxy_arp_up.sh; sourced, not run, right after the sourcing script has
# set prog (its name) and defined usage().
# shellcheck shell=sh
# shellcheck disable=SC2154

die() {
    echo "$prog: $*" >&2
    exit 1
}

# Wrong arguments: say why, then the usage, on stderr; exit 2.
bad_args() {
    echo "$prog: $*" >&2
    usage >&2
    exit 2
}

# help_if_asked "$@": usage on stdout and exit 0 for -h or --help.
help_if_asked() {
    case "${1-}" in
    -h | --help)
        usage
        exit 0
        ;;
    esac
}

# check_ifnames NAME...: names go into commands and file names, so accept
# only what the kernel accepts for an interface, minus the odd characters
# nobody uses.
check_ifnames() {
    for n in "$@"; do
        case $n in
        '' | -* | *[!A-Za-z0-9_.-]* | . | ..) bad_args "bad interface name '$n'" ;;
        esac
        [ "${#n}" -le 15 ] || bad_args "interface name '$n' longer than 15 characters"
    done
}
