#!/usr/bin/env bash
# Build, locally and from Debian's package mirror only, the base images that
# deploy/Dockerfile, deploy/beanstalkd/Dockerfile and deploy/app/Dockerfile
# start FROM, for machines whose Docker engine cannot pull from a registry.
#
#   debian:bookworm-slim   debootstrap --variant=minbase, trimmed like the
#                          official slim image, then `docker import`
#   rust:1.95-bookworm     the same rootfs plus gcc/make/pkg-config and the
#                          host's rustup toolchain under /usr/local, laid out
#                          like the official rust image (RUSTUP_HOME,
#                          CARGO_HOME, PATH), so `FROM rust:1.95-bookworm`
#                          builds the same way with or without a registry
#
# Idempotent: an image that already exists is left alone (pass --force to
# rebuild); the root filesystems are cached as tarballs in $CACHE_DIR, so a
# rerun after `docker rmi` only re-imports. Users with a registry don't need
# this script: `docker pull` gives them the real images.
#
# Usage: scripts/base-images.sh [--force] [--no-rust]
# Environment: HEDWIG_IMAGE_CACHE (default /var/cache/hedwig-images),
#              DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              RUST_TOOLCHAIN_DIR (default: the toolchain `rustc` runs from).
set -euo pipefail

SUITE=bookworm
DEBIAN_IMAGE="debian:${SUITE}-slim"
CACHE_DIR="${HEDWIG_IMAGE_CACHE:-/var/cache/hedwig-images}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the official rust:*-bookworm image (buildpack-deps) gives a build that
# matters to us: a C toolchain for -sys crates (aws-lc-sys, ring), perl, git.
RUST_BUILD_PACKAGES="ca-certificates,gcc,g++,libc6-dev,make,pkg-config,perl,git,xz-utils"

force=0
want_rust=1
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --no-rust) want_rust=0 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[base-images] %s\n' "$*" >&2; }

have_image() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

need_debootstrap() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
}

