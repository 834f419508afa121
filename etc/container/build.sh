#!/usr/bin/env bash
# Builds localhost/mtlsgw:<version> with podman, offline: no registry is needed since the
# image is FROM scratch with the built binary and the libraries ldd says it loads.
#   bash etc/container/build.sh [BUILD_DIR]     (default: build, made if missing)
# Prints the image's name. The podman flags are this machine's: crun fails on its cgroups
# and rlimits, so runc, cgroupfs, vfs storage and no default ulimits (PODMAN_FLAGS and
# CONTAINERS_CONF override them).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build}
if [ ! -x "$BUILD/mtlsgw" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target mtlsgw mtlsgw-pkcs11 > /dev/null
fi
if ldd "$BUILD/mtlsgw" | grep -q libasan; then
    echo "build.sh: $BUILD/mtlsgw is a sanitizer build; give a normal build folder" >&2
    exit 2
fi
VERSION=$("$BUILD/mtlsgw" version | sed -n 's/^mtlsgw //p')
CTX=$(mktemp -d "${TMPDIR:-/tmp}/mtlsgw-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/root/usr/bin" "$CTX/root/usr/libexec/mtlsgw" "$CTX/root/etc/mtlsgw" "$CTX/root/tmp"
install -m 0755 -s "$BUILD/mtlsgw" "$CTX/root/usr/bin/mtlsgw"
# The PKCS#11 signer, for identities whose key is in a token (the module and what it links
# come in a layer of the operator's: FROM this image, COPY the module and its libraries).
install -m 0755 -s "$BUILD/mtlsgw-pkcs11" "$CTX/root/usr/libexec/mtlsgw/mtlsgw-pkcs11"
for lib in $( (ldd "$BUILD/mtlsgw"; ldd "$BUILD/mtlsgw-pkcs11") | awk '/=>/ {print $3} /ld-linux/ && !/=>/ {print $1}' | sort -u); do
    mkdir -p "$CTX/root$(dirname "$lib")"
    cp -L "$lib" "$CTX/root$lib"
done
chmod 1777 "$CTX/root/tmp"
echo 'mtlsgw:x:10001:10001:mtlsgw:/nonexistent:/usr/sbin/nologin' > "$CTX/root/etc/passwd"
echo 'mtlsgw:x:10001:' > "$CTX/root/etc/group"
cp "$ROOT/etc/Containerfile" "$CTX/Containerfile"
if [ -z "${CONTAINERS_CONF:-}" ]; then
    printf '[containers]\ndefault_ulimits = []\n' > "$CTX/containers.conf"
    export CONTAINERS_CONF=$CTX/containers.conf
fi
read -r -a flags <<< "${PODMAN_FLAGS:---runtime runc --cgroup-manager cgroupfs --storage-driver vfs}"
podman "${flags[@]}" rmi -f "localhost/mtlsgw:$VERSION" > /dev/null 2>&1 || true  # no dangling old image
podman "${flags[@]}" build --quiet -t "localhost/mtlsgw:$VERSION" -f "$CTX/Containerfile" "$CTX" > /dev/null
echo "localhost/mtlsgw:$VERSION"
