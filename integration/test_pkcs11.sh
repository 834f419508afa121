#!/usr/bin/env bash
# Keys in a PKCS#11 token (SoftHSM, made by this test): the ops key imported into the token
# and its PEM file deleted; mTLS through http_proxy and SOCKS5 (redis-cli under
# proxychains4) with nginx seeing CN=ops; 20 concurrent full handshakes; a key generated
# on the token by `identity new --pkcs11`, its CSR signed by the test CA, used; check's
# errors for a wrong PIN, a missing object and token; a stopped signer (a hung token)
# fails only the handshakes that wait on it, with key_unavailable, while a file-key
# identity keeps working; a killed signer fails the handshake waiting on it at once and
# the next one recovers; the certificate rotates while the key stays on the token.
source "$(dirname "$0")/lib.sh"

MODULE=/usr/lib/softhsm/libsofthsm2.so
if [ ! -e "$MODULE" ] || ! command -v softhsm2-util > /dev/null || ! command -v pkcs11-tool > /dev/null; then
    echo "softhsm2 and opensc are needed (integration/deps.sh installs them)" >&2
    exit 1
fi

make_pki
make_client_cert other
(   # A second client CA and an identity under it, for identity lists mixing token and file keys.
    cd "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client-ca2.key 2>/dev/null
    openssl req -x509 -new -key client-ca2.key -subj "/O=mtlsgw-test/CN=Client CA 2" -days 3650 -out client-ca2.crt \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out alt.key 2>/dev/null && chmod 600 alt.key
    openssl req -new -key alt.key -subj "/O=mtlsgw-test/CN=alt" -out alt.csr 2>/dev/null
    openssl x509 -req -in alt.csr -CA client-ca2.crt -CAkey client-ca2.key -CAcreateserial -days 365 \
        -extfile ca.cnf -extensions v3_client -out alt.crt 2>/dev/null
)

# ---- the token ----
make_softhsm_token gw tokPIN4711 tokSO5678
printf 'badPIN0000\n' > "$WORK/wrong.pin"
chmod 600 "$WORK/gw.pin" "$WORK/wrong.pin"
openssl pkcs8 -topk8 -nocrypt -in "$PKI/ops.key" -out "$WORK/ops.pk8"
softhsm2-util --import "$WORK/ops.pk8" --token gw --label ops --id 01 --pin tokPIN4711 > /dev/null
rm -f "$WORK/ops.pk8" "$PKI/ops.key"
check "the ops key is on the token (pkcs11-tool lists it)" \
    bash -c "pkcs11-tool --module $MODULE --token-label gw --login --pin tokPIN4711 --list-objects --type privkey 2>/dev/null | grep -q 'label: *ops'"
check "its PEM file is gone" test ! -e "$PKI/ops.key"

# ---- the remote side: every handshake full (no tickets, no cache), so every tunnel signs ----
start_redis
P_FULL=$(free_port) P_REDIS=$(free_port) P_PKCS1=$(free_port) P_CA2=$(free_port)
start_nginx_with "$P_FULL" "$P_REDIS" <<NGX
http {
    access_log off;
    include $WORK/nginx/temp_paths.conf;
    # Every server: mTLS with the client CA, and no session reuse at all, so that every
    # handshake is full and needs a signature from the token.
    ssl_certificate $PKI/orders.chain.crt;
    ssl_certificate_key $PKI/orders.key;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    ssl_session_tickets off;
    ssl_session_cache off;
    server {
        listen 127.0.0.1:$P_FULL ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { return 200 "dn=\$ssl_client_s_dn serial=\$ssl_client_serial reused=\$ssl_session_reused proto=\$ssl_protocol\n"; }
    }
    server {
        # TLS 1.2 asking for PKCS#1 v1.5 signatures from clients (no PSS).
        listen 127.0.0.1:$P_PKCS1 ssl;
        ssl_protocols TLSv1.2;
        ssl_conf_command ClientSignatureAlgorithms RSA+SHA256:ECDSA+SHA256;
        location / { return 200 "dn=\$ssl_client_s_dn proto=\$ssl_protocol\n"; }
    }
    server {
        # Trusts (and names in its CertificateRequest) the second client CA only.
        listen 127.0.0.1:$P_CA2 ssl;
        ssl_client_certificate $PKI/client-ca2.crt;
        location / { return 200 "dn=\$ssl_client_s_dn proto=\$ssl_protocol\n"; }
    }
}
stream {
    log_format mtls '\$remote_addr dn="\$ssl_client_s_dn" reused=\$ssl_session_reused \$status';
    access_log $WORK/nginx/logs/stream.log mtls;
    server {
        listen 127.0.0.1:$P_REDIS ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/redis.chain.crt;
        ssl_certificate_key $PKI/redis.key;
        ssl_client_certificate $PKI/client-ca.crt;
        ssl_verify_client on;
        proxy_pass 127.0.0.1:$REDIS_PORT;
    }
}
NGX

