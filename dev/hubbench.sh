#!/bin/sh
# The hub's scale benchmark (issue #20): prints figures, judges nothing but
# whether it could measure them.
#
#   scale    `taptun hub` on SPOKES simulated spokes (dev/spokes.py, one
#            process, the real HMAC wire) joined to bridge br0 with a LAN
#            host: each spoke sends keepalives and one ping a second to the
#            LAN host. Printed: spokes reachable from the spokes' side (echo
#            replies) and from the LAN host (a ping sweep of every spoke's
#            address), the hub's CPU (% of one core, /proc/PID/stat over
#            IDLE seconds; again with the spokes silent) and RSS (VmRSS,
#            VmHWM), the spokes' ping loss and RTT over the same window.
#   restart  SIGTERM to the hub, the same command again (same --state file):
#            the time from its start until the LAN host's sweep has an
#            answer from every spoke; once with the spokes active, once with
#            them silent (paused: no pings, no keepalives), where only the
#            addresses in the state file can reach them.
#   tcp      iperf3 from a real taptun spoke (its own namespace) through the
#            hub to the LAN host, against a point-to-point taptun between the
#            same namespaces whose TAP is on the same bridge; both
#            directions; and two real spokes sending at once (each one's
#            share). ROUNDS interleaved rounds, medians with min-max.
#
# Topology (namespaces, all made here and deleted at exit):
#   L (LAN host 10.77.0.1/16) --veth-- H [br0: lan0, tt-*, ttp2p] (taptun hub :9123)
#   S  192.0.2.2    --veth-- H 192.0.2.1      the simulated spokes
#   S1 198.51.100.2 --veth-- H 198.51.100.1   real spoke 1 (10.77.201.1/16)
#   S2 203.0.113.2  --veth-- H 203.0.113.1    real spoke 2 (10.77.202.1/16)
#
# Usage (root; traffic stays inside the namespaces it creates):
#   sudo sh dev/hubbench.sh
# Knobs (environment):
#   SPOKES=200     simulated spokes
#   IDLE=20        seconds of the CPU window
#   ROUNDS=3       TCP rounds (hub, point-to-point, two spokes; rotated)
#   DURATION=5     seconds per iperf3 run
#   KEEPALIVE=10   the simulated spokes' keepalive period, seconds
#   PARTS="scale tcp"              a part alone for a quick look
#   TCP_CANDIDATES="hub p2p pair"  a subset for a quick look
#   TAPTUN_BIN=... the binary (default: build target/release/taptun)
#   HUB_ARGS=...   extra arguments for `taptun hub` (e.g. "--cipher ..." is
#                  not possible: the simulated spokes speak the HMAC wire)
#   OUT=target/hubbench/report.md
#   KEEP=1         keep the work directory (logs, JSON) for a look after
# About 3-4 minutes with the defaults.
set -eu
cd "$(dirname "$0")/.."

SPOKES=${SPOKES:-200}
IDLE=${IDLE:-20}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
KEEPALIVE=${KEEPALIVE:-10}
HUB_ARGS=${HUB_ARGS:-}
PARTS=${PARTS:-scale tcp}
TCP_CANDIDATES=${TCP_CANDIDATES:-hub p2p pair}
OUT=${OUT:-target/hubbench/report.md}

die() { echo "hubbench: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

for v in SPOKES IDLE ROUNDS DURATION KEEPALIVE; do
    eval "x=\$$v"
    case $x in '' | *[!0-9]*) die "$v must be a positive integer, not '$x'" ;; esac
    [ "$x" -ge 1 ] || die "$v must be at least 1"
done
[ "$SPOKES" -le 2000 ] || die "SPOKES is capped at 2000"
[ "$IDLE" -le 300 ] || die "IDLE is capped at 300 s"
[ "$ROUNDS" -le 20 ] || die "ROUNDS is capped at 20"
[ "$DURATION" -le 60 ] || die "DURATION is capped at 60 s"
for p in $PARTS; do
    case $p in scale | tcp) ;; *) die "unknown part '$p' (scale tcp)" ;; esac
done
for c in $TCP_CANDIDATES; do
    case $c in hub | p2p | pair) ;; *) die "unknown TCP candidate '$c' (hub p2p pair)" ;; esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, TAP): sudo sh dev/hubbench.sh"
