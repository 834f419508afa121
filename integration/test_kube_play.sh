#!/usr/bin/env bash
# The Kubernetes examples, run: `podman kube play` plays the DaemonSet's pod template (as
# a Pod: podman ignores kind DaemonSet) with the project's image, the config and trust
# ConfigMaps and the identity Secrets, and the consumer pods of consumer.yaml with an
# image of curl and redis-cli. Each consumer reaches the gateway only through the socket
# folder mounted into it, and gets its own identity from that (nginx says which); a pod
# that mounts a folder without its group cannot connect. What the test changes in the
# manifests: the remote side's addresses and ports (this host's nginx and redis), the
# host folders (under the test's work folder), the consumers' commands and image.
source "$(dirname "$0")/lib.sh"

if ldd "$MTLSGW" | grep -q libasan; then
    echo "SKIP: the image is made from the normal build, not this ASan one ($MTLSGW)" >&2
    exit 77
fi
if [ "$(id -u)" != 0 ]; then
    fail "podman kube play with host folders and a DaemonSet's root start: this test runs as root"
    finish
    exit 1
fi
printf '[containers]\ndefault_ulimits = []\n' > "$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --storage-driver vfs)
IMAGE=$(bash "$ROOT/etc/container/build.sh" "$(dirname "$MTLSGW")")

# An image with the consumers' clients: curl and redis-cli with the libraries they load.
CTX=$WORK/client-image
mkdir -p "$CTX/root/usr/bin" "$CTX/root/etc" "$CTX/root/tmp"
cp /usr/bin/curl /usr/bin/redis-cli "$CTX/root/usr/bin/"
for lib in $( (ldd /usr/bin/curl; ldd /usr/bin/redis-cli) | awk '/=>/ {print $3} /ld-linux/ && !/=>/ {print $1}' | sort -u); do
    mkdir -p "$CTX/root$(dirname "$lib")"
    cp -L "$lib" "$CTX/root$lib"
done
printf 'app:x:30001:30001::/nonexistent:/usr/sbin/nologin\n' > "$CTX/root/etc/passwd"
printf 'FROM scratch\nCOPY root/ /\nUSER 30001:30001\n' > "$CTX/Containerfile"
CLIENT=localhost/mtlsgw-test-client:latest
"${PODMAN[@]}" build -q -t "$CLIENT" "$CTX" > /dev/null
UNDO+=("${PODMAN[*]} rmi -f $IMAGE $CLIENT")
check "images: $IMAGE and the consumers' $CLIENT" "${PODMAN[@]}" image exists "$CLIENT"

make_pki
make_client_cert orders-svc  # the orders consumer's identity ("orders" is the server's)
start_backend
start_redis
start_nginx
HOSTRUN=$WORK/hostrun
mkdir -p "$HOSTRUN"
NODE_PORT=$(free_port) ADMIN_PORT=$(free_port) SIDE_PORT=$(free_port) SIDE_ADMIN=$(free_port)

# Secrets as cert-manager writes them (tls.crt, tls.key), in podman's secret store: a
# Secret manifest (podman 4.3 reads its data as written, not base64).
declare -A CERT=([orders]=orders-svc [billing]=billing)
for who in orders billing; do
    /usr/bin/python3 - "$who" "$PKI/${CERT[$who]}" > "$WORK/secret-$who.yaml" <<'PY'
import sys, yaml
who, base = sys.argv[1], sys.argv[2]
yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mtlsgw-" + who},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": open(base + ".crt").read(), "tls.key": open(base + ".key").read()}}, sys.stdout)
PY
    "${PODMAN[@]}" secret rm "mtlsgw-$who" > /dev/null 2>&1 || true
    "${PODMAN[@]}" secret create "mtlsgw-$who" "$WORK/secret-$who.yaml" > /dev/null
    UNDO+=("${PODMAN[*]} secret rm mtlsgw-$who")
done

# The manifests, with this host's remote side.
/usr/bin/python3 - "$ROOT/etc/kubernetes" "$WORK" "$PKI" "$HOSTRUN" "$NGX_HTTPS" "$NGX_REDIS" "$NODE_PORT" \
    "$ADMIN_PORT" "$CLIENT" "$SIDE_PORT" "$SIDE_ADMIN" <<'PY'
import copy, os, sys, yaml
k8s, work, pki, hostrun, https, redis, node, admin, client, side, sadmin = sys.argv[1:12]
def load(f):
    with open(os.path.join(k8s, f)) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]
cm = [d for d in load("configmap.yaml") if d["metadata"]["name"] == "mtlsgw-config"][0]
conf = cm["data"]["mtlsgw.conf"]
conf = conf.replace("upstream_port = 443", "upstream_port = %s" % https)
conf = conf.replace('listener = "orders-redis"; identity = "orders"; }',
                    'listener = "orders-redis"; identity = "orders"; upstream_port = %s; }' % redis)
