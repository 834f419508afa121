#!/usr/bin/env bash
# Round trips: what the gateway does to spend as few as it can (DESIGN "Round trips").
# Timing-free: each check is about which connection carried what, or about a wait that
# would outlast the client's timeout many times over.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
BANNER_PORT=$(free_port)
python3 "$HERE/banner.py" "$BANNER_PORT" 2> "$WORK/banner.log" &
PIDS+=($!)
wait_port "$BANNER_PORT" $!
NGX_FULL=$(free_port)
NGX_POOL=$(free_port)
NGX_BANNER=$(free_port)
NGX_QUICK=$(free_port)
start_nginx_with "$NGX_FULL" "$NGX_POOL" "$NGX_BANNER" "$NGX_QUICK" <<NGX
# A server-speaks-first service behind an mTLS terminator.
stream {
    # A banner as fast as nginx can send it (then a close): for plain tunnels.
    server {
        listen 127.0.0.1:$NGX_QUICK backlog=1024;
        return "220 quick.test ready\r\n";
    }
    server {
        listen 127.0.0.1:$NGX_BANNER ssl;
        ssl_certificate $PKI/orders.chain.crt;
        ssl_certificate_key $PKI/orders.key;
        ssl_client_certificate $PKI/client-ca.crt;
        ssl_verify_client on;
        proxy_pass 127.0.0.1:$BANNER_PORT;
    }
}
http {
    include $WORK/nginx/temp_paths.conf;
    log_format conn '\$connection \$ssl_session_reused "\$ssl_client_s_dn" \$request';
    access_log $WORK/nginx/logs/access.log conn;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_certificate $PKI/orders.chain.crt;
    ssl_certificate_key $PKI/orders.key;
    # No tickets, no session cache: every handshake is a full one.
    server {
        listen 127.0.0.1:$NGX_FULL ssl;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / { return 200 "conn=\$connection dn=\$ssl_client_s_dn reused=\$ssl_session_reused\n"; }
    }
    # Sessions resume here; /444 closes the connection without a response (nginx's 444).
    server {
        listen 127.0.0.1:$NGX_POOL ssl;
        ssl_session_tickets on;
        location /444 { return 444; }
        location / { return 200 "conn=\$connection dn=\$ssl_client_s_dn\n"; }
    }
}
NGX

GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
FWD_PORT=$(free_port)
DIRECT_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = (
  { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
  { name = "smtp"; address = "127.0.0.1:$FWD_PORT"; forward = "banner.test:25"; },
  { name = "smtp-direct"; address = "127.0.0.1:$DIRECT_PORT"; forward = "direct-banner.test:25"; }
);
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "full.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_FULL"; server_name = "orders.dc2.test"; },
  { match = "pool.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_POOL"; server_name = "orders.dc2.test"; },
  { match = "pool-billing.test"; identity = "billing"; upstream = "127.0.0.1:$NGX_POOL"; server_name = "orders.dc2.test"; },
  { match = "banner.test:25"; identity = "ops"; upstream = "127.0.0.1:$NGX_BANNER"; server_name = "orders.dc2.test";
    preconnect = 2; },
  { match = "direct-banner.test:25"; action = "direct"; upstream = "127.0.0.1:$NGX_QUICK"; }
);
# Far longer than any client here waits: a tunnel that waited for the server's verdict
# would time out.
limits = { confirm_ms = 60000; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"

# ---- confirmation without the penalty ----
# http_proxy: the request goes out right after a full TLS 1.3 handshake (nginx http says
# nothing until it has a request: waiting for its verdict would take confirm_ms).
out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" http://full.test/first)
expect_contains "http_proxy after a full TLS 1.3 handshake: no wait for the verdict" "dn=CN=ops,O=mtlsgw-test" "$out"
expect_contains "... and it was a full handshake" "reused=." "$out"
# That server accepted identity ops: a SOCKS5 tunnel's full handshake to it (no session
# to resume) does not wait for the verdict again.
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://full.test/second)
expect_contains "SOCKS5 to a server that accepted the identity before: no wait" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://full.test/third)
expect_contains "CONNECT to it: no wait either" "dn=CN=ops,O=mtlsgw-test" "$out"
expect_eq "every one of them was a full handshake (access log: resumed=0)" "3" \
    "$(grep 'dest=full.test' "$WORK/gw.log" | grep -c 'resumed=0' || true)"

# ---- the upstream pool (http_proxy) ----
metric() {  # metric NAME{LABELS}: its value on /metrics
    curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}
idle_before=$(metric mtlsgw_upstream_pool_idle)
conns=""
for i in 1 2 3 4 5; do  # five clients, each its own connection (curl runs once per request)
    out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/r$i")
    conns="$conns ${out%% *}"
done
expect_eq "five client connections, one upstream connection (nginx's \$connection)" "1" \
    "$(echo "$conns" | tr ' ' '\n' | grep . | sort -u | wc -l)"
expect_contains "... presenting identity ops" "dn=CN=ops,O=mtlsgw-test" "$out"
expect_eq "access log: the first request made the connection (conn=new)" "1" \
    "$(grep 'dest=pool.test:80' "$WORK/gw.log" | grep -c 'conn=new' || true)"
expect_eq "access log: the four after it took it from the pool (conn=pooled)" "4" \
    "$(grep 'dest=pool.test:80' "$WORK/gw.log" | grep -c 'conn=pooled' || true)"
expect_eq "metrics: 4 pool hits" "4" "$(metric 'mtlsgw_upstream_pool_requests_total{result="hit"}')"
expect_eq "metrics: one more idle connection in the pool" "$((idle_before + 1))" "$(metric mtlsgw_upstream_pool_idle)"
conn_ops=${conns##* }

# Another identity to the same upstream and server name never gets that connection.
out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool-billing.test/b1")
expect_contains "identity billing to the same upstream: presents billing" "dn=CN=billing,O=mtlsgw-test" "$out"
check "... on a connection of its own (${out%% *} is not $conn_ops)" [ "${out%% *}" != "$conn_ops" ]
out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/r6")
expect_eq "identity ops still gets its own pooled connection" "$conn_ops dn=CN=ops,O=mtlsgw-test" "$out"

# A pooled connection the server closes without a response: an idempotent request is sent
# again once on a new connection (nginx sees it twice); a POST is not (once), and gets 502.
before_get=$(grep -c 'GET /444g' "$WORK/nginx/logs/access.log" || true)
h=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/444g" -D - -o /dev/null | tr -d '\r')
expect_contains "GET over a pooled connection closed without a response: 502 in the end" "HTTP/1.1 502" "$h"
expect_eq "... nginx saw it twice: sent again on a new connection" "$((before_get + 2))" \
    "$(grep -c 'GET /444g' "$WORK/nginx/logs/access.log" || true)"
expect_contains "... the gateway's log says so" "was closed by the server before a response: sent again" \
    "$(cat "$WORK/gw.log")"
curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/warm" > /dev/null  # a pooled connection again
h=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" -d 'x=1' "http://pool.test/444p" -D - -o /dev/null | tr -d '\r')
expect_contains "POST over a pooled connection closed without a response: 502" "HTTP/1.1 502" "$h"
expect_contains "... saying why it was not sent again" "POST is not idempotent: not sent again" "$h"
expect_eq "... nginx saw it once" "1" "$(grep -c 'POST /444p' "$WORK/nginx/logs/access.log" || true)"

# A reload retires the pooled connections of the identities it replaced.
curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/before-reload" > /dev/null
retired=$(metric 'mtlsgw_upstream_pool_evictions_total{reason="retired"}')
reload_gw
for _ in $(seq 50); do
    [ "$(metric 'mtlsgw_upstream_pool_evictions_total{reason="retired"}')" != "$retired" ] && break
    sleep 0.1
done
check "reload: the pooled connection was retired" [ "$(metric 'mtlsgw_upstream_pool_evictions_total{reason="retired"}')" -gt "$retired" ]
out=$(curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "http://pool.test/after-reload")
expect_contains "after the reload: a new connection" "dn=CN=ops" "$out"
expect_contains "... logged conn=new" "conn=new" "$(grep 'after-reload\|dest=pool.test:80' "$WORK/gw.log" | tail -1)"

# ---- preconnected tunnels (preconnect = 2) ----
parked_wait() {  # parked_wait N: until N connections are parked
    for _ in $(seq 100); do [ "$(metric mtlsgw_preconnect_parked)" = "$1" ] && return 0; sleep 0.1; done
    return 1
}
check "two verified connections kept ready for banner.test:25" parked_wait 2
conns_before=$(grep -c '^connection' "$WORK/banner.log")
out=$(python3 "$HERE/banner_client.py" "$GW_PORT" banner.test 25)
expect_contains "SOCKS5 on a preconnected tunnel: the banner the server sent while it was parked" \
    "220 banner.test ready" "$out"
expect_contains "... and the conversation after it" "250 HELO x" "$out"
out=$(python3 "$HERE/banner_client.py" "$FWD_PORT")
expect_contains "forward listener on a preconnected tunnel: banner, then the conversation" \
    "250 HELO x" "$out"
expect_eq "access log: both tunnels conn=preconnected" "2" \
    "$(grep 'dest=banner.test:25' "$WORK/gw.log" | grep -c 'conn=preconnected' || true)"
expect_eq "metrics: 2 taken" "2" "$(metric 'mtlsgw_preconnect_total{event="taken"}')"
check "each taken connection was replaced: 2 parked again" parked_wait 2
expect_eq "the server saw 2 new connections (the replacements) and none for the tunnels themselves" \
    "$((conns_before + 2))" "$(grep -c '^connection' "$WORK/banner.log")"
# Without TLS the banner comes with the connection itself: under load, the event that
# says the connection is up often says the banner (and the close behind it) is there
# too, and nothing reports them again (edge-triggered): the tunnel must read them.
out=$(python3 - "$DIRECT_PORT" <<'PY'
import socket, sys, threading
got = []
def one():
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        got.append(data == b"220 quick.test ready\r\n")
    except OSError:
        got.append(False)
threads = [threading.Thread(target=one) for _ in range(200)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sum(got))
PY
)
expect_eq "direct forward to a server that speaks first, 200 at once: every banner arrives" "200" "$out"
# A reload replaces every parked connection with those of the new config.
before=$(grep -c '^connection' "$WORK/banner.log")
reload_gw
for _ in $(seq 100); do [ "$(grep -c '^connection' "$WORK/banner.log")" -ge $((before + 2)) ] && break; sleep 0.1; done
expect_eq "reload: two new parked connections" "$((before + 2))" "$(grep -c '^connection' "$WORK/banner.log")"
check "... and two parked" parked_wait 2

# ---- Happy Eyeballs (RFC 8305), in a network namespace ----
# A name with an IPv6 and an IPv4 address, IPv6 first. nftables drops SYNs to the IPv6
# address on one port and resets them on another. connect_timeout_ms is 20 s: a gateway
# that tried one address after the other would outlast the client's 8 s.
NS=mgw-he-$$
ip netns add "$NS"
UNDO+=("ip netns del $NS")
ip -n "$NS" link set lo up
ip -n "$NS" addr add 2001:db8::10/128 dev lo nodad
ip -n "$NS" addr add 192.0.2.10/32 dev lo
HE_DROP=8443
HE_RESET=8444
mkdir -p "$WORK/ns-nginx"
cat > "$WORK/ns-nginx/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/ns-nginx/nginx.pid;
error_log $WORK/ns-nginx/error.log info;
events { worker_connections 128; }
http {
$(for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $WORK/ns-nginx/$d;"; done)
    access_log off;
    ssl_certificate $PKI/orders.chain.crt;
    ssl_certificate_key $PKI/orders.key;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    server {
        listen 192.0.2.10:$HE_DROP ssl; listen [2001:db8::10]:$HE_DROP ssl;
        listen 192.0.2.10:$HE_RESET ssl; listen [2001:db8::10]:$HE_RESET ssl;
        location / { return 200 "addr=\$server_addr\n"; }
    }
}
NGX
ip netns exec "$NS" nginx -p "$WORK/ns-nginx" -c "$WORK/ns-nginx/nginx.conf" -g 'daemon off;' \
    > "$WORK/ns-nginx/out.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NS" nft -f - <<NFT
table inet he {
    chain out {
        type filter hook output priority 0;
        ip6 daddr 2001:db8::10 tcp dport $HE_DROP counter drop
        ip6 daddr 2001:db8::10 tcp dport $HE_RESET counter reject with tcp reset
    }
}
NFT
nft_count() {  # nft_count PORT: packets the rule for PORT matched
    ip netns exec "$NS" nft list chain inet he out | awk -v p="$1" '$0 ~ "dport " p " " { for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1) }'
}
HE_GW=$(free_port)
cat > "$WORK/gw-he.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$HE_GW"; } );
resolver = { hosts = ( { name = "both.test"; address = "2001:db8::10"; }, { name = "both.test"; address = "192.0.2.10"; } ); };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; } );
rules = ( { match = "both.test"; identity = "ops"; server_name = "orders.dc2.test"; } );
limits = { connect_timeout_ms = 20000; };
log = { access = "$WORK/gw-he-access.log"; };
CONF
ip netns exec "$NS" "${GW_WRAP[@]}" "$MTLSGW" run -c "$WORK/gw-he.conf" >> "$WORK/gw-he.log" 2>&1 &
GW_PIDS+=($!)
PIDS+=($!)
for _ in $(seq 100); do
    ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HE_GW && exec 3<>/dev/tcp/192.0.2.10/$HE_DROP" 2>/dev/null && break
    sleep 0.1
