#!/usr/bin/env bash
# Nothing slow on a worker. An old config snapshot is often let go by a worker (its last
# tunnel closed after a reload); freeing it stops its identities' PKCS#11 signers. That is
# the supervisor's work: the worker hands the snapshot over, the supervisor frees it and
# reaps the signer without waiting. Also a reload storm with the access log switching
# between files and stderr while requests flow: every client gets its answer, nothing
# else (tests/run-all.sh runs this under ThreadSanitizer as well).
source "$(dirname "$0")/lib.sh"

MODULE=/usr/lib/softhsm/libsofthsm2.so
if [ ! -e "$MODULE" ] || ! command -v softhsm2-util > /dev/null; then
    echo "softhsm2 is needed (integration/deps.sh installs it)" >&2
    exit 1
fi

make_pki
make_softhsm_token gw tokPIN4711 tokSO5678
openssl pkcs8 -topk8 -nocrypt -in "$PKI/ops.key" -out "$WORK/ops.pk8"
softhsm2-util --import "$WORK/ops.pk8" --token gw --label ops --id 01 --pin tokPIN4711 > /dev/null
rm -f "$WORK/ops.pk8"
start_backend
start_redis
start_nginx

GW_PORT=$(free_port) ADMIN_PORT=$(free_port)
write_conf() {  # write_conf FILE KEY ACCESS: KEY "token" (the SoftHSM key) or a key file
    local key="key = \"$2\";"
    [ "$2" = token ] && key="key = \"pkcs11:token=gw;object=ops\"; key_password_file = \"$WORK/gw.pin\"; pkcs11_module = \"$MODULE\";"
    cat > "$1" <<CONF
workers = 2;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
log = { level = "debug"; access = "$3"; };
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; $key trust = "$PKI/server-trust.crt"; } );
rules = ( { match = "orders.dc2.test:80"; identity = "ops"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; } );
CONF
}
write_conf "$WORK/gw.conf" token stderr
start_gw "$WORK/gw.conf"
wait_port "$ADMIN_PORT" "$GW_PID"
SIGNER=$(pgrep -P "$GW_PID" -f mtlsgw-pkcs11 | head -1 || true)
check "the token identity has its signer" test -n "$SIGNER"

# Hold tunnels open on both workers (kept-alive http_proxy connections, one request each),
# then reload to a config whose identity is a key file: the old snapshot lives on in them.
python3 - "$GW_PORT" "$WORK/held.ready" "$WORK/held.go" > "$WORK/held.out" <<'PY' &
import socket, sys, time, os
conns = []
for i in range(8):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
    s.sendall(b"GET http://orders.dc2.test/held-%d HTTP/1.1\r\nHost: orders.dc2.test\r\n\r\n" % i)
    got = b""
    while b"dn=" not in got:
        got += s.recv(4096)
    conns.append(s)
open(sys.argv[2], "w").write("8\n")
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
for s in conns:
    s.close()
print("closed")
PY
HELD_PID=$!; PIDS+=($HELD_PID)
for _ in $(seq 100); do [ -s "$WORK/held.ready" ] && break; sleep 0.1; done
check "8 kept-alive client connections hold the first snapshot" test -s "$WORK/held.ready"
write_conf "$WORK/gw.conf" "$PKI/ops.key" stderr
reload_gw
expect_contains "reloaded to a key file" "reloaded" "$(grep 'reloaded' "$WORK/gw.log" | tail -1)"
check "after the reload the old signer still runs (its snapshot is held by the tunnels)" kill -0 "$SIGNER"
check "... and nothing freed it yet" bash -c "! grep -q 'freed snapshot generation' '$WORK/gw.log'"
# Traffic on both workers while the held connections close: the workers let the old
# snapshot go, the supervisor frees it.
python3 "$HERE/request_loop.py" "$GW_PORT" /flow 3 > "$WORK/flow.out" &
FLOW_PID=$!
sleep 0.5
touch "$WORK/held.go"
wait "$HELD_PID" || true
wait "$FLOW_PID" || true
for _ in $(seq 50); do grep -q 'freed snapshot generation' "$WORK/gw.log" && break; sleep 0.1; done
expect_contains "the old snapshot, let go by a worker, was freed by the supervisor" \
    "freed snapshot generation" "$(grep 'freed snapshot' "$WORK/gw.log" | head -1)"
for _ in $(seq 40); do kill -0 "$SIGNER" 2>/dev/null || break; sleep 0.1; done
check "its signer has exited and was reaped (no zombie)" bash -c "! kill -0 $SIGNER 2>/dev/null"
echo "# requests while the snapshot was retired: $(cat "$WORK/flow.out")"
expect_contains "requests kept flowing meanwhile, every one answered" "bad=0" "$(cat "$WORK/flow.out")"
check "... and there were some" bash -c "! grep -q '^ok=0 ' '$WORK/flow.out'"
turns=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^mtlsgw_worker_longest_turn_seconds')
echo "# longest loop turn per worker since start: $(tr '\n' ' ' <<< "$turns")"
check "/metrics has each worker's longest loop turn" test "$(grep -c 'worker=' <<< "$turns")" = 2

# ---- a reload storm with the access log switching files ----
python3 "$HERE/request_loop.py" "$GW_PORT" /storm 60 "$WORK/storm.stop" > "$WORK/storm.out" &
STORM_PID=$!
for i in $(seq 12); do
    case $((i % 3)) in
        0) access=stderr ;;
        1) access="$WORK/access-a.log" ;;
        2) access="$WORK/access-b.log" ;;
    esac
    write_conf "$WORK/gw.conf" "$PKI/ops.key" "$access"
    reload_gw
    sleep 0.3  # requests logged in this phase
    [ $((i % 4)) = 0 ] && kill -USR1 "$GW_PID"
done
expect_eq "12 reloads, each one taken" "13" "$(grep -c 'reloaded' "$WORK/gw.log")"
touch "$WORK/storm.stop"
wait "$STORM_PID" || true
out=$(cat "$WORK/storm.out")
echo "# reload storm: $out"
expect_contains "every request during 12 reloads got its answer, and nothing but its answer" "bad=0" "$out"
check "lines went to both access-log files" bash -c "grep -q 'dest=orders' '$WORK/access-a.log' && grep -q 'dest=orders' '$WORK/access-b.log'"
check "the access-log files hold whole lines only" bash -c "! grep -v '^ts=' '$WORK/access-a.log' '$WORK/access-b.log' | grep -q ."

check "gateway still running" gw_alive
finish
