#!/usr/bin/env bash
# TLS 1.3 early data (rule early_data = true, DESIGN "Round trips"): on a resumed session
# the client's first bytes go with the ClientHello. `openssl s_server -early_data` prints
# what it read as early data before the handshake finished (nginx's $ssl_early_data says
# whether the handshake had finished when the request was processed: on loopback that
# races with our Finished, so it is not asserted). nginx reloaded with early data off but
# the same ticket key resumes our sessions and refuses their early data, which the gateway
# then sends again after the handshake: the request is served once. A restarted s_server
# (new ticket keys) refuses the resumption too: the full handshake verifies it as any.
source "$(dirname "$0")/lib.sh"

make_pki
NGX_EARLY=$(free_port)
head -c 80 /dev/urandom > "$WORK/ticket.key"
start_nginx_with "$NGX_EARLY" <<NGX
http {
    include $WORK/nginx/temp_paths.conf;
    log_format early '\$connection early=\$ssl_early_data reused=\$ssl_session_reused hdr=\$http_early_data "\$request"';
    access_log $WORK/nginx/logs/access.log early;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_certificate $PKI/orders.chain.crt;
    ssl_certificate_key $PKI/orders.key;
    ssl_session_tickets on;
    ssl_session_ticket_key $WORK/ticket.key;  # kept across the reload: sessions still resume
    server {
        listen 127.0.0.1:$NGX_EARLY ssl;
        listen 127.0.0.2:$NGX_EARLY ssl;  # a second address: http_proxy's sessions apart from the forward ones
        ssl_early_data on;
        location / {
            return 200 "early=\$ssl_early_data reused=\$ssl_session_reused hdr=\$http_early_data method=\$request_method dn=\$ssl_client_s_dn\n";
        }
    }
}
NGX

# HAProxy 2.6 terminating mTLS in http mode with allow-0rtt (it adds Early-Data: 1 to what
# came early, and its answer says what it saw).
HAP_PORT=$(free_port)
cat "$PKI/orders.chain.crt" "$PKI/orders.key" > "$WORK/orders.pem"
cat > "$WORK/haproxy.cfg" <<CFG
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend early
    bind 127.0.0.1:$HAP_PORT ssl crt $WORK/orders.pem ca-file $PKI/client-ca.crt verify required allow-0rtt
    http-request return status 200 content-type text/plain lf-string "haproxy reused=%[ssl_fc_is_resumed] hdr=%[req.hdr(early-data)] dn=%[ssl_c_s_dn]\n"
CFG
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port "$HAP_PORT" $!

GW_PORT=$(free_port)
FWD_PORT=$(free_port)
S_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = (
  { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
  { name = "fwd"; address = "127.0.0.1:$FWD_PORT"; forward = "early.test:80"; }
);
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "early.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_EARLY"; server_name = "orders.dc2.test";
    early_data = true; },
  { match = "early-http.test"; identity = "ops"; upstream = "127.0.0.2:$NGX_EARLY"; server_name = "orders.dc2.test";
    early_data = true; },
  { match = "late.test"; identity = "ops"; upstream = "127.0.0.2:$NGX_EARLY"; server_name = "orders.dc2.test"; },
  { match = "s-server.test"; identity = "ops"; upstream = "127.0.0.1:$S_PORT"; server_name = "orders.dc2.test";
    early_data = true; },
  { match = "haproxy.test"; identity = "ops"; upstream = "127.0.0.1:$HAP_PORT"; server_name = "orders.dc2.test";
    early_data = true; }
);
upstream_pool = { idle_per_key = 0; };  # each request a new connection: each may go early
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1)
check "early_data = true: check OK" test $? -eq 0
start_gw "$WORK/gw.conf"

# access_line N: the gateway's Nth access line (1-based) that has a dest.
access_line() { grep 'dest=' "$WORK/gw.log" | sed -n "${1}p"; }
lines() { grep -c 'dest=' "$WORK/gw.log"; }

