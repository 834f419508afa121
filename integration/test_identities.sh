#!/usr/bin/env bash
# Identity formats (encrypted PEM, PKCS#12) work end to end; load errors and config errors
# are reported by `mtlsgw check` as file:line: setting: what was expected.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
P=$PKI
echo "s3cret" > "$P/pass.txt"; chmod 600 "$P/pass.txt"
echo "wrong" > "$P/wrong.txt"
openssl pkey -in "$P/ops.key" -aes256 -passout pass:s3cret -out "$P/ops-enc.key" 2>/dev/null; chmod 600 "$P/ops-enc.key"
openssl pkcs12 -export -in "$P/billing.crt" -inkey "$P/billing.key" -passout pass:s3cret -out "$P/billing.p12" 2>/dev/null
chmod 600 "$P/billing.p12"

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
identities = (
  { name = "enc"; certificate = "$P/ops.crt"; key = "$P/ops-enc.key"; key_password_file = "$P/pass.txt";
    trust = "$P/server-trust.crt"; },
  { name = "p12"; pkcs12 = "$P/billing.p12"; pkcs12_password_file = "$P/pass.txt"; trust = "$P/server-trust.crt"; }
);
rules = (
  { match = "enc.test"; identity = "enc"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "p12.test"; identity = "p12"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1)
expect_contains "check accepts encrypted PEM and PKCS#12 identities" "configuration OK" "$out"
start_gw "$WORK/gw.conf"
expect_contains "encrypted PEM identity reaches nginx" "dn=CN=ops,O=mtlsgw-test" \
    "$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://enc.test:443/)"
expect_contains "PKCS#12 identity reaches nginx" "dn=CN=billing,O=mtlsgw-test" \
    "$(curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://p12.test:443/)"

# ---- check: each error names file:line, the setting and what was expected ----
bad() {  # bad NAME CONFIG-BODY -> output of check, and asserts exit status 1
    printf '%s\n' "$2" > "$WORK/$1.conf"
    local rc=0
    "$MTLSGW" check -c "$WORK/$1.conf" > "$WORK/$1.out" 2>&1 || rc=$?
    [ "$rc" = 1 ] && pass "$1: exit 1" || fail "$1: exit $rc"
    cat "$WORK/$1.out"
}
L='listen = ( { name = "p"; address = "127.0.0.1:1"; } );'
ID="{ name = \"ops\"; certificate = \"$P/ops.crt\"; trust = \"$P/server-trust.crt\";"
out=$(bad wrongpass "$L
identities = ( $ID key = \"$P/ops-enc.key\"; key_password_file = \"$P/wrong.txt\"; } );")
expect_contains "wrong password" "wrongpass.conf:2: identities.ops: key_password_file: wrong password" "$out"
out=$(bad nopass "$L
identities = ( $ID key = \"$P/ops-enc.key\"; } );")
expect_contains "encrypted key without password" "the key is encrypted; set key_password_file" "$out"
out=$(bad p12pass "$L
identities = ( { name = \"x\"; pkcs12 = \"$P/billing.p12\"; pkcs12_password_file = \"$P/wrong.txt\"; trust = \"$P/server-trust.crt\"; } );")
expect_contains "PKCS#12 wrong password" "pkcs12_password_file: wrong password" "$out"
out=$(bad mismatch "$L
identities = ( $ID key = \"$P/billing.key\"; } );")
expect_contains "key does not match certificate" "does not match the certificate" "$out"
out=$(bad missing "$L
identities = ( $ID key = \"$P/nope.key\"; } );")
expect_contains "missing key file" "key: $P/nope.key: No such file or directory" "$out"
out=$(bad notpem "$L
identities = ( { name = \"ops\"; certificate = \"$P/ca.cnf\"; key = \"$P/ops.key\"; trust = \"$P/server-trust.crt\"; } );")
expect_contains "certificate not PEM" "certificate: $P/ca.cnf: not a PEM certificate chain" "$out"
out=$(bad emptytrust "$L
identities = ( { name = \"ops\"; certificate = \"$P/ops.crt\"; key = \"$P/ops.key\"; trust = \"$P/ops.key\"; } );")
expect_contains "trust file without certificates" "holds no certificate" "$out"
out=$(bad typo "$L
rules = ( { match = \"a.test\"; acton = \"direct\"; } );")
expect_contains "typo'd setting" "typo.conf:2: rules[0].acton: unknown setting; did you mean \"action\"?" "$out"
out=$(bad syntax "$L
rules = ( { match = \"a.test\"; action = ; } );")
expect_contains "syntax error with line" "syntax.conf:2: syntax error" "$out"
out=$(bad badmatch "$L
rules = (
  { match = \"10.0.0.1/8\"; action = \"direct\"; },
  { match = \"a.test:99999\"; action = \"direct\"; },
  { match = \"a.test\"; identity = \"ghost\"; }
);")
expect_contains "CIDR with host bits, and all errors reported" "badmatch.conf:3: rules[0].match: expected a network address without host bits: did you mean 10.0.0.0/8?" "$out"
expect_contains "bad port" "badmatch.conf:4: rules[1].match: expected a port from 1 to 65535" "$out"
expect_contains "unknown identity" "badmatch.conf:5: rules[2].identity: no identity is named \"ghost\"" "$out"
chmod 644 "$P/ops.key"
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1; printf '%s\n' "$L
identities = ( $ID key = \"$P/ops.key\"; } );" > "$WORK/mode.conf"; "$MTLSGW" check -c "$WORK/mode.conf" 2>&1)
expect_contains "key readable by others is reported" "warning: private key file $P/ops.key has mode 0644" "$out"
finish
