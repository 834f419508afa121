#!/usr/bin/env bash
# Correctness at scale: 2,000 concurrent SOCKS5 tunnels through 2 workers, each doing two
# keep-alive HTTP exchanges over mTLS with nginx while all of them are open, then held
# idle. Every exchange must succeed, the gateway must report 2,000 active tunnels, both
# workers must have carried them, and everything must be given back once they close.
# (How fast is the benchmark's business, not this test's.)
source "$(dirname "$0")/lib.sh"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # two descriptors per tunnel, and then some
LOADGEN=${LOADGEN:-$(dirname "$MTLSGW")/integration/mtlsgw_loadgen}
N=${SCALE_TUNNELS:-2000}

make_pki
start_backend
start_redis
NGX_WORKER_CONNECTIONS=$((N * 2 + 100)) start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1
GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; protocols = ["socks5"]; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; } );
rules = ( { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
log = { access = "$WORK/access.log"; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
worker_ticks() {  # CPU ticks of the worker thread named $1
    local t
    for t in /proc/$GW_PID/task/*; do
        if [ "$(cat "$t/comm")" = "$1" ]; then awk '{print $14 + $15}' "$t/stat"; fi
    done
}
check "worker threads are named mtlsgw-w0 and mtlsgw-w1" bash -c "cat /proc/$GW_PID/task/*/comm | grep -qx mtlsgw-w0 && cat /proc/$GW_PID/task/*/comm | grep -qx mtlsgw-w1"
BASE_FDS=$(ls /proc/$GW_PID/fd | wc -l)
w0=$(worker_ticks mtlsgw-w0); w1=$(worker_ticks mtlsgw-w1)

mkfifo "$WORK/hold.in"
"$LOADGEN" hold "127.0.0.1:$GW_PORT" "$N" --socks5 orders.dc2.test:80 --path /fixed < "$WORK/hold.in" > "$WORK/hold.out" 2>&1 &
LG_PID=$!; PIDS+=($LG_PID)
exec 9> "$WORK/hold.in"
for _ in $(seq 1200); do grep -q '^exchanged' "$WORK/hold.out" && break; kill -0 $LG_PID 2>/dev/null || break; sleep 0.1; done
out=$(cat "$WORK/hold.out")
expect_contains "$N tunnels established, one exchange each, no error" "established $N errors 0" "$out"
expect_contains "a second exchange on every tunnel while all $N are open, no error" "exchanged $N errors 0" "$out"
expect_eq "the gateway reports $N active tunnels" "$N" "$(metric mtlsgw_tunnels_active)"
fds=$(ls /proc/$GW_PID/fd | wc -l)
check "two descriptors per tunnel ($fds open for $N tunnels)" [ "$fds" -ge $((BASE_FDS + 2 * N)) ]
d0=$(( $(worker_ticks mtlsgw-w0) - w0 )); d1=$(( $(worker_ticks mtlsgw-w1) - w1 ))
echo "# CPU ticks: worker 0 used $d0, worker 1 used $d1"
check "both workers carried tunnels (CPU ticks $d0 and $d1)" bash -c "[ $d0 -gt 0 ] && [ $d1 -gt 0 ]"
sleep 1
exec 9>&-   # loadgen checks every tunnel is still open and quiet, then closes them all
wait "$LG_PID" || true
expect_contains "all $N idle tunnels were still open after the wait" "still_open $N" "$(cat "$WORK/hold.out")"
reqs=$(grep -c '"GET /fixed HTTP/1.1" 200' "$WORK/nginx/logs/access.log" || true)
expect_eq "nginx answered every exchange over mTLS" "$((2 * N))" "$reqs"
for _ in $(seq 100); do [ "$(metric mtlsgw_tunnels_active)" = 0 ] && break; sleep 0.1; done
expect_eq "all tunnels closed afterwards" "0" "$(metric mtlsgw_tunnels_active)"
for _ in $(seq 50); do [ "$(ls /proc/$GW_PID/fd | wc -l)" -le "$BASE_FDS" ] && break; sleep 0.1; done
expect_eq "descriptors back to the baseline" "$BASE_FDS" "$(ls /proc/$GW_PID/fd | wc -l)"
lines=$(grep -c 'result=ok' "$WORK/access.log" || true)
expect_eq "one access-log line per tunnel, each result=ok" "$N" "$lines"
q=$(grep -c 'query\[A\] orders.dc2.test' "$WORK/dnsmasq.log" || true)
check "lookups of one name in flight are shared: $q DNS queries for $N tunnels" [ "$q" -lt 100 ]
check "gateway alive" gw_alive
finish