[ -c /dev/net/tun ] || die "/dev/net/tun is missing (modprobe tun)"
for tool in ip iperf3 python3 jq awk ping timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (sh dev/deps.sh)"
done

if [ -n "${TAPTUN_BIN:-}" ]; then
    bin=$TAPTUN_BIN
else
    bin=$PWD/target/release/taptun
    if [ ! -x "$bin" ]; then
        command -v cargo >/dev/null 2>&1 || die "cargo not found (build as your user, then pass TAPTUN_BIN=target/release/taptun)"
        say "building taptun (release)"
        cargo build --release --quiet || die "cargo build --release failed"
    fi
fi
[ -x "$bin" ] || die "no taptun binary at $bin"
# (An older taptun takes "hub" for a key file and prints its own usage.)
"$bin" hub --help 2>&1 | grep -q '^Usage: taptun hub' || die "$bin has no 'taptun hub' (issue #20): build a revision that has it"

id=$$
nsh="tthb-h-$id"
nsl="tthb-l-$id"
nss="tthb-s-$id"
ns1="tthb-1-$id"
ns2="tthb-2-$id"
work=""
pids="" # every long-lived process we started, killed by PID on exit
clk=$(getconf CLK_TCK)
hub="" load="" p2p="" sp1="" sp2=""

alive() {
    s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [ -n "$s" ] && [ "$s" != Z ]
}

# SIGTERM, up to $2 tenths of a second (default 30) to exit, then SIGKILL; reaps it.
stop_pid() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || return 0
    i=0
    while alive "$1" && [ "$i" -lt "${2:-30}" ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    for p in $pids; do stop_pid "$p"; done
    for ns in "$nsh" "$nsl" "$nss" "$ns1" "$ns2"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ -n "$work" ]; then
        if [ -n "${KEEP:-}" ]; then say "work directory kept: $work"; else rm -rf "$work"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d)
cp "$bin" "$work/taptun" # a rebuild of target/ during the run changes nothing
bin=$work/taptun
res=$work/results
: >"$res"
rec() { printf '%s %s\n' "$1" "$2" >>"$res"; } # metric value

# Runs in a namespace in the background; $! is the program itself.
spawn() { # ns log program args...
    ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    last_pid=$!
    pids="$pids $last_pid"
}

forget() { # drops a PID from the exit list once stopped
    n=""
    for p in $pids; do [ "$p" = "$1" ] || n="$n $p"; done
    pids=$n
}

wait_link() { # ns dev [tenths of a second, default 100]
    i=0
    until ip -n "$1" link show dev "$2" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt "${3:-100}" ] && return 1
        sleep 0.1
    done
    return 0
}

wait_ping() { # ns address: about 20 s at most
    i=0
    until ip netns exec "$1" ping -n -c 1 -W 1 "$2" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 20 ] && return 1
    done
    return 0
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# --- namespaces and links ----------------------------------------------------
for ns in "$nsh" "$nsl" "$nss" "$ns1" "$ns2"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
veth() { # ns-a name-a addr-a ns-b name-b addr-b
    ip link add "hbA$id" netns "$1" type veth peer name "hbB$id" netns "$4"
    ip -n "$1" link set "hbA$id" name "$2"
    ip -n "$4" link set "hbB$id" name "$5"
    [ -z "$3" ] || ip -n "$1" addr add "$3" dev "$2"
    [ -z "$6" ] || ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}
veth "$nsh" u0 192.0.2.1/24 "$nss" u0 192.0.2.2/24
veth "$nsh" u1 198.51.100.1/24 "$ns1" u0 198.51.100.2/24
veth "$nsh" u2 203.0.113.1/24 "$ns2" u0 203.0.113.2/24
veth "$nsh" lan0 "" "$nsl" eth0 10.77.0.1/16
ip -n "$nsh" link add br0 type bridge stp_state 0
ip -n "$nsh" link set lan0 master br0
ip -n "$nsh" link set br0 up

# --- keys: the simulated spokes', two real spokes', the point-to-point one ---
keys=$work/keys
python3 dev/spokes.py genkeys "$keys" "$SPOKES" >/dev/null
for k in r1 r2; do (umask 077 && head -c 32 /dev/urandom | base64 >"$keys/$k.key"); done
(umask 077 && head -c 32 /dev/urandom | base64 >"$work/p2p.key")

