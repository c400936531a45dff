#!/usr/bin/env bash
# Smoke test of deploy/: the images build here (no registry), run as non-root, mailman
# carries its port-25 capability, and the postoffice compose stack comes up healthy and
# queues a message durably in beanstalkd (binlog on its volume survives a restart).
#
# Usage: scripts/deploy-smoke.sh [--prebuilt] [--no-build]
#   --prebuilt   image from target/release binaries (see scripts/docker-build.sh)
#   --no-build   use the hedwig:latest image as it is
# Environment: SMOKE_WORKERS (default 2): worker containers to start.
#
# Everything runs on the compose project's own network; the stack and its volumes are
# removed at the end (also on failure). Nothing is sent outside the containers.
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
# The deploy file as users run it, plus: an internal network (no way out of the host)
# and workers in capture mode (they write to a Maildir instead of delivering).
# postoffice also joins an ordinary network, only so that its port can be published on
# 127.0.0.1 for mailman (Docker publishes no port of an internal network).
cat >"$tmp/smoke.override.yml" <<'EOF'
version: "3.8"
services:
  postoffice:
    networks: [default, edge]
  worker:
    environment:
      HEDWIG_CAPTURE_MAILDIR: /var/lib/hedwig/capture
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
has() { printf '%s' "$2" | grep -q -- "$1"; }

step() { echo "== $* ($(date -u +%T))"; }

if [ "$build" = 1 ]; then
    step "base images"
    scripts/base-images.sh
    step "hedwig image"
    t=$SECONDS
    scripts/docker-build.sh "${build_args[@]}" >"$tmp/build.log" 2>&1 \
        || { tail -40 "$tmp/build.log"; exit 1; }
    echo "image built in $((SECONDS - t))s"
    step "beanstalkd and app images"
    docker build -q --force-rm -t hedwig-beanstalkd:latest deploy/beanstalkd >/dev/null
    docker build -q --force-rm -f deploy/app/Dockerfile -t hedwig-app:latest deploy >/dev/null
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

step "postoffice stack (worker x$workers)"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$secret" >"$tmp/hedwig_secret"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/dkim.key" 2>/dev/null
# Secrets are bind-mounted as they are: readable by the image's hedwig user (10025).
chmod 0644 "$tmp/hedwig_secret" "$tmp/dkim.key"
export HEDWIG_SECRET_PATH="$tmp/hedwig_secret" HEDWIG_DKIM_KEY_PATH="$tmp/dkim.key"
# A fixed port on loopback (an ephemeral one could change when postoffice restarts).
HEDWIG_PUBLISH="127.0.0.1:$(shuf -i 20000-60000 -n 1)"
export HEDWIG_PUBLISH
check "compose file valid" "${compose[@]}" config -q
t=$SECONDS
"${compose[@]}" up -d --no-build --scale worker="$workers" >"$tmp/up.log" 2>&1 \
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

