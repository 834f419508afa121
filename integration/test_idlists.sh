#!/usr/bin/env bash
# Identity lists chosen by what the server asks for, and server_uri (SPIFFE IDs). One rule
# list [ "ops-new", "ops" ] in front of three nginx servers: one trusting the old client
# CA, one the new one (ops-new is issued under an intermediate of it), one that names no
# CA (optional_no_ca). Each must see the identity it asked for, on fresh and resumed
# sessions, never crossed. Then a server whose only name is a URI SAN.
source "$(dirname "$0")/lib.sh"

make_pki
(
    cd "$PKI"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }
    # The new client CA (root -> intermediate -> ops-new).
    ec client-ca2.key
    openssl req -x509 -new -key client-ca2.key -subj "/O=mtlsgw-test/CN=Client CA 2027" -days 3650 -out client-ca2.crt \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    ec client-int2.key
    openssl req -new -key client-int2.key -subj "/O=mtlsgw-test/CN=Client Intermediate 2027" -out client-int2.csr 2>/dev/null
    openssl x509 -req -in client-int2.csr -CA client-ca2.crt -CAkey client-ca2.key -CAcreateserial -days 3650 \
        -extfile ca.cnf -extensions v3_ca -out client-int2.crt 2>/dev/null
    ec ops-new.key
    openssl req -new -key ops-new.key -subj "/O=mtlsgw-test/CN=ops-new" -out ops-new.csr 2>/dev/null
    openssl x509 -req -in ops-new.csr -CA client-int2.crt -CAkey client-int2.key -CAcreateserial -days 365 \
        -extfile ca.cnf -extensions v3_client -out ops-new.leaf.crt 2>/dev/null
    cat ops-new.leaf.crt client-int2.crt > ops-new.crt
    # A server whose only subjectAltName is a SPIFFE ID.
    ec spiffe.key
    openssl req -new -key spiffe.key -subj "/O=mtlsgw-test" -out spiffe.csr 2>/dev/null
    printf '[ s ]\nbasicConstraints = CA:false\nextendedKeyUsage = serverAuth\nsubjectAltName = URI:spiffe://dc2.test/ns/prod/sa/orders\n' > spiffe.ext
    openssl x509 -req -in spiffe.csr -CA int.crt -CAkey int.key -CAcreateserial -days 365 -extfile spiffe.ext \
        -extensions s -out spiffe.leaf.crt 2>/dev/null
    cat spiffe.leaf.crt int.crt > spiffe.chain.crt
)

P_OLD=$(free_port) P_NEW=$(free_port) P_NONE=$(free_port) P_URI=$(free_port)
start_nginx_with "$P_OLD" "$P_URI" <<NGX
http {
    access_log off;
    include $WORK/nginx/temp_paths.conf;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $PKI/orders.chain.crt;
    ssl_certificate_key $PKI/orders.key;
    ssl_session_tickets on;
    server { listen 127.0.0.1:$P_OLD ssl; ssl_client_certificate $PKI/client-ca.crt; ssl_verify_client on;
             location / { return 200 "server=old dn=\$ssl_client_s_dn reused=\$ssl_session_reused\n"; } }
    server { listen 127.0.0.1:$P_NEW ssl; ssl_client_certificate $PKI/client-ca2.crt; ssl_verify_client on; ssl_verify_depth 2;
             location / { return 200 "server=new dn=\$ssl_client_s_dn reused=\$ssl_session_reused\n"; } }
    server { listen 127.0.0.1:$P_NONE ssl; ssl_verify_client optional_no_ca;
             location / { return 200 "server=none dn=\$ssl_client_s_dn reused=\$ssl_session_reused\n"; } }
    server { listen 127.0.0.1:$P_URI ssl; ssl_certificate $PKI/spiffe.chain.crt; ssl_certificate_key $PKI/spiffe.key;
             ssl_client_certificate $PKI/client-ca.crt; ssl_verify_client on;
             location / { return 200 "server=spiffe dn=\$ssl_client_s_dn\n"; } }
}
NGX

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
identities = (
  { name = "ops-new"; certificate = "$PKI/ops-new.crt"; key = "$PKI/ops-new.key"; trust = "$PKI/server-trust.crt"; },
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "old.dc2.test:80"; identity = [ "ops-new", "ops" ]; upstream = "127.0.0.1:$P_OLD"; server_name = "orders.dc2.test"; },
  { match = "new.dc2.test:80"; identity = [ "ops-new", "ops" ]; upstream = "127.0.0.1:$P_NEW"; server_name = "orders.dc2.test"; },
  { match = "none.dc2.test:80"; identity = [ "ops-new", "ops" ]; upstream = "127.0.0.1:$P_NONE"; server_name = "orders.dc2.test"; },
  { match = "spiffe.dc2.test:80"; identity = "ops"; upstream = "127.0.0.1:$P_URI"; server_name = "orders.dc2.test";
    server_uri = "spiffe://dc2.test/ns/prod/sa/orders"; },
  { match = "wrong-uri.dc2.test:80"; identity = "ops"; upstream = "127.0.0.1:$P_URI"; server_name = "orders.dc2.test";
    server_uri = "spiffe://dc2.test/ns/prod/sa/billing"; },
  { match = "*"; action = "deny"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
upstream_pool = { idle_per_key = 0; };  # every request a new connection: this test is about resumption
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) || true
expect_contains "identity lists and server_uri: check OK" "configuration OK" "$out"
start_gw "$WORK/gw.conf"
get() { http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 "http://$1/$2"; }