start_hub() {
    # shellcheck disable=SC2086 # HUB_ARGS is a list of arguments
    spawn "$nsh" "$work/hub-$1.log" "$bin" hub "$keys" :9123 --bridge br0 \
        --state "$work/hub.state" --status-socket "$work/hub.sock" $HUB_ARGS
    hub=$last_pid
}

# --- scale ---------------------------------------------------------------------
load_start=$(uptime)
scale_part() {
    say "== scale: taptun hub with $SPOKES simulated spokes + 2 real ones ($(basename "$bin") $("$bin" --version 2>/dev/null | head -n 1))"
    t0=$(now)
    start_hub 1
    last=$(python3 -c "import sys; sys.path.insert(0, 'dev'); import spokes; print(spokes.key_names($SPOKES)[-1])")
    wait_link "$nsh" "tt-$last" 300 || die "the hub made no TAP tt-$last within 30 s: $(tail -n 5 "$work/hub-1.log")"
    say "  the hub's $((SPOKES + 2)) TAPs exist after $(elapsed "$t0" "$(now)") s"
    # The simulated spokes run for the whole scale and restart part.
    total=$((IDLE + 90))
    spawn "$nss" "$work/spokes.log" python3 dev/spokes.py run "$keys" 192.0.2.1:9123 --count "$SPOKES" \
        --seconds "$total" --keepalive "$KEEPALIVE" --bind 192.0.2.2 --json "$work/spokes.json"
    load=$last_pid

    # reachable COUNT within SECONDS, from the spokes' own per-second lines.
    spokes_reachable() {
        grep -o 'reachable [0-9]*/' "$work/spokes.log" 2>/dev/null | tail -n 1 | tr -dc 0-9
    }
    wait_spokes() { # seconds
        i=0
        while [ "$(spokes_reachable)" != "$SPOKES" ]; do
            i=$((i + 1))
            [ "$i" -gt "$(($1 * 10))" ] && return 1
            alive "$load" || return 1
            sleep 0.1
        done
        return 0
    }
    t1=$(now)
    if wait_spokes 30; then
        s=$(elapsed "$t1" "$(now)")
        say "  spokes' side: all $SPOKES have echo replies from the LAN host ($s s after they started)"
        rec spokes_side "$SPOKES/$SPOKES"
        rec cold "$s"
    else
        say "  spokes' side: only $(spokes_reachable)/$SPOKES have echo replies after 30 s"
        rec spokes_side "$(spokes_reachable)/$SPOKES"
    fi
    sweep() { # name timeout: the LAN host pings every spoke until each answered
        ip netns exec "$nsl" python3 dev/spokes.py sweep 10.77.1.1 "$SPOKES" --timeout "$2" \
            --json "$work/sweep-$1.json" >"$work/sweep-$1.log" 2>&1
    }
    sweep first 10 || true
    answered=$(jq .answered "$work/sweep-first.json")
    say "  LAN side: $(cat "$work/sweep-first.log")"
    rec lan_side "$answered/$SPOKES"

    # The window (CPU, the spokes' loss and RTT): the hub serves keepalives
    # and a ping a second per spoke.
    c0=$(cpu_ticks "$hub")
    w0=$(now)
    l0=$(wc -l <"$work/spokes.log")
    sleep "$IDLE"
    c1=$(cpu_ticks "$hub")
    w1=$(now)
    l1=$(wc -l <"$work/spokes.log")
    # The spokes' own per-second lines of the window: pings, replies, the
    # fewest spokes reachable, the median of the p50s and the largest p99.
    sed -n "$((l0 + 1)),${l1}p" "$work/spokes.log" | awk '
        /^t=/ {
            for (i = 1; i < NF; i++) {
                if ($i == "pings") p += $(i + 1)
                if ($i == "replies") r += $(i + 1)
                if ($i == "reachable") { split($(i + 1), a, "/"); if (min == "" || a[1] + 0 < min) min = a[1] + 0 }
                if ($i == "p50" && $(i + 1) != "-") m[++n] = $(i + 1) + 0
                if ($i == "p99" && $(i + 1) != "-" && $(i + 1) + 0 > mx) mx = $(i + 1) + 0
            }
        }
        END {
            for (i = 2; i <= n; i++) { x = m[i]; j = i - 1; while (j > 0 && m[j] > x) { m[j + 1] = m[j]; j-- } m[j + 1] = x }
            printf "%s %s %s %.3f %.3f\n", p, r, min, n ? m[int((n + 1) / 2)] : 0, mx
        }' >"$work/window.txt"
    read -r wp wr wmin w50 w99 <"$work/window.txt" || true
    if [ "${wp:-0}" -gt 0 ]; then
        wloss=$(awk -v p="$wp" -v r="$wr" 'BEGIN { printf "%.2f", 100 * (p - r) / p }')
        say "  spokes over the window: $wp pings, $wr replies (loss $wloss %), at least $wmin/$SPOKES reachable each second; RTT p50 $w50 ms (median of the seconds), p99 up to $w99 ms"
        rec wloss "$wloss"
        rec wmin "$wmin/$SPOKES"
        rec w50 "$w50"
        rec w99 "$w99"
    fi
    cpu=$(awk -v t="$((c1 - c0))" -v hz="$clk" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
    rss=$(awk -v k="$(status_kb "$hub" VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')
    hwm=$(awk -v k="$(status_kb "$hub" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    threads=$(status_kb "$hub" Threads)
    say "  hub CPU over $IDLE s: $cpu % of one core; RSS $rss MiB (peak $hwm MiB); $threads threads"
    rec cpu "$cpu"
    rec rss "$rss"
    rec hwm "$hwm"
    if "$bin" status "$work/hub.sock" --json >"$work/status.json" 2>"$work/status.err"; then
        listed=$(jq '.spokes | length' "$work/status.json")
        say "  taptun status --json: $listed spokes listed"
    else
        say "  taptun status --json failed: $(head -c 300 "$work/status.err")"
    fi
    [ -s "$work/hub.state" ] && say "  state file: $(wc -l <"$work/hub.state") lines, $(wc -c <"$work/hub.state") bytes"

    # restart NAME: SIGTERM, the same command again; seconds until the LAN
    # host's sweep has an answer from every spoke, counted from the start.
    restart() {
        r0=$(now)
        stop_pid "$hub" 100
        forget "$hub"
        r1=$(now)
        start_hub "$1"
        r2=$(now)
        if sweep "$1" 15; then
            took=$(jq -r --arg r2 "$r2" '.start_epoch + .all_after_s - ($r2 | tonumber) | . * 100 | round / 100' "$work/sweep-$1.json")
            from_term=$(awk -v t="$took" -v a="$r0" -v b="$r2" 'BEGIN { printf "%.2f", t + b - a }')
            say "  restart ($1): the old hub stopped in $(elapsed "$r0" "$r1") s; all $SPOKES reachable from the LAN host $took s after the new one started ($from_term s after SIGTERM)"
            rec "restart_$1" "$took"
            rec "restart_term_$1" "$from_term"
            rec "stop_$1" "$(elapsed "$r0" "$r1")"
        else
            say "  restart ($1): $(cat "$work/sweep-$1.log")"
            rec "restart_$1" "FAILED($(jq .answered "$work/sweep-$1.json")/$SPOKES)"
        fi
    }
    restart active
    # Silent spokes: only the state file tells the new hub where they are.
    wait_spokes 15 || say "  (the spokes' side did not see all $SPOKES again before the silent restart)"
    kill -USR1 "$load" 2>/dev/null || say "  the load tool has exited: $(tail -n 3 "$work/spokes.log")"
    sleep 1
    # The hub's own cost with every spoke silent: its timers, its keepalives.
    c0=$(cpu_ticks "$hub")
    w0=$(now)
    sleep "$IDLE"
    c1=$(cpu_ticks "$hub")
    w1=$(now)
    quiet=$(awk -v t="$((c1 - c0))" -v hz="$clk" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
    say "  hub CPU over $IDLE s with the spokes silent: $quiet % of one core"
    rec quiet "$quiet"
    restart silent
    kill -USR2 "$load" 2>/dev/null || true
    t2=$(now)
    if wait_spokes 15; then
        say "  spokes' side: all $SPOKES have echo replies again $(elapsed "$t2" "$(now)") s after they resumed"
    else
        say "  spokes' side: $(spokes_reachable)/$SPOKES have echo replies 15 s after they resumed"
    fi
    stop_pid "$load"
    forget "$load"
    tail -n 2 "$work/spokes.log" | sed 's/^/  load tool: /'
    loss=$(jq .loss_pct "$work/spokes.json")
    rec loss "$loss"
    
}

hub_hwm="–"
case " $PARTS " in *" scale "*) scale_part ;; esac

# --- TCP -------------------------------------------------------------------------
case " $PARTS " in *" tcp "*) ;; *) TCP_CANDIDATES="" ;; esac
[ -z "$TCP_CANDIDATES" ] || say "== TCP: $ROUNDS rounds of ($TCP_CANDIDATES), rotated; $DURATION s per iperf3 run"
spawn "$nsl" "$work/iperf-a.log" iperf3 -s -p 5201
spawn "$nsl" "$work/iperf-b.log" iperf3 -s -p 5202
# The point-to-point reference: its TAP on the same bridge, as
# scripts/l2_bridge_up.sh puts it (MTU raised to the LAN's).
# shellcheck disable=SC2016 # $TAPTUN_DEV is the hook's, expanded by its sh
spawn "$nsh" "$work/p2p-h.log" "$bin" "$work/p2p.key" :9124 198.51.100.2:9124 -i ttp2p \
    --status-socket "$work/p2p-h.sock" --up 'ip link set dev "$TAPTUN_DEV" mtu 1500 master br0'
p2p=$last_pid
wait_link "$nsh" ttp2p || die "the point-to-point taptun made no TAP"

# A real spoke in namespace $1: start_spoke NS KEY LOCALPORT HUB:PORT ADDR
start_spoke() {
    spawn "$1" "$work/spoke-$1-$3.log" "$bin" "$2" ":$3" "$4" -i tt0 -a "$5" \
        --status-socket "$work/spoke-$1.sock"
    last_spoke=$last_pid
    wait_link "$1" tt0 && wait_ping "$1" 10.77.0.1 && return 0
    stop_spoke "$last_spoke"
    return 1
}
stop_spoke() { stop_pid "$1"; forget "$1"; }

iperf() { # ns out args...: the client, bounded
    ns=$1 out=$2
    shift 2
    timeout $((DURATION + 20)) ip netns exec "$ns" iperf3 -J -t "$DURATION" -c 10.77.0.1 "$@" >"$out" 2>&1
}
gbps() { jq '.end.sum_received.bits_per_second / 1e9' "$1"; }

tcp_round() { # round candidate
    case $2 in
    hub | p2p)
        if [ "$2" = hub ]; then
            start_spoke "$ns1" "$keys/r1.key" 9123 198.51.100.1:9123 10.77.201.1/16 || { say "  $2: spoke 1 cannot reach the LAN host"; return 0; }
        else
            start_spoke "$ns1" "$work/p2p.key" 9124 198.51.100.1:9124 10.77.201.1/16 || { say "  $2: spoke 1 cannot reach the LAN host"; return 0; }
        fi
        sp1=$last_spoke
        # The hub's side: the hub, or the point-to-point taptun on the bridge.
        hp=$hub
        [ "$2" = hub ] || hp=$p2p
        k0=$(cpu_ticks "$hp")
        if iperf "$ns1" "$work/up.json" -p 5201 && iperf "$ns1" "$work/down.json" -p 5201 -R; then
            k1=$(cpu_ticks "$hp")
            up=$(gbps "$work/up.json") down=$(gbps "$work/down.json")
            rec "${2}_up" "$up"
            rec "${2}_down" "$down"
            gb=$(jq -s 'map(.end.sum_received.bytes) | add / 1e9' "$work/up.json" "$work/down.json")
            rec "${2}_cpu" "$(awk -v t="$((k1 - k0))" -v hz="$clk" -v g="$gb" 'BEGIN { print t / hz / g }')"
            say "  round $1 $2: spoke->LAN $(printf %.2f "$up") Gbit/s, LAN->spoke $(printf %.2f "$down") Gbit/s, hub side $((k1 - k0)) CPU ticks"
        else
            say "  round $1 $2: iperf3 failed: $(tail -c 200 "$work/up.json" "$work/down.json" | tr '\n' ' ')"
        fi
        stop_spoke "$sp1"
        ;;
    pair)
        start_spoke "$ns1" "$keys/r1.key" 9123 198.51.100.1:9123 10.77.201.1/16 || { say "  pair: spoke 1 cannot reach the LAN host"; return 0; }
        sp1=$last_spoke
        start_spoke "$ns2" "$keys/r2.key" 9123 203.0.113.1:9123 10.77.202.1/16 || { say "  pair: spoke 2 cannot reach the LAN host"; stop_spoke "$sp1"; return 0; }
        sp2=$last_spoke
        iperf "$ns1" "$work/pair1.json" -p 5201 &
        c1=$!
        iperf "$ns2" "$work/pair2.json" -p 5202 &
        c2=$!
        ok=1
        wait "$c1" || ok=0
        wait "$c2" || ok=0
        if [ "$ok" = 1 ]; then
            a=$(gbps "$work/pair1.json") b=$(gbps "$work/pair2.json")
            s1=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", 100 * a / (a + b) }')
            rec pair_sum "$(awk -v a="$a" -v b="$b" 'BEGIN { print a + b }')"
            rec pair_min "$(awk -v a="$a" -v b="$b" 'BEGIN { x = a < b ? a : b; printf "%.1f", 100 * x / (a + b) }')"
            say "  round $1 pair: spoke 1 $(printf %.2f "$a") Gbit/s, spoke 2 $(printf %.2f "$b") Gbit/s: shares $s1 % / $(awk -v s="$s1" 'BEGIN { printf "%.1f", 100 - s }') %"
        else
            say "  round $1 pair: iperf3 failed: $(tail -c 200 "$work/pair1.json" "$work/pair2.json" | tr '\n' ' ')"
        fi
        stop_spoke "$sp1"
        stop_spoke "$sp2"
        ;;
    esac
}

