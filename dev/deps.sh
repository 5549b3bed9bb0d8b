#!/bin/sh
# Installs the Debian packages that the demo, the tests and the benchmark use.
# Needs root. Installs only what is missing, so a second run is quick.
set -eu
pkgs="iproute2 iptables nftables bridge-utils dnsmasq-base iputils-ping socat tcpdump shellcheck iperf3 busybox udhcpc procps util-linux libcap2-bin fastd jq python3 systemd ethtool"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "dev/deps.sh: missing packages:$missing; run as root (sudo) to install them" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
