#!/usr/bin/env bash
# Faults the loopback alone cannot show: network and host unreachable (a network
# namespace of our own whose routing table has no way out, so nothing ever leaves the
# machine), and accept() failing with EMFILE under a low descriptor limit (no spin, and
# recovery once descriptors free up).
source "$(dirname "$0")/lib.sh"

NS=mtlsgw-it-$$
trap 'cleanup; ip netns del "$NS" 2>/dev/null || true' EXIT

# ---- unreachable, inside a namespace with only lo ----
# 10.9.0.0/16 has no route at all (ENETUNREACH); 10.1.0.0/16 has an "unreachable" route
# (EHOSTUNREACH).
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip route add unreachable 10.1.0.0/16
nsx() { ip netns exec "$NS" "$@"; }

GW_PORT=$(free_port)
cat > "$WORK/gw-ns.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:53" ]; timeout_ms = 300; tries = 1; };
rules = ( { match = "10.0.0.0/8"; action = "direct"; } );
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
ip netns exec "$NS" "$MTLSGW" run -c "$WORK/gw-ns.conf" >> "$WORK/gw-ns.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
GW_PIDS+=($GW_PID)
for _ in $(seq 100); do
    nsx python3 -c "import socket; socket.create_connection(('127.0.0.1',$GW_PORT),timeout=0.2)" 2>/dev/null && break
    sleep 0.1
done

s5ip() {  # s5ip A.B.C.D PORT -> rep=N
    nsx python3 -c "
import socket,sys
s=socket.create_connection(('127.0.0.1',$GW_PORT),timeout=10)
s.sendall(b'\x05\x01\x00'); assert s.recv(2)==b'\x05\x00'
s.sendall(b'\x05\x01\x00\x01'+socket.inet_aton('$1')+($2).to_bytes(2,'big'))
r=s.recv(10); print('rep=%d' % r[1] if len(r)>=2 else 'closed')"
}
s4() {  # s4 A.B.C.D PORT -> 0xNN
    nsx python3 -c "
import socket
s=socket.create_connection(('127.0.0.1',$GW_PORT),timeout=10)
s.sendall(b'\x04\x01'+($2).to_bytes(2,'big')+socket.inet_aton('$1')+b'u\x00')
r=s.recv(8); print('0x%02x' % r[1] if len(r)==8 else 'closed')"
}
connect_ns() {  # connect_ns HOST:PORT -> "CODE|Proxy-Status"
    local h
    h=$(printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | timeout 10 ip netns exec "$NS" python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r')
    echo "$(echo "$h" | head -1 | cut -d' ' -f2)|$(echo "$h" | grep -i '^Proxy-Status' | sed 's/.*error=\([a-z_]*\).*/\1/')"
}
expect_eq "network unreachable: SOCKS5 0x03" "rep=3" "$(s5ip 10.9.1.1 80)"
expect_eq "network unreachable: 502 destination_unavailable" "502|destination_unavailable" "$(connect_ns 10.9.1.1:80)"
expect_eq "network unreachable: SOCKS4 0x5b" "0x5b" "$(s4 10.9.1.1 80)"
expect_eq "host unreachable: SOCKS5 0x04" "rep=4" "$(s5ip 10.1.2.3 80)"
expect_eq "host unreachable: 502 destination_unavailable" "502|destination_unavailable" "$(connect_ns 10.1.2.3:80)"
expect_eq "host unreachable: SOCKS4 0x5b" "0x5b" "$(s4 10.1.2.3 80)"
log=$(cat "$WORK/gw-ns.log")
expect_contains "access log names the unreachable result" "result=unreachable" "$log"
expect_contains "access log says why in words" "unreachable" "$(grep 'dest=10.1.2.3:80' "$WORK/gw-ns.log" | head -1)"

# ---- EMFILE: a gateway allowed 32 descriptors, flooded with idle connections ----
start_backend
GW2_PORT=$(free_port)
cat > "$WORK/gw-fd.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
rules = ( { match = "127.0.0.1:$BACKEND_PORT"; action = "direct"; } );
limits = { handshake_timeout_ms = 60000; };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
( ulimit -n 32; exec "$MTLSGW" run -c "$WORK/gw-fd.conf" >> "$WORK/gw-fd.log" 2>&1 ) &
GW2_PID=$!
PIDS+=($GW2_PID)
GW_PIDS+=($GW2_PID)
wait_port "$GW2_PORT" $GW2_PID
expect_eq "gateway runs with a 32-descriptor limit" "32" "$(awk '/Max open files/ {print $4}' /proc/$GW2_PID/limits)"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# 60 idle connections: more than the gateway can accept. They stay open while we watch.
python3 - "$GW2_PORT" > "$WORK/flood.out" 2>&1 <<'PY' &
import socket, sys, time
conns = []
for _ in range(60):
    conns.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
print("open", len(conns), flush=True)
time.sleep(4)
for c in conns:
    c.close()
print("closed", flush=True)
time.sleep(30)
PY
FLOOD_PID=$!
PIDS+=($FLOOD_PID)
for _ in $(seq 50); do grep -q open "$WORK/flood.out" && break; sleep 0.1; done
sleep 0.5
before=$(cpu_ticks "$GW2_PID")
sleep 2
after=$(cpu_ticks "$GW2_PID")
used=$((after - before))
echo "# CPU ticks used in 2 s of EMFILE: $used (of $((2 * $(getconf CLK_TCK))) a spinning thread would use)"
check "EMFILE: accept does not spin (CPU $used ticks in 2 s, under 1/4 of a core)" [ "$used" -lt $(($(getconf CLK_TCK) / 2)) ]
expect_contains "EMFILE: a warning says accepts are paused" "Too many open files; pausing accepts" "$(cat "$WORK/gw-fd.log")"
nfd=$(ls /proc/$GW2_PID/fd | wc -l)
check "EMFILE: descriptors used up ($nfd open, limit 32, inherited ones included)" [ "$nfd" -ge 30 ]
for _ in $(seq 100); do grep -q closed "$WORK/flood.out" && break; sleep 0.1; done
# Once the flood closes, the gateway frees its descriptors and serves again.
out=$(curl -s -m 10 --socks5 "127.0.0.1:$GW2_PORT" "http://127.0.0.1:$BACKEND_PORT/after-emfile")
expect_contains "EMFILE: served again once descriptors freed up" "path=/after-emfile" "$out"
check "EMFILE: gateway still alive" kill -0 "$GW2_PID"

finish
