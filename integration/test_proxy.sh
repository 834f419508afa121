#!/usr/bin/env bash
# The proxy front doors with `direct` and `deny` rules: SOCKS5, SOCKS4a, HTTP CONNECT and
# proxychains4 with real clients, one test per row of the error table, garbage and
# oversized input (after which the same process still serves), and half-close.
source "$(dirname "$0")/lib.sh"

start_backend
start_redis
start_dnsmasq web.dc1.test=127.0.0.1 redis.dc1.test=127.0.0.1 closed.dc1.test=127.0.0.1 \
    blackhole.dc1.test=127.0.0.1 echo.dc1.test=127.0.0.1
CLOSED_PORT=$(free_port)   # nothing listens here
# A DNS server that never answers (for dns_timeout) and a listener whose backlog is full
# (SYNs are dropped: connect timeout), both on loopback.
MUTE_DNS=$(free_port)
python3 -c "
import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',$MUTE_DNS))
while True: s.recvfrom(512)" &
PIDS+=($!)
BLACKHOLE=$(free_port)
python3 - "$BLACKHOLE" > "$WORK/blackhole.log" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(0)
fill = []
for _ in range(8):  # fill the accept queue; later SYNs are dropped
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError:
        pass
    fill.append(c)
print("ready", flush=True)
time.sleep(3600)
PY
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK/blackhole.log" 2>/dev/null && break; sleep 0.1; done
# An echo server that half-closes correctly: reads until EOF, then answers with the
# SHA-256 of everything it got and 1 MiB of data, then closes.
ECHO_PORT=$(free_port)
python3 - "$ECHO_PORT" <<'PY' &
import hashlib, socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    h = hashlib.sha256()
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
    try:
        c.sendall(h.hexdigest().encode() + b"\n" + b"x" * (1 << 20))
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$ECHO_PORT"

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 300; tries = 1; };
rules = (
  { match = "web.dc1.test:$BACKEND_PORT"; action = "direct"; },
  { match = "redis.dc1.test:6379"; action = "direct"; upstream_port = $REDIS_PORT; },
  { match = "closed.dc1.test"; action = "direct"; },
  { match = "blackhole.dc1.test"; action = "direct"; },
  { match = "echo.dc1.test"; action = "direct"; upstream_port = $ECHO_PORT; },
  { match = "*.nxdomain.test"; action = "direct"; },
  { match = "slow.dns.test"; action = "direct"; upstream = "mute.dns.test:1"; },
  { match = "127.0.0.1:$BACKEND_PORT"; action = "direct"; },
  { match = "secret.dc1.test"; action = "deny"; }
);
limits = { connect_timeout_ms = 500; handshake_timeout_ms = 2000; header_max = 4096; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"

# ---- front doors with real clients ----
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" "http://web.dc1.test:$BACKEND_PORT/a")
expect_contains "curl --socks5-hostname" "path=/a" "$out"
out=$(curl -s -m 10 --socks4a "127.0.0.1:$GW_PORT" "http://web.dc1.test:$BACKEND_PORT/b")
expect_contains "curl --socks4a" "path=/b" "$out"
out=$(curl -s -m 10 --socks4 "127.0.0.1:$GW_PORT" "http://127.0.0.1:$BACKEND_PORT/c")
expect_contains "curl --socks4 (IPv4 destination)" "path=/c" "$out"
out=$(curl -s -m 10 --socks5 "127.0.0.1:$GW_PORT" "http://127.0.0.1:$BACKEND_PORT/d")
expect_contains "curl --socks5 (IPv4 address type)" "path=/d" "$out"
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://web.dc1.test:$BACKEND_PORT/e")
expect_contains "curl -p -x (HTTP CONNECT)" "path=/e" "$out"
proxychains_conf "$WORK/pc5.conf" "$GW_PORT" socks5
out=$(proxychains4 -q -f "$WORK/pc5.conf" redis-cli -h redis.dc1.test -p 6379 PING 2>&1)
expect_eq "proxychains4 (socks5) + redis-cli PING" "PONG" "$out"
proxychains_conf "$WORK/pch.conf" "$GW_PORT" http
out=$(proxychains4 -q -f "$WORK/pch.conf" redis-cli -h redis.dc1.test -p 6379 PING 2>&1)
expect_eq "proxychains4 (http CONNECT) + redis-cli PING" "PONG" "$out"

# ---- the error table, over SOCKS5, SOCKS4a and CONNECT ----
s5() { python3 "$HERE/socks_probe.py" "$GW_PORT" "$@"; }
connect_status() {  # connect_status HOST:PORT -> "CODE|Proxy-Status"
    local h
    h=$(printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | timeout 10 python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r')
    echo "$(echo "$h" | head -1 | cut -d' ' -f2)|$(echo "$h" | grep -i '^Proxy-Status' | sed 's/.*error=\([a-z_]*\).*/\1/')"
}
s4a() {  # s4a HOST PORT -> reply code
    python3 -c "
import socket,sys
s=socket.create_connection(('127.0.0.1',$GW_PORT),timeout=10)
s.sendall(b'\x04\x01'+($2).to_bytes(2,'big')+b'\x00\x00\x00\x01'+b'u\x00'+b'$1\x00')
r=s.recv(8); print('0x%02x' % r[1] if len(r)==8 else 'closed')"
}
expect_eq "deny rule: SOCKS5 0x02" "rep=2" "$(s5 secret.dc1.test 80)"
expect_eq "deny rule: SOCKS4a 0x5b" "0x5b" "$(s4a secret.dc1.test 80)"
expect_eq "deny rule: 403 destination/request denied" "403|http_request_denied" "$(connect_status secret.dc1.test:80)"
expect_eq "no rule (default deny): SOCKS5 0x02" "rep=2" "$(s5 unknown.example 443)"
expect_eq "no rule (default deny) IP: 403 destination_ip_prohibited" "403|destination_ip_prohibited" "$(connect_status 10.1.2.3:443)"
expect_eq "DNS no such name: SOCKS5 0x04" "rep=4" "$(s5 x.nxdomain.test 80)"
expect_eq "DNS no such name: 502 dns_error" "502|dns_error" "$(connect_status x.nxdomain.test:80)"
expect_eq "DNS no such name: SOCKS4a 0x5b" "0x5b" "$(s4a x.nxdomain.test 80)"
expect_eq "TCP refused: SOCKS5 0x05" "rep=5" "$(s5 closed.dc1.test "$CLOSED_PORT")"
expect_eq "TCP refused: 502 connection_refused" "502|connection_refused" "$(connect_status closed.dc1.test:$CLOSED_PORT)"
expect_eq "connect timeout: SOCKS5 0x06" "rep=6" "$(s5 blackhole.dc1.test "$BLACKHOLE")"
expect_eq "connect timeout: 504 connection_timeout" "504|connection_timeout" "$(connect_status blackhole.dc1.test:$BLACKHOLE)"
expect_eq "BIND: SOCKS5 0x07" "rep=7" "$(s5 x 0 05020001$(printf '%08x' 0)0050)"
expect_eq "UDP ASSOCIATE: SOCKS5 0x07" "rep=7" "$(s5 x 0 050300017f0000010050)"
expect_eq "unknown address type: SOCKS5 0x08" "rep=8" "$(s5 x 0 050100057f0000010050)"
expect_eq "SOCKS4 BIND: 0x5b" "0x5b" "$(python3 -c "
import socket
s=socket.create_connection(('127.0.0.1',$GW_PORT),timeout=10)
s.sendall(b'\x04\x02\x00\x50\x7f\x00\x00\x01u\x00'); r=s.recv(8); print('0x%02x' % r[1])")"
h=$(printf 'GET / HTTP/1.1\r\nHost: web.dc1.test\r\n\r\n' | python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r')
expect_contains "origin-form GET on the proxy port: 400 with Proxy-Status" "Proxy-Status: mtlsgw; error=http_request_error" "$h"
expect_contains "origin-form GET on the proxy port: says an absolute URI is needed" "absolute http:// URI" "$h"

# DNS timeout needs a resolver that never answers: a second gateway pointed at it.
GW2_PORT=$(free_port)
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW2_PORT/" -e "s/127.0.0.1:$DNS_PORT/127.0.0.1:$MUTE_DNS/" "$WORK/gw.conf" > "$WORK/gw2.conf"
"$MTLSGW" run -c "$WORK/gw2.conf" >> "$WORK/gw2.log" 2>&1 &
PIDS+=($!); GW_PIDS+=($!); wait_port "$GW2_PORT" $!
expect_eq "DNS timeout: SOCKS5 0x04" "rep=4" "$(python3 "$HERE/socks_probe.py" "$GW2_PORT" web.dc1.test "$BACKEND_PORT")"
h=$(printf 'CONNECT web.dc1.test:%s HTTP/1.1\r\n\r\n' "$BACKEND_PORT" | python3 "$HERE/raw.py" "$GW2_PORT" | tr -d '\r')
expect_contains "DNS timeout: 504 dns_timeout" "504 Gateway Timeout" "$h"
expect_contains "DNS timeout: Proxy-Status dns_timeout" "error=dns_timeout" "$h"

# ---- bad input: a clear answer, and the process keeps serving ----
h=$(printf 'CONNECT web.dc1.test:80 HTTP/1.1\r\nX: %s\r\n\r\n' "$(head -c 6000 /dev/zero | tr '\0' a)" | python3 "$HERE/raw.py" "$GW_PORT" | head -1 | tr -d '\r')
expect_eq "oversized head: 431" "HTTP/1.1 431 Request Header Fields Too Large" "$h"
h=$(printf 'CONNECT web.dc1.test:80 HTTP/1.1\r\n folded: x\r\n\r\n' | python3 "$HERE/raw.py" "$GW_PORT" | head -1 | tr -d '\r')
expect_eq "obs-fold: 400" "HTTP/1.1 400 Bad Request" "$h"
h=$(printf 'CONNECT web.dc1.test HTTP/1.1\r\n\r\n' | python3 "$HERE/raw.py" "$GW_PORT" | head -1 | tr -d '\r')
expect_eq "CONNECT without port: 400" "HTTP/1.1 400 Bad Request" "$h"
h=$(printf 'CONNECT web.dc1.test:80 HTTP/2.0\r\n\r\n' | python3 "$HERE/raw.py" "$GW_PORT" | head -1 | tr -d '\r')
expect_eq "HTTP/2.0 request line: 400" "HTTP/1.1 400 Bad Request" "$h"
head -c 3000 /dev/urandom | python3 "$HERE/raw.py" "$GW_PORT" > /dev/null || true
printf '\x05\x01' | python3 "$HERE/raw.py" "$GW_PORT" > /dev/null || true           # truncated greeting
printf '\x05\x01\x00\x05\x01\x00\x03\xff' | python3 "$HERE/raw.py" "$GW_PORT" > /dev/null || true  # truncated name
printf '\x04\x01\x00\x50\x00\x00\x00\x01%s' "$(head -c 600 /dev/zero | tr '\0' u)" | python3 "$HERE/raw.py" "$GW_PORT" > /dev/null || true
expect_eq "SOCKS5 name with a space: 0x01" "rep=1" "$(s5 x 0 050100030362206300$(printf '%02x' 80))"
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" "http://web.dc1.test:$BACKEND_PORT/after-garbage")
expect_contains "still serving after garbage, truncated and oversized input" "path=/after-garbage" "$out"

# Byte-by-byte SOCKS5 request with the greeting and request merged in one write.
out=$(python3 - "$GW_PORT" "$BACKEND_PORT" <<'PY'
import socket, sys, time
gw, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", gw), timeout=10)
host = b"web.dc1.test"
msg = b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(host)]) + host + port.to_bytes(2, "big")
for b in msg:
    s.send(bytes([b])); time.sleep(0.002)
r = s.recv(2) + s.recv(10)
s.sendall(b"GET /bytewise HTTP/1.0\r\n\r\n")
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(r[3], b"path=/bytewise" in data)
PY
)
expect_eq "SOCKS5 byte by byte then merged: REP 0 and the response" "0 True" "$out"

# ---- half-close: the client shuts its write side and still gets the whole answer ----
out=$(python3 - "$GW_PORT" <<'PY'
import hashlib, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"CONNECT echo.dc1.test:7 HTTP/1.1\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
payload = b"y" * 300000
s.sendall(payload)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
line, rest = data.split(b"\n", 1)
print(line.decode() == hashlib.sha256(payload).hexdigest(), len(rest))
PY
)
expect_eq "half-close: upstream got all bytes and EOF, client got the full answer" "True 1048576" "$out"

# max_connections and allow: a third gateway with room for one tunnel, and one that only
# allows 10.0.0.0/8.
GW3_PORT=$(free_port)
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW3_PORT/" -e "s/connect_timeout_ms = 500;/connect_timeout_ms = 500; max_connections = 1;/" \
    "$WORK/gw.conf" > "$WORK/gw3.conf"
"$MTLSGW" run -c "$WORK/gw3.conf" >> "$WORK/gw3.log" 2>&1 &
PIDS+=($!); GW_PIDS+=($!); wait_port "$GW3_PORT" $!
out=$(python3 - "$GW3_PORT" "$ECHO_PORT" <<'PY'
import socket, sys, time
gw = int(sys.argv[1])
hold = socket.create_connection(("127.0.0.1", gw), timeout=10)   # the one allowed tunnel
hold.sendall(b"CONNECT echo.dc1.test:7 HTTP/1.1\r\n\r\n")
assert hold.recv(100).startswith(b"HTTP/1.1 200")
s = socket.create_connection(("127.0.0.1", gw), timeout=10)
s.sendall(b"\x05\x01\x00\x05\x01\x00\x03\x0cecho.dc1.test\x00\x07"[:0] + b"\x05\x01\x00")
s.recv(2)
s.sendall(b"\x05\x01\x00\x03\x0decho.dc1.test\x00\x07")
r1 = s.recv(10)[1]
h = socket.create_connection(("127.0.0.1", gw), timeout=10)
h.sendall(b"CONNECT echo.dc1.test:7 HTTP/1.1\r\n\r\n")
r2 = h.recv(300).split(b"\r\n")
status = r2[0].decode()
ps = [l for l in r2 if l.startswith(b"Proxy-Status")]
hold.close(); time.sleep(0.3)
again = socket.create_connection(("127.0.0.1", gw), timeout=10)
again.sendall(b"CONNECT echo.dc1.test:7 HTTP/1.1\r\n\r\n")
ok = again.recv(100) == b"HTTP/1.1 200 Connection established\r\n\r\n"  # the whole reply, exactly
print(r1, status, b"connection_limit_reached" in ps[0] if ps else False, ok)
PY
)
expect_eq "max_connections: SOCKS5 0x01, 503 connection_limit_reached, recovery (200 Connection established)" "1 HTTP/1.1 503 Service Unavailable True True" "$out"
GW4_PORT=$(free_port)
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW4_PORT/" "$WORK/gw.conf" > "$WORK/gw4.conf"
echo 'allow = [ "10.0.0.0/8" ];' >> "$WORK/gw4.conf"
"$MTLSGW" run -c "$WORK/gw4.conf" >> "$WORK/gw4.log" 2>&1 &
PIDS+=($!); GW_PIDS+=($!); wait_port "$GW4_PORT" $!
expect_eq "allow list: a client outside it gets SOCKS5 0x02" "rep=2" "$(python3 "$HERE/socks_probe.py" "$GW4_PORT" web.dc1.test "$BACKEND_PORT")"

check "gateway still running" gw_alive
expect_contains "access log records denied tunnels with the rule" "result=denied reason=\"secret.dc1.test:80 denied by rule $WORK/gw.conf:" "$(cat "$WORK/gw.log")"
finish
