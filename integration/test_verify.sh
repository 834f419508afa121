#!/usr/bin/env bash
# Verification of the server, as a hostile or broken remote side tests it: revocation
# checked for every CA in the chain (a revoked intermediate, a CA without a CRL, an expired
# CRL), no subject-CN fallback for the name, a certificate whose SAN list holds a 1-byte
# iPAddress, and the operator's warnings about CRLs and password files. Each server is an
# openssl s_server that asks for a client certificate and logs the one it gets: ours must
# never reach a server we refused.
source "$(dirname "$0")/lib.sh"

make_pki

# serve VAR NAME CERT KEY CHAIN: an s_server asking for a client certificate; its port in
# VAR. (Not in a $(...) subshell: its PID must reach PIDS, which stops it at the end.)
serve() {
    local port
    port=$(free_port)
    openssl s_server -accept "127.0.0.1:$port" -cert "$3" -key "$4" -cert_chain "$5" -verify 1 \
        -CAfile "$PKI/client-ca.crt" -www > "$WORK/s-$2.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" $! > /dev/null
    printf -v "$1" '%s' "$port"
}
serve S_GOOD good "$PKI/orders.leaf.pem" "$PKI/orders.key" "$PKI/int.crt"
serve S_UNDERREV underrevoked "$PKI/underrevoked.crt" "$PKI/underrevoked.key" "$PKI/int2.crt"
serve S_CNONLY cnonly "$PKI/cnonly.crt" "$PKI/cnonly.key" "$PKI/int.crt"
serve S_BADIP badip "$PKI/badip.crt" "$PKI/badip.key" "$PKI/int.crt"
serve S_GOOD2 good2 "$PKI/orders.leaf.pem" "$PKI/orders.key" "$PKI/int.crt"
# A server certificate with many names, for a long reason.
(cd "$PKI" && openssl req -new -key orders.key -subj "/CN=many" -out many.csr 2>/dev/null &&
    sans=$(for i in $(seq 30); do printf 'DNS:name%02d.many-names.dc2.test,' "$i"; done) &&
    openssl req -new -key orders.key -subj "/CN=many" -addext "subjectAltName=${sans%,}" -out many.csr 2>/dev/null &&
    openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server -days 30 \
        -in many.csr -out many.crt 2>/dev/null)
serve S_MANY many "$PKI/many.crt" "$PKI/orders.key" "$PKI/int.crt"
LONG_NAME=$(python3 -c 'print(".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 54]) + ".test")')
serve S_GOOD3 good3 "$PKI/orders.leaf.pem" "$PKI/orders.key" "$PKI/int.crt"

# An encrypted key whose password file others can read, and a PKCS#12 file likewise.
openssl pkey -in "$PKI/ops.key" -aes256 -passout pass:opspw -out "$WORK/ops-enc.key" 2>/dev/null
chmod 600 "$WORK/ops-enc.key"
echo opspw > "$WORK/ops.pass"; chmod 644 "$WORK/ops.pass"
openssl pkcs12 -export -in "$PKI/ops.crt" -inkey "$PKI/ops.key" -passout pass:p12pw -out "$WORK/ops.p12" 2>/dev/null
chmod 600 "$WORK/ops.p12"
echo p12pw > "$WORK/p12.pass"; chmod 640 "$WORK/p12.pass"

GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    crl = "$PKI/crls-all.pem"; },
  { name = "ops-intonly"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    crl = "$PKI/int.crl"; },
  { name = "ops-expired"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt";
    crl = "$PKI/crls-expired.pem"; },
  { name = "ops-nocrl"; certificate = "$PKI/ops.crt"; key = "$WORK/ops-enc.key"; key_password_file = "$WORK/ops.pass";
    trust = "$PKI/server-trust.crt"; },
  { name = "ops-p12"; pkcs12 = "$WORK/ops.p12"; pkcs12_password_file = "$WORK/p12.pass";
    trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "127.0.0.1:$S_GOOD"; identity = "ops"; server_name = "orders.dc2.test"; },
  { match = "127.0.0.1:$S_UNDERREV"; identity = "ops"; server_name = "underrevoked.dc2.test"; },
  { match = "127.0.0.1:$S_GOOD2"; identity = "ops-intonly"; server_name = "orders.dc2.test"; },
  { match = "127.0.0.1:$S_GOOD3"; identity = "ops-expired"; server_name = "orders.dc2.test"; },
  { match = "127.0.0.1:$S_CNONLY"; identity = "ops-nocrl"; server_name = "cnonly.dc2.test"; },
  { match = "127.0.0.1:$S_BADIP"; identity = "ops-p12"; server_name = "other.dc2.test"; },
  { match = "127.0.0.1:$S_MANY"; identity = "ops-p12"; server_name = "$LONG_NAME"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF

# ---- what check and identity check tell the operator ----
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1 || true)
expect_contains "check: configuration still OK (warnings only)" "configuration OK" "$out"
expect_contains "check: a trusted CA that no CRL comes from" \
    "warning: crl: no CRL from trusted CA /CN=DC2 Root CA in $PKI/int.crl" "$out"
expect_contains "check: a CRL past its nextUpdate" "warning: crl: a CRL in $PKI/crls-expired.pem is past its nextUpdate" "$out"
expect_contains "check: key_password_file readable by others" \
    "warning: key_password_file $WORK/ops.pass has mode 0644: readable by others" "$out"
expect_contains "check: pkcs12_password_file readable by group" \
    "warning: pkcs12_password_file $WORK/p12.pass has mode 0640: readable by others" "$out"
if grep -q "crls-all.pem" <<< "$out"; then fail "check: a full set of CRLs draws a warning"; else pass "check: no warning for a CRL file covering every CA"; fi
rc=0; out=$("$MTLSGW" identity check -c "$WORK/gw.conf" ops-expired 2>&1) || rc=$?
expect_contains "identity check: expired CRL is a warning" "WARNING  crl: a CRL in $PKI/crls-expired.pem is past its nextUpdate" "$out"
expect_eq "identity check: warnings alone exit 0" "0" "$rc"
rc=0; "$MTLSGW" identity check -c "$WORK/gw.conf" ops-expired --strict > /dev/null 2>&1 || rc=$?
expect_eq "identity check --strict: the expired CRL fails it" "1" "$rc"
rc=0; out=$("$MTLSGW" identity check -c "$WORK/gw.conf" ops-nocrl 2>&1) || rc=$?
expect_contains "identity check: readable password file is a problem" \
    "PROBLEM  key_password_file $WORK/ops.pass has mode 0644" "$out"
expect_eq "identity check: exit 1 on a readable password file" "1" "$rc"
out=$("$MTLSGW" identity check -c "$WORK/gw.conf" ops 2>&1 || true)
expect_contains "identity check: the CRL and its next update" "crl $PKI/crls-all.pem loaded (checked for every CA in the chain), next update" "$out"

start_gw "$WORK/gw.conf"
connect() {  # connect PORT -> status line, Proxy-Status and body of the CONNECT answer
    curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" "http://127.0.0.1:$1/" -D "$WORK/h" -o "$WORK/body" > /dev/null 2>&1 || true
    tr -d '\r' < "$WORK/h"; cat "$WORK/body" 2>/dev/null || true
}
client_cert_seen() { grep -q "CN = ops" "$WORK/s-$1.log"; }

h=$(connect "$S_GOOD")
expect_contains "control: a chain with every CRL present is accepted" "HTTP/1.0 200" "$h"
sleep 0.3
check "control: that server received our certificate" client_cert_seen good

# 1. A server under an intermediate that the root's CRL revokes.
h=$(connect "$S_UNDERREV")
expect_contains "revoked intermediate: 502" "HTTP/1.1 502" "$h"
expect_contains "revoked intermediate: tls_certificate_error" "error=tls_certificate_error" "$h"
expect_contains "revoked intermediate: names the revoked CA" \
    "certificate revoked: /CN=DC2 Revoked Intermediate CA is in the CRL of identity" "$h"