GW_PORT=$(free_port) ADMIN_PORT=$(free_port)
TOKEN_KEY="pkcs11:token=gw;object=ops"
write_conf() {  # write_conf FILE [EXTRA-IDENTITIES] [EXTRA-RULES]
    cat > "$1" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { hosts = ( { name = "orders.dc2.test"; address = "127.0.0.1"; },
                       { name = "redis.dc2.test"; address = "127.0.0.1"; } ); };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$TOKEN_KEY"; key_password_file = "$WORK/gw.pin";
    pkcs11_module = "$MODULE"; trust = "$PKI/server-trust.crt"; },
  { name = "other"; certificate = "$PKI/other.crt"; key = "$PKI/other.key"; trust = "$PKI/server-trust.crt"; }${2:-}
);
rules = (
  { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $P_FULL; },
  { match = "other.dc2.test:80"; identity = "other"; upstream = "127.0.0.1:$P_FULL"; server_name = "orders.dc2.test"; },
  { match = "redis.dc2.test:6379"; identity = "ops"; upstream_port = $P_REDIS; }${3:-},
  { match = "*"; action = "deny"; }
);
limits = { key_timeout_ms = 1500; handshake_timeout_ms = 8000; };
upstream_pool = { idle_per_key = 0; };  # every request a handshake: this test is about signing
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
}
write_conf "$WORK/gw.conf"

out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) && rc=0 || rc=$?
expect_eq "check: a token key loads (logged in, found, test signature verified)" 0 "$rc"
[ "$rc" = 0 ] || echo "$out"

# Early data refused a full handshake may follow, with a token signing mid-relay: refused.
write_conf "$WORK/early.conf" "" ",
  { match = \"early.dc2.test:80\"; identity = \"ops\"; upstream_port = $P_FULL; early_data = true; }"
out=$("$MTLSGW" check -c "$WORK/early.conf" 2>&1) && rc=0 || rc=$?
expect_eq "check: early_data with a token key is an error" 1 "$rc"
expect_contains "... file:line, the setting, why" \
    "early.conf:13: rules[3].early_data: identity \"ops\" keeps its key in a token: early data needs a key file" "$out"

out=$("$MTLSGW" identity check -c "$WORK/gw.conf" ops 2>&1) || true
expect_contains "identity check proves the token key matches the certificate" "key matches certificate" "$out"
expect_contains "identity check names the token" 'token "gw"' "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf" 2>&1) || true
expect_contains "identity list: key pkcs11 token=... object=..." "key        pkcs11 token=gw object=ops" "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf" --json 2>&1) || true
expect_contains "identity list --json has the key's URI" '"key": "pkcs11:token=gw;object=ops"' "$out"

start_gw "$WORK/gw.conf"
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1 || true)
check "a signer process runs beside the gateway" test -n "$SIGNER"
check "the signer links no BoringSSL (only the module's OpenSSL)" \
    bash -c "! grep -q 'android/libcrypto' /proc/$SIGNER/maps && grep -q 'libsofthsm2' /proc/$SIGNER/maps"
