#!/usr/bin/env bash
# Identities that renew themselves (DESIGN "Identities that renew themselves"): Debian's
# pebble (Let's Encrypt's ACME test server) validates http-01 for real: it resolves the
# identity's name through the test's dnsmasq and fetches the key authorization from the
# gateway's challenge responder. A gateway whose ACME identity has no certificate starts,
# refuses tunnels that need it (502 / SOCKS 0x01) while pebble is down, obtains one once
# pebble is up; nginx (trusting pebble's root) sees it through http_proxy and SOCKS5;
# `identity renew` gives a new serial on new tunnels while an old tunnel keeps flowing;
# with pebble stopped the renewal fails, is retried, the old certificate keeps serving and
# the metric and `identity check` say so; pebble back, the retry succeeds. An EAB-required
# pebble refuses a wrong HMAC with a clear error and takes the right one (standalone
# `identity renew`, no gateway running for that config). An identity whose key is in a
# SoftHSM token gets its key generated there on the first order and keeps it on renewal.
source "$(dirname "$0")/lib.sh"

make_pki
make_softhsm_token acme tokPIN4711 tokSO5678
HSM_KEY="pkcs11:token=acme;object=acme-hsm?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:$WORK/acme.pin"
start_dnsmasq acme-client.dc2.test=127.0.0.1 acme-hsm.dc2.test=127.0.0.1 eab-good.dc2.test=127.0.0.1 eab-bad.dc2.test=127.0.0.1

# ---- pebble: its own TLS certificate from the test PKI (trusted through server-trust.crt) ----
PEBBLE_PORT=$(free_port); PEBBLE_MGMT=$(free_port); HTTP01=$(free_port)
mkdir -p "$WORK/pebble" "$WORK/ids"
pebble_conf() {  # pebble_conf FILE PORT MGMT HTTP01 [EAB-JSON]
    cat > "$1" <<JSON
{ "pebble": { "listenAddress": "127.0.0.1:$2", "managementListenAddress": "127.0.0.1:$3",
  "certificate": "$PKI/orders.chain.crt", "privateKey": "$PKI/orders.key",
  "httpPort": $4, "tlsPort": $(free_port), "ocspResponderURL": ""${5:+, $5} } }
JSON
}
pebble_conf "$WORK/pebble/pebble.json" "$PEBBLE_PORT" "$PEBBLE_MGMT" "$HTTP01"
start_pebble() {
    PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" \
        >> "$WORK/pebble/pebble.log" 2>&1 &
    PEBBLE_PID=$!
    PIDS+=($PEBBLE_PID)
    wait_port "$PEBBLE_PORT" $PEBBLE_PID
    wait_port "$PEBBLE_MGMT" $PEBBLE_PID
    # Each pebble start makes a new root: nginx trusts every one seen.
    curl -s --cacert "$PKI/server-trust.crt" "https://127.0.0.1:$PEBBLE_MGMT/roots/0" >> "$WORK/pebble/roots.pem"
}

# ---- nginx: mTLS, trusting pebble's roots; it says which certificate it saw ----
NGX=$(free_port)
touch "$WORK/pebble/roots.pem"
write_nginx() {
    start_nginx_with "$NGX" <<NGX
http {
    include $WORK/nginx/temp_paths.conf;
    access_log $WORK/nginx/logs/access.log;
    server {
        listen 127.0.0.1:$NGX ssl;
        ssl_certificate $PKI/orders.chain.crt;
        ssl_certificate_key $PKI/orders.key;
        ssl_client_certificate $WORK/pebble/roots.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location / { return 200 "serial=\$ssl_client_serial dn=\$ssl_client_s_dn\n"; }
    }
}
NGX
}

