#!/bin/sh
# Benchmark: taptun against the bare veth, the kernel's vxlan and fastd, in
# one run, in the same two network namespaces (joined by a veth, MTU 1500);
# and, for the confidential mode (--cipher), taptun in each cipher against
# the encrypted anchors: fastd salsa2012+umac and OpenVPN 2.6 (p2p TLS,
# AES-256-GCM, on a TAP).
#
# For each candidate and each round: iperf3 TCP (one stream, each
# direction), iperf3 UDP with 64-byte payloads at unlimited rate (received
# packets/s), ping RTT (median, and the part added over the bare veth
# measured right before), ping RTT under load (p50 and p99 of a ping every
# 50 ms during the A->B TCP run: what a second flow waits for behind a bulk
# one), and for the userspace tunnels their CPU seconds per GB of TCP
# payload (both processes, from /proc/PID/stat) and their peak RSS (VmHWM). Rounds are interleaved (each round visits every candidate, in
# a rotated order) so that a noisy neighbour hurts all candidates alike;
# each figure is the median over the rounds, with min-max.
#
# Usage (root; traffic stays inside the namespaces it creates):
#   sudo sh dev/bench.sh
# Knobs (environment):
#   ROUNDS=3        rounds (>= 3 for a median worth the name)
#   DURATION=5      seconds per iperf3 run (not SECONDS: bash's clock)
#   PINGS=40        pings per RTT sample (20 ms apart)
#   CANDIDATES="bare vxlan fastd taptun bridged"   the default; a subset for
#     quick looks, or more of:
#     bridged: TCP between two MTU-1500 hosts on LANs bridged to taptun's
#       TAPs with scripts/l2_bridge_up.sh, the two-labs topology; with a count
#       of IP fragments on the underlay during it
#     taptun-aes, taptun-chacha: taptun --cipher aes-256-gcm, chacha20-poly1305
#     fastd-enc: fastd with method salsa2012+umac (encrypted)
#     openvpn: OpenVPN 2.6 point-to-point TLS, AES-256-GCM, on a TAP
#       (throwaway certificates made with openssl in the work directory)
#   The confidential comparison (about 5 minutes with ROUNDS=3):
#     sudo CANDIDATES="taptun taptun-aes taptun-chacha fastd-enc openvpn" sh dev/bench.sh
#   It ends the report with taptun-aes TCP ÷ taptun (HMAC) TCP and ÷ the
#   faster encrypted anchor (fastd-enc or openvpn), measured in the same run.
#   TAPTUN_BIN=...  use this binary instead of building target/release/taptun
#   TAPTUN_ARGS=... extra taptun arguments (e.g. "--sockbuf 212992")
#   TAPTUN_BASE_BIN=... another taptun binary (an older build) measured in the
#                   same run as candidate "base", so a change is compared
#                   with what it changes, interleaved (add base to CANDIDATES)
#   TAPTUN_NEW_ARGS=... extra arguments for taptun, taptun-aes and
#                   taptun-chacha, not base (e.g. "--nice -10": an option
#                   measured against the build before it, which lacks it)
#   TAPTUN_BASE_ARGS=... extra arguments for base only (e.g. "--cipher
#                   aes-256-gcm" to compare the confidential mode with an
#                   older build's)
#   ECN=1           TCP asks for ECN on both hosts (net.ipv4.tcp_ecn=1 in
#                   the namespaces, as on a host where it is switched on;
#                   Linux's default, 2, only answers): an AQM that marks
#                   CE slows a flow down without a loss. ECN=0: the default
#   CC=cubic        TCP congestion control of the iperf3 runs (iperf3 -C; a
#                   socket option, so no host setting changes): cubic,
#                   Linux's default, which backs off on a CE mark or a loss,
#                   as reno does; bbr (v1) ignores CE and paces to its own
#                   estimate, so no AQM changes what it queues. Empty: the
#                   namespaces' default (the host's)
#   OUT=target/bench/report.md   where the markdown report goes
# A default run takes about 4-5 minutes. Exits non-zero only when something
# failed to run (setup, a tunnel, a measurement); a slow result is a result.
set -eu
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PINGS=${PINGS:-40}
CANDIDATES=${CANDIDATES:-bare vxlan fastd taptun bridged}
TAPTUN_ARGS=${TAPTUN_ARGS:-}
OUT=${OUT:-target/bench/report.md}
ECN=${ECN:-1}
CC=${CC-cubic}

die() { echo "bench: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

case $ECN in 0 | 1) ;; *) die "ECN must be 0 or 1, not '$ECN'" ;; esac
for v in ROUNDS DURATION PINGS; do
    eval "x=\$$v"
    case $x in '' | *[!0-9]*) die "$v must be a positive integer, not '$x'" ;; esac
    [ "$x" -ge 1 ] || die "$v must be at least 1"
done
[ "$DURATION" -le 120 ] || die "DURATION is capped at 120 s"
[ "$ROUNDS" -le 20 ] || die "ROUNDS is capped at 20"
[ "$PINGS" -le 1000 ] || die "PINGS is capped at 1000"
for c in $CANDIDATES; do
    case $c in
    bare | vxlan | fastd | taptun | bridged | base | taptun-aes | taptun-chacha | fastd-enc | openvpn) ;;
    *) die "unknown candidate '$c' (bare vxlan fastd taptun bridged base taptun-aes taptun-chacha fastd-enc openvpn)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, TAP): sudo sh dev/bench.sh"
[ -c /dev/net/tun ] || die "/dev/net/tun is missing (modprobe tun)"

sh dev/deps.sh
for tool in ip iperf3 fastd openvpn openssl ping jq timeout awk ss tcpdump; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

if [ -n "${TAPTUN_BIN:-}" ]; then
    bin=$TAPTUN_BIN
