#!/bin/sh
# Installs the Debian packages that the demo or the tests use:
#   sh dev/deps.sh demo   what dev/demo.sh runs (ip, ping, socat): seconds
#   sh dev/deps.sh test   (or no argument) everything dev/test.sh and
#                         dev/bench.sh use, cargo-deb and the aarch64 target
# Needs root. Installs only what is missing, so a second run is quick.
# debootstrap and systemd-container (systemd-nspawn) are for the container
# of tests/systemd_e2e.rs, which also needs cargo-deb (installed last).
# faketime (libfaketime) runs a peer with a skewed clock in tests/field_e2e.rs.
# openvpn and openssl (its throwaway certificates) are dev/bench.sh's
# encrypted anchor for the confidential mode.
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user build and run
# the unit tests for aarch64 (no SHA-NI lanes there: the portable paths),
# with rustup's aarch64-unknown-linux-gnu standard library (added last).
# zsh and fish check their completions (tests/package.rs).
set -eu
demo="iproute2 iputils-ping socat"
case "${1:-test}" in
    demo)
        pkgs=$demo
        full=0
        ;;
    test)
        pkgs="$demo iptables nftables bridge-utils dnsmasq-base tcpdump shellcheck iperf3 busybox udhcpc procps util-linux libcap2-bin fastd jq python3 systemd ethtool debootstrap systemd-container faketime libfaketime openvpn openssl gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user zsh fish"
        full=1
        ;;
    *)
        echo "dev/deps.sh: unknown set ${1:-}: expected demo (what dev/demo.sh runs) or test (everything; the default)" >&2
        exit 2
        ;;
esac
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
install_cargo_deb() {
    cargo deb --version >/dev/null 2>&1 && return 0
    # A pinned version: the one tests/systemd_e2e.rs was written against.
    echo "installing cargo-deb into ${CARGO_HOME:-$HOME/.cargo}/bin (builds for a few minutes, once per machine)"
    cargo install --locked --quiet cargo-deb --version 3.8.0
}
add_aarch64() {
    rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu && return 0
    echo "adding the aarch64-unknown-linux-gnu standard library (rustup)"
    rustup target add aarch64-unknown-linux-gnu
}
# The demo needs neither cargo-deb (minutes to build) nor the aarch64 target.
extras() {
    [ "$full" = 1 ] || return 0
    install_cargo_deb
    add_aarch64
}
if [ -z "$missing" ]; then
    extras
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "dev/deps.sh: missing packages:$missing; run as root (sudo) to install them" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
extras
