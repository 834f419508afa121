#!/usr/bin/env bash
# Round trips: what the gateway does to spend as few as it can (DESIGN "Round trips").
# Timing-free: each check is about which connection carried what, or about a wait that
# would outlast the client's timeout many times over.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
NGX_FULL=$(free_port)
start_nginx_with "$NGX_FULL" <<NGX
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
}
NGX

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "full.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_FULL"; server_name = "orders.dc2.test"; }
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

finish