else
    say "building taptun (release)"
    # Under sudo, cargo may not be on root's PATH: build as yourself, then
    # sudo TAPTUN_BIN=target/release/taptun sh dev/bench.sh
    command -v cargo >/dev/null 2>&1 || die "cargo not found (build as your user, then pass TAPTUN_BIN=target/release/taptun)"
    cargo build --release --quiet || die "cargo build --release failed"
    bin=$PWD/target/release/taptun
fi
[ -x "$bin" ] || die "no taptun binary at $bin"
case " $CANDIDATES " in *" base "*) [ -x "${TAPTUN_BASE_BIN:-}" ] || die "candidate base needs TAPTUN_BASE_BIN=path/to/an/older/taptun" ;; esac

id=$$
nsa="ttbench-a-$id"
nsb="ttbench-b-$id"
nsha="ttbench-ha-$id" # the bridged candidate's LAN hosts
nshb="ttbench-hb-$id"
work=""
pids="" # every process we started, killed by PID on exit
failures=0
client="" # the iperf3 client running now, if any
clk=$(getconf CLK_TCK)

# True while PID runs (a zombie child counts as gone).
alive() {
    s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [ -n "$s" ] && [ "$s" != Z ]
}

# SIGTERM, up to 3 s to exit, then SIGKILL; reaps it.
stop_pid() {
    kill "$1" 2>/dev/null || return 0
    i=0
    while alive "$1" && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    for p in $client $pids; do stop_pid "$p"; done
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    ip netns del "$nsha" 2>/dev/null || true
    ip netns del "$nshb" 2>/dev/null || true
    [ -z "$work" ] || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d)
res="$work/results"
: >"$res"
# A private copy: a rebuild of target/ during the run cannot change what runs.
cp "$bin" "$work/taptun"
bin=$work/taptun
if [ -n "${TAPTUN_BASE_BIN:-}" ]; then
    cp "$TAPTUN_BASE_BIN" "$work/taptun-base"
fi

fail() {
    failures=$((failures + 1))
    echo "bench: FAILED: $*" >&2
}

# Runs in a namespace in the background; `ip netns exec` execs the program,
# so $! is the program's own PID (its CPU time and RSS are what we read).
spawn() { # ns log program args...
    ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    last_pid=$!
    pids="$pids $last_pid"
}

# Polls until interface $2 exists in namespace $1 (10 s at most).
wait_link() {
    i=0
    until ip -n "$1" link show dev "$2" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 100 ] && return 1
        sleep 0.1
    done
}

# Pings from A until $1 answers (about 20 s at most). The explicit return 0:
# an until loop's status is its body's last command's, here the false test,
# so a peer that answered only the second ping would count as down.
wait_ping() {
    i=0
    until ip netns exec "$nsa" ping -n -c 1 -W 1 "$1" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 20 ] && return 1
    done
    return 0
}

# Polls until a UDP socket is bound to port $2 in namespace $1 (10 s at most).
wait_udp() {
    i=0
    until ip netns exec "$1" ss -Hlun "sport = :$2" | grep -q .; do
        i=$((i + 1))
        [ "$i" -gt 100 ] && return 1
        sleep 0.1
    done
}

mtu_of() { ip -n "$1" -o link show dev "$2" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'; }

# --- the underlay -----------------------------------------------------------
ip netns add "$nsa"
ip netns add "$nsb"
ip link add "tbA$id" netns "$nsa" mtu 1500 type veth peer name "tbB$id" netns "$nsb" mtu 1500
ip -n "$nsa" link set "tbA$id" name u0
ip -n "$nsb" link set "tbB$id" name u0
ip -n "$nsa" addr add 192.0.2.1/24 dev u0
ip -n "$nsb" addr add 192.0.2.2/24 dev u0
for ns in "$nsa" "$nsb"; do
    ip -n "$ns" link set u0 up
    ip -n "$ns" link set lo up
    [ "$ECN" = 0 ] || ip netns exec "$ns" sysctl -qw net.ipv4.tcp_ecn=1
done

# Overlay address of B for each candidate (A has .1 in the same /24).
addr_b() {
    case $1 in
    bare) echo 192.0.2.2 ;;
    vxlan) echo 10.201.0.2 ;;
    taptun) echo 10.202.0.2 ;;
    fastd) echo 10.203.0.2 ;;
    bridged) echo 10.204.0.2 ;;
    base) echo 10.205.0.2 ;;
    openvpn) echo 10.206.0.2 ;;
    fastd-enc) echo 10.207.0.2 ;;
    taptun-aes) echo 10.208.0.2 ;;
    taptun-chacha) echo 10.209.0.2 ;;
    esac
}

# The tunnel processes of each candidate (the two ends; PIDs whose CPU time
# and RSS are measured): set_pids CANDIDATE PID..., tunnel_pids CANDIDATE.
set_pids() {
    v=$(echo "$1" | tr - _)
    shift
    eval "pids_$v=\$*"
}
add_pids() {
    v=$(echo "$1" | tr - _)
    shift
    eval "pids_$v=\"\${pids_$v:-} \$*\""
}
tunnel_pids() {
    v=$(echo "$1" | tr - _)
    eval "echo \"\${pids_$v:-}\""
}

# The taptun key file, shared by every taptun candidate.
make_key() {
    [ -f "$work/taptun.key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$work/taptun.key")
}

# --- the candidates -----------------------------------------------------------
setup_vxlan() {
    ip -n "$nsa" link add vx0 mtu 1418 type vxlan id 42 local 192.0.2.1 remote 192.0.2.2 dstport 4789 dev u0 &&
        ip -n "$nsb" link add vx0 mtu 1418 type vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789 dev u0 &&
        ip -n "$nsa" addr add 10.201.0.1/24 dev vx0 &&
        ip -n "$nsb" addr add 10.201.0.2/24 dev vx0 &&
        ip -n "$nsa" link set vx0 up &&
        ip -n "$nsb" link set vx0 up
}

