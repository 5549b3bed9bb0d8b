#compdef taptun
# zsh completion for taptun; installed as
# /usr/share/zsh/vendor-completions/_taptun
#
# The option lists below are checked against `taptun --help` and
# `taptun status --help` by tests/completions.rs: keep one spec a line.
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
        'subcommands:subcommand:((genkey\:"write a new key file" status\:"ask the running tunnels how they are"))' \
        'files:key file:_files'
}

_taptun() {
    local -a opts status_opts
    opts=(
        '(-i --dev)'{-i,--dev}'[TAP interface name]:name: '
        '--mtu[TAP MTU, 576 to 9000]:bytes: '
        '--underlay-mtu[MTU of the path between the hosts]:bytes: '
        '*'{-a,--address}'[address with prefix for the TAP]:IP/PREFIX: '
        '--max-age[accept timestamps at most this many seconds off]:seconds: '
        '--keepalive[keepalive after this many idle seconds, 0 = off]:seconds: '
        '--sockbuf[UDP socket buffer size, each way]:bytes: '
        '--clamp-mss[lower the MSS of TCP SYNs crossing the tunnel]:mss:(auto off)'
        '--cipher[encrypt, the same on both sides]:cipher:(aes-256-gcm chacha20-poly1305)'
        '--mac[the TAP MAC address]:mac: '
        '--status-socket[where taptun status reaches this tunnel]:socket:_files'
        '--no-offload[do not use TAP and UDP offloads]'
        '--log-level[log level]:level:(error warn info debug trace)'
        '--user[switch to this user once started]:user:_users'
        '--up[shell command run once the TAP is up]:command:_cmdstring'
        '--down[shell command run at shutdown]:command:_cmdstring'
        '--stats[log the counters every SECS seconds]:seconds: '
        '--stats-json[also print each counters report as one JSON line]'
        '--config[read the settings from this file]:file:_files'
        '--fwmark[mark the UDP socket for policy routing]:mark: '
        '(- *)'{-h,--help}'[usage, options and exit codes]'
        '(- *)'{-V,--version}'[print the version]'
    )
    status_opts=(
        '(--prometheus)--json[one JSON object]'
        '(--json)--prometheus[Prometheus text]'
        '(- *)'{-h,--help}'[usage]'
    )
    if (( CURRENT > 2 )) && [[ $words[2] == (status|genkey) ]]; then
        local sub=$words[2]
        # The subcommand becomes the command, its arguments the positionals.
        words=("${(@)words[2,-1]}")
        (( CURRENT-- ))
        if [[ $sub == status ]]; then
            _arguments -s $status_opts '1:tunnel (TAP name, socket or folder):_taptun_tunnels'
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