check "the gateway process never loads the module" bash -c "! grep -q libsofthsm2 /proc/$GW_PID/maps"

out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80 --connect 2>&1) || true
expect_contains "explain --connect signs with the token: the server accepted us" "client cert  accepted" "$out"
expect_contains "explain says where the key is" 'key          in PKCS#11 token "gw" (token=gw object=ops)' "$out"

# ---- http_proxy and SOCKS5 ----
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/ 2>&1) || true
expect_contains "http_proxy: nginx sees CN=ops, signed by the token" "dn=CN=ops,O=mtlsgw-test" "$out"
expect_contains "http_proxy: a full handshake (nothing resumed)" "reused=." "$out"
out=$(curl -sS --max-time 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://orders.dc2.test:80/ 2>&1) || true
expect_contains "SOCKS5 (curl): nginx sees CN=ops" "dn=CN=ops,O=mtlsgw-test" "$out"
proxychains_conf "$WORK/pc.conf" "$GW_PORT" socks5
out=$(proxychains4 -q -f "$WORK/pc.conf" redis-cli -h redis.dc2.test -p 6379 PING 2>&1) || true
expect_eq "SOCKS5 (redis-cli under proxychains4): PONG over mTLS" "PONG" "$out"
sleep 0.3
check "nginx stream saw CN=ops" grep -q 'dn="CN=ops,O=mtlsgw-test"' "$WORK/nginx/logs/stream.log"

# ---- 20 concurrent new tunnels, each a full handshake signed by the token ----
CLIENTS=()
for i in $(seq 20); do
    (http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 20 "http://orders.dc2.test/c$i" > "$WORK/c$i.out" 2>&1) &
    CLIENTS+=($!)
done
wait "${CLIENTS[@]}" || true
good=$(cat "$WORK"/c*.out | grep -c "dn=CN=ops,O=mtlsgw-test serial=[0-9A-F]* reused=\. " || true)
expect_eq "20 concurrent full handshakes signed by the token" 20 "$good"

# ---- a hung token: the signer stopped ----
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1)
kill -STOP "$SIGNER"
(http_proxy=http://127.0.0.1:$GW_PORT curl -s --max-time 20 -D "$WORK/hung.h" -o "$WORK/hung.out" http://orders.dc2.test/hung) &
HUNG=$!
sleep 0.3
t0=$(date +%s%N)
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://other.dc2.test/ 2>&1) || true
t1=$(date +%s%N)
expect_contains "while the token hangs, a file-key identity still gets through" "dn=CN=other,O=mtlsgw-test" "$out"
wait "$HUNG" || true
expect_contains "the handshake waiting on the hung token: 503" "HTTP/1.1 503" "$(cat "$WORK/hung.h")"
expect_contains "... with Proxy-Status proxy_internal_error" "proxy_internal_error" "$(cat "$WORK/hung.h")"
expect_contains "... and says the token did not sign in time" "did not sign within key_timeout_ms" "$(cat "$WORK/hung.out")"
check "the access log says result=key_unavailable" grep -q 'result=key_unavailable.*did not sign within key_timeout_ms' "$WORK/gw.log"
check "the hung signer was ended" bash -c "! kill -0 $SIGNER 2>/dev/null"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/after-hang 2>&1) || true
expect_contains "the next handshake gets a new signer and works" "dn=CN=ops,O=mtlsgw-test" "$out"