# socks_pipelined HOST PATH: a SOCKS5 client that sends its greeting, its request and the
# HTTP request in one write (the data is there before the gateway dials); prints the body.
socks_pipelined() {
    python3 - "$GW_PORT" "$1" "$2" <<'PY'
import socket, struct, sys
port, host, path = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
req = b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", 80)
req += ("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host.decode())).encode()
s.sendall(req)
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
# method reply (2) and success reply (10), then the HTTP response
print("rep=%d" % data[3], data[12:].split(b"\r\n\r\n", 1)[-1].decode().strip())
PY
}

# ---- forward listener: curl writes its request as soon as it connects ----
fwd() { curl -s --max-time 10 -H 'Host: early.test' "http://127.0.0.1:$FWD_PORT/$1"; }
n0=$(lines)
first=$(fwd first)
expect_contains "forward, first contact: a full handshake, no early data" "early= reused=." "$first"
second=$(fwd second)
expect_contains "forward, resumed: answered, as the identity of the first handshake" "reused=r hdr= method=GET dn=CN=ops,O=mtlsgw-test" "$second"
expect_contains "access log: nginx accepted the early data" "early=accepted" "$(access_line $((n0 + 2)))"
expect_contains "access log, first contact: early=-" "early=-" "$(access_line $((n0 + 1)))"

# ---- SOCKS5: the request behind the SOCKS exchange goes early too ----
fwd warm > /dev/null
n0=$(lines)
out=$(socks_pipelined early.test /socks)
expect_contains "SOCKS5, resumed: success reply, then the answer" "rep=0 early=" "$out"
expect_contains "access log: SOCKS5 early=accepted" "early=accepted" "$(access_line $((n0 + 1)))"

# ---- http_proxy: only safe methods without a body go early, with Early-Data: 1 ----
px() { curl -s --max-time 10 -x "http://127.0.0.1:$GW_PORT" "$@"; }
px http://early-http.test/warm > /dev/null
n0=$(lines)
out=$(px http://early-http.test/get)
expect_contains "http_proxy GET: resumed, with Early-Data: 1" "reused=r hdr=1 method=GET" "$out"
expect_contains "access log: the GET's early=accepted" "early=accepted" "$(access_line $((n0 + 1)))"
out=$(px -d 'x=1' http://early-http.test/post)
expect_contains "http_proxy POST: not early (not safe to replay), no Early-Data" "early= reused=r hdr= method=POST" "$out"
expect_contains "access log: the POST's early=-" "early=-" "$(grep 'method=POST' "$WORK/gw.log" | tail -1)"

# ---- a rule without early_data never sends any ----
px http://late.test/warm > /dev/null
out=$(px http://late.test/get)
expect_contains "no early_data on the rule: resumed, nothing early" "early= reused=r hdr= method=GET" "$out"

# ---- refused: nginx reloaded with early data off, the same ticket key ----
fwd warm2 > /dev/null
px http://early-http.test/warm2 > /dev/null
sed -i 's/ssl_early_data on;/ssl_early_data off;/' "$WORK/nginx/nginx.conf"
workers_before=$(grep -c 'start worker process' "$WORK/nginx/logs/error.log")
kill -HUP "$NGINX_PID"
for _ in $(seq 50); do
    [ "$(grep -c 'start worker process' "$WORK/nginx/logs/error.log")" -gt "$workers_before" ] && break
    sleep 0.1
done
sleep 0.3  # the old worker closes its listeners
n0=$(lines)
out=$(fwd refused)
expect_contains "refused early data: resumed anyway, the request sent again after the handshake" "early= reused=r" "$out"
expect_contains "access log: early=rejected" "early=rejected" "$(access_line $((n0 + 1)))"
check "nginx served that request once" test "$(grep -c 'GET /refused ' "$WORK/nginx/logs/access.log")" -eq 1
n0=$(lines)
out=$(px http://early-http.test/refused-get)
expect_contains "http_proxy GET, refused early data: answered once, in 1-RTT" "early= reused=r hdr=1 method=GET" "$out"
expect_contains "access log: the GET's early=rejected" "early=rejected" "$(access_line $((n0 + 1)))"
check "nginx served that request once" test "$(grep -c 'GET /refused-get ' "$WORK/nginx/logs/access.log")" -eq 1

# ---- HAProxy allow-0rtt ----
n0=$(lines)
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://haproxy.test/first)
expect_contains "HAProxy, first contact: a full handshake" "haproxy reused=0 hdr= dn=/O=mtlsgw-test/CN=ops" "$out"
out=$(socks_pipelined haproxy.test /second)
expect_contains "HAProxy, SOCKS5 resumed: answered" "haproxy reused=1" "$out"
expect_contains "access log: HAProxy accepted the early data" "early=accepted" "$(access_line $((n0 + 2)))"
n0=$(lines)
out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" http://haproxy.test/third)
expect_contains "HAProxy, http_proxy GET resumed: Early-Data: 1 reached it" "haproxy reused=1 hdr=1 dn=/O=mtlsgw-test/CN=ops" "$out"
expect_contains "access log: the GET's early=accepted" "early=accepted" "$(access_line $((n0 + 1)))"

# ---- openssl s_server -early_data: it prints what came as early data ----
# s_server ends a connection (and itself) when its stdin ends: a FIFO this shell holds open.
mkfifo "$WORK/s_in"
exec {S_IN}<> "$WORK/s_in"
start_s_server() {  # start_s_server LOG [EXTRA...]
    local log=$1
    shift
    openssl s_server -accept "127.0.0.1:$S_PORT" -cert "$PKI/orders.chain.crt" -key "$PKI/orders.key" \
        -cert_chain "$PKI/int.crt" -Verify 2 -verifyCAfile "$PKI/client-ca.crt" -verify_return_error -tls1_3 "$@" \
        < "$WORK/s_in" > "$log" 2>&1 &
    S_PID=$!
    PIDS+=($S_PID)
    wait_port "$S_PORT" "$S_PID"
}
# socks_send DATA: a SOCKS5 client that sends DATA behind its request, then closes.
socks_send() {
    python3 - "$GW_PORT" "$1" <<'PY'
import socket, struct, sys, time
port, data = int(sys.argv[1]), sys.argv[2].encode()
host = b"s-server.test"
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"\x05\x01\x00\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", 443) + data)
got = s.recv(12)
time.sleep(0.5)  # the handshake finishes meanwhile
print("rep=%d" % got[3])
PY
}
start_s_server "$WORK/s_server.log" -early_data -no_anti_replay
socks_send "first-contact" > /dev/null
n0=$(lines)
out=$(socks_send "PING-EARLY")
expect_eq "s_server: SOCKS5 success reply" "rep=0" "$out"
for _ in $(seq 30); do grep -q 'PING-EARLY' "$WORK/s_server.log" && break; sleep 0.1; done
# (s_server prints the data unbuffered and its words buffered: the order in the log varies.)
check "s_server read bytes as early data (its words: Early data received)" grep -q 'Early data received:' "$WORK/s_server.log"
check "... the client's bytes, the only ones on that connection" grep -q 'PING-EARLY' "$WORK/s_server.log"
for _ in $(seq 30); do [ "$(lines)" -gt "$n0" ] && break; sleep 0.1; done
expect_contains "access log: early=accepted" "early=accepted" "$(access_line $((n0 + 1)))"
# Restarted: new ticket keys, so neither early data nor the session is accepted: a full
# handshake (the server verified, our certificate sent) and the bytes sent again.
kill "$S_PID"
wait "$S_PID" 2> /dev/null || true
start_s_server "$WORK/s_server2.log" -early_data -no_anti_replay
n0=$(lines)
socks_send "PING-AGAIN" > /dev/null
for _ in $(seq 30); do grep -q 'PING-AGAIN' "$WORK/s_server2.log" && break; sleep 0.1; done
check "s_server restarted: no early data read" bash -c "! grep -q 'Early data received:' '$WORK/s_server2.log'"
check "... in its words: Early data was rejected" grep -q 'Early data was rejected' "$WORK/s_server2.log"
check "... the bytes arrived after the full handshake" grep -q 'PING-AGAIN' "$WORK/s_server2.log"
check "... it verified our certificate" grep -q 'CN *= *ops' "$WORK/s_server2.log"
for _ in $(seq 30); do [ "$(lines)" -gt "$n0" ] && break; sleep 0.1; done
expect_contains "access log: early=rejected, resumed=0" "resumed=0 conn=new early=rejected" "$(access_line $((n0 + 1)))"

exec {S_IN}>&-

# ---- config errors ----
cat > "$WORK/bad.conf" <<CONF
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; } );
rules = (
  { match = "a.test"; action = "direct"; early_data = true; },
  { match = "b.test"; identity = "ops"; early_data = 1; }
);
CONF
out=$("$MTLSGW" check -c "$WORK/bad.conf" 2>&1) || true
expect_contains "early_data on a direct rule: file:line" "bad.conf:3: rules[0].early_data: only used by action \"mtls\"" "$out"
expect_contains "early_data = 1: true or false expected" "bad.conf:4: rules[1].early_data: expected true or false" "$out"

finish
