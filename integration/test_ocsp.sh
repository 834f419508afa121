#!/usr/bin/env bash
# OCSP staples of upstream servers (DESIGN "OCSP staples of upstream servers"): responses
# made with `openssl ocsp` from the test CA's index (good, revoked, unknown, out of date,
# not yet valid, signed by an unrelated key, by a delegated responder with and without
# id-kp-OCSPSigning, for another certificate; faketime moves the responder's clock) and
# stapled by real terminators: nginx (ssl_stapling_file), HAProxy (a .ocsp file beside the
# certificate, http and tcp modes) and openssl s_server (-status_file). Through http_proxy
# and SOCKS5 each gives its result; the refused ones never get our client certificate
# (s_server logs every client certificate it receives).
source "$(dirname "$0")/lib.sh"

make_pki
O=$WORK/ocsp
mkdir -p "$O"
(
    cd "$PKI"
    # A server certificate revoked for key compromise, one the CA's index does not know,
    # and two delegated responders (with and without the OCSPSigning EKU).
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ocsprev.key 2>/dev/null
    openssl req -new -key ocsprev.key -subj "/CN=ocsprev" -addext "subjectAltName=DNS:ocsp.dc2.test" -out ocsprev.csr 2>/dev/null
    openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server -days 365 \
        -in ocsprev.csr -out ocsprev.crt 2>/dev/null
    openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -revoke ocsprev.crt -crl_reason keyCompromise 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ocspunk.key 2>/dev/null
    openssl req -new -key ocspunk.key -subj "/CN=ocspunk" -addext "subjectAltName=DNS:ocsp.dc2.test" -out ocspunk.csr 2>/dev/null
    openssl x509 -req -in ocspunk.csr -CA int.crt -CAkey int.key -CAcreateserial -days 365 -copy_extensions copy \
        -out ocspunk.crt 2>/dev/null
    for r in responder:OCSPSigning noeku:serverAuth; do
        n=${r%%:*}
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$n.key" 2>/dev/null
        openssl req -new -key "$n.key" -subj "/CN=DC2 OCSP $n" -out "$n.csr" 2>/dev/null
        printf 'basicConstraints=CA:false\nextendedKeyUsage=%s\n' "${r#*:}" > "$n.ext"
        openssl x509 -req -in "$n.csr" -CA int.crt -CAkey int.key -CAcreateserial -days 30 -extfile "$n.ext" \
            -out "$n.crt" 2>/dev/null
    done
    for c in ocsprev ocspunk; do cat "$c.crt" int.crt > "$c.chain.crt"; done
)
# resp NAME CERT SIGNER [faketime offset] [openssl ocsp options...]: $O/NAME.der
resp() {
    local name=$1 cert=$2 signer=$3 ft=${4:-} ; shift 4 || shift $#
    openssl ocsp -issuer "$PKI/int.crt" -cert "$PKI/$cert.crt" -no_nonce -reqout "$O/$name.req" 2>/dev/null
    (cd "$PKI" && ${ft:+faketime -f "$ft"} openssl ocsp -index index.txt -CA int.crt -rsigner "$signer.crt" \
        -rkey "$signer.key" -reqin "$O/$name.req" -respout "$O/$name.der" -ndays 1 "$@" 2> /dev/null)
    [ -s "$O/$name.der" ] || { echo "could not make the $name response" >&2; exit 1; }
}
resp good orders int ""
resp goodkey orders int "" -resp_key_id
resp revoked ocsprev int ""
resp unknown ocspunk int ""
resp stale orders int "-3d"
resp future orders int "+2d"
resp rogue orders rogue-ca ""
resp delegated orders responder ""
resp noeku orders noeku ""
cp "$O/revoked.der" "$O/wrongcert.der"  # served with the orders certificate
check "openssl says the revoked response is revoked" bash -c \
    "openssl ocsp -respin '$O/revoked.der' -resp_text -noverify 2>/dev/null | grep -q 'Cert Status: revoked'"

