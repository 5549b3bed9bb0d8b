#!/bin/sh
# Benchmark: taptun against the bare veth, the kernel's vxlan and fastd, in
# one run, in the same two network namespaces (joined by a veth, MTU 1500).
#
# For each candidate and each round: iperf3 TCP (one stream, each
# direction), iperf3 UDP with 64-byte payloads at unlimited rate (received
# packets/s), ping RTT (median, and the part added over the bare veth
# measured right before), and for the userspace tunnels their CPU seconds
# per GB of TCP payload (both processes, from /proc/PID/stat) and their peak
# RSS (VmHWM). Rounds are interleaved (each round visits every candidate, in
# a rotated order) so that a noisy neighbour hurts all candidates alike;
# each figure is the median over the rounds, with min-max.
#
# Usage (root; traffic stays inside the namespaces it creates):
#   sudo sh dev/bench.sh
# Knobs (environment):
#   ROUNDS=3        rounds (>= 3 for a median worth the name)
#   DURATION=5      seconds per iperf3 run (not SECONDS: bash's clock)
#   PINGS=40        pings per RTT sample (20 ms apart)
#   CANDIDATES="bare vxlan fastd taptun bridged"   a subset, for quick looks
#     (bridged: TCP between two MTU-1500 hosts on LANs bridged to taptun's
#     TAPs with scripts/l2_bridge_up.sh, the two-labs topology; with a count
#     of IP fragments on the underlay during it)
#   TAPTUN_BIN=...  use this binary instead of building target/release/taptun
#   TAPTUN_ARGS=... extra taptun arguments (e.g. "--sockbuf 212992")
#   TAPTUN_BASE_BIN=... another taptun binary (an older build) measured in the
#                   same run as candidate "base", so a change is compared
#                   with what it changes, interleaved (add base to CANDIDATES)
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

die() { echo "bench: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

for v in ROUNDS DURATION PINGS; do
    eval "x=\$$v"
    case $x in '' | *[!0-9]*) die "$v must be a positive integer, not '$x'" ;; esac
    [ "$x" -ge 1 ] || die "$v must be at least 1"
done
[ "$DURATION" -le 120 ] || die "DURATION is capped at 120 s"
[ "$ROUNDS" -le 20 ] || die "ROUNDS is capped at 20"
[ "$PINGS" -le 1000 ] || die "PINGS is capped at 1000"
for c in $CANDIDATES; do
    case $c in bare | vxlan | fastd | taptun | bridged | base) ;; *) die "unknown candidate '$c' (bare vxlan fastd taptun bridged base)" ;; esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, TAP): sudo sh dev/bench.sh"
[ -c /dev/net/tun ] || die "/dev/net/tun is missing (modprobe tun)"

sh dev/deps.sh
for tool in ip iperf3 fastd ping jq timeout awk ss tcpdump; do
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
pids=""        # every process we started, killed by PID on exit
taptun_pids="" # the two taptun processes
fastd_pids=""  # the two fastd processes
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
    esac
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

setup_taptun() {
    (umask 077 && head -c 32 /dev/urandom | base64 >"$work/taptun.key") || return 1
    # Both sides know their peer: the fixed-peer setup a connected socket suits.
    # shellcheck disable=SC2086 # TAPTUN_ARGS is a list of arguments
    spawn "$nsa" "$work/taptun-a.log" "$bin" "$work/taptun.key" :9123 192.0.2.2:9123 \
        -i tt0 --mtu 1418 -a 10.202.0.1/24 $TAPTUN_ARGS
    taptun_pids="$last_pid"
    # shellcheck disable=SC2086
    spawn "$nsb" "$work/taptun-b.log" "$bin" "$work/taptun.key" :9123 192.0.2.1:9123 \
        -i tt0 --mtu 1418 -a 10.202.0.2/24 $TAPTUN_ARGS
    taptun_pids="$taptun_pids $last_pid"
    wait_link "$nsa" tt0 && wait_link "$nsb" tt0
}

# The same as setup_taptun with TAPTUN_BASE_BIN, its own port and TAP.
setup_base() {
    [ -f "$work/taptun.key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$work/taptun.key") || return 1
    # shellcheck disable=SC2086 # TAPTUN_ARGS is a list of arguments
    spawn "$nsa" "$work/base-a.log" "$work/taptun-base" "$work/taptun.key" :9125 192.0.2.2:9125 \
        -i tt1 --mtu 1418 -a 10.205.0.1/24 $TAPTUN_ARGS
    base_pids="$last_pid"
    # shellcheck disable=SC2086
    spawn "$nsb" "$work/base-b.log" "$work/taptun-base" "$work/taptun.key" :9125 192.0.2.1:9125 \
        -i tt1 --mtu 1418 -a 10.205.0.2/24 $TAPTUN_ARGS
    base_pids="$base_pids $last_pid"
    wait_link "$nsa" tt1 && wait_link "$nsb" tt1
}

