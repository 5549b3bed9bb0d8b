# bash completion for taptun; install as
# /usr/share/bash-completion/completions/taptun
# tests/package.rs checks its options against `taptun --help`,
# `taptun status --help` and `taptun hub --help`.
_taptun() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    # taptun status [DEV|SOCKET|FOLDER] [--json|--prometheus]: the running
    # tunnels' TAP names (their sockets in /run/taptun), a socket path, a form.
    if [[ ${COMP_WORDS[1]} == status && $COMP_CWORD -ge 2 ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--json --prometheus --help" -- "$cur")
        else
            local socks=(/run/taptun/*.sock) devs=()
            [[ -e ${socks[0]} ]] && devs=("${socks[@]##*/}") && devs=("${devs[@]%.sock}")
            mapfile -t COMPREPLY < <(compgen -W "${devs[*]}" -- "$cur"; compgen -f -- "$cur")
        fi
        return
    fi
    # taptun hub DIR LOCAL [options]: the spokes' key folder, then options.
    if [[ ${COMP_WORDS[1]} == hub && $COMP_CWORD -ge 2 ]]; then
        case $prev in
            --log-level)
                mapfile -t COMPREPLY < <(compgen -W "error warn info debug trace" -- "$cur") ;;
            --cipher)
                mapfile -t COMPREPLY < <(compgen -W "aes-256-gcm chacha20-poly1305" -- "$cur") ;;
            --clamp-mss)
                mapfile -t COMPREPLY < <(compgen -W "auto off" -- "$cur") ;;
            --aqm)
                mapfile -t COMPREPLY < <(compgen -W "on off" -- "$cur") ;;
            --user)
                mapfile -t COMPREPLY < <(compgen -u -- "$cur") ;;
            --up|--down)
                mapfile -t COMPREPLY < <(compgen -c -- "$cur") ;;
            --config|--status-socket|--state)
                mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            --bridge|--mtu|--underlay-mtu|--max-age|--keepalive|--stats|--nice|--rt-priority) ;;
            *)
                if [[ $cur == -* ]]; then
                    mapfile -t COMPREPLY < <(compgen -W "--config --bridge --mtu --underlay-mtu --max-age --keepalive --clamp-mss --aqm --nice --rt-priority --cipher --status-socket --state --no-offload --log-level --user --up --down --stats --help" -- "$cur")
                else
                    mapfile -t COMPREPLY < <(compgen -d -- "$cur")
                fi ;;
        esac
        return
    fi
    case $prev in
        --log-level)
            mapfile -t COMPREPLY < <(compgen -W "error warn info debug trace" -- "$cur")
            return ;;
        --cipher)
            mapfile -t COMPREPLY < <(compgen -W "aes-256-gcm chacha20-poly1305" -- "$cur")
            return ;;
        --aqm|--fq)
            mapfile -t COMPREPLY < <(compgen -W "on off" -- "$cur")
            return ;;
        --user)
            mapfile -t COMPREPLY < <(compgen -u -- "$cur")
            return ;;
        --up|--down)
            mapfile -t COMPREPLY < <(compgen -c -- "$cur")
            return ;;
        --status-socket|--config|--state)
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return ;;
        -i|--dev|--mtu|--underlay-mtu|--clamp-mss|--busy-poll|--nice|--rt-priority|-a|--address|--max-age|--keepalive|--sockbuf|--stats|--mac|--resolve-every|--fwmark)
            return ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--dev --mtu --underlay-mtu --clamp-mss --aqm --fq --busy-poll --nice --rt-priority --address --mac --cipher --max-age --keepalive --sockbuf --no-offload --log-level --user --up --down --stats --stats-json --status-socket --state --config --resolve-every --fwmark --help --version" -- "$cur")
    elif [[ $COMP_CWORD -eq 1 ]]; then
        mapfile -t COMPREPLY < <(compgen -W "genkey status hub" -- "$cur"; compgen -f -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}
complete -F _taptun taptun