conf = conf.replace("127.0.0.1:1080", "127.0.0.1:%s" % node).replace("127.0.0.1:9901", "127.0.0.1:%s" % admin)
conf += ('resolver = { hosts = ( { name = "orders.dc2.test"; address = "127.0.0.1"; },\n'
         '                       { name = "redis.dc2.test"; address = "127.0.0.1"; } ); };\n'
         'deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # the test\'s remote side is this host\n')
cm["data"]["mtlsgw.conf"] = conf
# The sidecar's config: the same remote side; its pod is played on the host's network
# (this host's nginx is the remote side), so its ports are free ones.
scm = [d for d in load("configmap.yaml") if d["metadata"]["name"] == "mtlsgw-sidecar-config"][0]
sconf = scm["data"]["mtlsgw.conf"]
sconf = sconf.replace("upstream_port = 443", "upstream_port = %s" % https)
sconf = sconf.replace("127.0.0.1:1080", "127.0.0.1:%s" % side).replace("0.0.0.0:9901", "0.0.0.0:%s" % sadmin)
sconf += ('resolver = { hosts = ( { name = "orders.dc2.test"; address = "127.0.0.1"; } ); };\n'
          'deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # the test\'s remote side is this host\n')
scm["data"]["mtlsgw.conf"] = sconf
scm["metadata"].pop("namespace", None)
with open(os.path.join(work, "cm-sidecar.yaml"), "w") as out:
    yaml.safe_dump(scm, out)
sc = load("sidecar.yaml")[0]
sc["metadata"].pop("namespace", None)
s = sc["spec"]
s["restartPolicy"] = "Never"
for c in s["containers"]:
    c.pop("livenessProbe", None); c.pop("readinessProbe", None)
    if c["name"] == "app":  # the app changes nothing but http_proxy: curl once, then stop
        c["image"] = client
        c["command"] = ["curl", "-s", "-m", "10", "--retry", "20",
                        "--retry-connrefused", "--retry-delay", "1", "http://orders.dc2.test/sidecar-app"]
        c["env"] = [{"name": "http_proxy", "value": "http://127.0.0.1:%s" % side}]
with open(os.path.join(work, "pod-sidecar.yaml"), "w") as out:
    yaml.safe_dump(sc, out)
trust = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mtlsgw-trust"},
         "data": {"ca.crt": open(os.path.join(pki, "server-trust.crt")).read()}}
for name, doc in (("cm-config.yaml", cm), ("cm-trust.yaml", trust)):
    with open(os.path.join(work, name), "w") as out:
        yaml.safe_dump(doc, out)
def local(spec):
    for v in spec["volumes"]:
        if "hostPath" in v:
            v["hostPath"]["path"] = v["hostPath"]["path"].replace("/run/mtlsgw", hostrun)
ds = load("daemonset.yaml")[0]
spec = copy.deepcopy(ds["spec"]["template"]["spec"])
local(spec)
for c in spec["containers"]:  # podman runs httpGet probes with a curl the image has not
    c.pop("livenessProbe", None); c.pop("readinessProbe", None)
spec["restartPolicy"] = "Never"
with open(os.path.join(work, "gateway-pod.yaml"), "w") as out:
    yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mtlsgw-node"}, "spec": spec}, out)
pods = load("consumer.yaml")
# An intruder: the orders folder mounted, but not the orders group.
intruder = copy.deepcopy(pods[0])
intruder["metadata"]["name"] = "intruder"
intruder["spec"]["securityContext"]["supplementalGroups"] = [29999]
for p in pods + [intruder]:
    p["metadata"].pop("namespace", None)
    s = p["spec"]
    local(s)
    s["restartPolicy"] = "Never"
    app = s["containers"][0]
    app["image"] = client
    app["command"] = ["curl", "-s", "-m", "10", "--proxy", "socks5h://localhost/run/mtlsgw/proxy.sock",
                      "http://orders.dc2.test/%s" % p["metadata"]["name"]]
    if p["metadata"]["name"] == "orders-app":
        redis = copy.deepcopy(app)
        redis["name"] = "redis"
        redis["command"] = ["redis-cli", "-s", "/run/mtlsgw/redis.sock", "PING"]
        s["containers"].append(redis)
    with open(os.path.join(work, "pod-%s.yaml" % p["metadata"]["name"]), "w") as out:
        yaml.safe_dump(p, out)
PY

