#!/usr/bin/env bash
# The status page (DESIGN "Status page"): headless Chromium (Debian's chromium) loads GET /
# from a running gateway with traffic flowing and a tunnel open: the DOM has each identity,
# each rule, the failure just provoked, the day count of an identity that expires soon,
# the live tunnel, and a hostile name from a server certificate's SAN (and one a SOCKS5
# client sent) as text only: no element or attribute from it. A screenshot is taken.
# The headers forbid scripts and sniffing; /status.json parses and agrees with /metrics.
source "$(dirname "$0")/lib.sh"

command -v chromium > /dev/null || { echo "chromium is not installed (integration/deps.sh)"; exit 77; }
make_pki
start_backend
start_redis
start_nginx
HOSTILE='<img src=x onerror=alert(1)>'
(
    cd "$PKI"
    # A server whose certificate's SAN is markup, and a client identity that expires in 5 days.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out hostile.key 2>/dev/null
    openssl req -new -key hostile.key -subj "/CN=hostile" -addext "subjectAltName=DNS:$HOSTILE" -out hostile.csr 2>/dev/null
    openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server -days 30 \
        -in hostile.csr -out hostile.crt 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out soon.key 2>/dev/null
    chmod 600 soon.key
    openssl req -new -key soon.key -subj "/O=mtlsgw-test/CN=soon" -out soon.csr 2>/dev/null
    openssl x509 -req -in soon.csr -CA client-ca.crt -CAkey client-ca.key -CAcreateserial -days 5 \
        -extfile ca.cnf -extensions v3_client -out soon.crt 2>/dev/null
)
check "the hostile certificate carries the markup in its SAN" bash -c \
    "openssl x509 -in '$PKI/hostile.crt' -noout -ext subjectAltName | grep -qF '$HOSTILE'"
S_PORT=$(free_port)
openssl s_server -accept "$S_PORT" -cert "$PKI/hostile.crt" -key "$PKI/hostile.key" -cert_chain "$PKI/int.crt" \
    -www > "$WORK/s_server.log" 2>&1 &
PIDS+=($!)
wait_port "$S_PORT" $!

GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "soon"; certificate = "$PKI/soon.crt"; key = "$PKI/soon.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "orders.dc2.test"; identity = "ops"; upstream = "127.0.0.1:$NGX_HTTPS"; },
  { match = "soon.dc2.test"; identity = "soon"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "hostile.test"; identity = "ops"; upstream = "127.0.0.1:$S_PORT"; },
  { match = "*.example.org"; action = "deny"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
start_gw "$WORK/gw.conf"
px() { curl -s -m 10 -x "http://127.0.0.1:$GW_PORT" "$@"; }

# ---- traffic: served tunnels, a denied one, a hostile certificate, a hostile SOCKS5 name ----
for i in 1 2 3; do px "http://orders.dc2.test:443/$i" > /dev/null; done
px http://soon.dc2.test:443/ > /dev/null
curl -s -m 10 --socks5-hostname "127.0.0.1:$GW_PORT" http://orders.dc2.test:443/s > /dev/null
out=$(px -i http://blocked.example.org/)
expect_contains "a denied request (the failure to find on the page)" "HTTP/1.1 403" "$out"
out=$(px -i http://hostile.test:443/)
expect_contains "the hostile server is refused, its SAN in the reason" "certificate is for $HOSTILE" "$out"
python3 - "$GW_PORT" "$HOSTILE" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"\x05\x01\x00"); s.recv(2)
h = sys.argv[2].encode()
s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + (80).to_bytes(2, "big")); s.recv(10)
PY
# A tunnel left open while the page is read.
python3 - "$GW_PORT" > "$WORK/open.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"CONNECT orders.dc2.test:443 HTTP/1.1\r\nHost: orders.dc2.test:443\r\n\r\n")
print(s.recv(200).decode().splitlines()[0], flush=True)
time.sleep(20)
PY
OPEN_PID=$!
PIDS+=($OPEN_PID)
for _ in $(seq 50); do grep -q "200" "$WORK/open.out" 2>/dev/null && break; sleep 0.1; done

# ---- the page in Chromium ----
URL="http://127.0.0.1:$ADMIN_PORT/"
chrome() { timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$WORK/chrome" "$@" 2> "$WORK/chrome.err"; }
chrome --dump-dom "$URL" > "$WORK/dom.html"
check "Chromium rendered the page" grep -q "<h1>mtlsgw" "$WORK/dom.html"
chrome --screenshot="$WORK/status.png" --window-size=1280,1700 "$URL" > /dev/null
check "a screenshot was taken" test -s "$WORK/status.png"
[ -n "${STATUS_SCREENSHOT:-}" ] && cp "$WORK/status.png" "$STATUS_SCREENSHOT"
dom=$(cat "$WORK/dom.html")
expect_contains "DOM: identity ops" 'id="identity-ops"' "$dom"
expect_contains "DOM: identity soon" 'id="identity-soon"' "$dom"
check "DOM: the soon-expiring identity's day count, marked" grep -qE 'class="days warn">(4\.9|5\.0) days left' "$WORK/dom.html"
for line in 9 10 11 12; do
    expect_contains "DOM: rule gw.conf:$line" "gw.conf:$line</code>" "$dom"
done
expect_contains "DOM: the denied request among the last failures" "blocked.example.org:80" "$dom"
expect_contains "DOM: the rule's last failure, in words" "denied by rule" "$dom"
expect_contains "DOM: the hostile SAN as text" "certificate is for &lt;img src=x onerror=alert(1)&gt;" "$dom"
check "DOM: no element from the hostile name (no <img> at all)" bash -c "! grep -qi '<img' '$WORK/dom.html'"
check "DOM: no onerror attribute anywhere" bash -c "! grep -q ' onerror=\"' '$WORK/dom.html'"
check "DOM: no script" bash -c "! grep -qi '<script' '$WORK/dom.html'"
expect_contains "DOM: the open CONNECT tunnel among the live ones" "<td>1</td>" "$(echo "$dom" | grep -o '<tr><td>proxy.*</tr>' | head -1)"
expect_contains "DOM: the handshake chart (inline SVG)" '<svg class="chart"' "$dom"
check "no key material on the page" bash -c "! grep -qE 'PRIVATE KEY|BEGIN' '$WORK/dom.html'"

# ---- headers, refresh, JSON ----
head=$(curl -s -D - -o /dev/null "$URL")
expect_contains "CSP: nothing but the page's own style" "Content-Security-Policy: default-src 'none'; style-src 'sha256-" "$head"
expect_contains "X-Content-Type-Options" "X-Content-Type-Options: nosniff" "$head"
expect_contains "?refresh=10 refreshes" '<meta http-equiv="refresh" content="10">' "$(curl -s "${URL}?refresh=10")"
curl -s "http://127.0.0.1:$ADMIN_PORT/status.json" > "$WORK/status.json"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" > "$WORK/metrics.txt"
out=$(python3 - "$WORK/status.json" "$WORK/metrics.txt" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
m = open(sys.argv[2]).read()
def metric(name):
    return sum(float(v) for v in re.findall(r'^' + re.escape(name) + r'\S* (\S+)$', m, re.M))
hs = s["handshakes"]["ops"]
ok = []
ok.append(hs["full"] + hs["resumed"] == metric('mtlsgw_upstream_handshakes_total{identity="ops"'))
denied = sum(r["failures"].get("denied", 0) for r in s["rules"])
ok.append(denied >= 1 and metric('mtlsgw_tunnels_total{action="deny",result="denied"') >= denied)
ok.append(s["tunnels_active"] == metric("mtlsgw_tunnels_active"))
ok.append(any("<img src=x onerror" in f["reason"] for f in s["failures"]))  # JSON keeps the text; the page escapes it
print("ok" if all(ok) else "mismatch %s" % ok)
PY
)
expect_eq "/status.json parses and agrees with /metrics" "ok" "$out"
kill "$OPEN_PID" 2> /dev/null || true
finish
