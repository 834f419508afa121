#!/usr/bin/env bash
# TCP Fast Open to the upstream (rule tcp_fastopen, RFC 7413): in a network namespace of
# its own (the sysctl is per namespace) with nginx listening with fastopen, the first
# tunnel gets a cookie, the next ones carry the ClientHello in the SYN (the kernel's own
# counters say so, on both ends: TCPFastOpenActive and TCPFastOpenPassive) and work; a
# rule without it never does; a server without Fast Open still answers (the data goes
# after the handshake); a refused port is still reported as connection_refused, with
# the SYN that carried the ClientHello named; a direct rule may not ask for it. With
# early_data too, a SOCKS5 client's first request (sent once it has our reply) rides in
# the SYN with the ClientHello: nftables counts a SYN that large, and the server
# accepted the early data. A refused parent proxy reached with Fast Open is still
# connection_refused, the parent's.
source "$(dirname "$0")/lib.sh"

make_pki
NS=mgwtfo$$
ip netns add "$NS"
UNDO+=("ip netns del $NS")
ip -n "$NS" link set lo up
ip netns exec "$NS" sysctl -qw net.ipv4.tcp_fastopen=3   # client and server
inns() { ip netns exec "$NS" "$@"; }
# counter NAME: the namespace's TcpExt counter (absolute).
counter() {
    inns python3 - "$1" <<'PY'
import sys
lines = open("/proc/net/netstat").read().splitlines()
for names, values in zip(lines[::2], lines[1::2]):
    if names.startswith("TcpExt:"):
        print(dict(zip(names.split()[1:], values.split()[1:])).get(sys.argv[1], "missing"))
PY
}

mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log info;
events { worker_connections 128; }
http {
$(for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $WORK/nginx/$d;"; done)
    access_log $WORK/nginx/logs/access.log;
    ssl_certificate $PKI/orders.chain.crt; ssl_certificate_key $PKI/orders.key;
    ssl_client_certificate $PKI/client-ca.crt; ssl_verify_client on;
    server {
        listen 127.0.0.1:8443 ssl fastopen=16;
        location / { return 200 "dn=\$ssl_client_s_dn port=8443\n"; }
    }
    server {
        listen 127.0.0.1:8446 ssl fastopen=16;
        ssl_protocols TLSv1.3;
        ssl_early_data on;
        location / { return 200 "dn=\$ssl_client_s_dn early=\$ssl_early_data reused=\$ssl_session_reused\n"; }
    }
    server {
        listen 127.0.0.1:8444 ssl;   # no Fast Open
        location / { return 200 "dn=\$ssl_client_s_dn port=8444\n"; }
    }
}
NGX
ip netns exec "$NS" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' > "$WORK/nginx/out.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "socks"; address = "127.0.0.1:1080"; protocols = [ "socks5" ]; } );
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; } );
rules = (
  { match = "tfo.test"; identity = "ops"; upstream = "127.0.0.1:8443"; server_name = "orders.dc2.test"; tcp_fastopen = true; },
  { match = "plain.test"; identity = "ops"; upstream = "127.0.0.1:8443"; server_name = "orders.dc2.test"; },
  { match = "nofo.test"; identity = "ops"; upstream = "127.0.0.1:8444"; server_name = "orders.dc2.test"; tcp_fastopen = true; },
  { match = "early.test"; identity = "ops"; upstream = "127.0.0.1:8446"; server_name = "orders.dc2.test"; tcp_fastopen = true;
    early_data = true; },
  { match = "via-refused.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "http://127.0.0.1:8447"; tcp_fastopen = true; },
  { match = "refused.test"; identity = "ops"; upstream = "127.0.0.1:8445"; server_name = "orders.dc2.test"; tcp_fastopen = true; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];
CONF
ip netns exec "$NS" "${GW_WRAP[@]}" "$MTLSGW" run -c "$WORK/gw.conf" >> "$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
GW_PIDS+=($GW_PID)
for p in 8443 8444 1080; do
    for _ in $(seq "$WAIT_TRIES"); do inns bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null && break; sleep 0.1; done
done
get() { inns curl -s -m 15 --socks5-hostname 127.0.0.1:1080 "$@"; }

active0=$(counter TCPFastOpenActive)
passive0=$(counter TCPFastOpenPassive)
check "the kernel counts Fast Open here" test "$active0" != missing
out=$(get http://tfo.test/)
expect_contains "first tunnel with tcp_fastopen: answered (and a cookie asked for)" "dn=CN=ops,O=mtlsgw-test port=8443" "$out"
for i in 1 2 3; do
    out=$(get "http://tfo.test/$i")
    expect_contains "tunnel $i with the cookie: answered" "dn=CN=ops,O=mtlsgw-test port=8443" "$out"
done
active1=$(counter TCPFastOpenActive)
passive1=$(counter TCPFastOpenPassive)
check "... the ClientHello rode in the SYN, three times (TCPFastOpenActive $active0 -> $active1)" \
    test $((active1 - active0)) -ge 3
check "... and nginx took it from the SYN (TCPFastOpenPassive $passive0 -> $passive1)" test $((passive1 - passive0)) -ge 3
for i in 1 2; do
    out=$(get "http://plain.test/$i")
    expect_contains "a rule without tcp_fastopen: answered" "port=8443" "$out"
done
check "... and no SYN of it carried data" test "$(counter TCPFastOpenActive)" = "$active1"
out=$(get http://nofo.test/)
expect_contains "a server without Fast Open: answered all the same" "dn=CN=ops,O=mtlsgw-test port=8444" "$out"
out=$(get http://nofo.test/again)
expect_contains "... again" "port=8444" "$out"
expect_eq "a refused port (the cookie is the address's): SOCKS5 0x05 connection refused" "rep=5" \
    "$(inns python3 "$HERE/socks_probe.py" 1080 refused.test 80)"
for _ in $(seq 50); do grep -q "dest=refused.test" "$WORK/gw.log" && break; sleep 0.1; done
line=$(grep "dest=refused.test" "$WORK/gw.log" | tail -1)
expect_contains "... logged as connection_refused" "result=connection_refused" "$line"
expect_contains "... naming the SYN that carried the ClientHello" "TCP Fast Open" "$line"
# ---- with early data: the client's first request in the SYN ----
ip netns exec "$NS" nft -f - <<'NFT'
table inet tfo {
    chain out {
        type filter hook output priority 0; policy accept;
        tcp dport 8446 tcp flags & (syn | ack) == syn ip length > 3000 counter
    }
}
NFT
big_syns() { inns nft list chain inet tfo out | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'; }
pad=$(head -c 3500 /dev/zero | tr '\0' x)
out=$(get http://early.test/first)
expect_contains "tcp_fastopen and early_data: the first tunnel (a full handshake) answered" "early= reused=." "$out"
check "... its SYN carried no request (nothing resumable to send early)" test "$(big_syns)" = 0
sleep 0.3   # (the session ticket comes after the handshake)
out=$(get -H "X-Pad: $pad" http://early.test/second)
expect_contains "... the next SOCKS5 tunnel: answered on a resumed session" "reused=r" "$out"
for _ in $(seq 50); do [ "$(grep -c "dest=early.test" "$WORK/gw.log")" -ge 2 ] && break; sleep 0.1; done
expect_contains "... its request went as early data, and nginx took it" "resumed=1 conn=new early=accepted" \
    "$(grep "dest=early.test" "$WORK/gw.log" | tail -1)"
check "... in the SYN, with the ClientHello (a SYN of more than 3000 bytes: $(big_syns))" test "$(big_syns)" -ge 1
expect_eq "a refused parent proxy with tcp_fastopen (the SYN carried CONNECT): SOCKS5 0x05" "rep=5" \
    "$(inns python3 "$HERE/socks_probe.py" 1080 via-refused.test 80)"
for _ in $(seq 50); do grep -q "dest=via-refused.test" "$WORK/gw.log" && break; sleep 0.1; done
expect_contains "... logged as connection_refused, the parent's" \
    "result=connection_refused reason=\"parent proxy http://127.0.0.1:8447: connect: Connection refused (TCP Fast Open" \
    "$(grep "dest=via-refused.test" "$WORK/gw.log" | tail -1)"
check "the gateway still serves" bash -c "ip netns exec $NS curl -s -m 15 --socks5-hostname 127.0.0.1:1080 http://tfo.test/ | grep -q port=8443"

cat > "$WORK/bad.conf" <<CONF
listen = ( { name = "p"; address = "127.0.0.1:1"; } );
rules = ( { match = "a.test"; action = "direct"; tcp_fastopen = true; } );
CONF
out=$("$MTLSGW" check -c "$WORK/bad.conf" 2>&1) || true
expect_contains "config: a direct rule may not ask for it (a server may speak first)" \
    'bad.conf:2: rules[0].tcp_fastopen: only where the gateway speaks first' "$out"

finish