sleep 0.3
check "revoked intermediate: the server never received our certificate" bash -c "! grep -q 'CN = ops' '$WORK/s-underrevoked.log'"

# A CA of the chain without a CRL in the file fails closed, naming the CA.
h=$(connect "$S_GOOD2")
expect_contains "CA without a CRL: 502 tls_certificate_error" "error=tls_certificate_error" "$h"
expect_contains "CA without a CRL: names the CA" 'no CRL from /CN=DC2 Root CA in the crl file of identity \"ops-intonly\"' "$h"
check "CA without a CRL: no certificate sent" bash -c "! grep -q 'CN = ops' '$WORK/s-good2.log'"
# An expired CRL fails every handshake it covers, in words.
h=$(connect "$S_GOOD3")
expect_contains "expired CRL: 502 and why" "is past its nextUpdate" "$h"
check "expired CRL: no certificate sent" bash -c "! grep -q 'CN = ops' '$WORK/s-good3.log'"

# 2. No CN fallback: a certificate without a SAN is for no name.
h=$(connect "$S_CNONLY")
expect_contains "CN-only certificate: 502 tls_certificate_error" "error=tls_certificate_error" "$h"
expect_contains "CN-only certificate: says the CN is not a name" "has no DNS or IP subjectAltName" "$h"
check "CN-only certificate: no certificate sent" bash -c "! grep -q 'CN = ops' '$WORK/s-cnonly.log'"

# 3. A 1-byte iPAddress SAN: the reason names the real SAN and nothing read past it.
h=$(connect "$S_BADIP")
expect_contains "1-byte IP SAN: 502 tls_certificate_error" "error=tls_certificate_error" "$h"
expect_contains "1-byte IP SAN: the reason names only the real name" \
    'details="upstream certificate rejected: certificate is for badip.dc2.test, not other.dc2.test"' "$h"
check "1-byte IP SAN: no certificate sent" bash -c "! grep -q 'CN = ops' '$WORK/s-badip.log'"

# 11. A long reason (30 names, a 249-byte server name): Content-Length is the body sent.
printf 'CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: x\r\n\r\n' "$S_MANY" | python3 "$HERE/raw.py" "$GW_PORT" > "$WORK/long.txt"
framing=$(python3 - "$WORK/long.txt" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
head, _, body = data.partition(b"\r\n\r\n")
m = re.search(rb"Content-Length: (\d+)", head)
print("status=%s length=%s body=%d" % (head.split(b" ")[1].decode(), m.group(1).decode() if m else "-", len(body)))
PY
)
expect_eq "long reason: Content-Length equals the body sent" "status=502 length=$(sed -E 's/.*body=//' <<< "$framing") body=$(sed -E 's/.*body=//' <<< "$framing")" "$framing"
expect_contains "long reason: the body still says what happened" "certificate is for name01.many-names.dc2.test" "$(cat "$WORK/long.txt")"

# The CRL expiry is a metric operators can alert on.
m=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
next=$(openssl crl -in "$PKI/int.crl" -noout -nextupdate | cut -d= -f2)
want=$(date -d "$next" +%s)
expect_contains "metric: CRL next update of identity ops" "mtlsgw_identity_crl_next_update_seconds{identity=\"ops\"} $want" "$m"
expect_contains "metric: the expired CRL shows its past date" \
    "mtlsgw_identity_crl_next_update_seconds{identity=\"ops-expired\"} $(date -d 2020-02-01T00:00:00Z +%s)" "$m"
if grep -q 'crl_next_update_seconds{identity="ops-nocrl"}' <<< "$m"; then fail "metric: an identity without crl has none"; else pass "metric: an identity without crl has none"; fi

check "gateway still running" gw_alive
finish