setup_fastd() {
    for side in a b; do
        fastd --generate-key 2>/dev/null >"$work/fastd-$side.keys" || return 1
    done
    for side in a b; do
        # Only A initiates: when both sides handshake at once, fastd v22 can
        # end up with sessions that fail every packet's verification.
        if [ "$side" = a ]; then
            me=1 other=b remote="remote 192.0.2.2:10000;"
        else
            me=2 other=a remote=""
        fi
        secret=$(sed -n 's/^Secret: //p' "$work/fastd-$side.keys")
        public=$(sed -n 's/^Public: //p' "$work/fastd-$other.keys")
        [ -n "$secret" ] && [ -n "$public" ] || return 1
        cat >"$work/fastd-$side.conf" <<EOF
log level info;
mode tap;
interface "fd0";
mtu 1418;
method "null+salsa2012+umac";
bind 192.0.2.$me:10000;
secret "$secret";
peer "$other" {
    key "$public";
    $remote
}
EOF
    done
    # B listens first: a handshake from A that finds no socket is retried
    # only after about 20 s.
    spawn "$nsb" "$work/fastd-b.log" fastd -c "$work/fastd-b.conf"
    fastd_pids="$last_pid"
    wait_udp "$nsb" 10000 || return 1
    spawn "$nsa" "$work/fastd-a.log" fastd -c "$work/fastd-a.conf"
    fastd_pids="$fastd_pids $last_pid"
    wait_link "$nsa" fd0 && wait_link "$nsb" fd0 &&
        ip -n "$nsa" addr add 10.203.0.1/24 dev fd0 &&
        ip -n "$nsb" addr add 10.203.0.2/24 dev fd0 &&
        ip -n "$nsa" link set fd0 up &&
        ip -n "$nsb" link set fd0 up
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
        # shellcheck disable=SC2086 # TAPTUN_ARGS is a list of arguments
        spawn "$gw" "$work/bridged-$side.log" "$bin" "$work/taptun.key" :9124 "192.0.2.$other:9124" \
            -i tl0 --status-socket "$work/bridged-$side.sock" $TAPTUN_ARGS
        taptun_pids_bridged="${taptun_pids_bridged:-} $last_pid"
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
    case $1 in bare) echo u0 ;; vxlan) echo vx0 ;; taptun) echo tt0 ;; fastd) echo fd0 ;; bridged) echo tl0 ;; base) echo tt1 ;; esac
}

cands=""
for c in bare vxlan fastd base taptun bridged; do # report order, whatever order CANDIDATES has
    case " $CANDIDATES " in *" $c "*) ;; *) continue ;; esac
    case $c in
    bare) ok=true ;;
    vxlan) if setup_vxlan; then ok=true; else ok=false; fi ;;
    taptun) if setup_taptun; then ok=true; else ok=false; fi ;;
    base) if setup_base; then ok=true; else ok=false; fi ;;
    bridged) if { [ -f "$work/taptun.key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$work/taptun.key"); } && setup_bridged; then ok=true; else ok=false; fi ;;
    fastd) if setup_fastd; then ok=true; else ok=false; fi ;;
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
    case $1 in taptun) echo 9123 ;; fastd) echo 10000 ;; base) echo 9125 ;; esac
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
            -p "$port" -t "$DURATION" "$@" >"$out" 2>&1 &
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

tunnel_pids() {
    case $1 in taptun) echo "$taptun_pids" ;; fastd) echo "$fastd_pids" ;; bridged) echo "${taptun_pids_bridged:-}" ;; base) echo "${base_pids:-}" ;; *) echo "" ;; esac
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
    if iperf "$work/tcp-ab.json" -c "$b" && iperf "$work/tcp-ba.json" -c "$b" -R; then
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $tp)
        rb1=$(rcvbuf_errors)
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
    printf '%s\n' "veth MTU 1500, tunnels MTU 1418; $ROUNDS interleaved rounds, $DURATION s per iperf3 run; load average $load_start at start, $load_end at end."
    printf '\n'
    awk -v cands="$cands" '
        BEGIN {
            label["bare"] = "bare veth"; label["vxlan"] = "vxlan (kernel)"
            label["fastd"] = "fastd (null+salsa2012+umac)"; label["taptun"] = "taptun"
            label["bridged"] = "taptun bridged (hosts MTU 1500)"
            label["base"] = "taptun base (TAPTUN_BASE_BIN)"
            nm = split("tcp_ab tcp_ba retr rcvbuf udp_sent udp_kpps udp_handed udp_loss udp_tapdrop udp_sockdrop udp_appdrop rtt rtt_added cpu cpu_sys rss frags", metric, " ")
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
        }' "$res"
    printf '\n%s\n' "Median of the rounds (min–max). ↑ higher is better, ↓ lower. Ratios are taptun's median ÷ the reference's."
    printf '%s\n' "CPU: utime+stime of both tunnel processes over the two TCP runs ÷ TCP payload moved; kernel tunnels have no process to charge (–)."
    printf '%s\n' "UDP loss is counted by iperf3 end to end; the drop rows say where they were lost: the tunnel's device queue on A and its socket on B (userspace tunnels), and the receiving iperf3's socket on B (its reader could not keep up). \"Handed\" is what the tunnel delivered to B's iperf3 socket, read or not: when it exceeds \"received\", the receiving iperf3, not the tunnel, set the received figure."
} >"$OUT"
cp "$res" "$(dirname "$OUT")/rounds.txt"

if [ -n "$taptun_pids" ]; then
    say ""
    say "== taptun logs (counters at exit)"
    for f in "$work"/taptun-a.log "$work"/taptun-b.log; do sed "s|^|$(basename "$f" .log): |" "$f" | tail -n 12; done
fi
say ""
say "== report ($OUT, per-round values in $(dirname "$OUT")/rounds.txt; $(($(date +%s) - started)) s of measuring)"
cat "$OUT"
[ "$failures" -eq 0 ] || die "$failures measurement(s) failed to run (see above)"