# A pair of taptun processes, each side knowing its peer (the fixed-peer
# setup a connected socket suits).
setup_taptun() { # candidate binary port tap subnet(first three octets) [extra taptun args...]
    c=$1 tbin=$2 port=$3 tap=$4 net=$5
    shift 5
    make_key || return 1
    # Status sockets in the work directory: the default, /run/taptun/TAP.sock,
    # is one path for both ends (and for a bench running in another checkout).
    # Not for base: an older build may not know the option.
    st=""
    [ "$tbin" = "$bin" ] && st=yes
    # shellcheck disable=SC2086 # TAPTUN_ARGS is a list of arguments
    spawn "$nsa" "$work/$c-a.log" "$tbin" "$work/taptun.key" ":$port" "192.0.2.2:$port" \
        -i "$tap" --mtu 1418 -a "$net.1/24" ${st:+--status-socket} ${st:+"$work/$c-a.sock"} "$@" $TAPTUN_ARGS
    set_pids "$c" "$last_pid"
    # shellcheck disable=SC2086
    spawn "$nsb" "$work/$c-b.log" "$tbin" "$work/taptun.key" ":$port" "192.0.2.1:$port" \
        -i "$tap" --mtu 1418 -a "$net.2/24" ${st:+--status-socket} ${st:+"$work/$c-b.sock"} "$@" $TAPTUN_ARGS
    add_pids "$c" "$last_pid"
    wait_link "$nsa" "$tap" && wait_link "$nsb" "$tap"
}

setup_fastd() { # candidate method interface port subnet(first three octets)
    c=$1 method=$2 ifc=$3 port=$4 net=$5
    for side in a b; do
        fastd --generate-key 2>/dev/null >"$work/$c-$side.keys" || return 1
    done
    for side in a b; do
        # Only A initiates: when both sides handshake at once, fastd v22 can
        # end up with sessions that fail every packet's verification.
        if [ "$side" = a ]; then
            me=1 other=b remote="remote 192.0.2.2:$port;"
        else
            me=2 other=a remote=""
        fi
        secret=$(sed -n 's/^Secret: //p' "$work/$c-$side.keys")
        public=$(sed -n 's/^Public: //p' "$work/$c-$other.keys")
        [ -n "$secret" ] && [ -n "$public" ] || return 1
        cat >"$work/$c-$side.conf" <<EOF
log level info;
mode tap;
interface "$ifc";
mtu 1418;
method "$method";
bind 192.0.2.$me:$port;
secret "$secret";
peer "$other" {
    key "$public";
    $remote
}
EOF
    done
    # B listens first: a handshake from A that finds no socket is retried
    # only after about 20 s.
    spawn "$nsb" "$work/$c-b.log" fastd -c "$work/$c-b.conf"
    set_pids "$c" "$last_pid"
    wait_udp "$nsb" "$port" || return 1
    spawn "$nsa" "$work/$c-a.log" fastd -c "$work/$c-a.conf"
    add_pids "$c" "$last_pid"
    wait_link "$nsa" "$ifc" && wait_link "$nsb" "$ifc" &&
        ip -n "$nsa" addr add "$net.1/24" dev "$ifc" &&
        ip -n "$nsb" addr add "$net.2/24" dev "$ifc" &&
        ip -n "$nsa" link set "$ifc" up &&
        ip -n "$nsb" link set "$ifc" up
}

# A throwaway CA and a server and a client certificate for OpenVPN's TLS
# (P-256 keys: quick to make), in $work/ovpn.
make_certs() {
    d=$work/ovpn
    mkdir -p "$d" || return 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=taptun-bench-ca -keyout "$d/ca.key" -out "$d/ca.crt" >"$d/openssl.log" 2>&1 || return 1
    for who in server client; do
        printf '%s\n' "basicConstraints = CA:FALSE" "keyUsage = digitalSignature, keyAgreement" \
            "extendedKeyUsage = ${who}Auth" >"$d/$who.ext"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=taptun-bench-$who" -keyout "$d/$who.key" -out "$d/$who.csr" >>"$d/openssl.log" 2>&1 &&
            openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
                -days 2 -extfile "$d/$who.ext" -out "$d/$who.crt" >>"$d/openssl.log" 2>&1 || return 1
    done
}

# OpenVPN 2.6 point to point (no server mode, no pool) with TLS on a TAP,
# AES-256-GCM data channel, no compression, UDP; B is the TLS server. The
# device MTU is 1418 like the others' (tun-mtu); DCO does not do TAP, so it is
# the userspace data path that is measured. Runs in the foreground: $! is
# openvpn itself.
setup_openvpn() {
    make_certs || return 1
    for side in a b; do
        if [ "$side" = a ]; then
            me=1 other=2 role="tls-client
remote-cert-tls server" who=client
        else
            me=2 other=1 role="tls-server
dh none
remote-cert-tls client" who=server
        fi
        cat >"$work/openvpn-$side.conf" <<EOF
mode p2p
dev ov0
dev-type tap
proto udp4
local 192.0.2.$me
lport 1194
remote 192.0.2.$other 1194
$role
ca $work/ovpn/ca.crt
cert $work/ovpn/$who.crt
key $work/ovpn/$who.key
data-ciphers AES-256-GCM
cipher AES-256-GCM
allow-compression no
tun-mtu 1418
disable-dco
verb 1
writepid $work/openvpn-$side.pid
EOF
    done
    spawn "$nsb" "$work/openvpn-b.log" openvpn --config "$work/openvpn-b.conf"
    set_pids openvpn "$last_pid"
    wait_udp "$nsb" 1194 || return 1
    spawn "$nsa" "$work/openvpn-a.log" openvpn --config "$work/openvpn-a.conf"
    add_pids openvpn "$last_pid"
    for side in a b; do
        if [ "$side" = a ]; then ns=$nsa me=1; else ns=$nsb me=2; fi
        wait_link "$ns" ov0 &&
            ip -n "$ns" link set ov0 mtu 1418 &&
            ip -n "$ns" addr add "10.206.0.$me/24" dev ov0 &&
            ip -n "$ns" link set ov0 up || return 1
    done
}