# ---- the signer killed while a handshake waits on it ----
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1)
kill -STOP "$SIGNER"
(http_proxy=http://127.0.0.1:$GW_PORT curl -s --max-time 20 -o "$WORK/killed.out" -w '%{http_code}' http://orders.dc2.test/killed > "$WORK/killed.code") &
WAITING=$!
sleep 0.3
kill -KILL "$SIGNER"
wait "$WAITING" || true
expect_eq "the handshake waiting on a killed signer fails at once: 503" 503 "$(cat "$WORK/killed.code")"
expect_contains "... with a clear reason" "killed by signal 9" "$(cat "$WORK/killed.out")"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/recovered 2>&1) || true
expect_contains "the one after recovers (a new signer)" "dn=CN=ops,O=mtlsgw-test" "$out"
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1)
kill -KILL "$SIGNER"
sleep 0.2
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/idle-kill 2>&1) || true
expect_contains "a signer killed while idle is replaced on the next handshake" "dn=CN=ops,O=mtlsgw-test" "$out"
metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
expect_contains "metrics count key_unavailable tunnels" 'result="key_unavailable"' "$metrics"
check "metrics: signatures signed by the token" grep -qE '^mtlsgw_key_signatures_total\{identity="ops",result="signed"\} [1-9]' <<< "$metrics"
check "metrics: the signature that timed out" grep -qE '^mtlsgw_key_signatures_total\{identity="ops",result="timeout"\} 1$' <<< "$metrics"
check "metrics: the one whose signer was killed" grep -qE '^mtlsgw_key_signatures_total\{identity="ops",result="failed"\} 1$' <<< "$metrics"
check "metrics: time of the signed ones" grep -qE '^mtlsgw_key_sign_seconds_count\{identity="ops"\} [1-9]' <<< "$metrics"
if grep -q 'mtlsgw_key_signatures_total{identity="other"' <<< "$metrics"; then
    fail "metrics: token series for the file-key identity"
else
    pass "metrics: no token series for the file-key identity"
fi
check "the log says a dead signer was replaced, and how it ended" grep -q "PKCS#11 signer for token=gw object=ops (pid [0-9]*) killed by signal 9 (Killed): started a new one" "$WORK/gw.log"

# ---- certificate rotation: a new certificate for the same key on the token ----
openssl x509 -in "$PKI/ops.crt" -pubkey -noout > "$WORK/ops.pub"
openssl x509 -new -subj "/O=mtlsgw-test/CN=ops" -force_pubkey "$WORK/ops.pub" -CA "$PKI/client-ca.crt" \
    -CAkey "$PKI/client-ca.key" -set_serial 0x4242 -days 30 -extfile "$PKI/ca.cnf" -extensions v3_client \
    -out "$WORK/ops-rotated.crt" 2>/dev/null
cp "$WORK/ops-rotated.crt" "$PKI/ops.crt.new" && mv "$PKI/ops.crt.new" "$PKI/ops.crt"
for _ in $(seq 60); do grep -q "identity files changed" "$WORK/gw.log" && break; sleep 0.1; done
sleep 0.5
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/rotated 2>&1) || true
expect_contains "a rotated certificate is picked up with the key still on the token" "serial=4242" "$out"

# ---- a key generated on the token, its CSR signed by the CA ----
GEN_URI="pkcs11:token=gw;object=tok2?module-path=$MODULE&pin-source=file:$WORK/gw.pin"
out=$("$MTLSGW" identity new tok2 --pkcs11 "$GEN_URI" --subject "/O=mtlsgw-test/CN=tok2" --out "$WORK/ids" 2>&1) && rc=0 || rc=$?
expect_eq "identity new --pkcs11 generates the key on the token" 0 "$rc"
[ "$rc" = 0 ] || echo "$out"
check "its CSR verifies (signed by the token key)" bash -c "openssl req -in $WORK/ids/tok2.csr -verify -noout > /dev/null 2>&1"
check "no private key file was written" test ! -e "$WORK/ids/tok2.key"
check "the key is on the token, not extractable" \
    bash -c "pkcs11-tool --module $MODULE --token-label gw --login --pin tokPIN4711 --list-objects --type privkey 2>/dev/null | grep -A6 'label: *tok2' | grep -q 'never extractable\|sensitive'"
