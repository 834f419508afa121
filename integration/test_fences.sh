#!/usr/bin/env bash
# Fences around the gateway itself (security round 3): no way back into the gateway through
# a rule (its own listeners and admin endpoint are never connected to, loopback is in the
# default deny_addresses, an explicit upstream literal is the operator's choice); one
# reading of an address (127.0.0.1. and 127.000.000.001 against a 127.0.0.0/8 deny); an
# admin endpoint that one local user cannot starve; dual-stack clients (an AF_INET6 socket
# to ::ffff:127.0.0.1, as Java and .NET make) served with the caller lookup on; and the
# lesser holes: a client streaming after its refusal, a trickled second request head, one
# client's share of max_connections, a planted access-log symlink, trusted files writable
# by others. (HTTP/1.0 clients and chunked responses: test_http.sh.)
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    fail "this test makes a local user: it must run as root"
    finish
    exit 1
fi

make_pki
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
limits = { handshake_timeout_ms = 1500; };
rules = (
  { match = "127.0.0.0/8"; action = "deny"; },
  { match = "denied.loop.test"; action = "deny"; },
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
HOGDIR=$(mktemp -d /tmp/mtlsgw-hog.XXXXXX); UNDO+=("rm -rf $HOGDIR"); chown "$HOG" "$HOGDIR"
setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups /usr/bin/python3 - "$ADMIN_PORT" "$HOGDIR/hog.ready" <<'PY' &
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
for _ in $(seq 50); do [ -s "$HOGDIR/hog.ready" ] && break; sleep 0.1; done
check "the hog is holding admin connections" test -s "$HOGDIR/hog.ready"
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
check "the hog holds no more than its share of the admin endpoint (8, a few more in flight): $held" \
    bash -c "[ $held -ge 1 ] && [ $held -le 16 ]"
kill "$HOG_PID" 2>/dev/null || true

# ---- a client that streams after its refusal is read with the relay's budget ----
# It gets its 403, keeps sending as fast as it can, and is cut when the flush deadline
# (2 s) passes: the worker kept running its timers and other tunnels meanwhile.
python3 - "$GW_PORT" > "$WORK/stream.out" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"POST http://denied.loop.test/ HTTP/1.1\r\nHost: denied.loop.test\r\nContent-Length: 100000000000\r\n\r\n")
start, chunk, result = time.time(), b"x" * 65536, "stopped by itself after 12 s"
try:
    while time.time() - start < 12:
        s.sendall(chunk)
except OSError as e:
    result = "cut by the gateway after %.0f s" % (time.time() - start)
print(result)
PY
STREAM_PID=$!
ok=0
for i in $(seq 20); do
    [ "$(curl -s -m 2 -x "http://127.0.0.1:$GW_PORT" "http://web.loop.test:$BACKEND_PORT/good-$i" | grep -c "path=/good-$i")" = 1 ] && ok=$((ok + 1))
    sleep 0.1
done
wait "$STREAM_PID" || true
expect_eq "20 of 20 requests through a good tunnel on the same worker, while a refused client streams" "20" "$ok"
expect_contains "the refused client is cut at the flush deadline, not left streaming" "cut by the gateway" "$(cat "$WORK/stream.out")"

# ---- a later request head on a kept-alive connection has handshake_timeout_ms ----
out=$(python3 - "$GW_PORT" "$BACKEND_PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET http://web.loop.test:%s/first HTTP/1.1\r\nHost: web.loop.test\r\n\r\n" % sys.argv[2].encode())
first = s.recv(65536)
start = time.time()
head = b"GET http://web.loop.test:%s/second HTTP/1.1\r\nHost: web.loop.test\r\nX-Slow: " % sys.argv[2].encode()
result = "not cut after 10 s"
try:
    for i in range(20):          # a byte every half second, 10 s at most
        s.sendall(head if i == 0 else b"a")
        time.sleep(0.5)
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                result = "cut after %.1f s" % (time.time() - start); break
        except BlockingIOError:
            pass
        s.setblocking(True)
except OSError:
    result = "cut after %.1f s" % (time.time() - start)
print(("first=ok " if b"path=/first" in first else "first=bad ") + result)
PY
)
expect_contains "the first request on the connection is answered" "first=ok" "$out"
expect_contains "a trickled second head is cut (handshake_timeout_ms = 1500, idle_timeout_s = 900)" "cut after" "$out"
sleep 0.3
expect_contains "... and logged saying why" "did not send a complete request head within handshake_timeout_ms" "$(cat "$WORK/gw.log")"

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

# ---- one client's share of max_connections ----
GW4_PORT=$(free_port)
cat > "$WORK/gw4.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW4_PORT"; } );
deny_addresses = [ ];
log = { access = "stderr"; };
limits = { max_connections = 100; max_connections_per_client = 3; };
rules = ( { match = "127.0.0.1"; action = "direct"; } );
CONF
"$MTLSGW" run -c "$WORK/gw4.conf" >> "$WORK/gw4.log" 2>&1 &
GW4_PID=$!; PIDS+=($GW4_PID); GW_PIDS+=($GW4_PID)
wait_port "$GW4_PORT" $GW4_PID
SHARE_PY='
import socket, sys
port, dport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held, codes = [], []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % dport)
    codes.append(s.recv(200).split(b" ")[1].decode()); held.append(s)
