#!/usr/bin/env bash
# Build the hedwig image from deploy/Dockerfile with a clean build context: the files git
# knows about (tracked, plus untracked ones .gitignore does not exclude), never target/
# or .git, so it works with the classic builder and without a root .dockerignore.
# Makes the local base images first when the engine lacks them (scripts/base-images.sh).
#
# Usage: scripts/docker-build.sh [--prebuilt] [--tag IMAGE] [-- DOCKER_BUILD_ARGS...]
#   --prebuilt   ship target/release/{mailman,postoffice,worker,keygen} as built on this
#                (bookworm) host instead of compiling in the image: for quick iterations;
#                run `cargo build --release -p ...` first. HEDWIG_BINS narrows the list;
#                HEDWIG_PREBUILT_FROM=target/debug ships the test build (CI does). The
#                binaries are stripped of debug info here, and no Rust toolchain image is
#                made or used (the build stages run on debian:bookworm-slim).
#   --tag IMAGE  default hedwig:latest
set -euo pipefail

cd "$(dirname "$0")/.."
tag=hedwig:latest
prebuilt=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prebuilt) prebuilt=1 ;;
        --tag) tag="$2"; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
bins="${HEDWIG_BINS:-mailman postoffice worker keygen}"
from="${HEDWIG_PREBUILT_FROM:-target/release}"
from="${from%/}"

list="$(mktemp)"
stripped="$(mktemp -d)"
trap 'rm -rf "$list" "$stripped"' EXIT
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done >"$list"
args=(--build-arg "HEDWIG_BINS=$bins")
if [ "$prebuilt" = 1 ]; then
    scripts/base-images.sh --no-rust
    for b in $bins; do
        if [ ! -x "$from/$b" ]; then
            echo "$from/$b missing: cargo build --release -p $b first" >&2
            exit 1
        fi
        strip --strip-debug -o "$stripped/$b" "$from/$b"
        printf '%s\0' "$stripped/$b" >>"$list"
    done
    # Renamed in the context so that a .dockerignore excluding target/ cannot drop them.
    args+=(--build-arg PREBUILT=.prebuilt --build-arg BUILD_IMAGE=debian:bookworm-slim)
else
    scripts/base-images.sh
fi

start=$SECONDS
tar --null -T "$list" --transform "s|^$stripped/|.prebuilt/|" -P -c \
    | docker build --force-rm -f deploy/Dockerfile -t "$tag" "${args[@]}" "${extra[@]}" -
echo "[docker-build] $tag built in $((SECONDS - start))s" >&2
