#!/usr/bin/env bash
# The deployment smoke test's images that do not hold hedwig, built here from deploy/ (no
# registry): hedwig-beanstalkd:latest, hedwig-app:latest (msmtp and PHP, as an app container)
# and hedwig-smoke-net:latest (deploy/test: the receiving SMTP server and the DNS server), on
# the local debian:bookworm-slim (scripts/base-images.sh --no-rust makes it when missing).
#
# Used by scripts/deploy-smoke.sh, and by .ci/run ahead of it, in the background while the
# Rust builds run; a second call is answered by docker's layer cache.
#
# Usage: scripts/smoke-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/base-images.sh --no-rust
for image in beanstalkd app smoke-net; do
    echo "== hedwig-$image image"
    case "$image" in
        beanstalkd) docker build -q --force-rm -t hedwig-beanstalkd:latest deploy/beanstalkd ;;
        app) docker build -q --force-rm -f deploy/app/Dockerfile -t hedwig-app:latest deploy ;;
        smoke-net) docker build -q --force-rm -t hedwig-smoke-net:latest deploy/test ;;
    esac
done