if [ -z "$hub" ]; then
    case " $TCP_CANDIDATES " in
    *" hub "* | *" pair "*)
        start_hub 1
        wait_link "$nsh" tt-r2 300 || die "the hub made no TAP tt-r2 within 30 s: $(tail -n 5 "$work/hub-1.log")"
        ;;
    esac
fi
# shellcheck disable=SC2086 # a list
set -- $TCP_CANDIDATES
r=1
while [ "$r" -le "$ROUNDS" ] && [ $# -gt 0 ]; do
    for c in "$@"; do tcp_round "$r" "$c"; done
    x=$1
    shift
    set -- "$@" "$x"
    r=$((r + 1))
done
# The reference for the hub's CPU under the spokes' pings: the
# point-to-point taptun carrying as many pings a second from one spoke.
case " $PARTS " in
*" scale "*)
    if start_spoke "$ns1" "$work/p2p.key" 9124 198.51.100.1:9124 10.77.201.1/16; then
        sp1=$last_spoke
        iv=$(awk -v n="$SPOKES" 'BEGIN { printf "%.4f", 1 / n }')
        k0=$(cpu_ticks "$p2p")
        w0=$(now)
        timeout 60 ip netns exec "$ns1" ping -q -i "$iv" -c $((SPOKES * 10)) 10.77.0.1 >"$work/ping-ref.txt" 2>&1 || true
        k1=$(cpu_ticks "$p2p")
        w1=$(now)
        ref=$(awk -v t="$((k1 - k0))" -v hz="$clk" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
        say "  reference: the point-to-point taptun carrying $SPOKES pings a second from one spoke: $ref % of one core ($(grep -o '[0-9.]*% packet loss' "$work/ping-ref.txt"))"
        rec ref "$ref"
        stop_spoke "$sp1"
    fi
    ;;
esac
if [ -n "$hub" ]; then
    hub_hwm=$(awk -v k="$(status_kb "$hub" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    stop_pid "$hub" 100
    forget "$hub"
fi
stop_pid "$p2p"
forget "$p2p"
load_end=$(uptime)

# --- report --------------------------------------------------------------------
med() { # metric: median (min-max) of its numeric values, or its only value
    awk -v m="$1" -v f="${2:-%.2f}" '
        $1 == m { n++; v[n] = $2 }
        END {
            if (n == 0) { print "–"; exit }
            if (v[1] !~ /^[0-9.]+$/) { print v[1]; exit }
            for (i = 2; i <= n; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] + 0 > x + 0) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
            md = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            if (n == 1) printf f "\n", md; else printf f " (" f "–" f ")\n", md, v[1], v[n]
        }' "$res"
}
medv() { med "$1" | cut -d' ' -f1; }
ratio() { awk -v a="$(medv "$1")" -v b="$(medv "$2")" 'BEGIN { if (b + 0 > 0 && a ~ /^[0-9.]+$/) printf "%.2f×", a / b; else print "–" }'; }
mkdir -p "$(dirname "$OUT")"
{
    say "taptun hub scale benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
    say "binary: $("$bin" --version 2>/dev/null | head -n 1); $SPOKES simulated spokes (dev/spokes.py, keepalive every $KEEPALIVE s, a ping a second each) + 2 real taptun spokes"
    say "load at start: $load_start"
    say "load at end:   $load_end"
    say ""
    say "| figure | measured | target |"
    say "| --- | --- | --- |"
    say "| spokes with echo replies from the LAN host (spokes' side) | $(medv spokes_side) | all |"
    say "| spokes answering the LAN host's ping sweep | $(medv lan_side) | all |"
    say "| first start, no state: all spokes have echo replies after, s (each learned by trial of the keys) | $(medv cold) | – |"
    say "| hub CPU with keepalives + a ping a second per spoke, % of one core ($IDLE s) | $(medv cpu) | ≤ 2 |"
    say "| hub CPU with every spoke silent, % of one core ($IDLE s) | $(medv quiet) | – |"
    say "| reference: point-to-point taptun carrying $SPOKES pings a second from one spoke, % of one core (10 s) | $(medv ref) | – |"
    say "| hub RSS, MiB (peak during the scale part; peak after TCP) | $(medv rss) ($(medv hwm); $hub_hwm) | ≤ 64 |"
    say "| fewest spokes reachable in any second of the window (echo reply in the last 3 s) | $(medv wmin) | all |"
    say "| spokes' ping loss in the window, % | $(medv wloss) | – |"
    say "| spokes' ping RTT in the window: p50 (median of the seconds) / p99 (worst second), ms | $(medv w50) / $(medv w99) | – |"
    say "| spokes' ping loss over the whole run (the restarts included), % | $(medv loss) | – |"
    say "| restart, spokes active: all reachable from the LAN host, s after the new hub's start (after SIGTERM to the old) | $(medv restart_active) ($(medv restart_term_active)) | ≤ 5 |"
    say "| restart, spokes silent (state file only): the same, s | $(medv restart_silent) ($(medv restart_term_silent)) | ≤ 5 |"
    say "| restart: SIGTERM to the old hub's exit (its $((SPOKES + 2)) TAPs gone), s: spokes active / silent | $(medv stop_active) / $(medv stop_silent) | – |"
    say "| TCP spoke→LAN through the hub, Gbit/s | $(med hub_up) | – |"
    say "| TCP spoke→LAN point-to-point taptun, Gbit/s | $(med p2p_up) | – |"
    say "| hub ÷ point-to-point, spoke→LAN | $(ratio hub_up p2p_up) | ≥ 0.9× |"
    say "| TCP LAN→spoke through the hub, Gbit/s | $(med hub_down) | – |"
    say "| TCP LAN→spoke point-to-point taptun, Gbit/s | $(med p2p_down) | – |"
    say "| hub ÷ point-to-point, LAN→spoke | $(ratio hub_down p2p_down) | ≥ 0.9× |"
    say "| CPU s per GB on the hub's side: hub / point-to-point taptun | $(med hub_cpu) / $(med p2p_cpu) | – |"
    say "| two spokes sending at once: sum, Gbit/s | $(med pair_sum) | – |"
    say "| two spokes sending at once: the smaller share, % | $(med pair_min %.1f) | ≥ 40 |"
    say ""
    say "Medians of $ROUNDS rounds (min–max) for TCP; the restart times count from the new hub's start to the LAN host's last first answer."
} >"$OUT"
say ""
say "== hub logs: warnings and errors (at most 10), the trials of unknown addresses at each exit"
cat "$work"/hub-*.log 2>/dev/null | grep -E ' (WARN|ERROR) ' | head -n 10 | sed 's/^/  /' || true
cat "$work"/hub-*.log 2>/dev/null | grep 'unknown addresses:' | sed 's/^ */  /' || true
say ""
say "== report ($OUT)"
cat "$OUT"
