#!/bin/sh
# Demo: builds taptun, starts two peers in two network namespaces joined by a
# veth pair, shows a ping and a 20 MB transfer crossing the tunnel, then
# removes everything it made. Needs root. Traffic stays inside the namespaces.
set -eu
cd "$(dirname "$0")/.."
# Only what the demo runs (ip, ping, socat), not the test suite's tools.
sh dev/deps.sh demo
cargo build --release --quiet
bin=$PWD/target/release/taptun

id=$$
nsa="ttdemo-a-$id"
nsb="ttdemo-b-$id"
work=$(mktemp -d)
pa=""
pb=""
cleanup() {
    [ -n "$pa" ] && kill "$pa" 2>/dev/null
    [ -n "$pb" ] && kill "$pb" 2>/dev/null
    [ -n "$pa" ] && wait "$pa" 2>/dev/null
    [ -n "$pb" ] && wait "$pb" 2>/dev/null
    ip netns del "$nsa" 2>/dev/null
    ip netns del "$nsb" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }

step "two hosts: namespaces $nsa (192.0.2.1) and $nsb (192.0.2.2) on a veth pair"
ip netns add "$nsa"
ip netns add "$nsb"
ip link add "dva$id" netns "$nsa" type veth peer name "dvb$id" netns "$nsb"
ip -n "$nsa" link set "dva$id" name eth0
ip -n "$nsb" link set "dvb$id" name eth0
ip -n "$nsa" addr add 192.0.2.1/24 dev eth0
ip -n "$nsb" addr add 192.0.2.2/24 dev eth0
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up; done

step "one key for both sides"
"$bin" genkey "$work/key.b64"

step "start taptun: A learns its peer, B knows A's address"
# Both TAPs are tap0, in two namespaces that share /run: each status socket
# gets a path of its own (the default, /run/taptun/tap0.sock, would clash).
ip netns exec "$nsa" "$bin" "$work/key.b64" :9123 -i tap0 -a 10.10.0.1/24 --status-socket "$work/a.sock" >"$work/a.log" 2>&1 &
pa=$!
ip netns exec "$nsb" "$bin" "$work/key.b64" :9123 192.0.2.1:9123 -i tap0 -a 10.10.0.2/24 --status-socket "$work/b.sock" >"$work/b.log" 2>&1 &
pb=$!
i=0
until ip -n "$nsa" link show tap0 >/dev/null 2>&1 && ip -n "$nsb" link show tap0 >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -gt 100 ] && { echo "TAPs did not come up"; cat "$work"/*.log; exit 1; }
    sleep 0.1
done
ip -n "$nsb" -br link show tap0

step "ping across the tunnel, B -> A (10.10.0.1)"
ip netns exec "$nsb" ping -c 3 -i 0.3 10.10.0.1

step "transfer 20 MB B -> A over TCP through the tunnel and compare checksums"
head -c 20000000 /dev/urandom >"$work/data"
sent=$(sha256sum <"$work/data")
ip netns exec "$nsa" sh -c "timeout 60 socat -u TCP-LISTEN:5001,reuseaddr - | sha256sum > '$work/got'" &
srv=$!
start=$(date +%s.%N)
ip netns exec "$nsb" timeout 60 socat -u "FILE:$work/data" TCP:10.10.0.1:5001,retry=20,interval=0.2
wait "$srv"
end=$(date +%s.%N)
got=$(cat "$work/got")
echo "sent     $sent"
echo "received $got"
[ "$sent" = "$got" ] || { echo "MISMATCH"; exit 1; }
awk -v s="$start" -v e="$end" 'BEGIN { t = e - s; printf "20 MB intact in %.2f s (%.0f Mbit/s)\n", t, 160 / t }'

step "taptun status FOLDER: both tunnels, A then B (their sockets, in name order)"
"$bin" status "$work"

step "stop both peers (SIGTERM): counters are logged and the TAPs removed"
kill "$pa" "$pb"
wait "$pa" || true
wait "$pb" || true
pa=""
pb=""
cat "$work/a.log" "$work/b.log"
ip -n "$nsa" link show tap0 >/dev/null 2>&1 && { echo "tap0 still present"; exit 1; }
echo
echo "demo OK"
