#!/usr/bin/env bash
# The forward proxy for http_proxy clients: plain http:// requests from curl, wget and
# Python come out as mutual TLS to real nginx (ssl_verify_client on) in front of an HTTP
# backend. Framing both ways, keep-alive on both sides, per-host identities, 64 MiB each
# way, smuggling and malformed input refused before anything reaches the backend, and a
# forward listener carrying plain redis-cli.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1 billing.dc2.test=127.0.0.1 redis.dc2.test=127.0.0.1 \
    raw.dc1.test=127.0.0.1 secret.dc2.test=127.0.0.1 rogue.dc2.test=127.0.0.1

# A plain HTTP server with misbehaving answers, reached through a `direct` rule:
#   /close     a close-delimited body (no length)          -> delivered whole, then EOF
#   /short     Content-Length 100, 50 bytes, then a close   -> the client sees an error
#   /badlen    two different Content-Lengths                -> 502
#   /garbage   not HTTP at all                              -> 502
#   /chunked   a chunked body                               -> an HTTP/1.0 client gets it unchunked
RAW_PORT=$(free_port)
python3 - "$RAW_PORT" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d:
            return c.close()
        data += d
    path = data.split(b" ")[1]
    if path == b"/close":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"c" * 100000 + b"\nend-of-close\n")
    elif path == b"/short":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"s" * 50)
    elif path == b"/chunked":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
    elif path == b"/badlen":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
    else:
        c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$RAW_PORT" $!

