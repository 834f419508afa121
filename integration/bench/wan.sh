#!/usr/bin/env bash
# Round trips between data centres: time to the first response byte for new client
# connections through mtlsgw's SOCKS5, CONNECT, http_proxy and forward paths, beside nginx
# stream, HAProxy and nginx http (with and without an upstream keepalive pool), cold and
# warm, on an emulated WAN.
#
#   bash integration/bench/wan.sh                       # RTT 50 and 150 ms, medians of 9
#   WAN_RTTS=50 WAN_RUNS=5 WAN_ONLY=mtlsgw-http,nginx-http-ka bash integration/bench/wan.sh
#
# The WAN: two network namespaces (client side 198.51.100.1, far side 198.51.100.2) joined
# by TUN devices through wandelay.c, which holds every packet RTT/2 each way (this kernel
# has no netem). The far side runs an nginx mTLS terminator (ssl_verify_client on, TLS 1.3,
# session tickets, early data) in front of a backend; the client side runs the proxies and the
# clients. Bounded: each wandelay ends by itself; the namespaces and every process are
# removed at the end. The table goes to stdout (markdown), the raw figures to $WORK.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
bash "$ROOT/integration/deps.sh"
for p in haproxy; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p"; }
done
BUILD=${WAN_BUILD:-$ROOT/build}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$BUILD" -j "$(nproc)" --target mtlsgw mtlsgw_wandelay > /dev/null
MTLSGW=${MTLSGW:-$BUILD/mtlsgw}
WANDELAY=$BUILD/integration/mtlsgw_wandelay
source "$ROOT/integration/lib.sh"
make_pki
cat "$PKI/ops.crt" "$PKI/ops.key" > "$PKI/ops.pem"

NS_A=mgw-wan-a-$$
NS_B=mgw-wan-b-$$
WAN_PID=
wan_cleanup() {
    [ -n "$WAN_PID" ] && kill "$WAN_PID" 2>/dev/null && wait "$WAN_PID" 2>/dev/null
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
}
trap 'wan_cleanup; cleanup' EXIT
ip netns add "$NS_A"
ip netns add "$NS_B"
ip -n "$NS_A" link set lo up
ip -n "$NS_B" link set lo up
# TCP Fast Open (client and server) in both: for the rows with tcp_fastopen = true.
ip netns exec "$NS_A" sysctl -qw net.ipv4.tcp_fastopen=3
ip netns exec "$NS_B" sysctl -qw net.ipv4.tcp_fastopen=3

# The far side: an nginx terminator (the same as the integration tests') and a backend.
FAR=198.51.100.2
FAR_PORT=8443
mkdir -p "$WORK/far"
cat > "$WORK/far/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/far/nginx.pid;
error_log $WORK/far/error.log warn;
events { worker_connections 1024; }
http {
    log_format far '\$connection \$ssl_session_reused \$ssl_protocol "\$ssl_client_s_dn" \$request';
    access_log $WORK/far/access.log far;
$(for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $WORK/far/$t;"; done)
    server { listen 127.0.0.1:8080; access_log off; location / { return 200 "ok\n"; } }
    server {
        listen $FAR_PORT ssl fastopen=256;  # TFO for clients that use it (mtlsgw with tcp_fastopen)
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/orders.chain.crt;
        ssl_certificate_key $PKI/orders.key;
        ssl_client_certificate $PKI/client-ca.crt;
        ssl_verify_client on;
        ssl_session_cache shared:S:1m;
        ssl_session_tickets on;
        ssl_early_data on;  # 0-RTT for clients that offer it (mtlsgw with early_data = true)
        keepalive_requests 10000;
        location / { proxy_pass http://127.0.0.1:8080; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGX
ip netns exec "$NS_B" nginx -p "$WORK/far" -c "$WORK/far/nginx.conf" -g 'daemon off;' > "$WORK/far/out.log" 2>&1 &
PIDS+=($!)

echo "# Round trips on an emulated WAN ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
echo "Time from a new client connection to the first response byte, median of ${WAN_RUNS:-9};"
echo "RTTs are of the link's RTT measured with TCP connects in the same run."
for rtt in ${WAN_RTTS:-50 150}; do
    "$WANDELAY" "$NS_A" "$NS_B" $((rtt / 2)) 1800 > "$WORK/wandelay.out" 2>&1 &
    WAN_PID=$!
    for _ in $(seq 50); do
        grep -q ready "$WORK/wandelay.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q ready "$WORK/wandelay.out" || { cat "$WORK/wandelay.out"; exit 1; }
    ip -n "$NS_A" addr add 198.51.100.1 peer $FAR dev wan0
    ip -n "$NS_B" addr add $FAR peer 198.51.100.1 dev wan0
    ip -n "$NS_A" link set wan0 up
    ip -n "$NS_B" link set wan0 up
    for _ in $(seq 50); do
        ip netns exec "$NS_A" bash -c "exec 3<>/dev/tcp/$FAR/$FAR_PORT" 2>/dev/null && break
        sleep 0.2
    done
    ip netns exec "$NS_A" env MTLSGW="$MTLSGW" PKI="$PKI" WORK="$WORK" FAR=$FAR FAR_PORT=$FAR_PORT RTT_MS="$rtt" \
        python3 "$BENCH_DIR/wan.py" > "$WORK/wan-$rtt.json"
    kill "$WAN_PID" && wait "$WAN_PID" 2>/dev/null || true
    WAN_PID=
    python3 - "$WORK/wan-$rtt.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print()
print("RTT %g ms (measured %.1f ms)" % (d["rtt_nominal_ms"], d["rtt_measured_ms"]))
print()
print("| path | cold: first contact | warm: new client connection |")
print("|---|---:|---:|")
for r in d["rows"]:
    print("| %s | %.0f ms, %.2f RTT | %.0f ms, %.2f RTT |" % (r["path"], r["cold_ms"], r["cold_rtt"], r["warm_ms"], r["warm_rtt"]))
PY
done
