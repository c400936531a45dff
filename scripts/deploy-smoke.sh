#!/usr/bin/env bash
# Smoke test of deploy/: the images build here (no registry) and hold none of the secrets
# an operator keeps in the tree (scripts/image-secrets-check.sh), run as non-root, mailman
# carries its port-25 capability, and the postoffice compose stack comes up healthy and
# queues a message in beanstalkd. Then the whole chain: msmtp and PHP mail() in an app
# container -> mailman (on the gateway of a test network) -> postoffice -> beanstalkd ->
# workers, which look up the recipient domain's MX in a DNS server container (dnsmasq)
# and deliver over SMTP to a receiving server container (smtp-sink), where each message
# must arrive exactly once, DKIM-signed, with mailman's Received: header; also one sent
# while postoffice is stopped (mailman spools it). With SMOKE_WORKERS=0: the job survives
# a beanstalkd restart (binlog volume) instead.
#
# Usage: scripts/deploy-smoke.sh [--prebuilt] [--no-build]
#   --prebuilt   image from target/release binaries (see scripts/docker-build.sh;
#                HEDWIG_PREBUILT_FROM=target/debug ships the debug build instead)
#   --no-build   use the images as they are: hedwig:latest, hedwig-beanstalkd:latest,
#                hedwig-app:latest, hedwig-smoke-net:latest (deploy/test)
# Environment: SMOKE_WORKERS (default 2): worker containers to start.
#
# Everything runs on networks this script creates (the compose project's own, internal,
# and the app network, internal); the stack, its volumes and the networks are removed at
# the end (also on failure). Nothing is sent outside the host: the DNS container forwards
# nothing and knows only the test domain.
set -euo pipefail

cd "$(dirname "$0")/.."
build_args=()
build=1
for arg in "$@"; do
    case "$arg" in
        --prebuilt) build_args+=(--prebuilt) ;;
        --no-build) build=0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
workers="${SMOKE_WORKERS:-2}"
image=hedwig:latest
project="hedwigsmoke$$"
tmp="$(mktemp -d)"
# The deploy file as users run it, plus: an internal network (no way out of the host),
# a receiving SMTP server `receiver` (smtp-sink, one file per message in /var/mail/sink)
# and a DNS server `dns` (dnsmasq: MX of example.net is mx.example.net, whose A record is
# the receiver's address; nothing else, nothing forwarded), both from deploy/test; the
# workers ask that DNS server (its address is known only once it runs: SMOKE_NAMESERVER).
# postoffice also joins an ordinary network, only so that its port can be published on
# 127.0.0.1 for mailman (Docker publishes no port of an internal network).
cat >"$tmp/smoke.override.yml" <<'EOF'
version: "3.8"
services:
  postoffice:
    networks: [default, edge]
  worker:
    environment:
      HEDWIG_NAMESERVERS: "[${SMOKE_NAMESERVER:-127.0.0.1:53}]"
  receiver:
    image: hedwig-smoke-net:latest
    command: [smoke-sink]
  dns:
    image: hedwig-smoke-net:latest
    command: [smoke-dns, mx.example.net, receiver, example.net]
    depends_on: [receiver]
networks:
  default:
    internal: true
  edge: {}
EOF
mailman_project="${project}mm"
mailman_compose=(docker-compose -p "$mailman_project" -f deploy/mailman/docker-compose.yml)
app_net="${project}app"
compose=(docker-compose -p "$project" -f deploy/postoffice/docker-compose.yml -f "$tmp/smoke.override.yml")
failures=0
passes=0
# Required by the postoffice file (EHLO name, DKIM d=); nothing leaves the host here.
export HEDWIG_HOSTNAME=mail.smoke.example.org HEDWIG_DKIM_DOMAIN=example.org
# Mail is DKIM-signed only for the domains the hosts are authorised for.
export HEDWIG_ALLOWED_SENDER_DOMAINS='[example.org]'

