#!/bin/bash
# beanstalkd-healthcheck [HOST [PORT]]: exit 0 when beanstalkd answers `stats` with OK.
# Speaks the protocol to the end, so beanstalkd logs nothing: reads the whole answer
# (`OK <bytes>`, the YAML, CRLF), says `quit` and waits for beanstalkd to close. A client that
# closes with the answer unread makes its kernel send a reset, which beanstalkd logs as
# `read(): Connection reset by peer` on every probe.
# Uses bash's /dev/tcp (the image has no nc); bounded by `timeout`.
# shellcheck disable=SC2016 # $1, $2 expand in the child bash
export LC_ALL=C
exec timeout "${BEANSTALKD_HEALTH_TIMEOUT:-5}" bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "stats\r\n" >&3
    read -r status size <&3 || exit 1
    size="${size%$'"'"'\r'"'"'}"
    [ "$status" = OK ] && [[ "$size" =~ ^[0-9]+$ ]] || exit 1
    read -r -N "$((size + 2))" _ <&3 || exit 1
    printf "quit\r\n" >&3
    # beanstalkd closes on quit: read to the end so that our close follows its own.
    while read -r -t 2 _ <&3; do :; done
    exit 0
' beanstalkd-healthcheck "${1:-127.0.0.1}" "${2:-11300}"
