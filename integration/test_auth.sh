#!/usr/bin/env bash
# Proxy credentials: a client outside `allow` is refused before any password is looked at
# (right and wrong passwords get byte-identical answers), passwords are scrypt hashes
# checked off the event loop (a burst of 50 wrong passwords does not stall a tunnel that
# is flowing), verified credentials are cached per worker, and a legacy sha256 line still
# works with a warning from check.
source "$(dirname "$0")/lib.sh"

start_backend
start_dnsmasq web.dc2.test=127.0.0.1
# An echo server for the tunnel that must keep flowing.
ECHO_PORT=$(free_port)
python3 - "$ECHO_PORT" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d:
            return
        c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PIDS+=($!); wait_port "$ECHO_PORT" $!

PASS='c0rrect-h0rse'
echo "$PASS" | "$MTLSGW" passwd alice > "$WORK/users"
# A line in the old format: NAME:sha256:SALT:HEX(SHA-256(SALT || password)).
legacy=$(python3 -c 'import hashlib; print("oldbob:sha256:0011:" + hashlib.sha256(bytes.fromhex("0011") + b"old-pw").hexdigest())')
echo "$legacy" >> "$WORK/users"
chmod 600 "$WORK/users"
expect_contains "mtlsgw passwd writes an scrypt line (N=2^15, r=8, p=1)" "alice:scrypt:32768:8:1:" "$(head -1 "$WORK/users")"

GW_PORT=$(free_port); ADMIN_PORT=$(free_port); OUT_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
auth = { users_file = "$WORK/users"; };
rules = ( { match = "*"; action = "direct"; } );
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1 || true)
expect_contains "check: the legacy sha256 line is a warning that says how to upgrade" \
    'users:2: warning: user "oldbob" has an unsalted-speed sha256 hash' "$out"
expect_contains "check: ... with the command to run" "mtlsgw passwd oldbob" "$out"
expect_contains "check: still OK" "configuration OK" "$out"
start_gw "$WORK/gw.conf"

socks() {  # socks PORT USER PASS HOST DPORT -> hex of every byte the gateway answered
    python3 - "$@" <<'PY'
import socket, sys
port, user, pw, host, dport = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode(), sys.argv[4].encode(), int(sys.argv[5])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
out = b""
def read(n):
    global out
    d = b""
    while len(d) < n:
        k = s.recv(n - len(d))
        if not k:
            break
        d += k
    out += d
    return d
s.sendall(b"\x05\x01\x02"); g = read(2)
if g == b"\x05\x02":
    s.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(pw)]) + pw)
    a = read(2)
    if a == b"\x01\x00":
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + dport.to_bytes(2, "big"))
        read(10)
print(out.hex())
PY
}
expect_eq "allowed client, right password: method 2, auth ok, REP 0" "0502010005000001" "$(socks "$GW_PORT" alice "$PASS" web.dc2.test "$BACKEND_PORT" | cut -c1-16)"
expect_eq "allowed client, wrong password: auth status 1" "05020101" "$(socks "$GW_PORT" alice wrong web.dc2.test "$BACKEND_PORT")"
expect_eq "legacy sha256 user still authenticates" "050201000500" "$(socks "$GW_PORT" oldbob old-pw web.dc2.test "$BACKEND_PORT" | cut -c1-12)"

# ---- credentials are not even looked at for a client outside allow ----
cat > "$WORK/out.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$OUT_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
auth = { users_file = "$WORK/users"; };
allow = [ "10.0.0.0/8" ];
rules = ( { match = "*"; action = "direct"; } );
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
"$MTLSGW" run -c "$WORK/out.conf" >> "$WORK/gw-out.log" 2>&1 &
OUT_PID=$!; PIDS+=($OUT_PID); GW_PIDS+=($OUT_PID)
wait_port "$OUT_PORT" $OUT_PID
right=$(socks "$OUT_PORT" alice "$PASS" web.dc2.test "$BACKEND_PORT")
wrong=$(socks "$OUT_PORT" alice nope web.dc2.test "$BACKEND_PORT")
expect_eq "outside allow: right and wrong SOCKS5 passwords get identical answers" "$right" "$wrong"
expect_contains "outside allow: the answer is REP 0x02 (not allowed)" "0502010005020001" "$right"
auth_right=$(printf '%s' "alice:$PASS" | base64 -w0); auth_wrong=$(printf '%s' "alice:nope" | base64 -w0)
connect_head() {  # connect_head PORT BASIC
    printf 'CONNECT web.dc2.test:%s HTTP/1.1\r\nHost: web.dc2.test\r\nProxy-Authorization: Basic %s\r\n\r\n' \
        "$BACKEND_PORT" "$2" | python3 "$HERE/raw.py" "$1" | tr -d '\r' | head -2
}
r1=$(connect_head "$OUT_PORT" "$auth_right"); r2=$(connect_head "$OUT_PORT" "$auth_wrong")
expect_eq "outside allow: right and wrong Proxy-Authorization get identical CONNECT answers" "$r1" "$r2"
expect_contains "outside allow: CONNECT gets 403, not 407" "HTTP/1.1 403" "$r1"
h1=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -x "http://alice:$PASS@127.0.0.1:$OUT_PORT" "http://web.dc2.test:$BACKEND_PORT/" || true)
h2=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -x "http://alice:nope@127.0.0.1:$OUT_PORT" "http://web.dc2.test:$BACKEND_PORT/" || true)
expect_eq "outside allow: http_proxy with right and wrong passwords, both 403" "403 403" "$h1 $h2"
check "outside allow: no password was checked (no authentication failure logged)" \
    bash -c "! grep -q 'authentication failed' '$WORK/gw-out.log'"