print(" ".join(codes))
'
out=$(setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups /usr/bin/python3 -c "$SHARE_PY" "$GW4_PORT" "$BACKEND_PORT" 5)
expect_eq "one local user gets its share (3) of max_connections, then 503" "200 200 200 503 503" "$out"
out=$(setpriv --reuid 65534 --regid 65534 --clear-groups /usr/bin/python3 -c "$SHARE_PY" "$GW4_PORT" "$BACKEND_PORT" 2)
expect_eq "... while another user is still served" "200 200" "$out"
expect_contains "... the refusal says why" "holds its whole share of max_connections (max_connections_per_client = 3)" \
    "$(cat "$WORK/gw4.log")"

# ---- the access log is never opened through a planted link ----
LOGDIR=$(mktemp -d /tmp/mtlsgw-log.XXXXXX); UNDO+=("rm -rf $LOGDIR"); chown "$HOG" "$LOGDIR"
echo "root's secret" > "$WORK/victim"; chmod 600 "$WORK/victim"
setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups ln -s "$WORK/victim" "$LOGDIR/access.log"
GW5_PORT=$(free_port)
cat > "$WORK/gw5.conf" <<CONF
user = "$HOG";
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW5_PORT"; } );
deny_addresses = [ ];
log = { access = "$LOGDIR/access.log"; };
rules = ( { match = "127.0.0.1"; action = "direct"; } );
CONF
"$MTLSGW" run -c "$WORK/gw5.conf" >> "$WORK/gw5.log" 2>&1 &
GW5_PID=$!; PIDS+=($GW5_PID); GW_PIDS+=($GW5_PID)
wait_port "$GW5_PORT" $GW5_PID
curl -s -m 5 -o /dev/null -x "http://127.0.0.1:$GW5_PORT" "http://127.0.0.1:$BACKEND_PORT/through-link" || true
sleep 0.3
expect_eq "a symlink the service user planted as the access log is not followed (root's file unchanged)" \
    "root's secret" "$(cat "$WORK/victim")"
expect_contains "... the gateway says why and logs to stderr instead" "log.access: cannot open $LOGDIR/access.log" "$(cat "$WORK/gw5.log")"
expect_contains "... where the request is logged" "dest=127.0.0.1:$BACKEND_PORT" "$(cat "$WORK/gw5.log")"

# ---- not dumpable, also when started as its service user (as systemd's User= does) ----
GW6_PORT=$(free_port)
cat > "$HOGDIR/gw6.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW6_PORT"; } );
rules = ( { match = "*"; action = "deny"; } );
CONF
chown "$HOG" "$HOGDIR/gw6.conf"
setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups "$MTLSGW" run -c "$HOGDIR/gw6.conf" >> "$WORK/gw6.log" 2>&1 &
GW6_PID=$!; PIDS+=($GW6_PID); GW_PIDS+=($GW6_PID)
wait_port "$GW6_PORT" $GW6_PID
check "a gateway started as $HOG is not dumpable: its /proc/PID/mem is root's" test "$(stat -c %U "/proc/$GW6_PID/mem")" = root
out=$(setpriv --reuid "$HOG" --regid "$(id -g "$HOG")" --clear-groups /usr/bin/python3 -c \
    "open('/proc/$GW6_PID/environ','rb').read(); print('read')" 2>&1 || true)
check "... so another process of $HOG (a token module, say) cannot read its memory or environment" bash -c "! grep -q '^read' <<< '$out'"

# ---- check reports trusted files writable by group or others ----
TDIR=$(mktemp -d /tmp/mtlsgw-trust.XXXXXX); UNDO+=("rm -rf $TDIR")
cp "$PKI/ops.crt" "$PKI/ops.key" "$PKI/server-trust.crt" "$TDIR/"; chmod 600 "$TDIR/ops.key"; chmod 755 "$TDIR"
cat > "$TDIR/gw.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:1"; } );
identities = ( { name = "ops"; certificate = "ops.crt"; key = "ops.key"; trust = "server-trust.crt"; } );
rules = ( { match = "*"; identity = "ops"; } );
CONF
chmod 644 "$TDIR/gw.conf" "$TDIR/ops.crt" "$TDIR/server-trust.crt"
out=$("$MTLSGW" check -c "$TDIR/gw.conf" 2>&1 || true)
check "control: nothing writable by others, no warning" bash -c "! grep -q 'writable by' <<< '$out'"
chmod 666 "$TDIR/server-trust.crt"; chmod 664 "$TDIR/gw.conf"
out=$("$MTLSGW" check -c "$TDIR/gw.conf" 2>&1 || true)
expect_contains "a trust file writable by group and others: reported, in words from its bits" \
    "trust $TDIR/server-trust.crt has mode 0666: writable by group and others" "$out"
expect_contains "the config file writable by its group: reported" "config file $TDIR/gw.conf has mode 0664: writable by its group" "$out"
chmod 644 "$TDIR/server-trust.crt" "$TDIR/gw.conf"; chmod 777 "$TDIR"
out=$("$MTLSGW" check -c "$TDIR/gw.conf" 2>&1 || true)
expect_contains "a folder others may write (no sticky bit): reported for the files in it" \
    "is in folder $TDIR with mode 0777: writable by group and others, who could replace the file" "$out"
out=$("$MTLSGW" identity check -c "$TDIR/gw.conf" 2>&1 || true)
expect_contains "identity check: a PROBLEM" "PROBLEM  certificate $TDIR/ops.crt is in folder $TDIR" "$out"

check "gateway still running" gw_alive
finish