out=$("$MTLSGW" identity new tok2 --pkcs11 "$GEN_URI" --subject "/O=mtlsgw-test/CN=tok2" --out "$WORK/ids2" 2>&1) && rc=0 || rc=$?
expect_eq "identity new refuses an object that exists (exit 1)" 1 "$rc"
expect_contains "... and says so" 'already exists on token "gw"' "$out"
# Wrong arguments: exit 2 and one line that says what is wrong; nothing made on the token.
for bad in "ed25519|$GEN_URI|--key for a token must be ec-p256" \
           "ec-p256|pkcs11:token=gw;object=tok9?pin-source=file:$WORK/gw.pin|the URI needs module-path=" \
           "ec-p256|pkcs11:token=gw;object=tok9?module-path=$MODULE|the URI needs pin-source=file:" \
           "ec-p256|pkcs11:token=gw;id=%09?module-path=$MODULE&pin-source=file:$WORK/gw.pin|name the new key with object=" \
           "ec-p256|pkcs11:token=gw;object=tok9;pin-value=x|pin-value"; do
    IFS='|' read -r key uri want <<< "$bad"
    out=$("$MTLSGW" identity new tok9 --key "$key" --pkcs11 "$uri" --subject "/CN=tok9" --out "$WORK/ids9" 2>&1) && rc=0 || rc=$?
    expect_eq "identity new --pkcs11 refuses: $want (exit 2, one line)" "2 1" "$rc $(wc -l <<< "$out")"
    expect_contains "... saying so" "$want" "$out"
done
out=$("$MTLSGW" identity new tok9 --pkcs11 "pkcs11:token=nowhere;object=tok9?module-path=$MODULE&pin-source=file:$WORK/gw.pin" \
      --subject "/CN=tok9" --out "$WORK/ids9" 2>&1) && rc=0 || rc=$?
expect_eq "identity new --pkcs11 on a token that is not there: exit 1" 1 "$rc"
expect_contains "... naming the token asked for, not the query" 'no token matches pkcs11:token=nowhere (tokens present: "gw")' "$out"
check "nothing was made on the token by the refused commands" \
    bash -c "! pkcs11-tool --module $MODULE --token-label gw --login --pin tokPIN4711 -O 2>/dev/null | grep -q 'tok9'"
openssl x509 -req -in "$WORK/ids/tok2.csr" -CA "$PKI/client-ca.crt" -CAkey "$PKI/client-ca.key" -CAcreateserial \
    -days 30 -extfile "$PKI/ca.cnf" -extensions v3_client -out "$WORK/ids/tok2.crt" 2>/dev/null
