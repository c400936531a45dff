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
compose=(docker-compose -p "$project" -f deploy/postoffice/docker-compose.yml)
tmp="$(mktemp -d)"
failures=0
passes=0

cleanup() {
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { failures=$((failures + 1)); echo "FAIL $*"; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

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
    docker build -q -t hedwig-beanstalkd:latest deploy/beanstalkd >/dev/null
    docker build -q -f deploy/app/Dockerfile -t hedwig-app:latest deploy >/dev/null
fi

step "image"
uid="$(docker run --rm --network none "$image" id -u)"
check "runs as non-root (uid $uid)" test "$uid" != 0
for b in mailman postoffice worker keygen; do
    check "$b --help runs" docker run --rm --network none "$image" "$b" --help >/dev/null
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
export HEDWIG_PUBLISH="127.0.0.1:" # an ephemeral port on loopback
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
    local service="$1" i
    for i in $(seq 1 60); do
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
email='{"mailfrom":"a@example.org","rcpttos":["b@example.net"],"data":"Subject: smoke\r\n\r\nhello\r\n"}'
body="$(printf 'fqdn=%s&key=%s&email=%s' "$fqdn" "$key" \
    "$(printf '%s' "$email" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g')")"
# POST from inside the postoffice container (no curl there: bash's /dev/tcp).
answer="$("${compose[@]}" exec -T postoffice bash -c '
    exec 3<>/dev/tcp/127.0.0.1/8025
    printf "POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %s\r\n\r\n%s" "${#1}" "$1" >&3
    timeout 10 cat <&3' post "$body" || true)"
echo "$answer" | head -1
check "postoffice answered 200" bash -c "printf '%s' \"\$1\" | head -1 | grep -q ' 200'" _ "$answer"

# beanstalkd stats: total jobs put so far
stat() {
    "${compose[@]}" exec -T beanstalkd bash -c '
        exec 3<>/dev/tcp/127.0.0.1/11300
        printf "stats\r\n" >&3
        timeout 2 cat <&3' | tr -d '\r' | awk -v k="$1:" '$1 == k { print $2 }'
}
check "beanstalkd holds the job" test "$(stat total-jobs)" -ge 1 2>/dev/null
if [ "$workers" = 0 ]; then
    "${compose[@]}" restart beanstalkd >/dev/null 2>&1
    wait_healthy beanstalkd || true
    check "job survives a beanstalkd restart (binlog volume)" \
        test "$(stat current-jobs-ready)" -ge 1 2>/dev/null
fi

step "down"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
check "no containers left" test -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")"
echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