# ---- the gateway: identity acme-client has no files yet ----
GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = (
  { name = "acme-client"; certificate = "$WORK/ids/acme-client.crt"; key = "$WORK/ids/acme-client.key";
    trust = "$PKI/server-trust.crt";
    acme = { directory = "https://127.0.0.1:$PEBBLE_PORT/dir"; trust = "$PKI/server-trust.crt";
             account_key = "$WORK/ids/acme-account.key"; contact = [ "mailto:ops@example.com" ];
             names = [ "acme-client.dc2.test" ]; challenge = "http-01"; http01_listen = "127.0.0.1:$HTTP01"; }; },
  { name = "acme-hsm"; certificate = "$WORK/ids/acme-hsm.crt"; key = "$HSM_KEY"; trust = "$PKI/server-trust.crt";
    acme = { directory = "https://127.0.0.1:$PEBBLE_PORT/dir"; trust = "$PKI/server-trust.crt";
             account_key = "$WORK/ids/acme-account.key"; key_type = "ec-p384";
             names = [ "acme-hsm.dc2.test" ]; http01_listen = "127.0.0.1:$HTTP01"; }; },
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = ( { match = "acme.test"; identity = "acme-client"; upstream = "127.0.0.1:$NGX"; server_name = "orders.dc2.test"; },
          { match = "hsm.test"; identity = "acme-hsm"; upstream = "127.0.0.1:$NGX"; server_name = "orders.dc2.test"; } );
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) && rc=0 || rc=$?
expect_eq "check: an ACME identity without a certificate is not an error" "0" "$rc"
expect_contains "... but a warning" "identity acme-client has no certificate yet: ACME order pending" "$out"
start_gw "$WORK/gw.conf"
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
px() { curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "$@"; }

# pebble is not up yet: the first order fails (connection refused) and is retried.
for _ in $(seq 100); do grep -q "renewal failed" "$WORK/gw.log" && break; sleep 0.1; done
expect_contains "pebble down: the first order failed, and says why" "cannot connect" \
    "$(grep 'renewal failed' "$WORK/gw.log" | head -1)"
