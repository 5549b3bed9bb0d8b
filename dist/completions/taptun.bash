# bash completion for taptun; install as
# /usr/share/bash-completion/completions/taptun
_taptun() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --log-level)
            mapfile -t COMPREPLY < <(compgen -W "error warn info debug trace" -- "$cur")
            return ;;
        --user)
            mapfile -t COMPREPLY < <(compgen -u -- "$cur")
            return ;;
        --up|--down)
            mapfile -t COMPREPLY < <(compgen -c -- "$cur")
            return ;;
        -i|--dev|--mtu|--underlay-mtu|--clamp-mss|-a|--address|--max-age|--keepalive|--sockbuf|--stats)
            return ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--dev --mtu --underlay-mtu --clamp-mss --address --max-age --keepalive --sockbuf --no-offload --log-level --user --up --down --stats --stats-json --help --version" -- "$cur")
    elif [[ $COMP_CWORD -eq 1 ]]; then
        mapfile -t COMPREPLY < <(compgen -W "genkey" -- "$cur"; compgen -f -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}
complete -F _taptun taptun