# Two labs: a host with MTU 1500 on a LAN bridged to a taptun TAP at each
# end, default taptun flags and the documented recipe (taptun, then
# l2_bridge_up.sh), nothing changed on the hosts.
setup_bridged() {
    ip netns add "$nsha" && ip netns add "$nshb" || return 1
    for side in a b; do
        if [ "$side" = a ]; then gw=$nsa host=$nsha me=1 other=2; else gw=$nsb host=$nshb me=2 other=1; fi
        ip link add "tl$side$id" netns "$gw" mtu 1500 type veth peer name "th$side$id" netns "$host" mtu 1500 &&
            ip -n "$gw" link set "tl$side$id" name lan0 &&
            ip -n "$host" link set "th$side$id" name eth0 &&
            ip -n "$host" addr add "10.204.0.$me/24" dev eth0 &&
            ip -n "$host" link set eth0 up &&
            ip -n "$host" link set lo up || return 1
        [ "$ECN" = 0 ] || ip netns exec "$host" sysctl -qw net.ipv4.tcp_ecn=1 || return 1
        # shellcheck disable=SC2086 # TAPTUN_ARGS is a list of arguments
        spawn "$gw" "$work/bridged-$side.log" "$bin" "$work/taptun.key" :9124 "192.0.2.$other:9124" \
            -i tl0 --status-socket "$work/bridged-$side.sock" $TAPTUN_ARGS
        add_pids bridged "$last_pid"
        wait_link "$gw" tl0 || return 1
        TAPTUN_STATE_DIR="$work/state" ip netns exec "$gw" sh scripts/l2_bridge_up.sh tl0 lan0 brl >/dev/null || return 1
    done
    spawn "$nshb" "$work/iperf3-bridged.log" iperf3 -s -p 5202
    i=0
    until ip netns exec "$nsha" ping -n -c 1 -W 1 10.204.0.2 >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 20 ] && return 1
    done
    return 0 # (not the status of the loop's last test: see wait_ping)
}

dev_of() {
    case $1 in
    bare) echo u0 ;; vxlan) echo vx0 ;; taptun) echo tt0 ;; fastd) echo fd0 ;; bridged) echo tl0 ;; base) echo tt1 ;;
    openvpn) echo ov0 ;; fastd-enc) echo fd1 ;; taptun-aes) echo ta0 ;; taptun-chacha) echo tc0 ;;
    esac
}

cands=""
for c in bare vxlan fastd fastd-enc openvpn base taptun taptun-aes taptun-chacha bridged; do # report order, whatever order CANDIDATES has
    case " $CANDIDATES " in *" $c "*) ;; *) continue ;; esac
    # shellcheck disable=SC2086 # TAPTUN_BASE_ARGS: several words
    case $c in
    bare) ok=true ;;
    vxlan) if setup_vxlan; then ok=true; else ok=false; fi ;;
    taptun) if setup_taptun taptun "$bin" 9123 tt0 10.202.0 ${TAPTUN_NEW_ARGS:-}; then ok=true; else ok=false; fi ;;
    base) if setup_taptun base "$work/taptun-base" 9125 tt1 10.205.0 ${TAPTUN_BASE_ARGS:-}; then ok=true; else ok=false; fi ;;
    taptun-aes) if setup_taptun taptun-aes "$bin" 9126 ta0 10.208.0 --cipher aes-256-gcm ${TAPTUN_NEW_ARGS:-}; then ok=true; else ok=false; fi ;;
    taptun-chacha) if setup_taptun taptun-chacha "$bin" 9127 tc0 10.209.0 --cipher chacha20-poly1305 ${TAPTUN_NEW_ARGS:-}; then ok=true; else ok=false; fi ;;
    bridged) if make_key && setup_bridged; then ok=true; else ok=false; fi ;;
    fastd) if setup_fastd fastd null+salsa2012+umac fd0 10000 10.203.0; then ok=true; else ok=false; fi ;;
    fastd-enc) if setup_fastd fastd-enc salsa2012+umac fd1 10001 10.207.0; then ok=true; else ok=false; fi ;;
    openvpn) if setup_openvpn; then ok=true; else ok=false; fi ;;
    esac
    # (setup_bridged waits for its own hosts' ping)
    if $ok && { [ "$c" = bridged ] || wait_ping "$(addr_b "$c")"; }; then
        cands="$cands $c"
        say "$c ready: $(dev_of "$c") mtu $(mtu_of "$nsa" "$(dev_of "$c")")"
    else
        fail "$c did not come up"
        for f in "$work/$c"-*.log; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" >&2; done
    fi
done
[ -n "$cands" ] || die "no candidate came up"

spawn "$nsb" "$work/iperf3-server.log" iperf3 -s -p 5201
i=0
until ip netns exec "$nsb" ss -Hltn 'sport = :5201' | grep -q 5201; do
    i=$((i + 1))
    [ "$i" -gt 100 ] && die "iperf3 server did not start"
    sleep 0.1
done

# --- measuring ----------------------------------------------------------------
rec() { echo "$1 $2 $3 $4" >>"$res"; } # round candidate metric value

# "utime stime" (clock ticks) of the given PIDs, all threads together.
cpu_ticks() {
    for p in "$@"; do sed 's/.*) //' "/proc/$p/stat"; done |
        awk '{ u += $12; s += $13 } END { print u + 0, s + 0 }'
}

# Frames the kernel dropped because the tunnel did not read A's TAP/tunnel
# device fast enough (tun's queue full).
dev_tx_dropped() {
    ip netns exec "$nsa" cat "/sys/class/net/$1/statistics/tx_dropped" 2>/dev/null || echo 0
}