step "a message through postoffice into beanstalkd"
fqdn=smoke.example.org
key="$(printf '%s' "$fqdn" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)"
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
stat() {
    "${compose[@]}" exec -T beanstalkd bash -c '
        exec 3<>/dev/tcp/127.0.0.1/11300
        printf "stats\r\n" >&3
        timeout 2 cat <&3' | tr -d '\r' | awk -v k="$1:" '$1 == k { print $2 }'
}
check "beanstalkd holds the job" test "$(stat total-jobs)" -ge 1 2>/dev/null
if [ "$workers" -gt 0 ]; then
    # every captured message, from all worker containers
    captured() {
        local c
        for c in $("${compose[@]}" ps -q worker); do
            docker exec "$c" bash -c 'cat /var/lib/hedwig/capture/new/* 2>/dev/null' || true
        done | tr -d '\r'
    }
    wait_captured() {
        for _ in $(seq 1 30); do
            captured | grep -q "^Subject: $1\$" && return 0
            sleep 1
        done
        return 1
    }
    check "a worker captured the message" wait_captured smoke
    check "captured message is DKIM-signed" has '^DKIM-Signature:.*d=example.org' "$(captured)"
    captured | sed -n '1,/^$/p' | sed 's/^/  | /'

    step "mailman on the gateway of an app network; msmtp and PHP mail() from a container"
    docker network create --internal "$app_net" >/dev/null
    gateway="$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$app_net")"
    subnet="$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$app_net")"
    po_port="$("${compose[@]}" port postoffice 8025 | awk -F: '{print $NF}')"
    health_port="$(shuf -i 20000-60000 -n 1)"
    echo "app network gateway $gateway, postoffice at 127.0.0.1:$po_port"
    export HEDWIG_LISTEN="$gateway:25" HEDWIG_FQDN="$fqdn" HEDWIG_KEY="$key" HEDWIG_ALLOWED_NETWORKS="$subnet" \
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
        docker run --rm --network "$app_net" hedwig-app:latest bash -c \
            "sed -i 's/^host .*/host $gateway/' /etc/msmtprc && $1"
    }
    check "msmtp -t through mailman" app \
        "printf 'From: m@example.org\nTo: c@example.net\nSubject: msmtp smoke\n\nhello from msmtp\n' | msmtp -t"
    check "PHP mail() through mailman" app \
        "php -r 'exit(mail(\"d@example.net\", \"php smoke\", \"hello from php\", \"From: p@example.org\") ? 0 : 1);'"
    check "the msmtp message reached a worker" wait_captured "msmtp smoke"
    check "the PHP message reached a worker" wait_captured "php smoke"
    # Only mailman's Received: header names the sending host in the msmtp message.
    check "mailman's Received: header in the msmtp message" has "$fqdn" \
        "$(captured | awk '/^Return-Path:/ { keep = 0 } /^Subject: msmtp smoke/ { keep = 1 } { buf = buf $0 "\n" }
            /^$/ { if (keep) { print buf; exit } buf = "" }')"

    step "postoffice down: mailman spools; postoffice back: the message arrives"
    "${compose[@]}" stop postoffice >/dev/null 2>&1
    check "msmtp accepted while postoffice is down" app \
        "printf 'From: m@example.org\nTo: e@example.net\nSubject: spooled smoke\n\nwhile down\n' | msmtp -t"
    check "mailman spooled it" bash -c "test -n \"\$(docker exec \$1 find /var/spool/hedwig -type f | head -1)\"" \
        _ "$("${mailman_compose[@]}" ps -q mailman)"
    "${compose[@]}" start postoffice >/dev/null 2>&1
    wait_healthy postoffice >/dev/null || true
    # mailman retries with backoff (retry_min 5s, doubling): allow a minute.
    wait_captured_long() { wait_captured "$1" || wait_captured "$1"; }
    check "the spooled message arrived after postoffice came back" wait_captured_long "spooled smoke"

    if [ "$failures" -gt 0 ]; then
        echo "-- subjects captured:"; captured | grep '^Subject:' | sed 's/^/  | /'
        echo "-- mailman log:"; "${mailman_compose[@]}" logs --tail 30 mailman | sed 's/^/  | /'
        echo "-- postoffice log:"; "${compose[@]}" logs --tail 15 postoffice | sed 's/^/  | /'
    fi
    "${mailman_compose[@]}" down -v >/dev/null 2>&1
    docker network rm "$app_net" >/dev/null
else
    "${compose[@]}" restart beanstalkd >/dev/null 2>&1
    wait_healthy beanstalkd || true
    check "job survives a beanstalkd restart (binlog volume)" \
        test "$(stat current-jobs-ready)" -ge 1 2>/dev/null
fi

step "down"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
check "no containers left" test -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project"; \
    docker ps -aq --filter "label=com.docker.compose.project=$mailman_project")"
echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
