#!/usr/bin/env bash
# Logs: the access log as JSON to a file, with every key DESIGN lists; SIGUSR1 reopens it
# after rotation (mv + signal, what logrotate's postrotate does); log.level filters the
# gateway's own messages.
source "$(dirname "$0")/lib.sh"

make_pki
start_backend
start_redis
start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1
GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; } );
rules = ( { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; } );
log = { level = "warn"; format = "json"; access = "$WORK/access.json"; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"

out=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://orders.dc2.test/first)
expect_contains "request served" "path=/first" "$out"
curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://nowhere.test/ > /dev/null || true
for _ in $(seq 50); do [ "$(wc -l < "$WORK/access.json" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.1; done
keys=$(python3 - "$WORK/access.json" <<'PY'
import json, sys
want = "ts client listener proto dest rule action identity upstream sni tls resumed dns_ms connect_ms handshake_ms up_bytes down_bytes duration_ms result reason".split()
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
real = [l for l in lines if l.get("dest") not in (None, "-")]
missing = sorted({k for l in real for k in want if k not in l and not (k == "reason" and l.get("result") == "ok")})
print("lines=%d missing=%s http=%s denied=%s" % (len(real), ",".join(missing) or "none",
      any(l.get("proto") == "http" and l.get("method") == "GET" and l.get("status") == 200 for l in real),
      any(l.get("result") == "denied" for l in real)))
PY
)
expect_contains "every access line is JSON with DESIGN's keys" "missing=none" "$keys"
expect_contains "http_proxy line carries method and status" "http=True" "$keys"
expect_contains "a denied tunnel is logged as such" "denied=True" "$keys"
expect_contains "log.level = warn, format json: warnings are logged, as JSON" '"level":"warn","msg":"running as root' "$(cat "$WORK/gw.log")"
check "log.level = warn: no info messages (the listener lines are info)" bash -c "! grep -q '\"level\":\"info\"' '$WORK/gw.log'"

# Every client is logged with its protocol, also one refused halfway through its SOCKS5
# negotiation (no acceptable method; a broken greeting): these were proto=- before the
# protocols became doors of their own.
python3 - "$GW_PORT" <<'PY'
import socket, sys
for data in (b"\x05\x01\x02", b"\x05\x00"):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(data)
    try:
        s.recv(64)
    except OSError:
        pass
    s.close()
PY
for _ in $(seq 50); do [ "$(grep -c '"result":"auth_failed"\|"result":"bad_request"' "$WORK/access.json")" -ge 2 ] && break; sleep 0.1; done
refused=$(python3 -c '
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(" ".join(sorted("%s/%s" % (l.get("proto"), l.get("result")) for l in ls if l.get("result") in ("auth_failed", "bad_request"))))
' "$WORK/access.json")
expect_eq "SOCKS5 clients refused mid-negotiation are logged proto=socks5" "socks5/auth_failed socks5/bad_request" "$refused"

mv "$WORK/access.json" "$WORK/access.json.1"
kill -USR1 "$GW_PID"
sleep 0.3
http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://orders.dc2.test/second > /dev/null
for _ in $(seq 50); do [ -s "$WORK/access.json" ] && break; sleep 0.1; done
check "SIGUSR1: a new access log file is opened" [ -s "$WORK/access.json" ]
expect_contains "SIGUSR1: the next line goes to the new file" '"dest":"orders.dc2.test:80"' "$(cat "$WORK/access.json" 2>/dev/null)"
check "SIGUSR1: the rotated file keeps the earlier lines only" bash -c "grep -q first '$WORK/backend.log' && [ \$(wc -l < '$WORK/access.json.1') -ge 2 ] && ! grep -q second '$WORK/access.json.1' 2>/dev/null"
finish