# Datagrams dropped at B's tunnel UDP socket (its receive buffer was full).
sock_drops() {
    ip netns exec "$nsb" ss -uamnH "sport = :$1" 2>/dev/null |
        sed -n 's/.*skmem:(.*,d\([0-9]*\)).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}

tunnel_port() {
    case $1 in
    taptun) echo 9123 ;; fastd) echo 10000 ;; base) echo 9125 ;;
    openvpn) echo 1194 ;; fastd-enc) echo 10001 ;; taptun-aes) echo 9126 ;; taptun-chacha) echo 9127 ;;
    esac
}

# UDP RcvbufErrors of one namespace.
ns_rcvbuf_errors() {
    ip netns exec "$1" cat /proc/net/snmp |
        awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else { print $c + 0; exit } }'
}

# UDP RcvbufErrors of both namespaces together (datagrams the kernel
# dropped because a socket's receive buffer was full).
rcvbuf_errors() {
    for ns in "$nsa" "$nsb"; do
        ip netns exec "$ns" cat /proc/net/snmp
    done | awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else { s += $c; h = 0 } }
                END { print s + 0 }'
}

# iperf3 client in A with a bounded run time; retried once (a server still
# busy with a killed test refuses the next one). JSON goes to $1. It runs in
# the background while the shell waits, because a trapped signal (Ctrl-C)
# interrupts `wait` at once but not a foreground command.
iperf() {
    iperf_from "$nsa" 5201 "$@"
}

iperf_from() { # ns port out args...
    from=$1 port=$2 out=$3
    shift 3
    for attempt in 1 2; do
        timeout $((DURATION + 30)) ip netns exec "$from" iperf3 -J --connect-timeout 5000 \
            -p "$port" -t "$DURATION" ${CC:+-C "$CC"} "$@" >"$out" 2>&1 &
        client=$!
        if wait "$client" && jq -e '.end.sum_received.bytes > 0' "$out" >/dev/null 2>&1; then
            client=""
            return 0
        fi
        client=""
        [ "$attempt" = 1 ] && sleep 2
    done
    return 1
}

# Median per-packet RTT in µs from A to $1.
ping_median() {
    ip netns exec "$nsa" ping -n -c "$PINGS" -i 0.02 -W 1 "$1" 2>/dev/null |
        awk -F'time=' 'NF > 1 { split($2, t, " "); v[++n] = t[1] * 1000 }
            END {
                if (n == 0) exit 1
                for (i = 2; i <= n; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] > x) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
                print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            }'
}

# Pings from A to $1 every 50 ms for the middle of an iperf3 run (from
# 1 s after it starts to 1 s before it ends), into file $2; in the
# background: $load_ping is its PID.
ping_under_load() { # address out
    n=$(((DURATION - 2) * 20))
    [ "$n" -ge 10 ] || n=10
    (sleep 1 && exec ip netns exec "$nsa" ping -n -c "$n" -i 0.05 -W 1 "$1") >"$2" 2>/dev/null &
    load_ping=$!
}

# "p50 p99" of the RTTs (µs) in ping output $1 (nearest rank); fails with
# fewer than 10 answers.
rtt_percentiles() {
    awk -F'time=' 'NF > 1 { split($2, t, " "); v[++n] = t[1] * 1000 }
        END {
            if (n < 10) exit 1
            for (i = 2; i <= n; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] > x) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
            a = int(0.50 * n + 0.999999); b = int(0.99 * n + 0.999999)
            print v[a], v[b]
        }' "$1"
}