cleanup() {
    # The mailman file insists on these; `down` does not need real values.
    : "${HEDWIG_FQDN:=x}" "${HEDWIG_KEY:=x}" "${HEDWIG_POSTOFFICE:=x}"
    export HEDWIG_FQDN HEDWIG_KEY HEDWIG_POSTOFFICE
    "${mailman_compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    docker network rm "$app_net" >/dev/null 2>&1 || true
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { failures=$((failures + 1)); echo "FAIL $*"; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
# (a here-string, no pipe: with `printf | grep -q` under pipefail, grep's early exit can
# break printf's pipe and turn a found line into a failure)
has() { grep -q -- "$1" <<<"$2"; }

step() { echo "== $* ($(date -u +%T))"; }

if [ "$build" = 1 ]; then
    step "base images"
    if [ ${#build_args[@]} -gt 0 ]; then scripts/base-images.sh --no-rust; else scripts/base-images.sh; fi
    step "hedwig image"
    t=$SECONDS
    scripts/docker-build.sh "${build_args[@]}" >"$tmp/build.log" 2>&1 \
        || { tail -40 "$tmp/build.log"; exit 1; }
    echo "image built in $((SECONDS - t))s"
    # With the secrets the docs have operators keep in the tree planted as dummies: git
    # ignores them and no layer of any build stage holds them.
    step "no secrets in the image layers"
    if scripts/image-secrets-check.sh "${build_args[@]}" >"$tmp/secrets.log" 2>&1; then
        ok "no planted secret in git or in any image layer"
    else
        sed 's/^/  | /' "$tmp/secrets.log"
        fail "no planted secret in git or in any image layer"
    fi
    step "beanstalkd, app and test network images"
    scripts/smoke-images.sh >"$tmp/images.log" 2>&1 || { tail -40 "$tmp/images.log"; exit 1; }
fi

step "image"
uid="$(docker run --rm --network none "$image" id -u)"
check "runs as non-root (uid $uid)" test "$uid" != 0
for b in mailman postoffice worker keygen; do
    check "$b --help runs" bash -c "docker run --rm --network none $image $b --help >/dev/null"
done
check "mailman has cap_net_bind_service" bash -c \
    "docker run --rm --network none $image getcap /usr/local/bin/mailman | grep -q cap_net_bind_service"
check "msmtp and php in the app image" \
    docker run --rm --network none hedwig-app:latest bash -c \
        'msmtp --version >/dev/null && php -r "exit(ini_get(\"sendmail_path\") === \"/usr/bin/msmtp -t\" ? 0 : 1);"'

step "keygen dkim into a bind-mounted folder (operator guide 7.1)"
# The operator is not root here: a folder owned by uid 1000, as a user's own would be.
dkim_out="$tmp/dkim-out"
mkdir -m 0755 "$dkim_out"
chown 1000:1000 "$dkim_out"
denied="$(docker run --rm --network none -v "$dkim_out:/out" "$image" \
    keygen dkim example.org --selector s1 --out-dir /out 2>&1 >/dev/null || echo "exit $?")"
check "without --user: refused in one line that says --user ($(printf '%s' "$denied" | head -1 | cut -c1-80)...)" \
    bash -c '[ "$(printf "%s\n" "$1" | grep -c "^keygen: ")" = 1 ] && printf "%s" "$1" | grep -q -- "--user" && printf "%s" "$1" | grep -q "exit 2"' \
    _ "$denied"
check "with --user 1000:1000 (the documented --user \"\$(id -u):\$(id -g)\"): the key is written" \
    bash -c 'docker run --rm --network none --user 1000:1000 -v "$1:/out" "$2" \
        keygen dkim example.org --selector s1 --out-dir /out >/dev/null' _ "$dkim_out" "$image"
check "the key belongs to the operator, mode 0600" \
    test "$(stat -c '%u %a' "$dkim_out/example.org.s1.rsa.pem" 2>/dev/null)" = "1000 600"

step "postoffice stack (worker x$workers)"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$secret" >"$tmp/hedwig_secret"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/dkim.key" 2>/dev/null
# Secrets are bind-mounted as they are: readable by the image's hedwig group (10025), as
# the docs say (group 10025, mode 0640), which the binaries count as safe key files.
chgrp 10025 "$tmp/hedwig_secret" "$tmp/dkim.key"
chmod 0640 "$tmp/hedwig_secret" "$tmp/dkim.key"
export HEDWIG_SECRET_PATH="$tmp/hedwig_secret" HEDWIG_DKIM_KEY_PATH="$tmp/dkim.key"
# A fixed port on loopback (an ephemeral one could change when postoffice restarts).
HEDWIG_PUBLISH="127.0.0.1:$(shuf -i 20000-60000 -n 1)"
export HEDWIG_PUBLISH
check "compose file valid" "${compose[@]}" config -q
# Without HEDWIG_PUBLISH, the intake is published on loopback only (not 0.0.0.0).
published_default() { env -u HEDWIG_PUBLISH "${compose[@]}" config | grep -E '^ +- .*:8025(/tcp)?$|published' ; }
check "postoffice published on 127.0.0.1:8025 by default ($(published_default | tr -s ' \n' ' '))" \
    bash -c '[ "$(printf "%s\n" "$1" | grep -c .)" = 1 ] && printf "%s\n" "$1" | grep -qE "^ +- 127\.0\.0\.1:8025:8025(/tcp)?$"' \
    _ "$(published_default)"
t=$SECONDS
# First the receiver and the DNS server, whose address the workers need.
"${compose[@]}" up -d --no-build receiver dns >"$tmp/up.log" 2>&1 \
    || { cat "$tmp/up.log"; exit 1; }
# address of the first container of a service on the project's network
address() {
    docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_default\").IPAddress}}" \
        "$("${compose[@]}" ps -q "$1" | head -1)"
}
SMOKE_NAMESERVER="$(address dns):53"
export SMOKE_NAMESERVER
echo "DNS server at $SMOKE_NAMESERVER, receiver (mx.example.net) at $(address receiver)"
"${compose[@]}" up -d --no-build --scale worker="$workers" >>"$tmp/up.log" 2>&1 \
    || { cat "$tmp/up.log"; exit 1; }

# health STATE of the first container of a service
health() {
    docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
        "$("${compose[@]}" ps -q "$1" | head -1)" 2>/dev/null || echo missing
}
wait_healthy() {
    local service="$1"
    for _ in $(seq 1 60); do
        [ "$(health "$service")" = healthy ] && return 0
        sleep 1
    done
    echo "  $service: $(health "$service") after 60s"
    "${compose[@]}" logs --tail 20 "$service" || true
    return 1
}
check "beanstalkd healthy" wait_healthy beanstalkd
check "postoffice healthy" wait_healthy postoffice
echo "stack up in $((SECONDS - t))s"
if [ "$workers" -gt 0 ]; then
    check "$workers worker containers running" \
        test "$("${compose[@]}" ps -q worker | wc -l)" = "$workers"
    check "worker healthy" wait_healthy worker
fi
check "postoffice check-config" "${compose[@]}" exec -T postoffice postoffice check-config
# The documented secret modes (group 10025, 0640) draw no unsafe-key warning.
check "no unsafe key file warning from postoffice or the workers" bash -c \
    '! "$@" logs --no-color postoffice worker 2>&1 | grep "readable or writable"' _ "${compose[@]}"

step "a message through postoffice into beanstalkd"
fqdn=smoke.example.org
key="$(printf '%s' "$fqdn" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)"
# The command deploy/mailman/docker-compose.yml documents for HEDWIG_KEY: the key alone.
documented_key="$("${compose[@]}" exec -T postoffice keygen --key-only --secret-file /run/secrets/hedwig_secret "$fqdn" || true)"
check "the documented keygen --key-only prints the host key alone" test "$documented_key" = "$key"
email='{"mailfrom":"a@example.org","rcpttos":["b@example.net"],"data":"From: a@example.org\r\nTo: b@example.net\r\nSubject: smoke\r\n\r\nhello\r\n"}'
body="$(printf 'fqdn=%s&key=%s&email=%s' "$fqdn" "$key" \
    "$(printf '%s' "$email" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g')")"
# POST from inside the postoffice container (no curl there: bash's /dev/tcp).
# shellcheck disable=SC2016 # $1 expands in the container's bash
answer="$("${compose[@]}" exec -T postoffice bash -c '
    exec 3<>/dev/tcp/127.0.0.1/8025
    printf "POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %s\r\n\r\n%s" "${#1}" "$1" >&3
    timeout 10 cat <&3' post "$body" || true)"
echo "$answer" | head -1
check "postoffice answered 200" has '^HTTP/1.[01] 200' "$answer"

# beanstalkd stats: total jobs put so far
beanstalkd_stat() {
    "${compose[@]}" exec -T beanstalkd bash -c '
        exec 3<>/dev/tcp/127.0.0.1/11300
        printf "stats\r\n" >&3
        timeout 2 cat <&3' | tr -d '\r' | awk -v k="$1:" '$1 == k { print $2 }'
}
check "beanstalkd holds the job" test "$(beanstalkd_stat total-jobs)" -ge 1 2>/dev/null
if [ "$workers" -gt 0 ]; then
    # The receiver's files (smtp-sink's dump: X-Client-Addr, X-Helo-Args, X-Mail-Args,
    # X-Rcpt-Args, then the message as received) whose header has "Subject: $1".
    received_files() {
        docker exec "$("${compose[@]}" ps -q receiver)" bash -c '
            for f in /var/mail/sink/*; do
                [ -f "$f" ] && tr -d "\r" <"$f" | sed "/^\$/q" | grep -qx -- "Subject: $1" && echo "$f"
            done' _ "$1" 2>/dev/null || true
    }
    # the header of the (first) received message with Subject $1
    received() {
        local f
        f="$(received_files "$1" | head -1)"
        [ -z "$f" ] || docker exec "$("${compose[@]}" ps -q receiver)" cat "$f" | tr -d '\r' | sed -n '1,/^$/p'
    }
    wait_received() {
        for _ in $(seq 1 30); do
            [ -n "$(received_files "$1")" ] && return 0
            sleep 1
        done
        return 1
    }
    # the worker containers' addresses on the project network, one a line
    worker_addresses() {
        local c
        for c in $("${compose[@]}" ps -q worker); do
            docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_default\").IPAddress}}" "$c"
        done
    }
    # $1 subject, $2 recipient, $3 "mailman" if it came through mailman: arrived over SMTP
    # from a worker container, for $2, DKIM-signed, with mailman's Received: header once.
    check_delivered() {
        local h client
        if ! wait_received "$1"; then
            fail "'$1' arrived at the receiver (MX of example.net) within 30s"
            return 0
        fi
        ok "'$1' arrived at the receiver (MX of example.net)"
        h="$(received "$1")"
        client="$(printf '%s\n' "$h" | sed -n 's/^X-Client-Addr: //p')"
        check "'$1': sent by a worker container ($client)" grep -qxF -- "${client:-none}" <(worker_addresses)
        check "'$1': envelope recipient <$2>" has "^X-Rcpt-Args: <$2>\$" "$h"
        check "'$1': EHLO $HEDWIG_HOSTNAME" has "^X-Helo-Args: $HEDWIG_HOSTNAME\$" "$h"
        if ! check "'$1': DKIM-Signature d=example.org" has '^DKIM-Signature:.*d=example.org' "$h"; then
            # what arrived, to explain the failure (one CI run saw an unsigned message once)
            printf '%s\n' "$h" | sed 's/^/  | /'
        fi
        if [ "${3:-}" = mailman ]; then
            check "'$1': mailman's Received: header (by $fqdn), once" \
                test "$(printf '%s\n' "$h" | grep -c "^[[:space:]]*by $fqdn (mailman) ")" = 1
        fi
    }
    check_delivered smoke b@example.net
    # (grep without -q reads to the end: with -q it exits at the first match while
    # docker-compose still writes the next lines, which then fail with a broken pipe, and
    # pipefail turns the found line into a failure)
    dns_asked() { "${compose[@]}" logs dns 2>/dev/null | grep 'query\[MX\] example.net from ' >/dev/null; }
    check "a worker asked the DNS container for the MX of example.net" dns_asked
    received smoke | sed 's/^/  | /' || true

    step "mailman on the gateway of an app network; msmtp and PHP mail() from a container"
    docker network create --internal "$app_net" >/dev/null
    gateway="$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$app_net")"
    subnet="$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$app_net")"
    po_port="$("${compose[@]}" port postoffice 8025 | awk -F: '{print $NF}')"
    health_port="$(shuf -i 20000-60000 -n 1)"
    echo "app network gateway $gateway, postoffice at 127.0.0.1:$po_port"
    # The host's docker group, for the socket the file mounts (container identity, issue 17).
    HEDWIG_DOCKER_GID="$(stat -c %g /var/run/docker.sock)"
    export HEDWIG_DOCKER_GID
    export HEDWIG_LISTEN="$gateway:25" HEDWIG_FQDN="$fqdn" HEDWIG_KEY="$documented_key" HEDWIG_ALLOWED_NETWORKS="$subnet" \
        HEDWIG_POSTOFFICE="http://127.0.0.1:$po_port/" HEDWIG_HTTP_LISTEN="127.0.0.1:$health_port"
    "${mailman_compose[@]}" up -d --no-build >"$tmp/mailman-up.log" 2>&1 \
        || { cat "$tmp/mailman-up.log"; exit 1; }
    mailman_health() {
        for _ in $(seq 1 40); do
            [ "$(docker inspect -f '{{.State.Health.Status}}' \
                "$("${mailman_compose[@]}" ps -q mailman)" 2>/dev/null)" = healthy ] && return 0
            sleep 1
        done
        "${mailman_compose[@]}" logs --tail 20 mailman || true
        return 1
    }
    check "mailman healthy, listening on $gateway:25 as non-root" mailman_health
    # The app image as shipped, but pointed at this network's gateway instead of
    # 172.17.0.1 (the default bridge is not ours to use).
    app() {
        docker run --rm --network "$app_net" --name "${project}-app-$RANDOM" \
            --label com.docker.compose.project=smoke --label com.docker.compose.service=app \
            --label hedwig.lane=transactional \
            hedwig-app:latest bash -c \
            "sed -i 's/^host .*/host $gateway/' /etc/msmtprc && $1"
    }
    check "msmtp -t through mailman" app \
        "printf 'From: m@example.org\nTo: c@example.net\nSubject: msmtp smoke\n\nhello from msmtp\n' | msmtp -t"
    check "PHP mail() through mailman" app \
        "php -r 'exit(mail(\"d@example.net\", \"php smoke\", \"hello from php\", \"From: p@example.org\") ? 0 : 1);'"
    # Container identity: mailman knew each client as its container (docker socket, labels).
    identified() {
        "${mailman_compose[@]}" logs mailman 2>/dev/null >"$tmp/mailman-identity.log"
        grep 'client is a container' "$tmp/mailman-identity.log" | grep "${project}-app-" \
            | grep 'compose_service="app"' | grep 'lane="transactional"' >/dev/null
    }
    check "mailman names the app container and its labels" identified
    check_delivered "msmtp smoke" c@example.net mailman
    check_delivered "php smoke" d@example.net mailman

    step "postoffice down: mailman spools; postoffice back: the message arrives"
    "${compose[@]}" stop postoffice >/dev/null 2>&1
    check "msmtp accepted while postoffice is down" app \
        "printf 'From: m@example.org\nTo: e@example.net\nSubject: spooled smoke\n\nwhile down\n' | msmtp -t"
    check "mailman spooled it" bash -c "test -n \"\$(docker exec \$1 find /var/spool/hedwig -type f | head -1)\"" \
        _ "$("${mailman_compose[@]}" ps -q mailman)"
    "${compose[@]}" start postoffice >/dev/null 2>&1
    wait_healthy postoffice >/dev/null || true
    # mailman retries with backoff (retry_min 5s, doubling): allow a minute.
    wait_received_long() { wait_received "$1" || wait_received "$1"; }
    check "the spooled message arrived after postoffice came back" wait_received_long "spooled smoke"
    check_delivered "spooled smoke" e@example.net mailman

    step "each message arrived exactly once"
    sleep 3 # a duplicate delivery would be on its way by now
    for s in smoke "msmtp smoke" "php smoke" "spooled smoke"; do
        check "'$s' exactly once" test "$(received_files "$s" | wc -l)" = 1
    done
    check "nothing else arrived" test "$(docker exec "$("${compose[@]}" ps -q receiver)" \
        find /var/mail/sink -type f | wc -l)" = 4

    if [ "$failures" -gt 0 ]; then
        echo "-- subjects received:"
        docker exec "$("${compose[@]}" ps -q receiver)" bash -c \
            'cat /var/mail/sink/* 2>/dev/null' | tr -d '\r' | grep '^Subject:' | sed 's/^/  | /' || true
        echo "-- worker log:"; "${compose[@]}" logs --tail 30 worker | sed 's/^/  | /'
        echo "-- DNS log:"; "${compose[@]}" logs --tail 20 dns | sed 's/^/  | /'
        echo "-- mailman log:"; "${mailman_compose[@]}" logs --tail 30 mailman | sed 's/^/  | /'
        echo "-- postoffice log:"; "${compose[@]}" logs --tail 15 postoffice | sed 's/^/  | /'
    fi
    "${mailman_compose[@]}" down -v >/dev/null 2>&1
    docker network rm "$app_net" >/dev/null
else
    "${compose[@]}" restart beanstalkd >/dev/null 2>&1
    wait_healthy beanstalkd || true
    check "job survives a beanstalkd restart (binlog volume)" \
        test "$(beanstalkd_stat current-jobs-ready)" -ge 1 2>/dev/null
fi

step "beanstalkd: a quiet health check, a clean stop"
check "beanstalkd-healthcheck fails on a closed port" bash -c \
    "! docker exec \$1 beanstalkd-healthcheck 127.0.0.1 1 >/dev/null 2>&1" _ "$("${compose[@]}" ps -q beanstalkd)"
bs_log="$("${compose[@]}" logs --no-color beanstalkd 2>&1)"
check "no 'Connection reset' in beanstalkd's log (health probes speak the protocol)" \
    bash -c '! printf "%s" "$1" | grep -q "Connection reset"' _ "$bs_log"
bs_id="$("${compose[@]}" ps -q beanstalkd)"
t0="$(date +%s%N)"
bs_stop=0
"${compose[@]}" stop beanstalkd >/dev/null 2>&1 || bs_stop=$?
bs_ms=$((($(date +%s%N) - t0) / 1000000))
echo "docker-compose stop beanstalkd: status $bs_stop in ${bs_ms} ms, container exit code $(docker inspect -f '{{.State.ExitCode}}' "$bs_id")"
check "docker-compose stop beanstalkd exits 0" test "$bs_stop" = 0
check "beanstalkd stopped within 5 s (SIGTERM, not the SIGKILL after 10 s)" test "$bs_ms" -lt 5000
check "beanstalkd's exit code is 0 (not 137)" test "$(docker inspect -f '{{.State.ExitCode}}' "$bs_id")" = 0

step "down"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
leftovers() {
    local p
    for p in "$project" "$mailman_project"; do
        docker ps -aq --filter "label=com.docker.compose.project=$p"
        docker network ls -q --filter "label=com.docker.compose.project=$p"
        docker volume ls -q --filter "label=com.docker.compose.project=$p"
    done
    docker network ls -q --filter "name=^${app_net}\$"
}
check "no containers, networks or volumes left" test -z "$(leftovers)"
echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
