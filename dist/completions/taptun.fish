# fish completion for taptun; installed as
# /usr/share/fish/vendor_completions.d/taptun.fish
#
# tests/package.rs checks these options against `taptun --help`,
# `taptun status --help` and `taptun hub --help`.

# True until a subcommand (genkey, status, hub) is on the line.
function __taptun_main
    not __fish_seen_subcommand_from genkey status hub
end

# The running tunnels: their TAP names, from the sockets in /run/taptun.
function __taptun_tunnels
    for s in /run/taptun/*.sock
        basename $s .sock
    end
end

complete -c taptun -n __fish_use_subcommand -a genkey -d 'write a new key file'
complete -c taptun -n __fish_use_subcommand -a status -d 'ask the running tunnels how they are'
complete -c taptun -n __fish_use_subcommand -a hub -d 'serve many spokes on one port'

# taptun KEY_FILE LOCAL [PEER] [OPTIONS]
complete -c taptun -n __taptun_main -s i -l dev -x -d 'TAP interface name'
complete -c taptun -n __taptun_main -l mtu -x -d 'TAP MTU, 576 to 9000'
complete -c taptun -n __taptun_main -l underlay-mtu -x -d 'MTU of the path between the hosts'
complete -c taptun -n __taptun_main -s a -l address -x -d 'address with prefix for the TAP (repeatable)'
complete -c taptun -n __taptun_main -l max-age -x -d 'accept timestamps at most this many seconds off'
complete -c taptun -n __taptun_main -l keepalive -x -d 'keepalive after this many idle seconds, 0 = off'
complete -c taptun -n __taptun_main -l sockbuf -x -d 'UDP socket buffer size, each way'
complete -c taptun -n __taptun_main -l clamp-mss -x -a 'auto off' -d 'lower the MSS of TCP SYNs crossing the tunnel'
complete -c taptun -n __taptun_main -l aqm -x -a 'on off' -d 'CoDel on the receive queue (or TARGET_MS/INTERVAL_MS)'
complete -c taptun -n __taptun_main -l fq -x -a 'on off' -d 'a sparse flow first at the receiver (HMAC wire)'
complete -c taptun -n __taptun_main -l busy-poll -x -d 'spin this many ms after the last datagram, 0 = off'
complete -c taptun -n __taptun_main -l nice -x -d 'nice value of the packet threads, -20 to 19'
complete -c taptun -n __taptun_main -l rt-priority -x -d 'SCHED_FIFO priority of the packet threads, 1 to 99 or off (default 1 where allowed)'
complete -c taptun -n __taptun_main -l cipher -x -a 'aes-256-gcm chacha20-poly1305' -d 'encrypt, the same on both sides'
complete -c taptun -n __taptun_main -l mac -x -d 'the TAP MAC address'
complete -c taptun -n __taptun_main -l status-socket -r -F -d 'where taptun status reaches this tunnel'
complete -c taptun -n __taptun_main -l state -r -F -d 'the state file of the learned peer address'
complete -c taptun -n __taptun_main -l no-offload -d 'do not use TAP and UDP offloads'
complete -c taptun -n __taptun_main -l log-level -x -a 'error warn info debug trace' -d 'log level'
complete -c taptun -n __taptun_main -l user -x -a '(__fish_complete_users)' -d 'switch to this user once started'
complete -c taptun -n __taptun_main -l up -x -d 'shell command run once the TAP is up'
complete -c taptun -n __taptun_main -l down -x -d 'shell command run at shutdown'
complete -c taptun -n __taptun_main -l stats -x -d 'log the counters every SECS seconds'
complete -c taptun -n __taptun_main -l stats-json -d 'also print each counters report as one JSON line'
complete -c taptun -n __taptun_main -l config -r -F -d 'read the settings from this file'
complete -c taptun -n __taptun_main -l resolve-every -x -d 'resolve the peer name again at most every SECS seconds'
complete -c taptun -n __taptun_main -l fwmark -x -d 'mark the UDP socket for policy routing'
complete -c taptun -n __taptun_main -s h -l help -d 'usage, options and exit codes'
complete -c taptun -n __taptun_main -s V -l version -d 'print the version'

# taptun status [DEV|SOCKET|FOLDER] [--json|--prometheus]
complete -c taptun -n '__fish_seen_subcommand_from status' -a '(__taptun_tunnels)' -d 'running tunnel'
complete -c taptun -n '__fish_seen_subcommand_from status' -l json -d 'one JSON object'
complete -c taptun -n '__fish_seen_subcommand_from status' -l prometheus -d 'Prometheus text'
complete -c taptun -n '__fish_seen_subcommand_from status' -s h -l help -d usage

# taptun genkey FILE
complete -c taptun -n '__fish_seen_subcommand_from genkey' -r -F

# taptun hub DIR LOCAL [OPTIONS]
set -l hub '__fish_seen_subcommand_from hub'
complete -c taptun -n $hub -l config -r -F -d 'read the arguments from FILE (taptun.conf(5))'
complete -c taptun -n $hub -l bridge -x -d 'the bridge every spoke TAP joins'
complete -c taptun -n $hub -l mtu -x -d 'the TAPs MTU, 576 to 9000'
complete -c taptun -n $hub -l underlay-mtu -x -d 'MTU of the paths to the spokes'
complete -c taptun -n $hub -l max-age -x -d 'accept timestamps at most this many seconds off'
complete -c taptun -n $hub -l keepalive -x -d 'keepalive after this many idle seconds, 0 = off'
complete -c taptun -n $hub -l clamp-mss -x -a 'auto off' -d 'lower the MSS of TCP SYNs'
complete -c taptun -n $hub -l aqm -x -a 'on off' -d 'CoDel on the receive queue (or TARGET_MS/INTERVAL_MS)'
complete -c taptun -n $hub -l nice -x -d 'nice value of the packet threads, -20 to 19'
complete -c taptun -n $hub -l rt-priority -x -d 'SCHED_FIFO priority of the packet threads, 1 to 99 or off'
complete -c taptun -n $hub -l cipher -x -a 'aes-256-gcm chacha20-poly1305' -d 'encrypt, one mode for every spoke'
complete -c taptun -n $hub -l status-socket -r -F -d 'where taptun status reaches the hub'
complete -c taptun -n $hub -l state -r -F -d 'the state file of the spokes addresses'
complete -c taptun -n $hub -l no-offload -d 'do not use TAP and UDP offloads'
complete -c taptun -n $hub -l log-level -x -a 'error warn info debug trace' -d 'log level'
complete -c taptun -n $hub -l user -x -a '(__fish_complete_users)' -d 'switch to this user once started'
complete -c taptun -n $hub -l up -x -d 'shell command run for each spoke once its TAP is up'
complete -c taptun -n $hub -l down -x -d 'shell command run for each spoke before its TAP goes'
complete -c taptun -n $hub -l stats -x -d 'log the counters every SECS seconds'
complete -c taptun -n $hub -s h -l help -d usage