# The bridged candidate: TCP between the two labs' hosts each way, and the
# IP fragments seen on A's underlay meanwhile (there should be none: taptun
# clamps TCP's MSS so full segments fit one datagram).
measure_bridged() { # round
    r=$1
    tp=$(tunnel_pids bridged)
    # shellcheck disable=SC2086 # tp is a list of PIDs
    t0=$(cpu_ticks $tp)
    ip netns exec "$nsa" timeout $((2 * DURATION + 60)) tcpdump -i u0 -nn -q -l 'ip[6:2] & 0x3fff != 0' >"$work/frags.txt" 2>/dev/null &
    dump=$!
    sleep 1
    if iperf_from "$nsha" 5202 "$work/br-ab.json" -c 10.204.0.2 && iperf_from "$nsha" 5202 "$work/br-ba.json" -c 10.204.0.2 -R; then
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $tp)
        sleep 1
        stop_pid "$dump"
        frags=$(grep -c . "$work/frags.txt" || true)
        ab=$(jq '.end.sum_received.bits_per_second / 1e9' "$work/br-ab.json")
        ba=$(jq '.end.sum_received.bits_per_second / 1e9' "$work/br-ba.json")
        bytes=$(jq -s 'map(.end.sum_received.bytes) | add' "$work/br-ab.json" "$work/br-ba.json")
        rec "$r" bridged tcp_ab "$ab"
        rec "$r" bridged tcp_ba "$ba"
        rec "$r" bridged frags "$frags"
        rec "$r" bridged cpu "$(awk -v t="$((${t1% *} - ${t0% *} + ${t1#* } - ${t0#* }))" -v hz="$clk" -v b="$bytes" 'BEGIN { print t / hz / (b / 1e9) }')"
        say "  bridged: TCP host A->B $(printf %.2f "$ab") Gbit/s, B->A $(printf %.2f "$ba") Gbit/s, IP fragments on the underlay $frags"
        [ "$frags" -eq 0 ] || sed -n '1,3s/^/    fragment: /p' "$work/frags.txt"
    else
        stop_pid "$dump"
        fail "bridged round $r: iperf3 TCP between the labs' hosts"
    fi
}

measure() { # round candidate
    r=$1 c=$2
    b=$(addr_b "$c")
    tp=$(tunnel_pids "$c")
    for p in $tp; do
        alive "$p" || { fail "$c round $r: tunnel process $p has exited"; return 0; }
    done
    # shellcheck disable=SC2086 # tp is a list of PIDs
    t0=$(cpu_ticks $tp)
    rb0=$(rcvbuf_errors)
    ping_under_load "$b" "$work/ping-load.txt"
    if iperf "$work/tcp-ab.json" -c "$b" && { wait "$load_ping" || true; } && iperf "$work/tcp-ba.json" -c "$b" -R; then
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $tp)
        rb1=$(rcvbuf_errors)
        if pl=$(rtt_percentiles "$work/ping-load.txt"); then
            rec "$r" "$c" rtt_load50 "${pl% *}"
            rec "$r" "$c" rtt_load99 "${pl#* }"
            say "  $c: ping RTT under the A->B TCP load: p50 $(printf %.0f "${pl% *}") us, p99 $(printf %.0f "${pl#* }") us"
        else
            fail "$c round $r: fewer than 10 pings answered under the TCP load"
        fi
        ab=$(jq '.end.sum_received.bits_per_second / 1e9' "$work/tcp-ab.json")
        ba=$(jq '.end.sum_received.bits_per_second / 1e9' "$work/tcp-ba.json")
        bytes=$(jq -s 'map(.end.sum_received.bytes) | add' "$work/tcp-ab.json" "$work/tcp-ba.json")
        retr=$(jq -s 'map(.end.sum_sent.retransmits // 0) | add' "$work/tcp-ab.json" "$work/tcp-ba.json")
        per10=$(awk -v d="$DURATION" 'BEGIN { print 10 / d / 2 }') # two runs of DURATION s -> per 10 s run
        rec "$r" "$c" tcp_ab "$ab"
        rec "$r" "$c" tcp_ba "$ba"
        rec "$r" "$c" retr "$(awk -v x="$retr" -v k="$per10" 'BEGIN { print x * k }')"
        rec "$r" "$c" rcvbuf "$(awk -v x="$((rb1 - rb0))" -v k="$per10" 'BEGIN { print x * k }')"
        u=$((${t1% *} - ${t0% *})) k=$((${t1#* } - ${t0#* }))
        if [ -n "$tp" ]; then
            rec "$r" "$c" cpu "$(awk -v t="$((u + k))" -v hz="$clk" -v b="$bytes" 'BEGIN { print t / hz / (b / 1e9) }')"
            [ $((u + k)) -gt 0 ] && rec "$r" "$c" cpu_sys "$(awk -v u="$u" -v k="$k" 'BEGIN { print 100 * k / (u + k) }')"
        fi
        say "  $c: TCP A->B $(printf %.2f "$ab") Gbit/s, B->A $(printf %.2f "$ba") Gbit/s, retransmits $retr, RcvbufErrors $((rb1 - rb0))$([ -n "$tp" ] && printf ', CPU ticks user %s sys %s' "$u" "$k")"
    else
        fail "$c round $r: iperf3 TCP: $(tail -c 300 "$work/tcp-ab.json" "$work/tcp-ba.json" 2>/dev/null | tr '\n' ' ')"
    fi
    dev=$(dev_of "$c")
    # tport, not port: iperf_from (run in between) sets port to iperf3's.
    tport=$(tunnel_port "$c")
    td0=$(dev_tx_dropped "$dev")
    [ -n "$tport" ] && sd0=$(sock_drops "$tport")
    ad0=$(ns_rcvbuf_errors "$nsb")
    if iperf "$work/udp.json" -c "$b" -u -b 0 -l 64; then
        sent=$(jq '.end.sum_sent.packets' "$work/udp.json")
        secs=$(jq '.end.sum_sent.seconds' "$work/udp.json")
        kpps=$(jq '.end.sum_received.bytes / 64 / .end.sum_received.seconds / 1000' "$work/udp.json")
        loss=$(jq '.end.sum_received.lost_percent' "$work/udp.json")
        rec "$r" "$c" udp_sent "$(awk -v p="$sent" -v s="$secs" 'BEGIN { print p / s / 1000 }')"
        rec "$r" "$c" udp_kpps "$kpps"
        rec "$r" "$c" udp_loss "$loss"
        where=""
        sd=0
        if [ -n "$tport" ] && [ "$sent" -gt 0 ]; then
            td=$(($(dev_tx_dropped "$dev") - td0))
            sd=$(($(sock_drops "$tport") - sd0))
            rec "$r" "$c" udp_tapdrop "$(awk -v x="$td" -v p="$sent" 'BEGIN { print 100 * x / p }')"
            rec "$r" "$c" udp_sockdrop "$(awk -v x="$sd" -v p="$sent" 'BEGIN { print 100 * x / p }')"
            where=" (dropped: $td at A's $dev queue, $sd at B's tunnel socket,"
        fi
        # The iperf3 server's socket is gone when the test ends: count B's
        # RcvbufErrors instead, less those of the tunnel's own socket.
        ad=$(($(ns_rcvbuf_errors "$nsb") - ad0 - sd))
        [ "$sent" -gt 0 ] && rec "$r" "$c" udp_appdrop "$(awk -v x="$ad" -v p="$sent" 'BEGIN { print 100 * x / p }')"
        # What reached B's iperf3 socket, read or not: the tunnel's output.
        rsecs=$(jq '.end.sum_received.seconds' "$work/udp.json")
        rec "$r" "$c" udp_handed "$(awk -v k="$kpps" -v x="$ad" -v s="$rsecs" 'BEGIN { print k + x / s / 1000 }')"
        where="${where:- (dropped:} $ad at B's iperf3 socket)"
        say "  $c: UDP 64 B sent $sent, received $(printf %.1f "$kpps") kpps, loss $(printf %.0f "$loss") %$where"
    else
        fail "$c round $r: iperf3 UDP: $(tail -c 300 "$work/udp.json" | tr '\n' ' ')"
    fi
    # The bare underlay right before the candidate, so "added" compares like with like.
    if base=$(ping_median 192.0.2.2) && rtt=$(ping_median "$b"); then
        rec "$r" "$c" rtt "$rtt"
        # The bare veth adds nothing by definition (its two samples differ by noise).
        [ "$c" = bare ] || rec "$r" "$c" rtt_added "$(awk -v a="$rtt" -v b="$base" 'BEGIN { print a - b }')"
        say "  $c: ping RTT median $(printf %.0f "$rtt") us (bare veth just before: $(printf %.0f "$base") us)"
    else
        fail "$c round $r: ping $b got no answer"
    fi
}

# The list rotated left by $1 places.
rotate() {
    n=$1
    shift
    while [ "$n" -gt 0 ]; do
        x=$1
        shift
        set -- "$@" "$x"
        n=$((n - 1))
    done
    echo "$@"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
say "measuring: $ROUNDS rounds x ($cands ), ${DURATION} s per iperf3 run"
ncand=$(echo "$cands" | wc -w)
r=1
while [ "$r" -le "$ROUNDS" ]; do
    # shellcheck disable=SC2086 # cands is a list
    for c in $(rotate $(((r - 1) % ncand)) $cands); do
        say "round $r/$ROUNDS: $c"
        if [ "$c" = bridged ]; then
            measure_bridged "$r"
            continue
        fi
        measure "$r" "$c"
    done
    r=$((r + 1))
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# Peak RSS per process (the larger of the two sides), then stop the tunnels
# so that taptun logs its counters.
for c in $cands; do
    tp=$(tunnel_pids "$c")
    [ -n "$tp" ] || continue
    kb=0
    for p in $tp; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || true
        [ -n "$v" ] || { fail "$c: tunnel process $p has exited before the end"; continue; }
        [ "$v" -gt "$kb" ] && kb=$v
    done
    rec all "$c" rss "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')"
    for p in $tp; do stop_pid "$p"; done
done

# --- the report ---------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
if [ -n "${TAPTUN_BIN:-}" ]; then
    rev="binary $TAPTUN_BIN ($("$bin" --version 2>/dev/null | head -n 1))"
else
    rev=$(git describe --always --dirty 2>/dev/null || echo unknown)
fi
{
    printf '%s\n' "taptun $rev vs references, $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) x $cpu, Linux $(uname -r);"
    printf '%s\n' "veth MTU 1500, tunnels MTU 1418; $ROUNDS interleaved rounds, $DURATION s per iperf3 run; TCP congestion control ${CC:-the host default, $(sysctl -n net.ipv4.tcp_congestion_control)}, ECN $([ "$ECN" = 1 ] && echo 'on both hosts' || echo 'off (answered only)'); load average $load_start at start, $load_end at end."
    printf '\n'
    awk -v cands="$cands" '
        BEGIN {
            label["bare"] = "bare veth"; label["vxlan"] = "vxlan (kernel)"
            label["fastd"] = "fastd (null+salsa2012+umac)"; label["taptun"] = "taptun"
            label["bridged"] = "taptun bridged (hosts MTU 1500)"
            label["base"] = "taptun base (TAPTUN_BASE_BIN)"
            label["fastd-enc"] = "fastd (salsa2012+umac)"
            label["openvpn"] = "OpenVPN 2.6 (p2p TLS, AES-256-GCM, TAP)"
            label["taptun-aes"] = "taptun --cipher aes-256-gcm"
            label["taptun-chacha"] = "taptun --cipher chacha20-poly1305"
            nm = split("tcp_ab tcp_ba retr rcvbuf udp_sent udp_kpps udp_handed udp_loss udp_tapdrop udp_sockdrop udp_appdrop rtt rtt_added rtt_load50 rtt_load99 cpu cpu_sys rss frags", metric, " ")
            name["frags"] = "IP fragments on the underlay during the TCP runs ↓"; fmt["frags"] = "%.0f"
            name["tcp_ab"] = "TCP A→B, Gbit/s ↑"; fmt["tcp_ab"] = "%.2f"
            name["tcp_ba"] = "TCP B→A, Gbit/s ↑"; fmt["tcp_ba"] = "%.2f"
            name["retr"] = "TCP retransmits per 10 s run ↓"; fmt["retr"] = "%.0f"
            name["rcvbuf"] = "UDP RcvbufErrors per 10 s TCP run ↓"; fmt["rcvbuf"] = "%.0f"
            name["udp_sent"] = "UDP 64 B sent by iperf3, kpps"; fmt["udp_sent"] = "%.1f"
            name["udp_tapdrop"] = "UDP 64 B dropped at the tunnel device queue on A, % of sent ↓"; fmt["udp_tapdrop"] = "%.0f"
            name["udp_sockdrop"] = "UDP 64 B dropped at the tunnel socket on B, % of sent ↓"; fmt["udp_sockdrop"] = "%.0f"
            name["udp_handed"] = "UDP 64 B handed to the iperf3 socket on B (received + dropped there), kpps ↑"; fmt["udp_handed"] = "%.1f"
            name["udp_appdrop"] = "UDP 64 B dropped at the iperf3 socket on B, % of sent ↓"; fmt["udp_appdrop"] = "%.0f"
            name["cpu_sys"] = "tunnel CPU spent in the kernel (stime), %"; fmt["cpu_sys"] = "%.0f"
            name["udp_kpps"] = "UDP 64 B received, kpps ↑"; fmt["udp_kpps"] = "%.1f"
            name["udp_loss"] = "UDP 64 B loss, % ↓"; fmt["udp_loss"] = "%.0f"
            name["rtt"] = "ping RTT (median), µs ↓"; fmt["rtt"] = "%.0f"
            name["rtt_added"] = "RTT added over bare veth, µs ↓"; fmt["rtt_added"] = "%.0f"
            name["rtt_load50"] = "ping RTT under the A→B TCP load, p50, µs ↓"; fmt["rtt_load50"] = "%.0f"
            name["rtt_load99"] = "ping RTT under the A→B TCP load, p99, µs ↓"; fmt["rtt_load99"] = "%.0f"
            name["cpu"] = "tunnel CPU s per GB (both ends) ↓"; fmt["cpu"] = "%.1f"
            name["rss"] = "peak RSS per process, MiB ↓"; fmt["rss"] = "%.1f"
            nc = split(cands, cand, " ")
        }
        { k = $2 SUBSEP $3; n[k]++; v[k, n[k]] = $4 + 0 }
        function stats(k,   i, j, x, m) {
            m = n[k]
            for (i = 2; i <= m; i++) { x = v[k, i]; j = i - 1; while (j > 0 && v[k, j] > x) { v[k, j + 1] = v[k, j]; j-- } v[k, j + 1] = x }
            med[k] = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
            lo[k] = v[k, 1]; hi[k] = v[k, m]
        }
        function cell(c, mt,   k, f) {
            k = c SUBSEP mt
            if (c == "bare" && mt == "rtt_added") return "0 (reference)"
            if (!(k in n)) return "–"
            f = fmt[mt]
            if (n[k] == 1) return sprintf(f, med[k])
            return sprintf(f " (" f "–" f ")", med[k], lo[k], hi[k])
        }
        function ratio(ref, mt,   t, r) {
            t = "taptun" SUBSEP mt; r = ref SUBSEP mt
            if (!(t in n) || !(r in n) || med[r] == 0) return "–"
            if (mt == "udp_sent") return "–" # the load offered, not a result
            return sprintf("%.2f×", med[t] / med[r])
        }
        END {
            for (k in n) stats(k)
            line = "| figure |"; sep = "| --- |"
            for (i = 1; i <= nc; i++) { line = line " " label[cand[i]] " |"; sep = sep " --- |" }
            for (i = 1; i <= nc; i++) if (cand[i] != "taptun") { line = line " taptun ÷ " label[cand[i]] " |"; sep = sep " --- |" }
            print line; print sep
            for (m = 1; m <= nm; m++) {
                mt = metric[m]; line = "| " name[mt] " |"
                for (i = 1; i <= nc; i++) line = line " " cell(cand[i], mt) " |"
                for (i = 1; i <= nc; i++) if (cand[i] != "taptun") line = line " " ratio(cand[i], mt) " |"
                print line
            }
            if (("taptun" SUBSEP "tcp_ab") in n && ("bridged" SUBSEP "tcp_ab") in n && med["taptun" SUBSEP "tcp_ab"] > 0 && med["taptun" SUBSEP "tcp_ba"] > 0)
                printf "\nBridged two-labs TCP ÷ routed taptun TCP (same run): A→B %.0f %%, B→A %.0f %%.\n",
                    100 * med["bridged" SUBSEP "tcp_ab"] / med["taptun" SUBSEP "tcp_ab"],
                    100 * med["bridged" SUBSEP "tcp_ba"] / med["taptun" SUBSEP "tcp_ba"]
            # Confidential mode: taptun-aes against the HMAC wire of taptun and
            # against the faster encrypted anchor (by the mean of its two
            # directions median TCP), all from this run.
            if (("taptun-aes" SUBSEP "tcp_ab") in n && ("taptun-aes" SUBSEP "tcp_ba") in n) {
                aa = med["taptun-aes" SUBSEP "tcp_ab"]; ab = med["taptun-aes" SUBSEP "tcp_ba"]
                s = ""
                if (med["taptun" SUBSEP "tcp_ab"] > 0 && med["taptun" SUBSEP "tcp_ba"] > 0)
                    s = sprintf("taptun-aes TCP ÷ taptun (HMAC) TCP: A→B %.2f×, B→A %.2f×", aa / med["taptun" SUBSEP "tcp_ab"], ab / med["taptun" SUBSEP "tcp_ba"])
                best = ""; bv = 0
                split("fastd-enc openvpn", anch, " ")
                for (i = 1; i <= 2; i++) {
                    x = anch[i]
                    if (!((x SUBSEP "tcp_ab") in n) || !((x SUBSEP "tcp_ba") in n)) continue
                    y = (med[x SUBSEP "tcp_ab"] + med[x SUBSEP "tcp_ba"]) / 2
                    if (y > bv) { bv = y; best = x }
                }
                if (best != "" && med[best SUBSEP "tcp_ab"] > 0 && med[best SUBSEP "tcp_ba"] > 0)
                    s = s (s == "" ? "" : "; ") sprintf("taptun-aes TCP ÷ the faster encrypted anchor, %s: A→B %.2f×, B→A %.2f×", label[best], aa / med[best SUBSEP "tcp_ab"], ab / med[best SUBSEP "tcp_ba"])
                if (s != "") printf "\nConfidential mode (same run): %s.\n", s
            }
        }' "$res"
    printf '\n%s\n' "Median of the rounds (min–max). ↑ higher is better, ↓ lower. Ratios are taptun's median ÷ the reference's."
    printf '%s\n' "CPU: utime+stime of both tunnel processes over the two TCP runs ÷ TCP payload moved; kernel tunnels have no process to charge (–)."
    printf '%s\n' "UDP loss is counted by iperf3 end to end; the drop rows say where they were lost: the tunnel's device queue on A and its socket on B (userspace tunnels), and the receiving iperf3's socket on B (its reader could not keep up). \"Handed\" is what the tunnel delivered to B's iperf3 socket, read or not: when it exceeds \"received\", the receiving iperf3, not the tunnel, set the received figure."
} >"$OUT"
cp "$res" "$(dirname "$OUT")/rounds.txt"

for c in taptun taptun-aes taptun-chacha; do
    [ -n "$(tunnel_pids "$c")" ] || continue
    say ""
    say "== $c logs (counters at exit)"
    for f in "$work/$c-a.log" "$work/$c-b.log"; do sed "s|^|$(basename "$f" .log): |" "$f" | tail -n 12; done
done
say ""
say "== report ($OUT, per-round values in $(dirname "$OUT")/rounds.txt; $(($(date +%s) - started)) s of measuring)"
cat "$OUT"
[ "$failures" -eq 0 ] || die "$failures measurement(s) failed to run (see above)"