out=$(px -i http://acme.test/ || true)
expect_contains "http_proxy before the certificate: 502" "HTTP/1.1 502" "$out"
expect_contains "... Proxy-Status says why" 'details="identity acme-client has no certificate yet: ACME order pending"' "$out"
expect_eq "SOCKS5 before the certificate: general failure (0x01)" "rep=1" \
    "$(python3 "$HERE/socks_probe.py" "$GW_PORT" acme.test 443)"
expect_contains "access log: result=no_certificate" "result=no_certificate" "$(tail -1 "$WORK/gw.log")"
out=$("$MTLSGW" identity check -c "$WORK/gw.conf" acme-client 2>&1) && rc=0 || rc=$?
expect_contains "identity check: the failed order" "WARNING  ACME renewal failed 1 time in a row" "$out"
expect_contains "... and the pending certificate, a warning" "WARNING  identity acme-client has no certificate yet" "$out"
expect_eq "... exit 0 (warnings only)" "0" "$rc"
check "metric: renewals_total error counted" [ "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="error"}')" -ge 1 ]

# ---- pebble up: the retry obtains the certificate ----
start_pebble
write_nginx
for _ in $(seq 300); do [ -s "$WORK/ids/acme-client.crt" ] && grep -q "an identity was renewed over ACME" "$WORK/gw.log" && break; sleep 0.1; done
check "the certificate was written" test -s "$WORK/ids/acme-client.crt"
expect_eq "... the key with mode 0600" "600" "$(stat -c %a "$WORK/ids/acme-client.key")"
expect_eq "... the account key made on first use, mode 0600" "600" "$(stat -c %a "$WORK/ids/acme-account.key")"
check "pebble validated http-01 against the gateway's responder" grep -q "acme-client.dc2.test" "$WORK/dnsmasq.log"
serial1=$(openssl x509 -in "$WORK/ids/acme-client.crt" -noout -serial | cut -d= -f2)
out=$(px http://acme.test/)
expect_contains "http_proxy: nginx saw the ACME certificate" "serial=$serial1 dn=CN=acme-client.dc2.test" "$out"
out=$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://acme.test/)
expect_contains "SOCKS5: the same" "serial=$serial1" "$out"
expect_eq "metric: renewals_total ok 1" "1" "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="ok"}')"
due=$(metric 'mtlsgw_identity_renewal_due_seconds{identity="acme-client"}')
check "metric: renewal due in the future ($due s)" [ "${due%.*}" -gt 3600 ]
out=$("$MTLSGW" identity list -c "$WORK/gw.conf")
expect_contains "identity list: the ACME state" "last       ok at" "$out"

# ---- the token identity: its key generated on the token, never in a file ----
for _ in $(seq 300); do [ -s "$WORK/ids/acme-hsm.crt" ] && break; sleep 0.1; done
check "token identity: certificate written" test -s "$WORK/ids/acme-hsm.crt"
for _ in $(seq 50); do px http://hsm.test/ | grep -q "CN=acme-hsm.dc2.test" && break; sleep 0.1; done
expect_contains "token identity: nginx saw it through http_proxy" "dn=CN=acme-hsm.dc2.test" "$(px http://hsm.test/)"
check "... the key pair is on the token" bash -c "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label acme --login --pin tokPIN4711 --list-objects --type privkey 2>/dev/null | grep -q 'label: *acme-hsm'"
check "... no private key file was written" bash -c "! grep -rl 'PRIVATE KEY' '$WORK/ids/' | grep -q hsm"
expect_contains "... a P-384 key as key_type says" "384 bit" "$(openssl x509 -in "$WORK/ids/acme-hsm.crt" -noout -text)"
hsm_pub1=$(openssl x509 -in "$WORK/ids/acme-hsm.crt" -noout -pubkey)
hsm_serial1=$(openssl x509 -in "$WORK/ids/acme-hsm.crt" -noout -serial | cut -d= -f2)
out=$("$MTLSGW" identity renew acme-hsm -c "$WORK/gw.conf" 2>&1) && rc=0 || rc=$?
expect_eq "token identity: identity renew exit 0" "0" "$rc"
hsm_serial2=$(openssl x509 -in "$WORK/ids/acme-hsm.crt" -noout -serial | cut -d= -f2)
check "... a new serial ($hsm_serial1 -> $hsm_serial2)" [ "$hsm_serial1" != "$hsm_serial2" ]
expect_eq "... for the same key, kept on the token" "$hsm_pub1" "$(openssl x509 -in "$WORK/ids/acme-hsm.crt" -noout -pubkey)"
for _ in $(seq 50); do px http://hsm.test/ | grep -q "serial=$hsm_serial2" && break; sleep 0.1; done
expect_contains "... nginx sees the new one" "serial=$hsm_serial2" "$(px http://hsm.test/)"

# ---- identity renew through the running gateway: a new serial; an old tunnel keeps flowing ----
python3 - "$GW_PORT" "$WORK/go" > "$WORK/old_tunnel.out" 2>&1 <<'PY' &
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"CONNECT acme.test:443 HTTP/1.1\r\nHost: acme.test:443\r\n\r\n")
f = s.makefile("rb")
print(f.readline().decode().strip(), flush=True)
while f.readline() not in (b"\r\n", b""):
    pass
for i in range(2):
    for _ in range(300 if i else 0):  # the second request once the renewal is done
        if os.path.exists(sys.argv[2]):
            break
        time.sleep(0.1)
    s.sendall(b"GET /old HTTP/1.1\r\nHost: acme.test\r\n\r\n")
    f.readline()
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            length = int(h.split(b":")[1])
    print(f.read(length).decode().strip(), flush=True)
PY
OLD_PID=$!
PIDS+=($OLD_PID)
for _ in $(seq 50); do [ "$(grep -c serial= "$WORK/old_tunnel.out")" -ge 1 ] && break; sleep 0.1; done
out=$("$MTLSGW" identity renew acme-client -c "$WORK/gw.conf" 2>&1) && rc=0 || rc=$?
expect_eq "identity renew (through the admin endpoint): exit 0" "0" "$rc"
expect_contains "... asked the running gateway" "asked of the running gateway" "$out"
serial2=$(openssl x509 -in "$WORK/ids/acme-client.crt" -noout -serial | cut -d= -f2)
check "... a new serial ($serial1 -> $serial2)" [ "$serial1" != "$serial2" ]
expect_contains "... printed" "serial $serial2" "$out"
for _ in $(seq 50); do px http://acme.test/ | grep -q "serial=$serial2" && break; sleep 0.1; done
expect_contains "new tunnels present the new certificate" "serial=$serial2" "$(px http://acme.test/)"
touch "$WORK/go"
wait "$OLD_PID" || true
expect_eq "the tunnel opened before the renewal kept flowing (both its requests with the old one)" \
    "serial=$serial1 serial=$serial1" "$(grep -o "serial=[0-9A-F]*" "$WORK/old_tunnel.out" | tr '\n' ' ' | sed 's/ $//')"

# ---- pebble stopped: the renewal fails, is retried, the old certificate keeps serving ----
kill "$PEBBLE_PID"; wait "$PEBBLE_PID" 2>/dev/null || true
errors0=$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="error"}')
out=$("$MTLSGW" identity renew acme-client -c "$WORK/gw.conf" 2>&1) && rc=0 || rc=$?
expect_eq "identity renew with pebble down: exit 1" "1" "$rc"
expect_contains "... with the reason" "cannot connect" "$out"
expect_contains "the old certificate keeps serving" "serial=$serial2" "$(px http://acme.test/)"
for _ in $(seq 150); do
    [ "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="error"}')" -ge $((errors0 + 2)) ] && break
    sleep 0.1