write_conf "$WORK/gw.conf" ",
  { name = \"tok2\"; certificate = \"$WORK/ids/tok2.crt\"; key = \"$GEN_URI\"; trust = \"$PKI/server-trust.crt\"; }" ",
  { match = \"tok2.dc2.test:80\"; identity = \"tok2\"; upstream = \"127.0.0.1:$P_FULL\"; server_name = \"orders.dc2.test\"; }"
reload_gw
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://tok2.dc2.test/ 2>&1) || true
expect_contains "the generated key, module and PIN from the URI: nginx sees CN=tok2" "dn=CN=tok2,O=mtlsgw-test" "$out"
# RSA (PSS in TLS 1.3, PKCS#1 v1.5 where the server asks for it) and P-384 keys made on the token.
for k in rsa:rsa-2048 p384:ec-p384; do
    n=tok-${k%%:*}
    "$MTLSGW" identity new "$n" --key "${k#*:}" --subject "/O=mtlsgw-test/CN=$n" --out "$WORK/ids" \
        --pkcs11 "pkcs11:token=gw;object=$n?module-path=$MODULE&pin-source=file:$WORK/gw.pin" > "$WORK/$n.new" 2>&1 ||
        fail "identity new $n: $(cat "$WORK/$n.new")"
    openssl x509 -req -in "$WORK/ids/$n.csr" -CA "$PKI/client-ca.crt" -CAkey "$PKI/client-ca.key" -CAcreateserial \
        -days 30 -extfile "$PKI/ca.cnf" -extensions v3_client -out "$WORK/ids/$n.crt" 2>/dev/null
done
id_of() { echo ",
  { name = \"$1\"; certificate = \"$WORK/ids/$1.crt\"; key = \"pkcs11:token=gw;object=$1\"; pkcs11_module = \"$MODULE\";
    key_password_file = \"$WORK/gw.pin\"; trust = \"$PKI/server-trust.crt\"; }"; }
rule_of() { echo ",
  { match = \"$1.dc2.test:80\"; identity = \"$2\"; upstream = \"127.0.0.1:$3\"; server_name = \"orders.dc2.test\"; }"; }
# A key made by pkcs11-tool with CKA_ALWAYS_AUTHENTICATE (as a PIV card's signing slot):
# the token wants the PIN again before each signature; its certificate from the public key.
pkcs11-tool --module "$MODULE" --token-label gw --login --pin tokPIN4711 --keypairgen --key-type EC:prime256v1 \
    --always-auth --label aa --id 0a > /dev/null 2>&1
pkcs11-tool --module "$MODULE" --token-label gw --read-object --type pubkey --id 0a -o "$WORK/aa.pub.der" > /dev/null 2>&1
openssl pkey -pubin -inform DER -in "$WORK/aa.pub.der" -out "$WORK/aa.pub"
openssl x509 -new -subj "/O=mtlsgw-test/CN=aa" -force_pubkey "$WORK/aa.pub" -CA "$PKI/client-ca.crt" \
    -CAkey "$PKI/client-ca.key" -set_serial 0xaa -days 30 -extfile "$PKI/ca.cnf" -extensions v3_client \
    -out "$WORK/ids/aa.crt" 2>/dev/null
TOK2_ID=",
  { name = \"tok2\"; certificate = \"$WORK/ids/tok2.crt\"; key = \"$GEN_URI\"; trust = \"$PKI/server-trust.crt\"; }"
ALT_ID=",
  { name = \"alt\"; certificate = \"$PKI/alt.crt\"; key = \"$PKI/alt.key\"; trust = \"$PKI/server-trust.crt\"; }"
LIST_RULES=",
  { match = \"list1.dc2.test:80\"; identity = [ \"alt\", \"ops\" ]; upstream = \"127.0.0.1:$P_FULL\"; server_name = \"orders.dc2.test\"; },
  { match = \"list2.dc2.test:80\"; identity = [ \"ops\", \"alt\" ]; upstream = \"127.0.0.1:$P_CA2\"; server_name = \"orders.dc2.test\"; }"
write_conf "$WORK/gw.conf" "$TOK2_ID$(id_of tok-rsa)$(id_of tok-p384)$(id_of aa)$ALT_ID" \
    "$(rule_of aa aa "$P_FULL")$(rule_of tok2 tok2 "$P_FULL")$(rule_of rsa13 tok-rsa "$P_FULL")$(rule_of rsa12 tok-rsa "$P_PKCS1")$(rule_of p384 tok-p384 "$P_FULL")$(rule_of ec12 tok2 "$P_PKCS1")$LIST_RULES"
reload_gw
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://rsa13.dc2.test/ 2>&1) || true
expect_contains "an RSA key on the token, TLS 1.3 (RSA-PSS)" "dn=CN=tok-rsa,O=mtlsgw-test serial=" "$out"
expect_contains "... over TLS 1.3" "proto=TLSv1.3" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://rsa12.dc2.test/ 2>&1) || true
expect_contains "an RSA key on the token, TLS 1.2 with PKCS#1 v1.5 asked for" "dn=CN=tok-rsa,O=mtlsgw-test proto=TLSv1.2" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://p384.dc2.test/ 2>&1) || true
expect_contains "a P-384 key on the token" "dn=CN=tok-p384,O=mtlsgw-test serial=" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://ec12.dc2.test/ 2>&1) || true
expect_contains "a P-256 key on the token, TLS 1.2" "dn=CN=tok2,O=mtlsgw-test proto=TLSv1.2" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://aa.dc2.test/ 2>&1) || true
expect_contains "a key that wants the PIN for every signature (CKA_ALWAYS_AUTHENTICATE)" "dn=CN=aa,O=mtlsgw-test" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://aa.dc2.test/again 2>&1) || true
expect_contains "... and again" "dn=CN=aa,O=mtlsgw-test" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://list1.dc2.test/ 2>&1) || true
expect_contains "identity list [file, token]: the server names CA 1, the token identity is presented" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://list2.dc2.test/ 2>&1) || true
expect_contains "identity list [token, file]: the server names CA 2, the file identity (P-384) is presented" "dn=CN=alt,O=mtlsgw-test" "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf" 2>&1) || true
expect_contains "identity list: the RSA token key" "rsa-2048, in token" "$out"
expect_contains "identity list: the P-384 token key" "ec-p384, in token" "$out"

out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/after-reload 2>&1) || true
expect_contains "after the reload the ops token key still signs" "dn=CN=ops,O=mtlsgw-test" "$out"
check "the gateway is alive" gw_alive

# ---- config errors, each with file:line ----
bad_conf() {  # bad_conf NAME KEY PIN-FILE
    sed -e "s|key = \"$TOKEN_KEY\"; key_password_file = \"$WORK/gw.pin\"|key = \"$2\"; key_password_file = \"$3\"|" \
        "$WORK/gw.conf" > "$WORK/$1.conf"
}
bad_conf wrongpin "$TOKEN_KEY" "$WORK/wrong.pin"
expect_check_error "a wrong PIN" "$WORK/wrongpin.conf" "wrong PIN (CKR_PIN_INCORRECT)"
expect_check_error "a wrong PIN: file:line" "$WORK/wrongpin.conf" "$WORK/wrongpin.conf:5: identities.ops"
cp "$WORK/gw.pin" "$WORK/loose.pin" && chmod 644 "$WORK/loose.pin"
bad_conf loosepin "$TOKEN_KEY" "$WORK/loose.pin"
out=$("$MTLSGW" identity check -c "$WORK/loosepin.conf" ops 2>&1) && rc=0 || rc=$?
expect_eq "identity check: a PIN file readable by others is a problem (exit 1)" 1 "$rc"
expect_contains "... naming the file and its mode" "loose.pin has mode 0644: readable by others" "$out"
bad_conf noobject "pkcs11:token=gw;object=nope" "$WORK/gw.pin"
expect_check_error "a missing object" "$WORK/noobject.conf" 'no private key on token "gw" matches pkcs11:object=nope'
bad_conf notoken "pkcs11:token=elsewhere;object=ops" "$WORK/gw.pin"
expect_check_error "a missing token names the tokens present" "$WORK/notoken.conf" 'no token matches pkcs11:token=elsewhere (tokens present: "gw")'
bad_conf badpkcs11 "pkcs11:token=gw;object=ops;pin-value=1234" "$WORK/gw.pin"
expect_check_error "a PIN inside the URI is refused" "$WORK/badpkcs11.conf" "pin-value"
bad_conf nokey "pkcs11:token=gw" "$WORK/gw.pin"
expect_check_error "a URI without object or id" "$WORK/nokey.conf" "names no key"
sed -e "s|pkcs11_module = \"$MODULE\"; ||" "$WORK/gw.conf" > "$WORK/nomodule.conf"
expect_check_error "no module" "$WORK/nomodule.conf" "pkcs11_module: required"
sed -e "s|key = \"$PKI/other.key\";|key = \"$PKI/other.key\"; pkcs11_module = \"$MODULE\";|" "$WORK/gw.conf" > "$WORK/modfile.conf"
expect_check_error "pkcs11_module with a key file" "$WORK/modfile.conf" "only for a key in a token"
openssl x509 -in "$PKI/billing.crt" > "$WORK/billing-cert.crt"
sed -e "s|certificate = \"$PKI/ops.crt\"|certificate = \"$WORK/billing-cert.crt\"|" "$WORK/gw.conf" > "$WORK/mismatch.conf"
expect_check_error "a token key that is not the certificate's" "$WORK/mismatch.conf" "does not match the certificate"

# A reload with a wrong PIN is refused and the running identity keeps signing.
cp "$WORK/wrongpin.conf" "$WORK/gw.conf"
kill -HUP "$GW_PID"
for _ in $(seq 50); do grep -q "reload (SIGHUP) failed" "$WORK/gw.log" && break; sleep 0.1; done
check "a reload with a wrong PIN is refused" grep -q "wrong PIN" "$WORK/gw.log"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/kept 2>&1) || true
expect_contains "the running token identity keeps signing" "dn=CN=ops,O=mtlsgw-test" "$out"
if grep -q -e tokPIN4711 -e badPIN0000 "$WORK/gw.log"; then fail "a PIN is in the gateway's log"; else pass "the PIN is never in the gateway's log"; fi

# ---- the signer runs as the gateway's user ----
# Started as root with user = "nobody": the signer drops to nobody before it loads the
# module (the token must be usable by that user), and so does one started again later.
kill -TERM "$GW_PID"
for _ in $(seq "$WAIT_TRIES"); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
chmod 711 "$WORK"
# Under valgrind a signer started by the gateway (now nobody) first writes a valgrind log
# of its own into $WORK, before it execs: let it.
[ "${MTLSGW_VALGRIND:-0}" = 1 ] && chmod 1733 "$WORK"
GW_PORT=$(free_port) ADMIN_PORT=$(free_port)
write_conf "$WORK/gw-user.conf"
echo 'user = "nobody";' >> "$WORK/gw-user.conf"
expect_check_error "check looks for the token as the config's user (root's token folder: not found)"     "$WORK/gw-user.conf" "looked for as uid $(id -u nobody), the config's user"
chown -R nobody "$WORK/tokens"
# What a reload (as nobody) reads: as a deployment would have it, owned by the service user.
chown -R nobody "$PKI" "$WORK/gw.pin"
start_gw "$WORK/gw-user.conf"
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1 || true)
expect_eq "the signer runs as the gateway's user (uid of nobody)" "$(id -u nobody)" \
    "$(awk '/^Uid:/ {print $3}' "/proc/$SIGNER/status")"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/as-nobody 2>&1) || true
expect_contains "a gateway running as nobody signs with the token" "dn=CN=ops,O=mtlsgw-test" "$out"
kill -KILL "$SIGNER"
sleep 0.2
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/as-nobody-again 2>&1) || true
expect_contains "... and after its signer was killed, with one it started as nobody" "dn=CN=ops,O=mtlsgw-test" "$out"
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1 || true)
expect_eq "the new signer runs as nobody too" "$(id -u nobody)" "$(awk '/^Uid:/ {print $3}' "/proc/$SIGNER/status")"

# key_timeout_ms longer than the handshake's time: the handshake timeout still says the key
# is what is missing, and restarts the hung signer.
sed -i 's/limits = { key_timeout_ms = 1500; handshake_timeout_ms = 8000; };/limits = { key_timeout_ms = 30000; handshake_timeout_ms = 1200; };/' \
    "$WORK/gw-user.conf"
reload_gw
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1 || true)
kill -STOP "$SIGNER"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -s --max-time 20 -w ' %{http_code}' http://orders.dc2.test/slow 2>&1) || true
expect_contains "a token slower than handshake_timeout_ms: 503 key_unavailable, naming the limit" \
    "did not sign within handshake_timeout_ms (1200 ms); its signer is restarted" "$out"
expect_contains "... with status 503" " 503" "$out"
check "... and the hung signer was ended" bash -c "! kill -0 $SIGNER 2>/dev/null"
out=$(http_proxy=http://127.0.0.1:$GW_PORT curl -sS --max-time 10 http://orders.dc2.test/after-slow 2>&1) || true
expect_contains "the next handshake gets a new signer" "dn=CN=ops,O=mtlsgw-test" "$out"

finish