done
ns_curl() { ip netns exec "$NS" curl -s -m 8 --socks5-hostname "127.0.0.1:$HE_GW" "$@"; }
out=$(ns_curl "http://both.test:$HE_DROP/")
expect_eq "SYNs to the IPv6 address dropped: the IPv4 address answers well within the connect timeout" \
    "addr=192.0.2.10" "$out"
drops=$(nft_count $HE_DROP)
check "... after an attempt at the IPv6 address first (nftables counted $drops)" [ "${drops:-0}" -ge 1 ]
expect_contains "... the access log names the address that connected" "upstream=192.0.2.10:$HE_DROP" \
    "$(cat "$WORK/gw-he-access.log")"
out=$(ns_curl "http://both.test:$HE_DROP/again")
expect_eq "the next tunnel to that host: IPv4 again" "addr=192.0.2.10" "$out"
expect_eq "... tried first: no SYN to the IPv6 address this time (the family that worked is remembered)" \
    "$drops" "$(nft_count $HE_DROP)"
out=$(ns_curl "http://both.test:$HE_RESET/")
expect_eq "SYNs to the IPv6 address reset: the IPv4 address at once" "addr=192.0.2.10" "$out"
check "... after the reset from the IPv6 address (nftables counted $(nft_count $HE_RESET))" \
    [ "$(nft_count $HE_RESET)" -ge 1 ]

finish
