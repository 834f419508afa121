#!/usr/bin/env bash
# The seed flows over mutual TLS to real nginx: curl through CONNECT and SOCKS5 to an
# HTTPS server with ssl_verify_client on, per-host identities, redis-cli through
# proxychains4 to redis behind an nginx stream server, and every verification failure.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1 billing.dc2.test=127.0.0.1 redis.dc2.test=127.0.0.1 \
    wrongname.dc2.test=127.0.0.1 expired.dc2.test=127.0.0.1 revoked.dc2.test=127.0.0.1 \
    untrusted.dc2.test=127.0.0.1 rogue.dc2.test=127.0.0.1 strict12.dc2.test=127.0.0.1

# Strict servers that answer a bad client certificate with an alert.
S13=$(free_port); S12=$(free_port)
openssl s_server -quiet -accept "127.0.0.1:$S13" -tls1_3 -cert "$PKI/orders.crt" -key "$PKI/orders.key" \
    -cert_chain "$PKI/int.crt" -CAfile "$PKI/client-ca.crt" -Verify 2 -verify_return_error -www > "$WORK/s13.log" 2>&1 &
PIDS+=($!); wait_port "$S13" $!
openssl s_server -quiet -accept "127.0.0.1:$S12" -tls1_2 -cert "$PKI/orders.crt" -key "$PKI/orders.key" \
    -cert_chain "$PKI/int.crt" -CAfile "$PKI/client-ca.crt" -Verify 2 -verify_return_error -www > "$WORK/s12.log" 2>&1 &
