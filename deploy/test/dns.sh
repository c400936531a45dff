#!/bin/bash
# smoke-dns MX_HOST TARGET DOMAIN...: an authoritative-only DNS server on port 53 that
# answers MX for each DOMAIN with MX_HOST, and A for MX_HOST with TARGET's address.
# TARGET is a container name, resolved once here through Docker's embedded DNS.
# dnsmasq forwards nothing (--no-resolv, --no-hosts): any other name is unknown.
set -euo pipefail
mx_host="$1" target="$2"
shift 2
ip=""
for _ in $(seq 1 20); do
    ip="$(getent ahostsv4 "$target" | awk 'NR == 1 { print $1 }')" && [ -n "$ip" ] && break
    sleep 0.5
done
[ -n "$ip" ] || { echo "smoke-dns: cannot resolve $target" >&2; exit 1; }
args=(--keep-in-foreground --no-resolv --no-hosts --no-poll --user=root
      --log-queries --log-facility=- --port=53 "--host-record=$mx_host,$ip")
for domain in "$@"; do
    args+=("--mx-host=$domain,$mx_host,10")
done
echo "smoke-dns: $mx_host -> $ip; MX for $*"
exec dnsmasq "${args[@]}"