# slim_rootfs DIR: what the official -slim image does to a minbase rootfs.
slim_rootfs() {
    local root="$1"
    # deb822 sources with updates and security, as in the official image.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE ${SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: ${SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Keep docs, man pages and translations out of every later layer too.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/* \
        "$root"/tmp/* "$root"/root/.bash_history
    # The host's resolver and name must not leak into the image; Docker
    # provides both at run time.
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
}

# bootstrap TARBALL [INCLUDE]: debootstrap a minbase rootfs (plus packages)
# into a temporary folder, slim it, and pack it as TARBALL.
bootstrap() {
    local tarball="$1" include="${2:-}" root
    need_debootstrap
    mkdir -p "$CACHE_DIR/debs"
    root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    chmod 0755 "$root" # mktemp made it 0700: it becomes the image's /
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    log "debootstrap $SUITE into $root${include:+ (with $include)}"
    local start=$SECONDS
    debootstrap --variant=minbase ${include:+--include="$include"} \
        --cache-dir="$CACHE_DIR/debs" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    log "debootstrap took $((SECONDS - start))s"
    slim_rootfs "$root"
    if [ -n "${ROOTFS_HOOK:-}" ]; then "$ROOTFS_HOOK" "$root"; fi
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -c . | gzip -1 >"$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    trap - EXIT
}

build_debian() {
    if have_image "$DEBIAN_IMAGE"; then
        log "$DEBIAN_IMAGE present"
        return
    fi
    local tarball="$CACHE_DIR/debian-$SUITE-minbase.tar.gz"
    if [ "$force" = 1 ] || [ ! -s "$tarball" ]; then
        bootstrap "$tarball"
    fi
    log "importing $tarball as $DEBIAN_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        "$tarball" "$DEBIAN_IMAGE" >/dev/null
}

# trust_host_cas ROOT: make ROOT trust the CAs the host trusts beyond Debian's bundle.
# Where outbound HTTPS passes a TLS-inspecting proxy, its CA is in the host's bundle
# only, and cargo in the builder could not reach crates.io without it. The builder image
# is local to this machine, so it gets this machine's trust; runtime images do not.
trust_host_cas() {
    local root="$1" host_bundle=/etc/ssl/certs/ca-certificates.crt n=0 cert
    [ -s "$host_bundle" ] && [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || return 0
    local extra="$root/tmp/host-cas"
    mkdir -p "$extra"
    # Certificates (whole PEM blocks) in the host's bundle but not in the image's.
    awk -v out="$extra" '
        /-----BEGIN CERTIFICATE-----/ { pem = ""; inside = 1 }
        inside { pem = pem $0 "\n" }
        /-----END CERTIFICATE-----/ {
            inside = 0
            if (FNR == NR) { known[pem] = 1 }
            else if (!(pem in known)) { n++; printf "%s", pem > (out "/host-extra-" n ".crt") }
        }' "$root/etc/ssl/certs/ca-certificates.crt" "$host_bundle"
    for cert in "$extra"/*.crt; do
        [ -e "$cert" ] || continue
        cp "$cert" "$root/usr/local/share/ca-certificates/"
        n=$((n + 1))
    done
    rm -rf "$extra"
    if [ "$n" -gt 0 ]; then
        log "adding $n CA certificate(s) the host trusts beyond Debian's bundle to the builder"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
}

# rust_rootfs_hook ROOT: the toolchain and the host's extra CAs.
rust_rootfs_hook() {
    install_toolchain "$1"
    trust_host_cas "$1"
}

# install_toolchain ROOT: copy the host's toolchain into ROOT the way the
# official rust image lays it out.
install_toolchain() {
    local root="$1" triple="x86_64-unknown-linux-gnu"
    local dest="$root/usr/local/rustup/toolchains/$RUST_VERSION-$triple"
    mkdir -p "$dest" "$root/usr/local/cargo/bin"
    # Documentation is most of a toolchain's size and no build needs it.
    tar -C "$TOOLCHAIN_DIR" --exclude=./share/doc --exclude=./share/man -c . | tar -C "$dest" -x
    cat >"$root/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$RUST_VERSION-$triple"
profile = "minimal"
auto_self_update = "disable"

[overrides]
EOF
    local rustup_bin
    rustup_bin="$(command -v rustup || true)"
    if [ -n "$rustup_bin" ]; then
        cp "$(readlink -f "$rustup_bin")" "$root/usr/local/cargo/bin/rustup"
        for tool in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt rust-gdb rust-lldb; do
            ln -sf rustup "$root/usr/local/cargo/bin/$tool"
        done
    else
        # No rustup on the host: put the toolchain's binaries on PATH directly.
        for tool in "$dest"/bin/*; do
            ln -sf "/usr/local/rustup/toolchains/$RUST_VERSION-$triple/bin/$(basename "$tool")" \
                "$root/usr/local/cargo/bin/$(basename "$tool")"
        done
    fi
    chmod -R a+rX,a+w "$root/usr/local/cargo" "$root/usr/local/rustup"
}

build_rust() {
    if ! command -v rustc >/dev/null 2>&1; then
        log "no rustc on this machine: skipping the rust builder image"
        return
    fi
    TOOLCHAIN_DIR="${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot)}"
    TOOLCHAIN_DIR="$(readlink -f "$TOOLCHAIN_DIR")"
    RUST_VERSION="$("$TOOLCHAIN_DIR/bin/rustc" --version | awk '{print $2}')"
    local minor="${RUST_VERSION%.*}"
    local image="rust:$minor-$SUITE"
    if have_image "$image"; then
        log "$image present"
        return
    fi
    local tarball="$CACHE_DIR/rust-$RUST_VERSION-$SUITE.tar.gz"
    if [ "$force" = 1 ] || [ ! -s "$tarball" ]; then
        ROOTFS_HOOK=rust_rootfs_hook bootstrap "$tarball" "$RUST_BUILD_PACKAGES"
    fi
    log "importing $tarball as $image (rust $RUST_VERSION from $TOOLCHAIN_DIR)"
    docker import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV RUST_VERSION=$RUST_VERSION" \
        --change 'CMD ["bash"]' \
        "$tarball" "$image" >/dev/null
    docker tag "$image" "rust:$RUST_VERSION-$SUITE"
}

mkdir -p "$CACHE_DIR"
start=$SECONDS
build_debian
if [ "$want_rust" = 1 ]; then build_rust; fi
log "done in $((SECONDS - start))s"
