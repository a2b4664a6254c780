#!/usr/bin/env bash
# Builds the broker and operator images with podman (no daemon, no registry) from the binaries in
# target/release, as `localhost/ferrocket:test` and `localhost/ferrocket-operator:test`.
#
# No registry is reachable here, so the runtime base is made locally: a Debian bookworm minbase
# root file system (debootstrap) with distroless' `nonroot` home (uid 65532), imported as
# `localhost/ferrocket-base:bookworm` (kept in podman's store and reused). The Dockerfiles are the
# ones users build, with `RUNTIME_IMAGE` pointed at that base and `BINARIES=prebuilt` (the
# binaries, stripped, are the build context instead of a compile inside the build).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/e2e/images/containers.conf}
base=localhost/ferrocket-base:bookworm
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$base"; then
  echo "making $base from $mirror (debootstrap, about a minute)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  install -d -o 65532 -g 65532 "$work/rootfs/home/nonroot"
  tar -C "$work/rootfs" -c . | podman import -q - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

mkdir -p "$work/ctx/target/release"
for bin in ferrocket ferrocket-operator; do
  strip -o "$work/ctx/target/release/$bin" "target/release/$bin"
done
podman build -q -f Dockerfile --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$base" \
  -t localhost/ferrocket:test "$work/ctx" >/dev/null
podman build -q -f operator/Dockerfile --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$base" \
  -t localhost/ferrocket-operator:test "$work/ctx" >/dev/null
echo "built localhost/ferrocket:test and localhost/ferrocket-operator:test"
