#!/usr/bin/env bash
# Checks that the secrets an operator keeps in this tree never reach a Docker image or git.
#
# The deployment docs have operators create, next to the compose files: the post office's
# secrets/ (hedwig_secret, dkim.key), an .env with HEDWIG_KEY, a mounted YAML config, and DKIM
# keys. This script plants a dummy of each (random canary bytes; a path that already exists is
# left alone and not checked), builds the image with scripts/docker-build.sh once per build
# stage that copies the context (skeleton, build) and the runtime image, then looks through
# every layer of each (`docker save`, tar listing and the bytes) for the canaries' names and
# bytes. It also checks that git ignores each of them. The planted files, the images and the
# saved tarballs are removed at the end (also on failure).
#
# Usage: scripts/image-secrets-check.sh [--prebuilt]
#   --prebuilt   as for scripts/docker-build.sh (HEDWIG_PREBUILT_FROM=target/debug for the
#                test build); with it, the checked stages run on debian:bookworm-slim and
#                nothing is compiled, so the build is cheap when the layers are cached.
# Exit status 0 when no layer of any stage holds a canary, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
build_args=()
for arg in "$@"; do
    case "$arg" in
        --prebuilt) build_args+=(--prebuilt) ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

run="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
marker="hedwig-canary-$run"
tmp="$(mktemp -d)"
planted=()
made_dirs=()
images=()
cleanup() {
    local f d i
    for f in "${planted[@]}"; do rm -f "$f"; done
    # Folders made here, deepest first, only if empty.
    for ((i = ${#made_dirs[@]} - 1; i >= 0; i--)); do rmdir "${made_dirs[$i]}" 2>/dev/null || true; done
    for d in "${images[@]}"; do docker rmi -f "$d" >/dev/null 2>&1 || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# plant PATH: a dummy secret holding the canary marker, unless PATH exists already.
plant() {
    local f="$1" d
    if [ -e "$f" ]; then
        echo "note $f exists: not planted, not checked"
        return 0
    fi
    d="$(dirname "$f")"
    if [ ! -d "$d" ]; then
        # remember each folder we create, so that cleanup removes only those
        local parts=() p="$d"
        while [ ! -d "$p" ]; do parts=("$p" "${parts[@]}"); p="$(dirname "$p")"; done
        mkdir -p "$d"
        made_dirs+=("${parts[@]}")
    fi
    printf '%s %s\n' "$marker" "$f" >"$f"
    planted+=("$f")
}
# What the docs (deploy/README.md, deploy/*/docker-compose.yml, docs/operator-guide.md)
# tell operators to create in the tree.
plant deploy/postoffice/secrets/hedwig_secret
plant deploy/postoffice/secrets/dkim.key
plant deploy/postoffice/.env
plant deploy/mailman/.env
plant deploy/postoffice/postoffice.yaml
plant deploy/postoffice/worker.yaml
plant deploy/mailman/mailman.yaml
plant deploy/mailman/key
plant deploy/postoffice/dkim/example.org.202612.rsa.pem
if [ ${#planted[@]} = 0 ]; then
    echo "FAIL nothing planted (every path exists): nothing to check" >&2
    exit 1
fi

failures=0
for f in "${planted[@]}"; do
    if git check-ignore -q --no-index "$f"; then
        echo "ok   git ignores $f"
    else
        echo "FAIL git does not ignore $f (one \`git add .\` from being committed)"
        failures=$((failures + 1))
    fi
done

# layers_hold IMAGE: prints each layer file entry or content that carries the marker.
layers_hold() {
    local image="$1" dir="$tmp/save" layer
    rm -rf "$dir" && mkdir -p "$dir"
    docker save "$image" | tar -x -C "$dir"
    while IFS= read -r -d '' layer; do
        # names: a planted path's base name under a path the context had
        tar -tf "$layer" | grep -E '(^|/)(secrets/|\.env$|(postoffice|worker|mailman)\.yaml$|mailman/key$|dkim/[^/]+\.pem$)' \
            | sed "s|^|  $(basename "$(dirname "$layer")") name: |" || true
        # bytes: the marker anywhere in a file of the layer
        # (grep -c reads to the end: with -q, tar would die of SIGPIPE and pipefail hide a hit)
        if [ "$(tar -xOf "$layer" | grep -acF -- "$marker" || true)" != 0 ]; then
            echo "  $(basename "$(dirname "$layer")") holds the canary bytes"
        fi
    done < <(find "$dir" -name layer.tar -print0)
    rm -rf "$dir"
}

for target in skeleton build runtime; do
    image="hedwig-secrets-check-$target:$run"
    if ! scripts/docker-build.sh "${build_args[@]}" --tag "$image" -- --target "$target" \
        >"$tmp/build-$target.log" 2>&1; then
        tail -30 "$tmp/build-$target.log"
        echo "FAIL the $target stage did not build"
        exit 1
    fi
    images+=("$image")
    found="$(layers_hold "$image")"
    if [ -z "$found" ]; then
        echo "ok   no layer of the $target stage holds a planted secret"
    else
        echo "FAIL the $target stage's layers hold planted secrets:"
        printf '%s\n' "$found" | head -20
        failures=$((failures + 1))
    fi
done
[ "$failures" = 0 ]
