#!/usr/bin/env bash
# Podman and the Debian base images, made on this machine (no image registry needed).
#
#   scripts/make-base-image.sh [amd64] [arm64] [armhf]     (default: amd64)
#
# Installs podman and friends (apt), writes /etc/containers/containers.conf when there is none, enables
# qemu binfmt for foreign architectures, and for each architecture makes `debian:bookworm` and
# `debian:bookworm-slim` with debootstrap (slimmed like the official images), under the names Dockerfiles
# use: docker.io/library/debian:bookworm{,-slim} are manifest lists holding every architecture made so far,
# so `FROM debian:bookworm-slim` with `--platform linux/arm64` picks the arm64 one.
# Idempotent: a second run only checks (a few seconds). A fresh amd64 base takes about 2 minutes, arm64
# about 4 (debootstrap's second stage runs under qemu).
set -euo pipefail
cd "$(dirname "$0")/.."

# Rootful podman (its image store is the one the tests build in), debootstrap and binfmt need root.
[ "$(id -u)" -eq 0 ] || exec sudo bash "$0" "$@"
SUITE=bookworm
ARCHS=("$@")
((${#ARCHS[@]})) || ARCHS=(amd64)
log() { echo "make-base-image: $*"; }

# --- packages ------------------------------------------------------------------------------------------
APT_PACKAGES=(podman buildah runc catatonit uidmap slirp4netns fuse-overlayfs debootstrap debian-archive-keyring
  qemu-user-static binfmt-support python3)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- podman configuration ------------------------------------------------------------------------------
# runc (crun fails on hybrid cgroups), cgroupfs (no systemd), ulimits below the sandbox's hard limits.
if ! [ -e /etc/containers/containers.conf ]; then
  log "writing /etc/containers/containers.conf (runc, cgroupfs, bounded ulimits)"
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'EOF'
# Written by dachavideo's scripts/make-base-image.sh: settings that work in sandboxes and CI runners alike.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
fi

# --- qemu for foreign architectures --------------------------------------------------------------------
host_arch=$(dpkg --print-architecture)
for arch in "${ARCHS[@]}"; do
  [ "$arch" != "$host_arch" ] || continue
  case "$arch" in
    arm64) fmt=qemu-aarch64 ;;
    armhf) fmt=qemu-arm ;;
    *) echo "make-base-image: unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
  if ! [ -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/$fmt" 2>/dev/null; then
    log "enabling binfmt $fmt"
    update-binfmts --enable "$fmt"
  fi
done

# --- base images ---------------------------------------------------------------------------------------
# The mirror this machine uses, read from its deb822 sources (deb.debian.org when there are none).
mirror_for() { # $1: suite to look for
  [ -r /etc/apt/sources.list.d/debian.sources ] || return 0
  awk -v want="$1" '
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) { print uri; exit } }
    /^$/ { uri = "" }' /etc/apt/sources.list.d/debian.sources
}
MIRROR=$(mirror_for "$SUITE"); MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(mirror_for "$SUITE-security"); SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

# Like the official image (debuerreotype): apt hooks that keep no caches, no recommends of suggests,
# no translations; deb822 sources; no service starts during builds.
configure_rootfs() { # $1: rootfs
  local root=$1
  rm -f "$root/etc/apt/sources.list"
  cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 0755 "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/bootstrap.log "$root"/var/log/alternatives.log \
    "$root"/tmp/* "$root"/root/.bash_history
  : > "$root/etc/hostname"; : > "$root/etc/resolv.conf"
  rm -f "$root/etc/machine-id"; : > "$root/etc/machine-id"
}

# The -slim variant: no documentation, man pages or translations, now or in later installs.
slim_rootfs() { # $1: rootfs
  local root=$1
  cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{groff,info,linda,lintian,locale,man}/*
}

platform_arch() { if [ "$1" = armhf ]; then echo arm; else echo "$1"; fi; }

import_rootfs() { # $1: rootfs, $2: arch, $3: image name
  local variant=""
  [ "$2" = armhf ] && variant=v7
  tar --numeric-owner -C "$1" -c . |
    podman import --quiet --arch "$(platform_arch "$2")" ${variant:+--variant "$variant"} --os linux \
      --change 'CMD ["bash"]' - "$3" >/dev/null
}

# The digests of manifest list $1's entries for architecture $2 (nothing when there is no such list).
list_digests() {
  podman manifest inspect "$1" 2>/dev/null | /usr/bin/python3 -c '
import json, sys
arch = sys.argv[1]
for m in json.load(sys.stdin).get("manifests") or []:
    if m["platform"]["architecture"] == arch:
        print(m["digest"])' "$(platform_arch "$2")" 2>/dev/null || true
}

# Puts image $2 (architecture $3) into manifest list $1 (made when missing), replacing that architecture's entry.
add_to_list() {
  local list=$1 image=$2 arch=$3 digest
  if podman image exists "$list" && ! podman manifest inspect "$list" >/dev/null 2>&1; then
    podman rmi "$list" >/dev/null   # a plain image under the list's name (for example a pulled one)
  fi
  podman manifest inspect "$list" >/dev/null 2>&1 || podman manifest create "$list" >/dev/null
  for digest in $(list_digests "$list" "$arch"); do podman manifest remove "$list" "$digest" >/dev/null; done
  podman manifest add "$list" "containers-storage:$image" >/dev/null
}

# List $1 must hold image $2 as its architecture-$3 entry (a list keeps the digest of the image it was given).
ensure_listed() {
  [ "$(list_digests "$1" "$3")" = "$(podman image inspect --format '{{.Digest}}' "$2")" ] || add_to_list "$1" "$2" "$3"
}

for arch in "${ARCHS[@]}"; do
  full="localhost/dachavideo-base:$SUITE-$arch"
  slim="localhost/dachavideo-base:$SUITE-slim-$arch"
  if ! podman image exists "$full" || ! podman image exists "$slim"; then
    started=$SECONDS
    root=$(mktemp -d /var/tmp/dachavideo-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE for $arch from $MIRROR (a few minutes)"
    debootstrap --variant=minbase --arch="$arch" "$SUITE" "$root" "$MIRROR" > "$root.log" 2>&1 ||
      { tail -n 20 "$root.log"; exit 1; }
    rm -f "$root.log"
    configure_rootfs "$root"
    import_rootfs "$root" "$arch" "$full"
    slim_rootfs "$root"
    import_rootfs "$root" "$arch" "$slim"
    rm -rf "$root"; trap - EXIT
    log "made $full and $slim in $((SECONDS - started)) s"
  fi
  ensure_listed "docker.io/library/debian:$SUITE" "$full" "$arch"
  ensure_listed "docker.io/library/debian:$SUITE-slim" "$slim" "$arch"
done
log "ready: $(podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' --filter reference='localhost/dachavideo-base' | tr '\n' ' ')"