# ---- nginx: one server per staple ----
declare -A PORT CERT
for c in good goodkey revoked unknown stale future rogue delegated noeku wrongcert none; do PORT[$c]=$(free_port); CERT[$c]=orders; done
CERT[revoked]=ocsprev; CERT[unknown]=ocspunk
servers=""
for c in "${!PORT[@]}"; do
    staple="ssl_stapling on; ssl_stapling_file $O/$c.der;"
    [ "$c" = none ] && staple=""
    servers+="
    server {
        listen 127.0.0.1:${PORT[$c]} ssl;
        ssl_certificate $PKI/${CERT[$c]}.chain.crt;
        ssl_certificate_key $PKI/${CERT[$c]}.key;
        $staple
        location / { return 200 \"case=$c dn=\$ssl_client_s_dn\n\"; }
    }"
done
start_nginx_with "${PORT[@]}" <<NGX
http {
    include $WORK/nginx/temp_paths.conf;
    access_log $WORK/nginx/logs/access.log;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    $servers
}
NGX

# ---- openssl s_server: staples, and logs the client certificate it gets ----
S_GOOD=$(free_port); S_REVOKED=$(free_port)
s_server() {  # s_server PORT CERT STAPLE LOG
    openssl s_server -accept "$1" -naccept 20 -cert "$PKI/$2.crt" -key "$PKI/$2.key" -cert_chain "$PKI/int.crt" \
        -status_file "$3" -Verify 2 -CAfile "$PKI/client-ca.crt" -www > "$4" 2>&1 &
    PIDS+=($!)
    wait_port "$1" $!
}
s_server "$S_GOOD" orders "$O/good.der" "$WORK/s-good.log"
s_server "$S_REVOKED" ocsprev "$O/revoked.der" "$WORK/s-revoked.log"

# ---- HAProxy: NAME.pem.ocsp beside NAME.pem; http and tcp modes ----
mkdir -p "$WORK/hap"
cat "$PKI/orders.chain.crt" "$PKI/orders.key" > "$WORK/hap/good.pem"; cp "$O/good.der" "$WORK/hap/good.pem.ocsp"
cat "$PKI/ocsprev.chain.crt" "$PKI/ocsprev.key" > "$WORK/hap/revoked.pem"; cp "$O/revoked.der" "$WORK/hap/revoked.pem.ocsp"
H_GOOD=$(free_port); H_REVOKED=$(free_port); H_TCP=$(free_port)
start_redis  # (here, not in a $(...): its PID must reach PIDS to be stopped)
cat > "$WORK/hap/haproxy.cfg" <<CFG
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend good
    mode http
    bind 127.0.0.1:$H_GOOD ssl crt $WORK/hap/good.pem ca-file $PKI/client-ca.crt verify required
    http-request return status 200 content-type text/plain lf-string "haproxy dn=%[ssl_c_s_dn]\n"
frontend revoked
    mode http
    bind 127.0.0.1:$H_REVOKED ssl crt $WORK/hap/revoked.pem ca-file $PKI/client-ca.crt verify required
    http-request return status 200 content-type text/plain lf-string "haproxy dn=%[ssl_c_s_dn]\n"
frontend tcp
    mode tcp
    bind 127.0.0.1:$H_TCP ssl crt $WORK/hap/good.pem ca-file $PKI/client-ca.crt verify required
    default_backend redis
backend redis
    mode tcp
    server r 127.0.0.1:$REDIS_PORT
CFG
haproxy -db -f "$WORK/hap/haproxy.cfg" > "$WORK/hap/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port "$H_GOOD" $!

# ---- the gateway: identities with ocsp if-stapled and require ----
GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
rules=""
for c in "${!PORT[@]}"; do
    rules+="{ match = \"$c.test\"; identity = \"stapled\"; upstream = \"127.0.0.1:${PORT[$c]}\"; server_name = \"ocsp.dc2.test\"; },"
done
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = (
  { name = "stapled"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    ocsp = "if-stapled"; ocsp_skew_s = 60; },
  { name = "strict"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    ocsp = "require"; },
  { name = "stapled12"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    ocsp = "require"; tls_max = "1.2"; },
  { name = "plain"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = ( $rules
  { match = "none-required.test"; identity = "strict"; upstream = "127.0.0.1:${PORT[none]}"; server_name = "ocsp.dc2.test"; },
  { match = "good-required.test"; identity = "strict"; upstream = "127.0.0.1:${PORT[good]}"; server_name = "ocsp.dc2.test"; },
  { match = "good12.test"; identity = "stapled12"; upstream = "127.0.0.1:${PORT[good]}"; server_name = "ocsp.dc2.test"; },
  { match = "revoked12.test"; identity = "stapled12"; upstream = "127.0.0.1:${PORT[revoked]}"; server_name = "ocsp.dc2.test"; },
  { match = "revoked-off.test"; identity = "plain"; upstream = "127.0.0.1:${PORT[revoked]}"; server_name = "ocsp.dc2.test"; },
  { match = "s-good.test"; identity = "stapled"; upstream = "127.0.0.1:$S_GOOD"; server_name = "orders.dc2.test"; },
  { match = "s-revoked.test"; identity = "strict"; upstream = "127.0.0.1:$S_REVOKED"; server_name = "ocsp.dc2.test"; },
  { match = "h-good.test"; identity = "strict"; upstream = "127.0.0.1:$H_GOOD"; server_name = "orders.dc2.test"; },
  { match = "h-revoked.test"; identity = "stapled"; upstream = "127.0.0.1:$H_REVOKED"; server_name = "ocsp.dc2.test"; },
  { match = "h-redis.test"; identity = "strict"; upstream = "127.0.0.1:$H_TCP"; server_name = "orders.dc2.test"; }
);
upstream_pool = { idle_per_key = 0; };  # every request its own handshake, its own staple
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"
px() { curl -s -i -m 10 -x "http://127.0.0.1:$GW_PORT" "$@"; }
last_log() { grep "dest=$1" "$WORK/gw.log" | tail -1; }

# expect CASE HOST OCSP-RESULT [REASON]: through http_proxy and SOCKS5; with a REASON the
# tunnel is refused.
expect() {
    local out
    out=$(px "http://$2/")
    if [ -z "${4:-}" ]; then
        expect_contains "$1 (http_proxy): served" "HTTP/1.1 200" "$out"
        expect_contains "... ocsp=$3 in the access log" "ocsp=$3" "$(last_log "$2:80")"
        out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" "http://$2/")
        expect_contains "$1 (SOCKS5): served" "dn=" "$out"
    else
        expect_contains "$1 (http_proxy): 502 tls_certificate_error" "tls_certificate_error" "$out"
        expect_contains "... the reason" "$4" "$out"
        expect_contains "... ocsp=$3 in the access log" "ocsp=$3" "$(last_log "$2:80")"
        expect_eq "$1 (SOCKS5): general failure" "rep=1" "$(python3 "$HERE/socks_probe.py" "$GW_PORT" "$2" 80)"
    fi
}
expect "good staple" good.test good
expect "good staple, responder by key hash" goodkey.test good
expect "revoked" revoked.test revoked "certificate revoked (OCSP): since 20"
expect "revoked: reason in words" revoked.test revoked "reason: key compromise"
expect "unknown to the responder" unknown.test unknown "does not know the certificate"
expect "out of date (nextUpdate passed)" stale.test stale "out of date: its nextUpdate"
expect "thisUpdate in the future" future.test stale "is in the future"
expect "signed by an unrelated key" rogue.test bad_signature "the server's issuer did not issue"
expect "delegated responder with OCSPSigning" delegated.test good
expect "delegated responder without OCSPSigning" noeku.test bad_signature "without the OCSPSigning extended key usage"
expect "a staple for another certificate" wrongcert.test wrong_cert "about another certificate"
expect "no staple, if-stapled" none.test none
expect "no staple, require" none-required.test none "sent no OCSP staple"
expect "good staple, require" good-required.test good
expect "TLS 1.2 (CertificateStatus): good staple" good12.test good
expect "TLS 1.2 (CertificateStatus): revoked" revoked12.test revoked "certificate revoked (OCSP)"
expect_contains "... that was TLS 1.2" "tls=TLSv1.2" "$(last_log good12.test:80)"
out=$(px http://revoked-off.test/)
expect_contains "ocsp off (default): the revoked server is not checked" "HTTP/1.1 200" "$out"
check "... and no ocsp key in its access line" bash -c "! grep 'dest=revoked-off.test' '$WORK/gw.log' | grep -q ocsp="
check "nginx never served a request on a refused staple's server" bash -c \
    "! grep -qE 'case=(revoked|unknown|stale|future|rogue|noeku|wrongcert)' '$WORK/nginx/logs/access.log'"

# ---- openssl s_server: the refused one never received our certificate ----
expect_contains "s_server good staple: served" "HTTP/1.1 200" "$(px http://s-good.test/)"
check "... s_server received our certificate" grep -q "CN = ops" "$WORK/s-good.log"
out=$(px http://s-revoked.test/)
expect_contains "s_server revoked staple: refused" "certificate revoked (OCSP)" "$out"
check "... s_server never received our certificate" bash -c "! grep -q 'CN = ops' '$WORK/s-revoked.log'"

# ---- HAProxy ----
expect_contains "HAProxy http, good staple, require: served" "haproxy dn=/O=mtlsgw-test/CN=ops" "$(px http://h-good.test/)"
expect_contains "... ocsp=good" "ocsp=good" "$(last_log h-good.test:80)"
expect_contains "HAProxy http, revoked staple: refused" "certificate revoked (OCSP)" "$(px http://h-revoked.test/)"
out=$(python3 - "$GW_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"\x05\x01\x00"); s.recv(2)
h = b"h-redis.test"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + (6379).to_bytes(2, "big")); r = s.recv(10)
s.sendall(b"PING\r\n"); print(r[1], s.recv(100).decode().strip())
PY
)
expect_eq "HAProxy tcp mode, good staple, require: redis PING through SOCKS5" "0 +PONG" "$out"

# ---- metrics, explain --connect, config errors ----
metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
expect_contains "metric: revoked staples counted" 'mtlsgw_upstream_ocsp_total{identity="stapled",result="revoked"}' "$metrics"
check "... at least 2" [ "$(echo "$metrics" | awk '$1 == "mtlsgw_upstream_ocsp_total{identity=\"stapled\",result=\"revoked\"}" {print $2}')" -ge 2 ]
out=$("$MTLSGW" explain -c "$WORK/gw.conf" good.test:80 --connect 2>&1) || true
expect_contains "explain --connect prints the staple" "OCSP staple: responder" "$out"
expect_contains "... its status" "status good" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" revoked.test:80 --connect 2>&1) || true
expect_contains "explain --connect: a revoked staple, where it broke" "certificate revoked (OCSP)" "$out"
sed 's/ocsp = "require";/ocsp = "always";/' "$WORK/gw.conf" > "$WORK/bad.conf"
expect_check_error "config: ocsp must be off, if-stapled or require" "$WORK/bad.conf" \
    'identities.strict.ocsp: expected "off", "if-stapled" or "require", found "always"'
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) || true
expect_contains "check warns that require cannot know whether servers staple" \
    'identities.strict: warning: ocsp = "require"' "$out"

finish
