#!/usr/bin/env bash
# The container image: built offline with podman (etc/container/build.sh), it runs
# `mtlsgw version` as a non-root user, and a container with a config and a mounted
# identity carries real tunnels over mTLS to nginx on the host (--network host).
source "$(dirname "$0")/lib.sh"

if ldd "$MTLSGW" | grep -q libasan; then
    echo "SKIP: the image is made from the normal build, not this ASan one ($MTLSGW)" >&2
    exit 77
fi
printf '[containers]\ndefault_ulimits = []\n' > "$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --storage-driver vfs)
IMAGE=$(bash "$ROOT/etc/container/build.sh" "$(dirname "$MTLSGW")")
UNDO+=("${PODMAN[*]} rmi -f $IMAGE")
check "the image builds offline: $IMAGE" "${PODMAN[@]}" image exists "$IMAGE"
out=$("${PODMAN[@]}" run --rm "$IMAGE" version 2>&1)
expect_contains "podman run $IMAGE version" "BoringSSL" "$out"
out=$("${PODMAN[@]}" run --rm --entrypoint /usr/libexec/mtlsgw/mtlsgw-pkcs11 "$IMAGE" x 2>&1) || true
expect_contains "the image holds the PKCS#11 signer, and its libraries load" "started by mtlsgw for identities" "$out"
expect_eq "the image runs as a non-root user" "10001:10001" \
    "$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")"
files=$("${PODMAN[@]}" image inspect --format '{{.RootFS.Layers}}' "$IMAGE" | wc -w)
expect_eq "FROM scratch: one layer (the binary and its libraries)" "1" "$files"

make_pki
start_backend
start_redis
start_nginx
# The identity as a mounted folder, readable by the image's user only.
CONF=$WORK/container-etc
mkdir -p "$CONF/ids"
cp "$PKI/ops.crt" "$PKI/ops.key" "$PKI/server-trust.crt" "$CONF/ids/"
GW_PORT=$(free_port)
cat > "$CONF/mtlsgw.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { hosts = ( { name = "orders.dc2.test"; address = "127.0.0.1"; },
                       { name = "redis.dc2.test"; address = "127.0.0.1"; } ); };
identities = ( { name = "ops"; certificate = "ids/ops.crt"; key = "ids/ops.key"; trust = "ids/server-trust.crt"; } );
rules = (
  { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "redis.dc2.test:6379"; identity = "ops"; upstream_port = $NGX_REDIS; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
chown -R 10001:10001 "$CONF"; chmod 700 "$CONF/ids"; chmod 600 "$CONF/ids/ops.key"
CID=$("${PODMAN[@]}" run -d --network host -v "$CONF:/etc/mtlsgw:ro" "$IMAGE")
UNDO=("${PODMAN[*]} rm -f -t 5 $CID" "${UNDO[@]}")
wait_port "$GW_PORT" || true
out=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://orders.dc2.test/from-container)
expect_contains "a container with a mounted identity: curl over mTLS, nginx sees our certificate" \
    "dn=CN=ops,O=mtlsgw-test" "$out"
proxychains_conf "$WORK/pc.conf" "$GW_PORT"
out=$(proxychains4 -q -f "$WORK/pc.conf" redis-cli -h redis.dc2.test -p 6379 PING 2>&1)
expect_eq "... and redis-cli under proxychains4" "PONG" "$out"
logs=$("${PODMAN[@]}" logs "$CID" 2>&1)
expect_contains "the container's log has the access line" "identity=ops" "$logs"
check "no warning about readable keys" bash -c "! grep -q 'readable by' <<< '$logs'"
"${PODMAN[@]}" stop -t 10 "$CID" > /dev/null
expect_contains "SIGTERM (podman stop): drained and stopped" "stopped" "$("${PODMAN[@]}" logs "$CID" 2>&1)"
finish