out=$(get old.dc2.test first)
expect_eq "server trusting the old CA: gets ops" "server=old dn=CN=ops,O=mtlsgw-test reused=." "$out"
out=$(get new.dc2.test first)
expect_eq "server trusting the new CA: gets ops-new (under its intermediate)" \
    "server=new dn=CN=ops-new,O=mtlsgw-test reused=." "$out"
out=$(get none.dc2.test first)
expect_eq "server naming no CA: gets the first of the list" "server=none dn=CN=ops-new,O=mtlsgw-test reused=." "$out"
for round in 1 2; do
    out=$(get old.dc2.test "again$round")
    expect_eq "old CA, resumed ($round): still ops" "server=old dn=CN=ops,O=mtlsgw-test reused=r" "$out"
    out=$(get new.dc2.test "again$round")
    expect_eq "new CA, resumed ($round): still ops-new" "server=new dn=CN=ops-new,O=mtlsgw-test reused=r" "$out"
done
sleep 0.3
log=$(cat "$WORK/gw.log")
expect_contains "access log: the identity presented (old CA)" "identity=ops upstream=127.0.0.1:$P_OLD" \
    "$(grep "dest=old.dc2.test" <<< "$log" | head -1)"
expect_contains "access log: the identity presented (new CA)" "identity=ops-new upstream=127.0.0.1:$P_NEW" \
    "$(grep "dest=new.dc2.test" <<< "$log" | head -1)"

out=$("$MTLSGW" explain -c "$WORK/gw.conf" new.dc2.test:80 --connect 2>&1 || true)
expect_contains "explain: the list" 'or ops  (/O=mtlsgw-test/CN=ops), when the server names its CA' "$out"
expect_contains "explain --connect: the CAs the server named, and the choice" \
    'server CAs   /O=mtlsgw-test/CN=Client CA 2027; presented "ops-new": its chain is under a CA the server named' "$out"
expect_contains "explain --connect: accepted with the chosen identity" "client cert  accepted, identity ops-new" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" old.dc2.test:80 --connect 2>&1 || true)
expect_contains "explain --connect (old CA): ops chosen" 'presented "ops": its chain is under a CA the server named' "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" none.dc2.test:80 --connect 2>&1 || true)
expect_contains "explain --connect (no CA named): the first, and why" 'server CAs   none; presented "ops-new", the first: the server named no CA' "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf")
expect_contains "identity list: a rule with a list is listed under each identity" "$WORK/gw.conf:9" \
    "$(sed -n '/^ops-new/,/^$/p' <<< "$out")"

# ---- server_uri ----
out=$(get spiffe.dc2.test uri)
expect_eq "server_uri: a server whose only SAN is that SPIFFE ID is accepted" "server=spiffe dn=CN=ops,O=mtlsgw-test" "$out"
h=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 -o /dev/null -D - http://wrong-uri.dc2.test/x | tr -d '\r')
expect_contains "wrong server_uri: 502" "HTTP/1.1 502" "$h"
expect_contains "wrong server_uri: tls_certificate_error, in words" \
    'error=tls_certificate_error; details="upstream certificate rejected: certificate is for URI:spiffe://dc2.test/ns/prod/sa/orders, not URI spiffe://dc2.test/ns/prod/sa/billing (server_uri)"' "$h"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" spiffe.dc2.test:80)
expect_contains "explain shows server_uri" "server uri   spiffe://dc2.test/ns/prod/sa/orders" "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf")
expect_contains "identity list shows server_uri" "(server_uri spiffe://dc2.test/ns/prod/sa/orders)" "$out"
# A name-only server (orders.dc2.test, no URI SAN) is refused under server_uri.
sed "s/127.0.0.1:$P_URI\"; server_name = \"orders.dc2.test\";\$/127.0.0.1:$P_OLD\"; server_name = \"orders.dc2.test\";/" \
    "$WORK/gw.conf" > "$WORK/gw2.conf"
grep -q "127.0.0.1:$P_OLD\"; server_name = \"orders.dc2.test\";$" "$WORK/gw2.conf"
out=$("$MTLSGW" explain -c "$WORK/gw2.conf" spiffe.dc2.test:80 --connect 2>&1 || true)
expect_contains "server_uri against a server with DNS names only: refused" "not URI spiffe://dc2.test/ns/prod/sa/orders (server_uri)" "$out"

# ---- config errors ----
sed 's/identity = \[ "ops-new", "ops" \]; upstream = "127.0.0.1:'"$P_OLD"'"/identity = [ "ops-new", "nosuch" ]; upstream = "127.0.0.1:'"$P_OLD"'"/' "$WORK/gw.conf" > "$WORK/bad.conf"
expect_check_error "an unknown identity in a list: file:line" "$WORK/bad.conf" "rules[0].identity: no identity is named \"nosuch\""
sed 's/key = "'"${PKI//\//\\/}"'\/ops.key"; trust/key = "'"${PKI//\//\\/}"'\/ops.key"; tls_min = "1.3"; trust/' "$WORK/gw.conf" > "$WORK/bad2.conf"
expect_check_error "identities whose TLS versions cannot serve together: a config error" "$WORK/bad2.conf" \
    'identity "ops" does not accept every TLS version of "ops-new"'
sed 's#server_uri = "spiffe://dc2.test/ns/prod/sa/billing"#server_uri = "billing"#' "$WORK/gw.conf" > "$WORK/bad3.conf"
expect_check_error "a server_uri that is no URI: what is expected" "$WORK/bad3.conf" 'rules[4].server_uri: expected a URI like'
finish
