#!/usr/bin/env bash
# Operations: the commands (check, explain --connect, identity list/check/new) with
# their output and exit status; SIGHUP reload under load and with a broken config;
# rotation of an identity's files without a signal (by rename and by rewrite in place)
# seen in nginx's $ssl_client_serial; the admin endpoint's /metrics, /healthz and
# /identities.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1 billing.dc2.test=127.0.0.1 rogue.dc2.test=127.0.0.1 \
    echo.dc1.test=127.0.0.1 added.dc2.test=127.0.0.1

# A certificate for an identity, signed by the client CA nginx trusts:
# client_cert NAME [startdate enddate] -> $PKI/NAME.key, $PKI/NAME.crt (new key, new serial)
client_cert() {
    (
        cd "$PKI"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
        chmod 600 "$1.key"
        openssl req -new -key "$1.key" -subj "/O=mtlsgw-test/CN=ops" -out "$1.csr" 2>/dev/null
        if [ -n "${2:-}" ]; then
            openssl ca -batch -config ca.cnf -cert client-ca.crt -keyfile client-ca.key -extensions v3_client \
                -startdate "$2" -enddate "$3" -in "$1.csr" -out "$1.crt" 2>/dev/null
        else
            openssl ca -batch -config ca.cnf -cert client-ca.crt -keyfile client-ca.key -extensions v3_client \
                -days 2 -in "$1.csr" -out "$1.crt" 2>/dev/null
        fi
    )
}
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }

# The ops identity lives in its own folder so that it can be rotated.
mkdir -p "$WORK/ids"
cp "$PKI/ops.crt" "$PKI/ops.key" "$WORK/ids/"
ECHO_PORT=$(free_port)
python3 - "$ECHO_PORT" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
def serve(c):
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$ECHO_PORT" $!

GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
write_conf() {  # write_conf FILE [extra rule]
    cat > "$1" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = (
  { name = "ops"; certificate = "ids/ops.crt"; key = "ids/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; },
  { name = "intruder"; certificate = "$PKI/intruder.crt"; key = "$PKI/intruder.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "orders.dc2.test:443"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "billing.dc2.test:80"; identity = "billing"; upstream_port = $NGX_HTTPS; },
  { match = "rogue.dc2.test:6379"; identity = "intruder"; upstream = "127.0.0.1:$NGX_REDIS"; server_name = "redis.dc2.test"; },
  { match = "echo.dc1.test:7"; action = "direct"; upstream_port = $ECHO_PORT; },
  ${2:-}
  { match = "*.dc2.test"; action = "deny"; }
);
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
}
write_conf "$WORK/gw.conf"

# ---- commands ----
run_cmd() {  # run_cmd ARGS... -> sets OUT (stdout+stderr) and RC
    set +e
    OUT=$("$MTLSGW" "$@" 2>&1)
    RC=$?
    set -e
}
run_cmd check -c "$WORK/gw.conf"
expect_eq "check: exit 0" "0" "$RC"
expect_contains "check: configuration OK" "configuration OK: 1 listeners, 3 identities" "$OUT"
sed 's/workers = 2;/wrokers = 2;/' "$WORK/gw.conf" > "$WORK/typo.conf"
run_cmd check -c "$WORK/typo.conf"
expect_eq "check, typo'd setting: exit 1" "1" "$RC"
expect_contains "check, typo'd setting: file:line: setting" "typo.conf:1: wrokers: unknown setting; did you mean \"workers\"?" "$OUT"
sed 's|ids/ops.crt|ids/missing.crt|' "$WORK/gw.conf" > "$WORK/missing.conf"
run_cmd check -c "$WORK/missing.conf"
expect_eq "check, missing file: exit 1" "1" "$RC"
expect_contains "check, missing file: named" "ids/missing.crt: No such file or directory" "$OUT"
printf 'workers = 2\nlisten = (\n' > "$WORK/syntax.conf"
run_cmd check -c "$WORK/syntax.conf"
expect_eq "check, syntax error: exit 1" "1" "$RC"
expect_contains "check, syntax error: file:line" "syntax.conf:3: syntax error" "$OUT"
sed "s|$PKI/billing.key|$PKI/intruder.key|" "$WORK/gw.conf" > "$WORK/mismatch.conf"
run_cmd identity check -c "$WORK/mismatch.conf"
expect_eq "identity check, key does not match its certificate: exit 1" "1" "$RC"
expect_contains "identity check, key does not match its certificate: said" "does not match" "$OUT"

client_cert expired 20200101000000Z 20210101000000Z
sed "s|$PKI/billing.crt|$PKI/expired.crt|; s|$PKI/billing.key|$PKI/expired.key|" "$WORK/gw.conf" > "$WORK/expired.conf"
run_cmd identity check -c "$WORK/expired.conf" billing
expect_eq "identity check, expired certificate: exit 1" "1" "$RC"
expect_contains "identity check, expired certificate: said" "PROBLEM  certificate expired on 2021-01-01" "$OUT"
run_cmd identity check -c "$WORK/gw.conf"
expect_eq "identity check, all fine: exit 0" "0" "$RC"
expect_contains "identity check: key, chain, key mode" "chain in order" "$OUT"
expect_contains "identity check: summary" "0 problems, 0 warnings" "$OUT"
run_cmd identity check -c "$WORK/gw.conf" ops --warn-days 400
expect_eq "identity check --warn-days 400 (one-year cert): warning, exit 0" "0" "$RC"
expect_contains "identity check --warn-days 400: warning said" "WARNING  certificate expires" "$OUT"
run_cmd identity check -c "$WORK/gw.conf" ops --warn-days 400 --strict
expect_eq "identity check --strict: a warning fails (exit 1)" "1" "$RC"
run_cmd identity check -c "$WORK/gw.conf" nobody
expect_eq "identity check of an unknown name: exit 2" "2" "$RC"
cp "$PKI/billing.key" "$WORK/open.key"; chmod 644 "$WORK/open.key"
sed "s|$PKI/billing.key|$WORK/open.key|" "$WORK/gw.conf" > "$WORK/open.conf"
run_cmd identity check -c "$WORK/open.conf" billing
expect_eq "identity check, key file readable by others: exit 1" "1" "$RC"
expect_contains "identity check, key file readable by others: said" "readable by others; chmod 600 it" "$OUT"

run_cmd identity list -c "$WORK/gw.conf"
expect_eq "identity list: exit 0" "0" "$RC"
expect_contains "identity list: subject" "subject    /O=mtlsgw-test/CN=ops" "$OUT"
expect_contains "identity list: serial" "serial     $(serial_of "$WORK/ids/ops.crt")" "$OUT"
expect_contains "identity list: rules that use it" "rules      $WORK/gw.conf:10, $WORK/gw.conf:11" "$OUT"
run_cmd identity list -c "$WORK/gw.conf" --json
expect_eq "identity list --json parses, three identities, statuses" "ops:ok billing:ok intruder:ok" \
    "$(echo "$OUT" | python3 -c 'import json,sys; print(" ".join("%s:%s" % (i["name"], i["status"]) for i in json.load(sys.stdin)))')"

run_cmd identity new app1 --subject "/O=mtlsgw-test/CN=app1" --san "DNS:app1.dc2.test,IP:10.0.0.7" --key ec-p384 --out "$WORK/ids"
expect_eq "identity new: exit 0" "0" "$RC"
expect_eq "identity new: key file mode 0600" "600" "$(stat -c %a "$WORK/ids/app1.key")"
expect_contains "identity new: prints the next step" "Send $WORK/ids/app1.csr to the CA" "$OUT"
check "identity new: openssl req -verify accepts the CSR" openssl req -verify -noout -in "$WORK/ids/app1.csr"
csr=$(openssl req -in "$WORK/ids/app1.csr" -noout -text)
expect_contains "identity new: subject in the CSR" "O = mtlsgw-test, CN = app1" "$csr"
expect_contains "identity new: SANs in the CSR" "DNS:app1.dc2.test, IP Address:10.0.0.7" "$csr"
expect_contains "identity new: P-384 key" "P-384" "$csr"
run_cmd identity new app1 --subject "/CN=app1" --out "$WORK/ids"
expect_eq "identity new: refuses to overwrite a key (exit 1)" "1" "$RC"
run_cmd identity new app2 --subject "/CN=app2" --key dsa-1024 --out "$WORK/ids"
expect_eq "identity new: unknown key type, exit 2" "2" "$RC"
for k in ed25519 rsa-2048; do
    run_cmd identity new "k-$k" --subject "/CN=k-$k" --key "$k" --out "$WORK/ids"
    check "identity new --key $k: CSR verifies" openssl req -verify -noout -in "$WORK/ids/k-$k.csr"
done
for c in run check explain identity; do
    run_cmd "$c" --help
    expect_eq "mtlsgw $c --help: exit 0" "0" "$RC"
    expect_contains "mtlsgw $c --help: usage line" "usage: mtlsgw $c" "$OUT"
done

# ---- start, and explain --connect against the running world ----
start_gw "$WORK/gw.conf"
wait_port "$ADMIN_PORT" "$GW_PID"
run_cmd explain -c "$WORK/gw.conf" orders.dc2.test:443 --connect
expect_eq "explain --connect: exit 0" "0" "$RC"
expect_contains "explain --connect: the rule" "rule         $WORK/gw.conf:11" "$OUT"
expect_contains "explain --connect: resolved" "resolve      orders.dc2.test -> 127.0.0.1:$NGX_HTTPS" "$OUT"
expect_contains "explain --connect: the server chain" "/CN=orders" "$OUT"
expect_contains "explain --connect: version and cipher" "TLSv1.3  TLS_" "$OUT"
expect_contains "explain --connect: our certificate accepted" "client cert  accepted" "$OUT"
expect_contains "explain --connect: the second handshake resumed" "(resumed handshake" "$OUT"
run_cmd explain -c "$WORK/gw.conf" rogue.dc2.test:6379 --connect
expect_eq "explain --connect, rejected identity: exit 1" "1" "$RC"
expect_contains "explain --connect, rejected identity: said" "client cert  REJECTED" "$OUT"

# ---- the admin endpoint ----
admin() { curl -s -m 10 "http://127.0.0.1:$ADMIN_PORT$1"; }
metric() {  # metric 'name{labels}' -> value (0 if absent)
    admin /metrics | awk -v k="$1" '$1 == k { print $2; found=1 } END { if (!found) print 0 }'
}
expect_eq "/healthz" "ok" "$(admin /healthz)"
expect_eq "/identities: JSON with the three identities" "ops billing intruder" \
    "$(admin /identities | python3 -c 'import json,sys; print(" ".join(i["name"] for i in json.load(sys.stdin)))')"
expect_eq "unknown admin path: 404" "404" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/nope")"
a0=$(metric 'mtlsgw_connections_accepted_total{listener="proxy"}')
t0=$(metric 'mtlsgw_tunnels_total{action="mtls",result="ok"}')
d0=$(metric 'mtlsgw_tunnels_total{action="deny",result="denied"}')
h0=$(( $(metric 'mtlsgw_upstream_handshakes_total{identity="billing",resumed="false"}') + $(metric 'mtlsgw_upstream_handshakes_total{identity="billing",resumed="true"}') ))
p0=$(metric 'mtlsgw_upstream_pool_requests_total{result="hit"}')
for i in 1 2 3 4 5; do
    http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 -o /dev/null "http://billing.dc2.test/m$i"
done
for i in 1 2; do
    http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 -o /dev/null "http://other.dc2.test/deny$i"
done
admin /metrics > "$WORK/metrics.txt"
check "/metrics parses as Prometheus text" python3 - "$WORK/metrics.txt" <<'PY'
import re, sys
types, seen = {}, set()
line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? (-?[0-9.eE+-]+|\+Inf|NaN)$')
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.rstrip("\n")
    if line.startswith("# HELP "):
        continue
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ", 3)
        assert kind in ("counter", "gauge", "histogram"), line
        assert name not in types, "TYPE twice: " + name
        types[name] = kind
        continue
    m = line_re.match(line)
    assert m, "line %d is not a sample: %r" % (n, line)
    name = m.group(1)
    base = re.sub(r'_(bucket|sum|count)$', '', name)
    assert name in types or base in types, "sample before its TYPE: " + name
    assert (name, m.group(2)) not in seen, "duplicate series: " + line
    seen.add((name, m.group(2)))
for want in ["mtlsgw_connections_accepted_total", "mtlsgw_tunnels_active", "mtlsgw_tunnels_total",
             "mtlsgw_upstream_handshakes_total", "mtlsgw_upstream_handshake_seconds", "mtlsgw_bytes_total",
             "mtlsgw_dns_lookups_total", "mtlsgw_identity_not_after_seconds", "mtlsgw_config_reloads_total"]:
    assert want in types, "missing " + want
PY
a1=$(awk '$1 == "mtlsgw_connections_accepted_total{listener=\"proxy\"}" {print $2}' "$WORK/metrics.txt")
t1=$(awk '$1 == "mtlsgw_tunnels_total{action=\"mtls\",result=\"ok\"}" {print $2}' "$WORK/metrics.txt")
d1=$(awk '$1 == "mtlsgw_tunnels_total{action=\"deny\",result=\"denied\"}" {print $2}' "$WORK/metrics.txt")
h1=$(awk '$1 ~ /^mtlsgw_upstream_handshakes_total\{identity="billing"/ {s += $2} END {print s}' "$WORK/metrics.txt")
expect_eq "/metrics: 7 client connections counted" "7" "$((a1 - a0))"
expect_eq "/metrics: 5 mtls tunnels ok" "5" "$((t1 - t0))"
expect_eq "/metrics: 2 denied" "2" "$((d1 - d0))"
p1=$(awk '$1 == "mtlsgw_upstream_pool_requests_total{result=\"hit\"}" {print $2}' "$WORK/metrics.txt")
expect_eq "/metrics: 5 requests of identity billing: each a handshake or a pooled connection" "5" \
    "$((h1 - h0 + p1 - p0))"
check "/metrics: ... and some pooled (5 client connections, $((h1 - h0)) handshakes)" [ "$((p1 - p0))" -ge 1 ]
hist=$(awk '$1 == "mtlsgw_upstream_handshake_seconds_count{identity=\"billing\"}" {print $2}' "$WORK/metrics.txt")
inf=$(awk '$1 == "mtlsgw_upstream_handshake_seconds_bucket{identity=\"billing\",le=\"+Inf\"}" {print $2}' "$WORK/metrics.txt")
expect_eq "/metrics: handshake histogram count = +Inf bucket = handshakes" "$h1 $h1" "$hist $inf"
want_na=$(date -d "$(openssl x509 -in "$PKI/billing.crt" -noout -enddate | cut -d= -f2)" +%s)
expect_eq "/metrics: identity_not_after_seconds is the certificate's notAfter" "$want_na" \
    "$(awk '$1 == "mtlsgw_identity_not_after_seconds{identity=\"billing\"}" {print $2}' "$WORK/metrics.txt")"

# ---- SIGHUP under load: 20 streaming tunnels, a rule added ----
python3 - "$GW_PORT" > "$WORK/stream.out" 2>&1 <<'PY' &
import socket, sys, threading, time
port = int(sys.argv[1]); results = []
def one(i):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x05\x01\x00"); assert s.recv(2) == b"\x05\x00"
    host = b"echo.dc1.test"
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + (7).to_bytes(2, "big"))
    r = s.recv(10)
    ok = len(r) == 10 and r[1] == 0
    end = time.time() + 4
    n = 0
    while ok and time.time() < end:
        msg = (b"%d-%d|" % (i, n)) * 50
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(65536)
            if not b:
                break
            got += b
        ok = got == msg
        n += 1
        time.sleep(0.05)
    results.append((ok, n))
    s.close()
ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
print("started", flush=True)
for t in ts: t.start()
for t in ts: t.join()
print("tunnels ok: %d of %d, exchanges: %d" % (sum(1 for ok, n in results if ok), len(results), sum(n for ok, n in results)), flush=True)
PY
STREAM_PID=$!
for _ in $(seq 50); do grep -q started "$WORK/stream.out" && break; sleep 0.1; done
sleep 1
write_conf "$WORK/gw.conf" '{ match = "added.dc2.test:80"; identity = "billing"; upstream_port = '"$NGX_HTTPS"'; },'
kill -HUP "$GW_PID"
wait "$STREAM_PID" || true
expect_contains "SIGHUP under load: all 20 streaming tunnels intact" "tunnels ok: 20 of 20" "$(cat "$WORK/stream.out")"
expect_contains "SIGHUP: reload logged" "reloaded $WORK/gw.conf (SIGHUP)" "$(cat "$WORK/gw.log")"
out=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://added.dc2.test/new-rule)
expect_contains "SIGHUP: the added rule applies to new tunnels" "dn=CN=billing," "$out"
cp "$WORK/gw.conf" "$WORK/gw-good.conf"
printf 'rules = ( { match = "x" ; identity = ; } );\n' >> "$WORK/gw.conf"
kill -HUP "$GW_PID"
for _ in $(seq 50); do grep -q "reload (SIGHUP) failed" "$WORK/gw.log" && break; sleep 0.1; done
expect_contains "broken config on SIGHUP: refused with file:line" "reload: $WORK/gw.conf:" "$(cat "$WORK/gw.log")"
expect_contains "broken config on SIGHUP: the old one keeps serving" "reload (SIGHUP) failed: keeping the running configuration" "$(cat "$WORK/gw.log")"
out=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://added.dc2.test/still)
expect_contains "broken config on SIGHUP: still serving with the last good one" "path=/still" "$out"
cp "$WORK/gw-good.conf" "$WORK/gw.conf"
expect_eq "/metrics: one reload ok, one failed" "1 1" \
    "$(metric 'mtlsgw_config_reloads_total{result="ok"}') $(metric 'mtlsgw_config_reloads_total{result="failed"}')"

# ---- rotation without a signal ----
# Requests every 100 ms through the whole rotation; each prints nginx's view of our serial.
rotation_watch() {  # rotation_watch OUTFILE SECONDS
    python3 - "$GW_PORT" "$2" > "$1" 2>&1 <<'PY' &
import sys, time, urllib.request
o = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%s" % sys.argv[1]}))
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        body = o.open("http://orders.dc2.test/rotation", timeout=10).read().decode()
        print("%.2f %s" % (time.time(), body.split("serial=")[1].split()[0]), flush=True)
    except Exception as e:
        print("%.2f FAILED %s" % (time.time(), e), flush=True)
    time.sleep(0.1)
PY
    WATCH_PID=$!
}
old_serial=$(serial_of "$WORK/ids/ops.crt")
expect_contains "before rotation: nginx sees the first serial" "serial=$old_serial" \
    "$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://orders.dc2.test/before)"
rotate_and_watch() {  # rotate_and_watch how NEWNAME
    client_cert "$2"
    local new_serial t_change seen_at
    new_serial=$(serial_of "$PKI/$2.crt")
    rotation_watch "$WORK/watch-$1.out" 9
    sleep 1.5
    t_change=$(date +%s.%N)
    if [ "$1" = rename ]; then
        cp "$PKI/$2.key" "$WORK/ids/.ops.key.tmp"; cp "$PKI/$2.crt" "$WORK/ids/.ops.crt.tmp"
        mv "$WORK/ids/.ops.key.tmp" "$WORK/ids/ops.key"; mv "$WORK/ids/.ops.crt.tmp" "$WORK/ids/ops.crt"
    else
        cat "$PKI/$2.crt" > "$WORK/ids/ops.crt"; cat "$PKI/$2.key" > "$WORK/ids/ops.key"
    fi
    wait "$WATCH_PID" || true
    seen_at=$(awk -v s="$new_serial" '$2 == s { print $1; exit }' "$WORK/watch-$1.out")
    check "rotation by $1: no failed request while the files changed" bash -c "! grep -q FAILED '$WORK/watch-$1.out'"
    check "rotation by $1: nginx shows the new serial $new_serial" [ -n "$seen_at" ]
    if [ -n "$seen_at" ]; then
        local took
        took=$(python3 -c "print('%.1f' % ($seen_at - $t_change))")
        echo "# rotation by $1: new serial seen ${took} s after the files changed"
        check "rotation by $1: new serial within 5 s (${took} s)" python3 -c "import sys; sys.exit(0 if $seen_at - $t_change <= 5 else 1)"
    fi
    check "rotation by $1: only the new serial after it appeared" \
        bash -c "awk -v t='${seen_at:-0}' '\$1 > t' '$WORK/watch-$1.out' | awk '{print \$2}' | sort -u | grep -qx '$new_serial'"
}
rotate_and_watch rename rot1
rotate_and_watch rewrite rot2
expect_contains "rotation: reloads logged as identity changes" "(identity files changed)" "$(cat "$WORK/gw.log")"
expect_eq "rotation: /identities shows the current serial" "$(serial_of "$PKI/rot2.crt")" \
    "$(admin /identities | python3 -c 'import json,sys; print([i["serial"] for i in json.load(sys.stdin) if i["name"] == "ops"][0])')"


# ---- the systemd unit ----
sed "s|/usr/local/bin/mtlsgw|$MTLSGW|g" "$ROOT/etc/mtlsgw.service" > "$WORK/mtlsgw.service"
out=$(systemd-analyze verify "$WORK/mtlsgw.service" 2>&1) && rc=0 || rc=$?
expect_eq "systemd unit: systemd-analyze verify finds nothing ($out)" "0 " "$rc $out"
unit=$(cat "$ROOT/etc/mtlsgw.service")
for d in "NoNewPrivileges=yes" "ProtectSystem=strict" "PrivateTmp=yes" "User=mtlsgw" "CapabilityBoundingSet=" \
    "ExecReload=/bin/kill -HUP \$MAINPID" "ExecStartPre=/usr/local/bin/mtlsgw check"; do
    expect_contains "systemd unit: $d" "$d" "$unit"
done
finish
