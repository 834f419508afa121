#!/usr/bin/env bash
# The control plane holds up: resolver settings change on SIGHUP (and what a reload
# cannot change is named), the admin endpoint answers /healthz while a client trickles a
# byte a second, caps its connections, applies admin.allow, and the TLS session cache stays
# within limits.session_cache_size under 5,000 distinct server names and forgets replaced
# identities on reload.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
start_dnsmasq --address=/dc2.test/127.0.0.1

GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
write_conf() {  # write_conf SVC-ADDRESS WORKERS
    cat > "$WORK/gw.conf" <<CONF
workers = $2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 1000; tries = 1;
             hosts = ( { name = "svc.dc2.test"; address = "$1"; } ); };
limits = { session_cache_size = 100; };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
                 tls_max = "1.2"; } );
rules = (
  { match = "svc.dc2.test"; action = "direct"; },
  { match = "*.dc2.test:443"; identity = "ops"; upstream_port = $NGX_TLS12; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
}
write_conf 127.0.0.3 1
start_gw "$WORK/gw.conf"

# ---- 6. resolver settings on reload ----
code() { curl -s -m 5 -o /dev/null -w '%{http_connect}' -p -x "http://127.0.0.1:$GW_PORT" "http://svc.dc2.test:$BACKEND_PORT/" || true; }
expect_eq "before the reload: svc.dc2.test is 127.0.0.3 (nothing there: 502)" "502" "$(code)"
write_conf 127.0.0.1 3
kill -HUP "$GW_PID"
for _ in $(seq 50); do grep -q "reloaded" "$WORK/gw.log" && break; sleep 0.1; done
sleep 0.3
expect_eq "after SIGHUP: resolver.hosts changed, svc.dc2.test is 127.0.0.1 (200)" "200" "$(code)"
expect_contains "reload: workers named as needing a restart" "reload: workers changed from 1 to 3: needs a restart (still 1)" \
    "$(cat "$WORK/gw.log")"

# ---- 7. the admin endpoint ----
# A client that sends a byte a second holds only its own slot, for 5 s at most.
python3 - "$ADMIN_PORT" "$WORK/slow.out" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
start = time.time(); result = "kept open"
try:
    for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":
        s.sendall(bytes([ch])); time.sleep(1)
except OSError:
    result = "cut after %.1f s" % (time.time() - start)
open(sys.argv[2], "w").write(result + "\n")
PY
SLOW_PID=$!; PIDS+=($SLOW_PID)
sleep 0.5
fast=0
for i in 1 2 3 4; do
    c=$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/healthz" || true)
    [ "$c" = 200 ] && fast=$((fast + 1))
    sleep 0.5
done
expect_eq "/healthz answers within 1 s, 4 of 4 times, while a client trickles a byte a second" "4" "$fast"
wait "$SLOW_PID" 2>/dev/null || true
expect_contains "the trickling client is cut at the whole-request deadline" "cut after" "$(cat "$WORK/slow.out")"
# One source (here root, a local user found like a caller) holds at most 8 connections
# that wait for a request: each new one takes the slot of its own oldest idle one, so a
# client cannot starve the endpoint (test_fences.sh: another user's probes).
out=$(python3 - "$ADMIN_PORT" <<'PY'
import socket, sys, time
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(40)]
time.sleep(0.5)
closed = 0
for c in conns:
    c.setblocking(False)
    try:
        closed += c.recv(1) == b""
    except BlockingIOError:
        pass
print("closed=%d" % closed)
PY
)
expect_eq "40 idle admin connections from one user: its 32 oldest closed, 8 kept" "closed=32" "$out"
sleep 2.5   # the request-head deadline (2 s) passes; the endpoint is free again
expect_eq "after the idle ones timed out, /healthz answers" "200" \
    "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/healthz" || true)"

# ---- 12. the session cache ----
python3 - "$GW_PORT" 5000 > "$WORK/many.out" <<'PY'
import socket, sys, threading
port, total = int(sys.argv[1]), int(sys.argv[2])
ok = [0]; lock = threading.Lock(); nxt = [0]
def worker():
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= total:
            return
        name = ("n%d.dc2.test" % i).encode()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(b"\x05\x01\x00"); s.recv(2)
            s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + (443).to_bytes(2, "big"))
            r = s.recv(10)
            if len(r) >= 2 and r[1] == 0:
                with lock:
                    ok[0] += 1
            s.close()
        except OSError:
            pass
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ok=%d" % ok[0])
PY
expect_eq "5,000 tunnels to 5,000 distinct server names" "ok=5000" "$(cat "$WORK/many.out")"
m=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
keys=$(awk '/^mtlsgw_session_cache_keys /{print $2}' <<< "$m")
sessions=$(awk '/^mtlsgw_session_cache_sessions /{print $2}' <<< "$m")
check "session cache: at most 100 sessions after 5,000 names (got $sessions)" test "${sessions:-999}" -le 100 -a "${sessions:-0}" -ge 50
check "session cache: at most 100 keys (got $keys)" test "${keys:-999}" -le 100
# The most recent names are still cached, and resume.
out=$(curl -s -m 5 --socks5-hostname "127.0.0.1:$GW_PORT" http://n4999.dc2.test:443/ || true)
expect_contains "a recently used key resumes" "reused=r" "$out"
kill -HUP "$GW_PID"
sleep 1
m=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
expect_eq "after a reload, the replaced identity's sessions are gone" "0" "$(awk '/^mtlsgw_session_cache_keys /{print $2}' <<< "$m")"

check "gateway still running" gw_alive
stop_gateways; GW_PIDS=()

# admin.allow: a client outside it gets no answer at all.
ADMIN2_PORT=$(free_port); GW2_PORT=$(free_port)
cat > "$WORK/gw2.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN2_PORT"; allow = [ "10.0.0.0/8" ]; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
"$MTLSGW" run -c "$WORK/gw2.conf" >> "$WORK/gw2.log" 2>&1 &
GW2_PID=$!; PIDS+=($GW2_PID); GW_PIDS+=($GW2_PID)
wait_port "$GW2_PORT" $GW2_PID
c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN2_PORT/metrics" || true)
expect_eq "admin.allow without loopback: a loopback client gets no answer" "000" "$c"
finish