done
check "retried by itself with backoff (errors: $errors0 -> $(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="error"}'))" \
    [ "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="error"}')" -ge $((errors0 + 2)) ]
out=$("$MTLSGW" identity check -c "$WORK/gw.conf" acme-client 2>&1) || true
expect_contains "identity check says the renewal fails" "ACME renewal failed" "$out"
due=$(metric 'mtlsgw_identity_renewal_due_seconds{identity="acme-client"}')
check "metric: the retry is due within the backoff ($due s)" [ "${due%.*}" -lt 120 ]
gaps=$(grep "acme-client: renewal failed" "$WORK/gw.log" | tail -2 | grep -o "next try in [0-9]*" | awk '{print $4}' | tr '\n' ' ')
check "... the waits grow (backoff: $gaps s)" python3 -c "import sys; a=[int(x) for x in '$gaps'.split()]; sys.exit(0 if len(a)==2 and a[1]>a[0] else 1)"

# ---- pebble back: the retry succeeds ----
start_pebble
kill -HUP "$NGINX_PID"  # its new root
ok0=$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="ok"}')
for _ in $(seq 600); do
    [ "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="ok"}')" -gt "$ok0" ] && break
    sleep 0.1
done
check "pebble back: the retry renewed it" [ "$(metric 'mtlsgw_acme_renewals_total{identity="acme-client",result="ok"}')" -gt "$ok0" ]
serial3=$(openssl x509 -in "$WORK/ids/acme-client.crt" -noout -serial | cut -d= -f2)
for _ in $(seq 50); do px http://acme.test/ | grep -q "serial=$serial3" && break; sleep 0.1; done
expect_contains "... and nginx sees the new certificate" "serial=$serial3" "$(px http://acme.test/)"
out=$("$MTLSGW" identity check -c "$WORK/gw.conf" acme-client 2>&1) || true
expect_contains "identity check: renewed" "ok       renewed over ACME at" "$out"

# ---- the admin endpoint's renew: unknown and non-ACME identities ----
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/identities/nobody/renew")
expect_eq "POST renew of an unknown identity: 404" "404" "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/identities/ops/renew")
expect_eq "POST renew of an identity without acme: 409" "409" "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/metrics")
expect_eq "POST elsewhere: 404" "404" "$code"

# ---- External Account Binding: an EAB-required pebble; standalone identity renew ----
EAB_PORT=$(free_port); EAB_MGMT=$(free_port); EAB_HTTP01=$(free_port)
HMAC=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
pebble_conf "$WORK/pebble/eab.json" "$EAB_PORT" "$EAB_MGMT" "$EAB_HTTP01" \
    "\"externalAccountBindingRequired\": true, \"externalAccountMACKeys\": { \"kid-1\": \"$HMAC\" }"
PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble/eab.json" -dnsserver "127.0.0.1:$DNS_PORT" > "$WORK/pebble/eab.log" 2>&1 &
PIDS+=($!)
wait_port "$EAB_PORT" $!
printf '%s\n' "$HMAC" > "$WORK/ids/eab.key"
printf '%s\n' "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH" > "$WORK/ids/eab-wrong.key"
chmod 600 "$WORK/ids/eab.key" "$WORK/ids/eab-wrong.key"
eab_identity() {  # eab_identity NAME HMAC-FILE [eab lines]
    cat <<ID
  { name = "$1"; certificate = "$WORK/ids/$1.crt"; key = "$WORK/ids/$1.key"; trust = "$PKI/server-trust.crt";
    acme = { directory = "https://127.0.0.1:$EAB_PORT/dir"; trust = "$PKI/server-trust.crt";
             account_key = "$WORK/ids/$1-account.key"; names = [ "$1.dc2.test" ];
             http01_listen = "127.0.0.1:$EAB_HTTP01"; $2 }; }
ID
}
cat > "$WORK/eab.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$(free_port)"; } );
identities = (
$(eab_identity eab-good "eab_kid = \"kid-1\"; eab_hmac_file = \"$WORK/ids/eab.key\";"),
$(eab_identity eab-bad "eab_kid = \"kid-1\"; eab_hmac_file = \"$WORK/ids/eab-wrong.key\";"),
$(eab_identity eab-none "")
);
rules = ( { match = "x.test"; identity = "eab-good"; } );
CONF
out=$("$MTLSGW" identity renew eab-bad -c "$WORK/eab.conf" 2>&1) && rc=0 || rc=$?
expect_eq "EAB with a wrong HMAC: exit 1" "1" "$rc"
expect_contains "... the CA's reason" "creating the ACME account: the CA answered 403: external account binding" "$out"
check "... no certificate written" test ! -e "$WORK/ids/eab-bad.crt"
out=$("$MTLSGW" identity renew eab-none -c "$WORK/eab.conf" 2>&1) && rc=0 || rc=$?
expect_eq "EAB required, none configured: exit 1" "1" "$rc"
echo "$out" | grep -i -q "external account" && pass "... says the CA requires External Account Binding" || fail "... EAB required: $out"
out=$("$MTLSGW" identity renew eab-good -c "$WORK/eab.conf" 2>&1) && rc=0 || rc=$?
expect_eq "EAB with the right HMAC: exit 0 (standalone: no gateway for this config)" "0" "$rc"
expect_contains "... prints the new certificate" "renewed eab-good: serial" "$out"
check "... certificate written" test -s "$WORK/ids/eab-good.crt"

chmod 644 "$WORK/ids/eab-wrong.key"
out=$("$MTLSGW" check -c "$WORK/eab.conf" 2>&1) || true
expect_contains "check: an EAB key readable by others is reported" \
    "identities.eab-bad.acme.eab_hmac_file: warning: eab_hmac_file $WORK/ids/eab-wrong.key has mode 0644: readable by others" "$out"

# ---- dns-01 through the operator's hook: pebble asks pebble-challtestsrv's DNS, which the
# hook feeds over its management API (as a hook for a real DNS provider's API would) ----
CT_DNS=$(free_port); CT_MGMT=$(free_port); DNS_PEBBLE=$(free_port); DNS_PEBBLE_MGMT=$(free_port)
pebble-challtestsrv -dns01 "127.0.0.1:$CT_DNS" -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$CT_MGMT" \
    -defaultIPv6 "" > "$WORK/pebble/challtestsrv.log" 2>&1 &
