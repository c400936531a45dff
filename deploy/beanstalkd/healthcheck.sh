#!/bin/bash
# beanstalkd-healthcheck [HOST [PORT]]: exit 0 when beanstalkd answers `stats` with OK.
# Uses bash's /dev/tcp (the image has no nc); bounded by `timeout`.
# shellcheck disable=SC2016 # $1, $2 expand in the child bash
exec timeout "${BEANSTALKD_HEALTH_TIMEOUT:-5}" bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "stats\r\n" >&3
    read -r status _ <&3 || exit 1
    [ "${status%$'"'"'\r'"'"'}" = OK ]
' beanstalkd-healthcheck "${1:-127.0.0.1}" "${2:-11300}"
