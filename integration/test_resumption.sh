#!/usr/bin/env bash
# TLS session reuse: 50 sequential tunnels against TLS 1.3 and TLS 1.2 nginx terminators
# resume (nginx's $ssl_session_reused), a session of one identity is never offered for
# another identity on the same upstream and server name, and a client that closes at once
# on a far server still leaves a session for the next tunnel.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
# A far server behind a middlebox that ends TCP nearby: its answers come 150 ms late.
DELAY_PORT=$(free_port)
python3 "$(dirname "$0")/delay_proxy.py" "$DELAY_PORT" "127.0.0.1:$NGX_HTTPS" 150 2> "$WORK/delay.log" &
PIDS+=($!)
wait_port "$DELAY_PORT" $!
GW_PORT=$(free_port)
FWD_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
           { name = "far"; address = "127.0.0.1:$FWD_PORT"; forward = "far.test:443"; } );
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "tls13.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "tls12.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_TLS12"; server_name = "orders.dc2.test"; },
  { match = "a.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_TLS12"; server_name = "orders.dc2.test"; },
  { match = "b.test"; identity = "billing"; upstream = "127.0.0.1:$NGX_TLS12"; server_name = "orders.dc2.test"; },
  { match = "far.test"; identity = "ops"; upstream = "127.0.0.1:$DELAY_PORT"; server_name = "orders.dc2.test"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"

count_reused() {  # count_reused HOST N
    local n=0 i out
    for i in $(seq "$2"); do
        out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://$1:443/r$i")
        case "$out" in *"reused=r"*) n=$((n + 1)) ;; esac
    done
    echo "$n"
}
# The first tunnel is a full handshake; of the 50 after it, at least 99 % must resume.
count_reused tls13.test 1 > /dev/null
r13=$(count_reused tls13.test 50)
[ "$r13" -ge 50 ] && pass "TLS 1.3: $r13/50 tunnels resumed" || fail "TLS 1.3: only $r13/50 tunnels resumed"
count_reused tls12.test 1 > /dev/null
r12=$(count_reused tls12.test 50)
[ "$r12" -ge 50 ] && pass "TLS 1.2: $r12/50 tunnels resumed" || fail "TLS 1.2: only $r12/50 tunnels resumed"
expect_contains "access log shows resumed=1" "resumed=1" "$(cat "$WORK/gw.log")"

# Alternate identities on the same upstream and server name: each must always be seen
# as itself (a resumed session carries the identity it was made with).
bad=0
for i in $(seq 10); do
    a=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://a.test:443/")
    b=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://b.test:443/")
    case "$a" in *"dn=CN=ops,"*) ;; *) bad=$((bad + 1)) ;; esac
    case "$b" in *"dn=CN=billing,"*) ;; *) bad=$((bad + 1)) ;; esac
done
expect_eq "20 alternating tunnels: every one presented its own identity" "0" "$bad"
expect_contains "and identity b resumed its own sessions" "reused=r" "$b"

# A client that sends its request and its end at once (HTTP/1.0, write side shut): the
# far server's session ticket comes after the request has gone. Our close_notify waits
# for it (BoringSSL ignores a ticket that comes after we said close_notify), so the next
# tunnel resumes.
send_and_close() {
    python3 - "$FWD_PORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /" + sys.argv[2].encode() + b" HTTP/1.0\r\nHost: orders.dc2.test\r\n\r\n")
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
print(out.decode(errors="replace").splitlines()[0] if out else "nothing")
PY
}
for i in 1 2 3; do
    out=$(send_and_close "far$i")
    expect_contains "far server, request and FIN at once ($i): answered" "200" "$out"
done
far=$(grep 'dest=far.test' "$WORK/gw.log" | grep -o 'resumed=[01]' | tr '\n' ' ')
expect_eq "... the first was a full handshake, the two after it resumed" "resumed=0 resumed=1 resumed=1 " "$far"
finish