play() {  # play FILE [ARGS...]: podman kube play, undone at the end
    # A run killed before its undo leaves its pods: take them down first (ours by name).
    "${PODMAN[@]}" kube down "$1" > /dev/null 2>&1 || true
    "${PODMAN[@]}" kube play --replace "${@:2}" "$1" > "$WORK/play-$(basename "$1").out" 2>&1 || { cat "$WORK/play-$(basename "$1").out"; return 1; }
    UNDO=("${PODMAN[*]} kube down $1" "${UNDO[@]}")
    # kube down (podman 4.3) keeps the volumes play made for ConfigMaps and Secrets.
    local v
    for v in $(/usr/bin/python3 -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    for vol in ((d or {}).get("spec") or {}).get("volumes") or []:
        ref = vol.get("configMap") or vol.get("secret") or {}
        name = ref.get("name") or ref.get("secretName")
        if name: print(name)' "$1"); do
        UNDO+=("${PODMAN[*]} volume rm -f $v")
    done
}
check "the DaemonSet's pod plays (init container check, then the gateway)" \
    play "$WORK/gateway-pod.yaml" --configmap "$WORK/cm-config.yaml" --configmap "$WORK/cm-trust.yaml"
for _ in $(seq 100); do [ -S "$HOSTRUN/billing/proxy.sock" ] && break; sleep 0.1; done
"${PODMAN[@]}" logs mtlsgw-node-mtlsgw > "$WORK/gateway-pod.log" 2>&1 || true
check "the gateway made each consumer's socket in its own host folder" \
    test -S "$HOSTRUN/orders/proxy.sock" -a -S "$HOSTRUN/orders/redis.sock" -a -S "$HOSTRUN/billing/proxy.sock"
expect_eq "orders' socket: mode 660, the orders group" "660 20001" "$(stat -c '%a %g' "$HOSTRUN/orders/proxy.sock")"
expect_eq "billing's socket: mode 660, the billing group" "660 20002" "$(stat -c '%a %g' "$HOSTRUN/billing/proxy.sock")"
expect_eq "the consumers' folders stay root's: no pod can replace a socket" "0 755" "$(stat -c '%u %a' "$HOSTRUN/orders")"
pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' mtlsgw-node-mtlsgw 2>/dev/null || echo 0)
check "the gateway runs as mtlsgw (10001) once the sockets are made" \
    bash -c "[ \"\$(awk '/^Uid:/ {print \$2}' /proc/$pid/status 2>/dev/null)\" = 10001 ]"

for pod in orders-app billing-app intruder; do
    play "$WORK/pod-$pod.yaml" || fail "podman kube play $pod"
done
for _ in $(seq 100); do
    running=$("${PODMAN[@]}" ps --filter status=running --format '{{.Names}}' | grep -cE '^(orders-app|billing-app|intruder)-' || true)
    [ "$running" = 0 ] && break
    sleep 0.2
done
logs() { "${PODMAN[@]}" logs "$1" 2>&1; }
expect_contains "orders' pod, through its socket: nginx saw the orders identity" "dn=CN=orders-svc,O=mtlsgw-test" "$(logs orders-app-app)"
expect_eq "orders' pod: redis-cli -s through its forward socket" "PONG" "$(logs orders-app-redis)"
expect_contains "billing's pod, through its socket: nginx saw the billing identity" "dn=CN=billing,O=mtlsgw-test" "$(logs billing-app-app)"
check "a pod with orders' folder but not its group cannot connect" bash -c "! grep -q 'dn=' <<< \"\$(${PODMAN[*]} logs intruder-app 2>&1)\""
"${PODMAN[@]}" logs mtlsgw-node-mtlsgw > "$WORK/gateway-pod.log" 2>&1 || true
expect_contains "the gateway's access log: orders' client on listener orders" '"listener":"orders"' "$(grep -- '/orders-app' "$WORK/gateway-pod.log" || grep '"listener":"orders"' "$WORK/gateway-pod.log")"

# The sidecar (sidecar.yaml): the app and the gateway in one pod, sharing its network; the
# app changes nothing but http_proxy. Played on the host's network: the remote side is
# this host's nginx.
check "the sidecar pod plays (init container check, then the app and the gateway)" \
    play "$WORK/pod-sidecar.yaml" --network host --configmap "$WORK/cm-sidecar.yaml" --configmap "$WORK/cm-trust.yaml"
for _ in $(seq 150); do
    "${PODMAN[@]}" ps --filter status=running --format '{{.Names}}' | grep -q '^orders-client-app$' || break
    sleep 0.2
done
expect_contains "the sidecar's app, with http_proxy only: nginx saw the orders identity" \
    "dn=CN=orders-svc,O=mtlsgw-test" "$(logs orders-client-app)"
expect_contains "the sidecar gateway logged the app's request" '"dest":"orders.dc2.test:80"' "$(logs orders-client-mtlsgw)"
if [ "$FAILS" -gt 0 ]; then  # what CI needs to say why
    echo "--- podman ps -a"; "${PODMAN[@]}" ps -a 2>&1 | tail -20
    for f in "$WORK"/play-*.out; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    for c in mtlsgw-node-mtlsgw orders-client-mtlsgw orders-app-app orders-app-redis billing-app-app; do
        echo "--- logs $c"; logs "$c" | tail -15
    done
fi
finish