# ---- a burst of wrong passwords while a tunnel flows ----
m0=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
out=$(python3 - "$GW_PORT" "$ECHO_PORT" "$PASS" <<'PY'
import socket, sys, threading, time
port, echo_port, pw = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
def socks(user, password, dport):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"\x05\x01\x02"); s.recv(2)
    s.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
    a = s.recv(2)
    if a != b"\x01\x00":
        return s, a
    s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + dport.to_bytes(2, "big")); s.recv(10)
    return s, a
good, _ = socks(b"alice", pw, echo_port)
stop = [False]; gaps = []; echoes = [0]
def flow():
    last = time.monotonic()
    while not stop[0]:
        good.sendall(b"ping"); good.recv(4)
        now = time.monotonic(); gaps.append(now - last); last = now; echoes[0] += 1
        time.sleep(0.01)
t = threading.Thread(target=flow); t.start()
time.sleep(0.3)
results = []
def bad(i):
    s, a = socks(b"alice", b"wrong-%d" % i, echo_port)
    results.append(a); s.close()
start = time.monotonic()
ths = [threading.Thread(target=bad, args=(i,)) for i in range(50)]
[x.start() for x in ths]; [x.join() for x in ths]
burst = time.monotonic() - start
during = [g for g in gaps[-max(1, int(burst / 0.011)):]]
stop[0] = True; t.join()
print("refused=%d burst_s=%.2f max_gap_s=%.3f echoes=%d" % (sum(1 for a in results if a == b"\x01\x01"), burst, max(gaps), echoes[0]))
PY
)
echo "# $out"
expect_contains "50 wrong passwords: every one refused (auth status 1)" "refused=50" "$out"
burst=$(sed -E 's/.*burst_s=([0-9.]+).*/\1/' <<< "$out"); gap=$(sed -E 's/.*max_gap_s=([0-9.]+).*/\1/' <<< "$out")
# Checked on the event loop, 50 scrypt checks would stop the tunnel for the whole burst;
# off the loop it keeps flowing: its longest pause is a small part of the burst.
check "the flowing tunnel never paused for a third of the burst (max gap ${gap}s, burst ${burst}s)" \
    python3 -c "import sys; sys.exit(0 if $gap * 3 < $burst else 1)"
m1=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
rej0=$(awk '/password_checks_total\{result="rejected"\}/{print $2}' <<< "$m0"); rej1=$(awk '/password_checks_total\{result="rejected"\}/{print $2}' <<< "$m1")
expect_eq "metrics: 50 more rejected password checks" "50" "$((rej1 - rej0))"

# ---- verified credentials are cached: a kept-alive client pays the KDF once ----
ver0=$(awk '/password_checks_total\{result="verified"\}/{print $2}' <<< "$m1"); hit0=$(awk '/password_checks_total\{result="cached"\}/{print $2}' <<< "$m1")
urls=(); for i in $(seq 20); do urls+=(-o /dev/null "http://web.dc2.test:$BACKEND_PORT/r$i"); done
codes=$(curl -s -m 20 -w '%{http_code}\n' -x "http://alice:$PASS@127.0.0.1:$GW_PORT" "${urls[@]}" | sort | uniq -c | tr -s ' ')
expect_eq "20 http_proxy requests with credentials: all 200" " 20 200" "$codes"
m2=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics")
ver1=$(awk '/password_checks_total\{result="verified"\}/{print $2}' <<< "$m2"); hit1=$(awk '/password_checks_total\{result="cached"\}/{print $2}' <<< "$m2")
expect_eq "the KDF ran at most once for them (verified +0 or +1)" "ok" "$([ $((ver1 - ver0)) -le 1 ] && echo ok || echo "$((ver1 - ver0))")"
expect_eq "the rest came from the cache (cached + verified = 20)" "20" "$((hit1 - hit0 + ver1 - ver0))"
grep -q "$PASS" "$WORK"/gw*.log && fail "a password appears in a gateway log" || pass "no password in any gateway log"

check "gateway still running" gw_alive
finish