GW_PORT=$(free_port); FWD_PORT=$(free_port); ROGUE_FWD=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = (
  { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
  { name = "redis-dc2"; address = "127.0.0.1:$FWD_PORT"; forward = "redis.dc2.test:6379"; },
  { name = "rogue-fwd"; address = "127.0.0.1:$ROGUE_FWD"; forward = "rogue.dc2.test:6379"; }
);
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; },
  { name = "intruder"; certificate = "$PKI/intruder.crt"; key = "$PKI/intruder.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  # http_proxy requests to port 80 are upgraded to mTLS on nginx's port.
  { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "billing.dc2.test:80"; identity = "billing"; upstream_port = $NGX_HTTPS; },
  { match = "rogue.dc2.test:80"; identity = "intruder"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "redis.dc2.test:6379"; identity = "ops"; upstream_port = $NGX_REDIS; },
  { match = "rogue.dc2.test:6379"; identity = "intruder"; upstream = "127.0.0.1:$NGX_REDIS"; server_name = "redis.dc2.test"; },
  { match = "raw.dc1.test:80"; action = "direct"; upstream_port = $RAW_PORT; },
  { match = "secret.dc2.test"; action = "deny"; }
);
limits = { header_max = 4096; drain_timeout_s = 60; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"
wait_port "$FWD_PORT" "$GW_PID"
PROXY="http://127.0.0.1:$GW_PORT"
hc() { http_proxy=$PROXY curl -s -m 30 "$@"; }

# ---- clients with http_proxy ----
out=$(hc http://orders.dc2.test/greet/danish)
expect_contains "curl GET: answered by the backend behind nginx" "path=/greet/danish" "$out"
expect_contains "curl GET: nginx verified our certificate (identity ops)" "dn=CN=ops" "$out"
expect_contains "curl GET: Host is the URI's authority" "host=orders.dc2.test " "$out"

head -c 300000 /dev/urandom > "$WORK/small.bin"
want=$(sha256sum "$WORK/small.bin" | cut -d' ' -f1)
out=$(hc --data-binary @"$WORK/small.bin" http://orders.dc2.test/upload)
expect_contains "curl POST with a body (Content-Length)" "sha256=$want bytes=300000" "$out"
out=$(hc -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/small.bin" http://orders.dc2.test/upload)
expect_contains "curl chunked upload: body intact" "sha256=$want bytes=300000" "$out"
expect_contains "curl chunked upload: still chunked at the backend" "te=chunked" "$out"
out=$(hc -H 'Expect: 100-continue' --data-binary @"$WORK/small.bin" http://orders.dc2.test/upload)
expect_contains "curl POST with Expect: 100-continue" "sha256=$want" "$out"

out=$(hc -I http://orders.dc2.test/head)
expect_contains "curl -I (HEAD): status line" "HTTP/1.1 200" "$out"
expect_contains "curl -I (HEAD): Content-Length of the GET kept" "Content-Length:" "$out"

out=$(hc -w 'connects=%{num_connects}\n' http://orders.dc2.test/one http://orders.dc2.test/two)
expect_contains "two URLs in one invocation: first" "path=/one" "$out"
expect_contains "two URLs in one invocation: second" "path=/two" "$out"
expect_eq "two URLs: one client connection (curl connected once)" "connects=1 connects=0" \
    "$(echo "$out" | grep -o 'connects=[0-9]*' | tr '\n' ' ' | sed 's/ $//')"
c1=$(echo "$out" | grep 'path=/one' | sed 's/.*conn=\([0-9]*\).*/\1/')
c2=$(echo "$out" | grep 'path=/two' | sed 's/.*conn=\([0-9]*\).*/\1/')
expect_eq "two URLs: one upstream connection (same nginx \$connection)" "$c1" "$c2"

out=$(hc http://orders.dc2.test/as-ops http://billing.dc2.test/as-billing http://orders.dc2.test/ops-again)
expect_contains "two hosts in one invocation: orders as ops" "dn=CN=ops," "$(echo "$out" | grep path=/as-ops)"
expect_contains "two hosts in one invocation: billing as billing" "dn=CN=billing," "$(echo "$out" | grep path=/as-billing)"
expect_contains "two hosts: back to orders as ops" "dn=CN=ops," "$(echo "$out" | grep path=/ops-again)"

out=$(http_proxy=$PROXY wget -q -O - http://orders.dc2.test/by-wget 2>&1)
expect_contains "wget with http_proxy" "path=/by-wget" "$out"
out=$(python3 -c "
import urllib.request
o = urllib.request.build_opener(urllib.request.ProxyHandler({'http': '$PROXY'}))
print(o.open('http://orders.dc2.test/by-urllib', timeout=20).read().decode())
print(o.open(urllib.request.Request('http://orders.dc2.test/post-urllib', data=b'x' * 1000), timeout=20).read().decode())")
expect_contains "Python urllib with a ProxyHandler: GET" "path=/by-urllib" "$out"
expect_contains "Python urllib with a ProxyHandler: POST" "bytes=1000" "$out"

# ---- 64 MiB each way ----
N=$((64 * 1024 * 1024))
want=$(python3 -c "
import hashlib
c = bytes(range(256)) * 256; h = hashlib.sha256(); n = $N
while n > 0:
    k = min(n, len(c)); h.update(c[:k]); n -= k
print(h.hexdigest())")
got=$(hc "http://orders.dc2.test/bytes/$N" | sha256sum | cut -d' ' -f1)
expect_eq "64 MiB download: SHA-256 matches" "$want" "$got"
head -c "$N" /dev/urandom > "$WORK/big.bin"
want=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
out=$(hc -H 'Expect:' --data-binary @"$WORK/big.bin" http://orders.dc2.test/big-upload)
expect_contains "64 MiB upload: SHA-256 matches" "sha256=$want bytes=$N" "$out"
rm -f "$WORK/big.bin"

# ---- keep-alive rules, raw ----
raw() { timeout 20 python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r'; }
out=$(printf 'GET http://orders.dc2.test/k1 HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\nGET http://orders.dc2.test/k2 HTTP/1.1\r\nHost: orders.dc2.test\r\nConnection: close\r\n\r\nGET http://orders.dc2.test/k3 HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\n' | raw)
expect_contains "pipelined requests: first answered" "path=/k1" "$out"
expect_contains "pipelined requests: second answered" "path=/k2" "$out"
expect_contains "Connection: close from the client is answered with Connection: close" "Connection: close" "$out"
check "Connection: close from the client: nothing after it is served" bash -c "! grep -q path=/k3 <<< '$out'"
out=$(printf 'GET http://orders.dc2.test/h10 HTTP/1.0\r\n\r\n' | raw)
expect_contains "HTTP/1.0 request: answered in HTTP/1.0" "HTTP/1.0 200" "$out"
expect_contains "HTTP/1.0 request without keep-alive: Connection: close" "Connection: close" "$out"
out=$(printf 'GET http://orders.dc2.test HTTP/1.1\r\nHost: orders.dc2.test\r\nProxy-Connection: close\r\nProxy-Authorization: Basic c2VjcmV0\r\nX-Keep: yes\r\nConnection: X-Drop\r\nX-Drop: gone\r\n\r\n' | raw)
expect_contains "URI without a path is sent as /" "path=/ " "$out"
check "Proxy-Authorization never reaches nginx's log of headers" bash -c "! grep -q c2VjcmV0 '$WORK/backend.log' '$WORK/nginx/logs/access.log'"
# httpoxy: a bare Proxy header, and every other Proxy-* header, stop at the gateway (nginx
# would pass them on to the backend).
out=$(printf 'GET http://orders.dc2.test/headers HTTP/1.1\r\nHost: orders.dc2.test\r\nProxy: http://evil.example:8080\r\nProxy-Status: forged\r\nProxy-X-Token: t0k3n\r\nX-Keep: yes\r\nConnection: close\r\n\r\n' | raw)
expect_contains "httpoxy: the request reached the backend" "headers=" "$out"
expect_contains "httpoxy: other headers still pass" "x-keep" "$out"
check "httpoxy: no Proxy or Proxy-* header reached the backend" bash -c "! grep -qE 'headers=.*(^|,)proxy(,|-|$)' <<< '$out'"

# ---- responses that end badly ----
out=$(hc http://raw.dc1.test/close)
expect_contains "close-delimited response delivered whole" "end-of-close" "$out"
expect_eq "close-delimited response: all bytes" "100014" "$(hc http://raw.dc1.test/close | wc -c)"
# An HTTP/1.0 client cannot read chunked framing: it gets the data, ended by the close.
out=$(printf 'GET http://raw.dc1.test/chunked HTTP/1.0\r\n\r\n' | raw)
expect_contains "HTTP/1.0 client, chunked response: an HTTP/1.0 status line" "HTTP/1.0 200 OK" "$out"
check "HTTP/1.0 client, chunked response: no Transfer-Encoding" bash -c "! grep -qi '^transfer-encoding' <<< '$out'"
expect_contains "HTTP/1.0 client, chunked response: Connection: close" "Connection: close" "$out"
expect_eq "HTTP/1.0 client, chunked response: the body is the data, unchunked" "hello, world" "$(sed '1,/^$/d' <<< "$out")"
expect_eq "control: an HTTP/1.1 client (curl) still reads it chunked" "hello, world" "$(hc http://raw.dc1.test/chunked)"
set +e
hc -o /dev/null http://raw.dc1.test/short; rc=$?
set -e
check "response cut short by upstream: curl sees an error, not a complete body (exit $rc)" [ "$rc" -ne 0 ]
status_of() {  # status_of RAW-REQUEST -> "CODE|proxy-status error"
    local h
    h=$(printf "$1" | raw)
    echo "$(echo "$h" | head -1 | cut -d' ' -f2)|$(echo "$h" | grep -i '^Proxy-Status' | sed 's/.*error=\([a-z_]*\).*/\1/')"
}
expect_eq "two Content-Lengths from upstream: 502" "502|http_protocol_error" \
    "$(status_of 'GET http://raw.dc1.test/badlen HTTP/1.1\r\nHost: raw.dc1.test\r\n\r\n')"
expect_eq "not HTTP from upstream: 502" "502|http_protocol_error" \
    "$(status_of 'GET http://raw.dc1.test/garbage HTTP/1.1\r\nHost: raw.dc1.test\r\n\r\n')"
expect_eq "deny rule: 403 http_request_denied" "403|http_request_denied" \
    "$(status_of 'GET http://secret.dc2.test/ HTTP/1.1\r\nHost: secret.dc2.test\r\n\r\n')"
expect_eq "no rule: 403" "403|http_request_denied" \
    "$(status_of 'GET http://nobody.example/ HTTP/1.1\r\nHost: nobody.example\r\n\r\n')"
out=$(printf 'GET http://rogue.dc2.test/ HTTP/1.1\r\nHost: rogue.dc2.test\r\n\r\n' | raw)
expect_contains "upstream rejects our certificate: nginx's own 400 reaches the client" "400 The SSL certificate error" "$out"

# ---- smuggling and malformed requests: refused, and never at the backend ----
before=$(wc -l < "$WORK/backend.log")
expect_eq "Content-Length with Transfer-Encoding: 400" "400|http_request_error" \
    "$(status_of 'POST http://orders.dc2.test/smuggle-clte HTTP/1.1\r\nHost: orders.dc2.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
expect_eq "two Content-Lengths: 400" "400|http_request_error" \
    "$(status_of 'POST http://orders.dc2.test/smuggle-clcl HTTP/1.1\r\nHost: orders.dc2.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde')"
expect_eq "Content-Length not a number: 400" "400|http_request_error" \
    "$(status_of 'POST http://orders.dc2.test/smuggle-badcl HTTP/1.1\r\nHost: orders.dc2.test\r\nContent-Length: +4\r\n\r\nabcd')"
expect_eq "bad chunk size: 400" "400|http_request_error" \
    "$(status_of 'POST http://orders.dc2.test/smuggle-chunk HTTP/1.1\r\nHost: orders.dc2.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n')"
expect_eq "Transfer-Encoding not ending in chunked: 400" "400|http_request_error" \
    "$(status_of 'POST http://orders.dc2.test/smuggle-te HTTP/1.1\r\nHost: orders.dc2.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n')"
expect_eq "header too large: 431" "431|http_request_error" \
    "$(status_of "GET http://orders.dc2.test/smuggle-big HTTP/1.1\r\nHost: orders.dc2.test\r\nX-Big: $(head -c 5000 /dev/zero | tr '\0' a)\r\n\r\n")"
expect_eq "HTTP/1.1 without Host: 400" "400|http_request_error" \
    "$(status_of 'GET http://orders.dc2.test/smuggle-nohost HTTP/1.1\r\n\r\n')"
expect_eq "two Host headers: 400" "400|http_request_error" \
    "$(status_of 'GET http://orders.dc2.test/smuggle-2host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')"
out=$(printf 'GET https://orders.dc2.test/smuggle-https HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\n' | raw)
expect_contains "https:// absolute-form: 400" "HTTP/1.1 400" "$out"
expect_contains "https:// absolute-form: the body says to use CONNECT" "CONNECT" "$out"
expect_eq "origin-form request to the proxy: 400" "400|http_request_error" \
    "$(status_of 'GET /smuggle-origin HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\n')"
expect_eq "obs-fold: 400" "400|http_request_error" \
    "$(status_of 'GET http://orders.dc2.test/smuggle-fold HTTP/1.1\r\nHost: orders.dc2.test\r\nX: a\r\n b\r\n\r\n')"
# A bad request after a good one on the same connection: the good one is answered, the
# bad one refused.
out=$(printf 'GET http://orders.dc2.test/good-first HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\nPOST http://orders.dc2.test/smuggle-second HTTP/1.1\r\nHost: orders.dc2.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' | raw)
expect_contains "keep-alive: a good request is answered" "path=/good-first" "$out"
expect_contains "keep-alive: the smuggling attempt after it gets 400" "HTTP/1.1 400" "$out"
sleep 0.5
check "no smuggling attempt reached the backend or nginx" \
    bash -c "! grep -q smuggle '$WORK/backend.log' '$WORK/nginx/logs/access.log'"
check "backend saw exactly the good request since" [ "$(($(wc -l < "$WORK/backend.log") - before))" -eq 1 ]

# ---- forward listener ----
out=$(redis-cli -p "$FWD_PORT" PING)
expect_eq "forward listener: plain redis-cli PING through nginx stream mTLS" "PONG" "$out"
out=$(redis-cli -p "$FWD_PORT" SET http-test forwarded && redis-cli -p "$FWD_PORT" GET http-test)
expect_contains "forward listener: SET then GET" "forwarded" "$out"
# A forward listener does not wait for the server to accept our certificate (it has no
# reply to hold back): a rejected identity shows as a closed connection and in the log.
out=$(redis-cli -p "$ROGUE_FWD" PING 2>&1 || true)
check "forward listener, identity nginx rejects: no PONG (got: $out)" bash -c "[ '$out' != PONG ]"
sleep 0.3
rej=$(grep 'listener=rogue-fwd' "$WORK/gw.log" || true)
check "forward listener, rejected identity: logged as rejected by the server ($rej)" \
    bash -c "echo '$rej' | grep -qE 'result=(connection_terminated|tls_alert_received)'"
expect_contains "forward listener, rejected identity: the log names the identity" 'identity \"intruder\"' "$rej"
redis-cli -p "$ROGUE_FWD" PING > /dev/null 2>&1 || true
sleep 0.3
rej2=$(grep 'listener=rogue-fwd' "$WORK/gw.log" | tail -1)
expect_contains "forward listener, rejected identity: its session was not cached (no resumption next time)" "resumed=0" "$rej2"
out=$(redis-cli -p "$FWD_PORT" PING)
expect_eq "forward listener: the good identity still works after a rejected one" "PONG" "$out"

# ---- the access log ----
log=$(cat "$WORK/gw.log")
expect_contains "access log: one line per request with method and status" "proto=http dest=orders.dc2.test:80" "$log"
expect_contains "access log: method and status keys" "method=GET status=200" "$log"
expect_contains "access log: refused request logged with its status" "method=POST status=400" "$log"
check "gateway alive after all of it" gw_alive
out=$(hc http://orders.dc2.test/still-serving)
expect_contains "still serving" "path=/still-serving" "$out"

# ---- a reload applies to the next request on a kept-alive connection ----
cp "$WORK/gw.conf" "$WORK/gw-orig.conf"
sed 's/{ match = "orders.dc2.test:80"; identity = "ops"; upstream_port = [0-9]*; },/{ match = "orders.dc2.test:80"; action = "deny"; },/' \
    "$WORK/gw-orig.conf" > "$WORK/gw-deny.conf"
out=$(python3 - "$GW_PORT" "$GW_PID" "$WORK" <<'PY'
import http.client, os, shutil, signal, sys, time
port, pid, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
c.request("GET", "http://orders.dc2.test/before-reload", headers={"Host": "orders.dc2.test"})
r = c.getresponse(); r.read(); print("first", r.status)
shutil.copy(work + "/gw-deny.conf", work + "/gw.conf")
os.kill(pid, signal.SIGHUP)
for _ in range(100):
    if "reloaded" in open(work + "/gw.log").read():
        break
    time.sleep(0.1)
time.sleep(0.5)
c.request("GET", "http://orders.dc2.test/after-reload", headers={"Host": "orders.dc2.test"})
r = c.getresponse(); print("second", r.status, r.getheader("Proxy-Status"))
PY
)
expect_contains "keep-alive connection: the request before a reload is served" "first 200" "$out"
expect_contains "keep-alive connection: the next request after it follows the new rules" "second 403" "$out"
cp "$WORK/gw-orig.conf" "$WORK/gw.conf"
kill -HUP "$GW_PID"
for _ in $(seq 100); do [ "$(grep -c reloaded "$WORK/gw.log")" -ge 2 ] && break; sleep 0.1; done
sleep 0.5
out=$(hc http://orders.dc2.test/after-second-reload)
expect_contains "reloaded back: served again" "path=/after-second-reload" "$out"

# ---- stopping closes idle keep-alive connections at once (drain_timeout_s is 60) ----
python3 - "$GW_PORT" > "$WORK/idle.out" <<'PY' &
import http.client, sys, time
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
c.request("GET", "http://orders.dc2.test/then-idle", headers={"Host": "orders.dc2.test"})
r = c.getresponse(); r.read(); print("idle", r.status, flush=True)
t0 = time.time()
print("eof" if c.sock.recv(1) == b"" else "data", flush=True)
PY
IDLE_PID=$!
PIDS+=($IDLE_PID)
for _ in $(seq 100); do grep -q idle "$WORK/idle.out" && break; sleep 0.1; done
kill -TERM "$GW_PID"
for _ in $(seq 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
check "SIGTERM: the gateway exits without waiting for idle keep-alive clients" bash -c "! kill -0 $GW_PID 2>/dev/null"
wait "$IDLE_PID" || true
expect_eq "SIGTERM: the idle keep-alive client sees the connection closed" "idle 200 eof" "$(tr '\n' ' ' < "$WORK/idle.out" | sed 's/ $//')"

finish