PIDS+=($!)
wait_port "$CT_MGMT" $!
pebble_conf "$WORK/pebble/dns.json" "$DNS_PEBBLE" "$DNS_PEBBLE_MGMT" "$(free_port)"
PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble/dns.json" -dnsserver "127.0.0.1:$CT_DNS" > "$WORK/pebble/dns.log" 2>&1 &
PIDS+=($!)
wait_port "$DNS_PEBBLE" $!
mkdir -p "$WORK/hooks"
cat > "$WORK/hooks/txt.sh" <<HOOK
#!/bin/sh
# HOOK add|remove NAME VALUE
echo "\$1 \$2 \$3" >> "$WORK/hooks/txt.log"
case "\$1" in
    add) curl -sf -d "{\\"host\\": \\"\$2.\\", \\"value\\": \\"\$3\\"}" "http://127.0.0.1:$CT_MGMT/set-txt" ;;
    remove) curl -sf -d "{\\"host\\": \\"\$2.\\"}" "http://127.0.0.1:$CT_MGMT/clear-txt" ;;
esac
HOOK
printf '#!/bin/sh\necho "no zone for $2" >&2\nexit 3\n' > "$WORK/hooks/broken.sh"
chmod 755 "$WORK/hooks/txt.sh" "$WORK/hooks/broken.sh"
dns_identity() {  # dns_identity NAME HOOK
    cat <<ID
  { name = "$1"; certificate = "$WORK/ids/$1.crt"; key = "$WORK/ids/$1.key"; trust = "$PKI/server-trust.crt";
    acme = { directory = "https://127.0.0.1:$DNS_PEBBLE/dir"; trust = "$PKI/server-trust.crt";
             names = [ "$1.dc2.test" ]; challenge = "dns-01"; dns01_hook = "$2"; }; }
ID
}
cat > "$WORK/dns.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$(free_port)"; } );
identities = (
$(dns_identity dns-client "$WORK/hooks/txt.sh"),
$(dns_identity dns-broken "$WORK/hooks/broken.sh")
);
CONF
out=$("$MTLSGW" identity renew dns-client -c "$WORK/dns.conf" 2>&1) && rc=0 || rc=$?
expect_eq "dns-01 through the hook: exit 0" "0" "$rc"
expect_contains "... a certificate for the name" "DNS:dns-client.dc2.test" \
    "$(openssl x509 -in "$WORK/ids/dns-client.crt" -noout -ext subjectAltName 2>&1)"
expect_contains "... the hook published the TXT record" "add _acme-challenge.dns-client.dc2.test " "$(cat "$WORK/hooks/txt.log")"
expect_contains "... and removed it after" "remove _acme-challenge.dns-client.dc2.test " "$(cat "$WORK/hooks/txt.log")"
value=$(awk '$1 == "add" {print $3}' "$WORK/hooks/txt.log")
check "... its value is base64url of a SHA-256 (43 characters)" bash -c "[[ '$value' =~ ^[A-Za-z0-9_-]{43}\$ ]]"
out=$("$MTLSGW" identity renew dns-broken -c "$WORK/dns.conf" 2>&1) && rc=0 || rc=$?
expect_eq "a hook that fails: exit 1" "1" "$rc"
expect_contains "... with the hook's exit status" "failed (exit status 3)" "$out"

# ---- config errors ----
cat > "$WORK/bad.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:1"; } );
identities = (
  { name = "a"; certificate = "$WORK/ids/a.crt"; key = "$WORK/ids/a.key"; trust = "$PKI/server-trust.crt";
    acme = { directory = "http://ca.test/dir"; names = [ "a b" ]; renew_before = "soon"; challenge = "tls-alpn-01";
             key_type = "dsa"; eab_kid = "k"; }; }
);
CONF
out=$("$MTLSGW" check -c "$WORK/bad.conf" 2>&1) || true
expect_contains "config: directory must be https" "bad.conf:4: identities.a.acme.directory: expected the CA's ACME directory URL, https://" "$out"
expect_contains "config: names" "identities.a.acme.names: expected DNS names or IP addresses" "$out"
expect_contains "config: renew_before" "identities.a.acme.renew_before: expected a share of the lifetime left" "$out"
expect_contains "config: challenge" "identities.a.acme.challenge: expected \"http-01\" or \"dns-01\"" "$out"
expect_contains "config: key_type" "identities.a.acme.key_type: expected \"ec-p256\"" "$out"
expect_contains "config: EAB needs both" "External Account Binding needs both eab_kid and eab_hmac_file" "$out"

finish
