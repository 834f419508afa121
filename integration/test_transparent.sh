#!/usr/bin/env bash
# Transparent listeners: clients with no proxy settings at all, redirected by nftables
# into the gateway, through the same rules, identities and logs. The whole test runs in a
# network namespace of its own (unshare --net): loopback, a veth with TEST-NET addresses
# (203.0.113.10, 2001:db8::10) where the remote nginx (ssl_verify_client on) listens, and a
# nat OUTPUT rule that redirects every TCP connection to those networks to the gateway,
# except the gateway's own (upstream_mark).
if [ -z "${MTLSGW_IN_NETNS:-}" ]; then
    if ! unshare --net true 2>/dev/null; then
        echo "SKIP: network namespaces are not available here (unshare --net failed): nothing was tested" >&2
        exit 77  # ctest shows it as skipped (SKIP_RETURN_CODE), not passed
    fi
    exec unshare --net env MTLSGW_IN_NETNS=1 bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

ip link set lo up
ip link add mtgw0 type veth peer name mtgw1
ip addr add 203.0.113.10/24 dev mtgw0
ip -6 addr add 2001:db8::10/64 dev mtgw0 nodad
ip link set mtgw0 up
ip link set mtgw1 up

make_pki
start_backend
start_redis
NGX_ADDR=203.0.113.10 NGX_ADDR6=2001:db8::10 start_nginx

TP=$(free_port) GW_PORT=$(free_port)
MARK=0x4d47
# Redirect (nat OUTPUT): every TCP connection to the TEST-NET ranges goes to the gateway's
# transparent listener, unless it carries the gateway's mark.
nft -f - <<NFT
table inet mtgw {
  chain out {
    type nat hook output priority -100;
    meta mark $MARK return
    ip daddr 203.0.113.0/24 meta l4proto tcp redirect to :$TP
    ip6 daddr 2001:db8::/64 meta l4proto tcp redirect to :$TP
  }
}
NFT
write_conf() {  # write_conf FILE MARK_LINE
    cat > "$1" <<CONF
$2
listen = (
  { name = "redirect"; address = "127.0.0.1:$TP"; transparent = true; sniff = ["http"]; },
  { name = "redirect6"; address = "[::1]:$TP"; transparent = true; },
  { name = "proxy"; address = "127.0.0.1:$GW_PORT"; }
);
resolver = { hosts = ( { name = "orders.dc2.test"; address = "203.0.113.10"; } ); };
identities = (
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; }
);
# Redirected in OUTPUT, a client's source is the host's address for that destination.
allow = [ "127.0.0.0/8", "::1/128", "203.0.113.0/24", "2001:db8::/64" ];
deny_addresses = [ "203.0.113.20/32", "169.254.0.0/16", "fe80::/10" ];
limits = { handshake_timeout_ms = 1500; };
rules = (
  { match = "203.0.113.30"; action = "deny"; },
  { match = "203.0.113.10:6379"; identity = "ops"; upstream_port = $NGX_REDIS; server_name = "redis.dc2.test"; },
  { match = "[2001:db8::10]:6379"; identity = "ops"; upstream_port = $NGX_REDIS; server_name = "redis.dc2.test"; },
  { match = "orders.dc2.test:80"; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "billing.dc2.test:80"; identity = "billing"; upstream_port = $NGX_HTTPS; server_name = "orders.dc2.test"; },
  { match = "203.0.113.20:6379"; identity = "ops"; },
  { match = "203.0.113.10:80"; identity = "ops"; upstream_port = $NGX_HTTPS; server_name = "orders.dc2.test"; },
  { match = "*"; action = "deny"; }
);
CONF
}
write_conf "$WORK/gw.conf" "upstream_mark = $MARK;"
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) || true
expect_contains "transparent listeners with sniff and upstream_mark: check OK" "configuration OK" "$out"
start_gw "$WORK/gw.conf"