PIDS+=($!); wait_port "$S12" $!

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    crl = "$PKI/crls.pem"; verify_depth = 2; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; },
  { name = "intruder"; certificate = "$PKI/intruder.crt"; key = "$PKI/intruder.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "orders.dc2.test:443"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "billing.dc2.test:443"; identity = "billing"; upstream_port = $NGX_HTTPS; },
  { match = "redis.dc2.test:6379"; identity = "ops"; upstream_port = $NGX_REDIS; },
  { match = "wrongname.dc2.test:443"; identity = "ops"; upstream = "127.0.0.1:$NGX_REDIS"; },
  { match = "expired.dc2.test:443"; identity = "ops"; upstream_port = $NGX_EXPIRED; },
  { match = "revoked.dc2.test:443"; identity = "ops"; upstream_port = $NGX_REVOKED; },
  { match = "untrusted.dc2.test:443"; identity = "ops"; upstream_port = $NGX_UNTRUSTED; },
  { match = "rogue.dc2.test:443"; identity = "intruder"; upstream = "orders.dc2.test:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "strict12.dc2.test:443"; identity = "ops"; upstream = "127.0.0.1:$NGX_TLS12"; },
  { match = "rogue.dc2.test:6379"; identity = "intruder"; upstream = "127.0.0.1:$NGX_REDIS"; server_name = "redis.dc2.test"; },
  { match = "rogue.dc2.test:1013"; identity = "intruder"; upstream = "127.0.0.1:$S13"; server_name = "orders.dc2.test"; },
  { match = "rogue.dc2.test:1012"; identity = "intruder"; upstream = "127.0.0.1:$S12"; server_name = "orders.dc2.test"; },
  { match = "orders.dc2.test:1013"; identity = "ops"; upstream = "127.0.0.1:$S13"; },
  { match = "*"; action = "deny"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"

# curl speaks plain HTTP inside the tunnel; the gateway adds mTLS. (curl's own TLS is not
# used: the gateway's upstream is the TLS endpoint.) So ask for http:// over CONNECT with
# --proxytunnel, and the nginx server sees our client certificate.
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://orders.dc2.test:443/hello)
expect_contains "CONNECT: nginx sees identity ops" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://billing.dc2.test:443/hello)
expect_contains "SOCKS5: billing host sees identity billing" "dn=CN=billing,O=mtlsgw-test" "$out"
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://orders.dc2.test:443/hello)
expect_contains "SOCKS5: orders host sees identity ops" "dn=CN=ops,O=mtlsgw-test" "$out"

# redis-cli through proxychains4 -> SOCKS5 -> mTLS -> nginx stream -> redis
proxychains_conf "$WORK/pc.conf" "$GW_PORT"
out=$(proxychains4 -q -f "$WORK/pc.conf" redis-cli -h redis.dc2.test -p 6379 SET greeting hej 2>&1)
expect_eq "redis SET through proxychains4 + mTLS" "OK" "$out"
out=$(proxychains4 -q -f "$WORK/pc.conf" redis-cli -h redis.dc2.test -p 6379 GET greeting 2>&1)
expect_eq "redis GET through proxychains4 + mTLS" "hej" "$out"
sleep 0.3
expect_contains "nginx stream log shows the client certificate subject" 'dn="CN=ops,O=mtlsgw-test"' "$(cat "$WORK/nginx/logs/stream.log")"

# Failures: precise status, Proxy-Status, reason in words; no byte reaches the backend.
before=$(wc -l < "$WORK/backend.log")
probe() {  # probe HOST -> "status|proxy-status line|body"
    curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://$1:443/should-not-arrive" -o /dev/null \
        -w '%{http_code}' -D "$WORK/probe.h" > /dev/null 2>&1 || true
    tr -d '\r' < "$WORK/probe.h"
}
h=$(probe wrongname.dc2.test)
expect_contains "name mismatch: 502" "HTTP/1.1 502" "$h"
expect_contains "name mismatch: tls_certificate_error" "error=tls_certificate_error" "$h"
expect_contains "name mismatch: says which names" "certificate is for redis.dc2.test, not 127.0.0.1" "$h"
h=$(probe expired.dc2.test)
expect_contains "expired server certificate" "certificate has expired" "$h"
h=$(probe revoked.dc2.test)
expect_contains "revoked server certificate (CRL)" "revoked" "$h"
h=$(probe untrusted.dc2.test)
expect_contains "untrusted server" "error=tls_certificate_error" "$h"
expect_contains "untrusted server: reason" "not in the trust of identity" "$h"
# nginx http completes the handshake and answers 400 itself: the backend never sees it.
h=$(probe rogue.dc2.test)
expect_contains "nginx http rejects a client certificate from an unknown CA with 400" "HTTP/1.1 400" "$h"
# nginx stream closes right after the handshake: connection_terminated, and redis never
# sees the command.
rep=$(python3 "$HERE/socks_probe.py" "$GW_PORT" rogue.dc2.test 6379)
expect_eq "nginx stream rejecting our certificate: SOCKS5 REP 0x01" "rep=1" "$rep"
h=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://rogue.dc2.test:6379/ -D - -o /dev/null 2>/dev/null | tr -d '\r' || true)
expect_contains "nginx stream rejecting our certificate: connection_terminated" "error=connection_terminated" "$h"
expect_contains "nginx stream rejecting our certificate: says why" "our certificate was probably rejected" "$h"
h=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://rogue.dc2.test:1013/ -D - -o /dev/null 2>/dev/null | tr -d '\r' || true)
expect_contains "strict TLS 1.3 server: tls_alert_received" "error=tls_alert_received" "$h"
expect_contains "strict TLS 1.3 server: names identity and alert" 'upstream rejected client certificate of identity \"intruder\" (TLS alert' "$h"
h=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://rogue.dc2.test:1012/ -D - -o /dev/null 2>/dev/null | tr -d '\r' || true)
expect_contains "strict TLS 1.2 server: tls_alert_received" "error=tls_alert_received" "$h"
expect_contains "strict TLS 1.2 server: names the alert" "TLS alert" "$h"
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://orders.dc2.test:1013/ | head -3 || true)
expect_contains "strict TLS 1.3 server accepts identity ops" "HTTP/1.0 200" "$(printf 'GET / HTTP/1.0\r\n\r\n' | curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" telnet://orders.dc2.test:1013 2>/dev/null | head -1 || true)"
redis_keys=$(redis-cli -p "$REDIS_PORT" DBSIZE)
expect_eq "redis saw nothing from the rejected tunnels (only the greeting key)" "1" "$redis_keys"
after=$(wc -l < "$WORK/backend.log")
expect_eq "no request reached the backend in any failure" "$before" "$after"

# SOCKS5 reply code for a certificate failure is 0x01 (general failure).
rep=$(python3 "$HERE/socks_probe.py" "$GW_PORT" untrusted.dc2.test 443)
expect_eq "SOCKS5 REP for tls_certificate_error" "rep=1" "$rep"

# TLS 1.2 terminator works as well.
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://strict12.dc2.test:443/)
expect_contains "TLS 1.2 terminator" "proto=TLSv1.2" "$out"
expect_contains "TLS 1.2 terminator sees identity" "dn=CN=ops,O=mtlsgw-test" "$out"

check "gateway still running" gw_alive
grep -q "BEGIN.*PRIVATE KEY" "$WORK/gw.log" && fail "private key material in the log" || pass "no key material in the log"
finish
