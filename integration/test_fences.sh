#!/usr/bin/env bash
# Fences around the gateway itself (security round 3): no way back into the gateway through
# a rule (its own listeners and admin endpoint are never connected to, loopback is in the
# default deny_addresses, an explicit upstream literal is the operator's choice); one
# reading of an address (127.0.0.1. and 127.000.000.001 against a 127.0.0.0/8 deny); an
# admin endpoint that one local user cannot starve; dual-stack clients (an AF_INET6 socket
# to ::ffff:127.0.0.1, as Java and .NET make) served with the caller lookup on.
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    fail "this test makes a local user: it must run as root"
    finish
    exit 1
fi

start_backend
start_dnsmasq self.loop.test=127.0.0.1 web.loop.test=127.0.0.1 pad.loop.test=127.0.0.1

GW_PORT=$(free_port); ADMIN_PORT=$(free_port); GW2_PORT=$(free_port)
# deny_addresses as the operator wrote it, without loopback: only the gateway's own
# addresses stand between a rule and a loop.
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
           { name = "wide"; address = "0.0.0.0:$GW2_PORT"; } );
allow = [ "127.0.0.0/8" ];
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 1000; tries = 1; };
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
rules = (
  { match = "127.0.0.0/8"; action = "deny"; },
  { match = "*.loop.test"; action = "direct"; },
  { match = "*"; action = "deny"; }
);
CONF
start_gw "$WORK/gw.conf"
wait_port "$ADMIN_PORT" "$GW_PID"

connect_code() {  # connect_code AUTHORITY -> the CONNECT status line and Proxy-Status
    printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r' | head -2 | tr '\n' ' '
}

