#compdef taptun
# zsh completion for taptun; installed as
# /usr/share/zsh/vendor-completions/_taptun
#
# The option lists below are checked against `taptun --help`,
# `taptun status --help` and `taptun hub --help` by tests/package.rs: keep
# one spec a line.
# argh takes an option's value as the next word only (--mtu 1400, -i tap0),
# so no spec uses `=` or `+`.

# The running tunnels: their TAP names, from the sockets in /run/taptun.
_taptun_tunnels() {
    local -a devs
    devs=(/run/taptun/*.sock(N:t:r))
    _alternative \
        "tunnels:running tunnel:compadd -a devs" \
        'files:status socket or folder:_files'
}

# The first word: a subcommand or the key file.
_taptun_first() {
    _alternative \
        'subcommands:subcommand:((genkey\:"write a new key file" status\:"ask the running tunnels how they are" hub\:"serve many spokes on one port"))' \
        'files:key file:_files'
}

_taptun() {
    local -a opts status_opts hub_opts
    opts=(
        '(-i --dev)'{-i,--dev}'[TAP interface name]:name: '
        '--mtu[TAP MTU, 576 to 9000]:bytes: '
        '--underlay-mtu[MTU of the path between the hosts]:bytes: '
        '*'{-a,--address}'[address with prefix for the TAP]:IP/PREFIX: '
        '--max-age[accept timestamps at most this many seconds off]:seconds: '
        '--keepalive[keepalive after this many idle seconds, 0 = off]:seconds: '
        '--sockbuf[UDP socket buffer size, each way]:bytes: '
        '--clamp-mss[lower the MSS of TCP SYNs crossing the tunnel]:mss:(auto off)'
        '--aqm[CoDel on the receive queue, or TARGET_MS/INTERVAL_MS]:aqm:(on off)'
        '--nice[nice value of the packet threads, -20 to 19]:nice: '
        '--rt-priority[SCHED_FIFO priority of the packet threads, 1 to 99 or off (default 1 where allowed)]:priority: '
        '--fq[a sparse flow first at the receiver (HMAC wire)]:fq:(on off)'
        '--busy-poll[spin this many ms after the last datagram, 0 = off]:milliseconds: '
        '--cipher[encrypt, the same on both sides]:cipher:(aes-256-gcm chacha20-poly1305)'
        '--mac[the TAP MAC address]:mac: '
        '--status-socket[where taptun status reaches this tunnel]:socket:_files'
        '--state[the state file of the learned peer address]:file:_files'
        '--no-offload[do not use TAP and UDP offloads]'
        '--log-level[log level]:level:(error warn info debug trace)'
        '--user[switch to this user once started]:user:_users'
        '--up[shell command run once the TAP is up]:command:_cmdstring'
        '--down[shell command run at shutdown]:command:_cmdstring'
        '--stats[log the counters every SECS seconds]:seconds: '
        '--stats-json[also print each counters report as one JSON line]'
        '--config[read the settings from this file]:file:_files'
        '--resolve-every[resolve the peer name again at most every SECS seconds]:seconds: '
        '--fwmark[mark the UDP socket for policy routing]:mark: '
        '(- *)'{-h,--help}'[usage, options and exit codes]'
        '(- *)'{-V,--version}'[print the version]'
    )
    status_opts=(
        '(--prometheus)--json[one JSON object]'
        '(--json)--prometheus[Prometheus text]'
        '(- *)'{-h,--help}'[usage]'
    )
    hub_opts=(
        '--config[read the arguments from FILE, see taptun.conf(5)]:file:_files'
        '--bridge[the bridge every spoke TAP joins]:bridge: '
        '--mtu[the TAPs MTU, 576 to 9000]:bytes: '
        '--underlay-mtu[MTU of the paths to the spokes]:bytes: '
        '--max-age[accept timestamps at most this many seconds off]:seconds: '
        '--keepalive[keepalive after this many idle seconds, 0 = off]:seconds: '
        '--clamp-mss[lower the MSS of TCP SYNs]:mss:(auto off)'
        '--aqm[CoDel on the receive queue, or TARGET_MS/INTERVAL_MS]:aqm:(on off)'
        '--nice[nice value of the packet threads, -20 to 19]:nice: '
        '--rt-priority[SCHED_FIFO priority of the packet threads, 1 to 99 or off]:priority: '
        '--cipher[encrypt, one mode for every spoke]:cipher:(aes-256-gcm chacha20-poly1305)'
        '--status-socket[where taptun status reaches the hub]:socket:_files'
        '--state[the state file of the spokes addresses]:file:_files'
        '--no-offload[do not use TAP and UDP offloads]'
        '--log-level[log level]:level:(error warn info debug trace)'
        '--user[switch to this user once started]:user:_users'
        '--up[shell command run for each spoke once its TAP is up]:command:_cmdstring'
        '--down[shell command run for each spoke before its TAP goes]:command:_cmdstring'
        '--stats[log the counters every SECS seconds]:seconds: '
        '(- *)'{-h,--help}'[usage]'
    )
    if (( CURRENT > 2 )) && [[ $words[2] == (status|genkey|hub) ]]; then
        local sub=$words[2]
        # The subcommand becomes the command, its arguments the positionals.
        words=("${(@)words[2,-1]}")
        (( CURRENT-- ))
        if [[ $sub == status ]]; then
            _arguments -s $status_opts '1:tunnel (TAP name, socket or folder):_taptun_tunnels'
        elif [[ $sub == hub ]]; then
            _arguments -s $hub_opts '1:folder of NAME.key files:_files -/' \
                '2:local UDP address (\:PORT, IP\:PORT):'
        else
            _arguments '1:new key file:_files'
        fi
        return
    fi
    _arguments -s $opts \
        '1:key file or subcommand:_taptun_first' \
        '2:local UDP address (\:PORT, IP\:PORT):' \
        '3:peer UDP address (IP\:PORT; optional):'
}

_taptun "$@"