# ---- clients with no proxy configuration ----
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups redis-cli -h 203.0.113.10 -p 6379 PING 2>&1)
expect_eq "redis-cli -h 203.0.113.10 (no proxy settings): PONG over mTLS" "PONG" "$out"
sleep 0.3
expect_contains "nginx stream saw our client certificate" 'dn="CN=ops,O=mtlsgw-test"' "$(cat "$WORK/nginx/logs/stream.log")"
out=$(redis-cli -h 2001:db8::10 -p 6379 PING 2>&1)
expect_eq "IPv6: redis-cli -h 2001:db8::10: PONG over mTLS" "PONG" "$out"
out=$(curl -s -m 10 --resolve orders.dc2.test:80:203.0.113.10 http://orders.dc2.test/sniffed?q=1)
expect_contains "curl with no proxy: routed by its sniffed Host, our certificate" "dn=CN=ops,O=mtlsgw-test" "$out"
expect_contains "... the sniffed bytes relayed unchanged (request line, Host)" "host=orders.dc2.test path=/sniffed?q=1" "$out"
out=$(curl -s -m 10 --resolve billing.dc2.test:80:203.0.113.10 http://billing.dc2.test/other-host)
expect_contains "same address, another Host: that host's rule and identity" "dn=CN=billing,O=mtlsgw-test" "$out"
sleep 0.3
log=$(cat "$WORK/gw.log")
expect_contains "access log: proto=transparent with the original destination" \
    "proto=transparent dest=203.0.113.10:6379" "$(grep 'listener=redirect ' <<< "$log" | head -1)"
expect_contains "access log: a redirected local client's caller (looked up by its original destination)" \
    "caller=65534 listener=redirect" "$(grep 'listener=redirect ' <<< "$log" | head -1)"
expect_contains "access log: a sniffed Host is the destination" "dest=orders.dc2.test:80" \
    "$(grep 'proto=transparent' <<< "$log" | grep 'orders.dc2.test' | head -1)"
expect_contains "... connected to the original address (upstream_port applied)" "upstream=203.0.113.10:$NGX_HTTPS" \
    "$(grep 'proto=transparent' <<< "$log" | grep 'dest=orders.dc2.test' | head -1)"

# ---- a sniffed Host cannot lift a rule the original address meets: both decide ----
rc=0; curl -s -m 10 --resolve orders.dc2.test:80:203.0.113.30 http://orders.dc2.test/lift > /dev/null 2>&1 || rc=$?
expect_eq "Host of an allowed name sent to a denied address: reset (curl exit 56)" "56" "$rc"
rc=0; curl -s -m 10 --resolve evil.dc2.test:80:203.0.113.10 http://evil.dc2.test/other > /dev/null 2>&1 || rc=$?
expect_eq "Host of a denied name sent to an allowed address: reset (curl exit 56)" "56" "$rc"
sleep 0.3
expect_contains "... logged: the address rule decided, the sniffed name could not lift it" \
    'the original destination 203.0.113.30:80 is denied by rule' "$(grep 'dest=orders.dc2.test:80' "$WORK/gw.log" | grep 'result=denied' | tail -1)"
expect_contains "... the name's own deny rule decided the other" 'evil.dc2.test:80 denied by rule' \
    "$(grep 'dest=evil.dc2.test:80' "$WORK/gw.log" | tail -1)"
check "... and nothing reached nginx for either" bash -c "! grep -qE '/lift |/other ' '$WORK/backend.log'"

# ---- refusals reset the client, and the log says why ----
set +e
curl -s -m 10 http://203.0.113.10:8081/no-rule > /dev/null 2>&1
rc=$?
set -e
expect_eq "a destination no rule allows: the client is reset (curl exit 56)" "56" "$rc"
sleep 0.3
expect_contains "... logged with its reason" 'denied by rule' "$(grep 'dest=203.0.113.10:8081' "$WORK/gw.log" | tail -1)"
out=$(python3 - "$TP" <<'PY'
import socket, sys, time
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    time.sleep(0.2)
    s.sendall(b"PING\r\n")
    print("eof" if s.recv(100) == b"" else "data")
except ConnectionResetError:
    print("reset")
PY
)
expect_eq "a direct connection to the transparent listener: reset" "reset" "$out"
sleep 0.3
expect_contains "... and logged: nothing redirected it" "nothing redirected it" "$(grep 'listener=redirect ' "$WORK/gw.log" | tail -1)"
set +e
redis-cli -h 203.0.113.20 -p 6379 PING > /dev/null 2>&1
set -e
sleep 0.3
expect_contains "deny_addresses applies to the original destination" "is in deny_addresses (203.0.113.20/32)" \
    "$(grep 'dest=203.0.113.20:6379' "$WORK/gw.log" | tail -1)"
# Sniffing gives up after handshake_timeout_ms (1500 here): a start that looks like HTTP
# but never completes is relayed as opaque bytes, to the original destination's rule.
out=$(python3 - <<'PY'
import socket, time
s = socket.create_connection(("203.0.113.10", 6379), timeout=10)
s.sendall(b"GET")          # capitals and no space yet: could be HTTP, so the gateway waits
time.sleep(2.5)            # past handshake_timeout_ms: it routes by the address
s.sendall(b" greeting\r\n")  # redis reads the whole line as the inline command GET greeting
print(s.recv(100).decode().strip())
PY
)
expect_eq "sniff timeout: the bytes so far go on, unchanged, by the original address" '$-1' "$out"
check "the gateway is still serving" bash -c "[ \"\$(redis-cli -h 203.0.113.10 -p 6379 PING)\" = PONG ]"
# A proxy listener of the same gateway is unaffected.
out=$(curl -s -m 10 -p -x "http://127.0.0.1:$GW_PORT" http://orders.dc2.test:80/via-proxy)
expect_contains "the gateway's proxy listener still works beside it" "dn=CN=ops,O=mtlsgw-test" "$out"
stop_gateways

# ---- without upstream_mark the gateway's own connection is redirected back: caught ----
GW_PIDS=()
write_conf "$WORK/gw-nomark.conf" ""
: > "$WORK/gw.log"
start_gw "$WORK/gw-nomark.conf"
out=$(redis-cli -h 203.0.113.10 -p 6379 PING 2>&1 || true)
check "without upstream_mark: no PONG (the upstream connection came back to the gateway)" bash -c "! grep -q PONG <<< '$out'"
sleep 0.3
expect_contains "... the looped connection is refused by the rules, not followed" "dest=203.0.113.10:$NGX_REDIS" \
    "$(grep 'proto=transparent' "$WORK/gw.log")"
stop_gateways
GW_PIDS=()

# ---- upstream_mark without CAP_NET_ADMIN (nor CAP_NET_RAW, which newer kernels accept): a clear start-up error ----
out=$(timeout 10 setpriv --bounding-set -net_admin,-net_raw --inh-caps -net_admin,-net_raw "$MTLSGW" run -c "$WORK/gw.conf" 2>&1 || true)
expect_contains "upstream_mark without CAP_NET_ADMIN: a start-up error that says what to do" \
    "upstream_mark: cannot set SO_MARK 0x4d47 on upstream sockets" "$out"
expect_contains "... naming the capability" "CAP_NET_ADMIN" "$out"

# ---- config errors ----
sed 's/transparent = true; sniff = \["http"\];/transparent = true; sniff = ["tls"];/' "$WORK/gw.conf" > "$WORK/bad.conf"
expect_check_error "sniff of an unknown protocol: what is expected" "$WORK/bad.conf" 'listen[0].sniff: expected "http" (the only protocol sniffed), found "tls"'
sed 's/transparent = true; sniff = \["http"\];/transparent = true; forward = "a.test:1";/' "$WORK/gw.conf" > "$WORK/bad2.conf"
expect_check_error "transparent with forward: refused" "$WORK/bad2.conf" "listen[0].transparent: a transparent listener takes the destination from the connection"
sed 's/{ name = "proxy"; address = "127.0.0.1:'"$GW_PORT"'"; }/{ name = "proxy"; address = "127.0.0.1:'"$GW_PORT"'"; sniff = ["http"]; }/' "$WORK/gw.conf" > "$WORK/bad3.conf"
expect_check_error "sniff on a proxy listener: refused" "$WORK/bad3.conf" "listen[2].sniff: only for a transparent listener"
sed 's/^upstream_mark = .*/upstream_mark = -1;/' "$WORK/gw.conf" > "$WORK/bad4.conf"
expect_check_error "a bad upstream_mark: what is expected" "$WORK/bad4.conf" "upstream_mark: expected a mark from 0 (none) to 0xffffffff"
finish