# ---- no way back into the gateway ----
out=$(connect_code "web.loop.test:$BACKEND_PORT")
expect_contains "control: a direct rule reaches a loopback service when the operator's list allows it" "HTTP/1.1 200" "$out"
for target in "self.loop.test:$GW_PORT:proxy" "self.loop.test:$ADMIN_PORT:admin" "self.loop.test:$GW2_PORT:wide"; do
    authority=${target%:*}; name=${target##*:}
    out=$(connect_code "$authority")
    expect_contains "a direct rule to the gateway's own listener $name: 403" "HTTP/1.1 403" "$out"
    expect_contains "... destination_ip_prohibited, naming the listener" "is the gateway's own listener $name" "$out"
done
expect_eq "SOCKS5 to the gateway's own port through a rule: REP 0x02" "rep=2" \
    "$(python3 "$HERE/socks_probe.py" "$GW_PORT" self.loop.test "$GW_PORT")"
out=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$GW_PORT" "http://self.loop.test:$ADMIN_PORT/identities" || true)
expect_eq "http_proxy request to the admin endpoint through a rule: 403" "403" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" "self.loop.test:$GW_PORT" --connect 2>&1 || true)
expect_contains "explain --connect marks the gateway's own address and does not connect" \
    "127.0.0.1:$GW_PORT (the gateway's own listener proxy)" "$out"

# ---- one reading of an address ----
for spelling in "127.0.0.1." "127.000.000.001" "127.1" "2130706433" "127.0.0.1.loop.test.1"; do
    out=$(connect_code "$spelling:$BACKEND_PORT")
    expect_contains "CONNECT $spelling against the 127.0.0.0/8 deny rule: refused" "HTTP/1.1 40" "$out"
    expect_eq "SOCKS5 $spelling: refused (not REP 0)" "no" \
        "$(python3 "$HERE/socks_probe.py" "$GW_PORT" "$spelling" "$BACKEND_PORT" | grep -q 'rep=0' && echo yes || echo no)"
done
out=$(connect_code "127.0.0.1.:$BACKEND_PORT")
expect_contains "127.0.0.1. is the address: the IP rule decides" "error=destination_ip_prohibited" "$out"
out=$(connect_code "127.000.000.001:$BACKEND_PORT")
expect_contains "127.000.000.001: refused as an address in another spelling" "ends in a numeric label" "$out"
# (written by hand: curl would normalise the address itself)
out=$(printf 'GET http://127.000.000.001:%s/ HTTP/1.1\r\nHost: 127.000.000.001\r\n\r\n' "$BACKEND_PORT" | python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r' | head -2 | tr '\n' ' ')
expect_contains "http_proxy request to 127.000.000.001: 400" "HTTP/1.1 400" "$out"
expect_contains "... with Proxy-Status saying why" 'error=http_request_error; details="request target \"127.000.000.001\" ends in a numeric label' "$out"
check "the backend never saw any of them" bash -c "[ \$(grep -c . '$WORK/backend.log' || true) -le 1 ]"

# ---- dual-stack clients (AF_INET6 socket to ::ffff:127.0.0.1) with the caller lookup on ----
out=$(python3 - "$GW_PORT" "$BACKEND_PORT" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(("::ffff:127.0.0.1", int(sys.argv[1])))
s.sendall(b"CONNECT web.loop.test:%s HTTP/1.1\r\nHost: web.loop.test\r\n\r\n" % sys.argv[2].encode())
try:
    print(s.recv(100).split(b"\r\n")[0].decode())
except ConnectionResetError:
    print("reset")
PY
)
expect_eq "a Java-style dual-stack client is served, not reset" "HTTP/1.1 200 Connection established" "$out"
sleep 0.3
expect_contains "... and logged as the IPv4 client it is" "client=127.0.0.1:" "$(grep 'dest=web.loop.test' "$WORK/gw.log" | tail -1)"

# ---- an admin endpoint that one user cannot starve ----
HOG=mt$$hog
useradd --no-create-home --shell /usr/sbin/nologin --user-group "$HOG"; UNDO=("userdel $HOG" "${UNDO[@]}")
setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups /usr/bin/python3 - "$ADMIN_PORT" "$WORK/hog.ready" <<'PY' &
# 64 idle connections, renewed as the gateway drops them (for 40 s at most).
import socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
held, end = [], time.time() + 40
while time.time() < end:
    held = [s for s in held if s.fileno() >= 0]
    while len(held) < 64:
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    open(ready, "w").write("%d\n" % len(held))
    for s in list(held):
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                s.close(); held.remove(s)
        except BlockingIOError:
            pass
        except OSError:
            s.close(); held.remove(s)
    time.sleep(0.2)
PY
HOG_PID=$!; PIDS+=($HOG_PID)
for _ in $(seq 50); do [ -s "$WORK/hog.ready" ] && break; sleep 0.1; done
sleep 1
ok=0
for _ in $(seq 40); do
    [ "$(curl -s -m 3 "http://127.0.0.1:$ADMIN_PORT/healthz" || true)" = ok ] && ok=$((ok + 1))
    sleep 0.05
done
expect_eq "/healthz answers 40 of 40 while one user holds 64 idle admin connections" "40" "$ok"
own=$(setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups curl -s -m 3 "http://127.0.0.1:$ADMIN_PORT/healthz" || true)
expect_eq "... and the hog's own request is answered too (its oldest idle connection goes)" "ok" "$own"
held=$(ss -tn state established "( dport = :$ADMIN_PORT )" | grep -c ":$ADMIN_PORT" || true)
check "the hog holds no more than its share of the admin endpoint (8): $held" test "$held" -le 8
kill "$HOG_PID" 2>/dev/null || true

# ---- the default list fences loopback; an upstream literal is the operator's choice ----
GW3_PORT=$(free_port)
cat > "$WORK/gw3.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW3_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 1000; tries = 1; };
rules = (
  { match = "local.test:80"; action = "direct"; upstream = "127.0.0.1:$BACKEND_PORT"; },
  { match = "*.loop.test"; action = "direct"; }
);
CONF
"$MTLSGW" run -c "$WORK/gw3.conf" >> "$WORK/gw3.log" 2>&1 &
GW3_PID=$!; PIDS+=($GW3_PID); GW_PIDS+=($GW3_PID)
wait_port "$GW3_PORT" $GW3_PID
out=$(printf 'CONNECT web.loop.test:%s HTTP/1.1\r\nHost: x\r\n\r\n' "$BACKEND_PORT" | python3 "$HERE/raw.py" "$GW3_PORT" | tr -d '\r' | head -2 | tr '\n' ' ')
expect_contains "default deny_addresses: a name resolving to 127.0.0.1 is refused" \
    "web.loop.test resolves to 127.0.0.1 is in deny_addresses (127.0.0.0/8)" "$out"
out=$(curl -s -m 5 -x "http://127.0.0.1:$GW3_PORT" "http://local.test/literal" || true)
expect_contains "default deny_addresses: an explicit upstream literal on loopback is the operator's own choice" \
    "path=/literal" "$out"

check "gateway still running" gw_alive
finish
