#!/usr/bin/env bash
# Address forms and DNS cannot lead past what an operator fenced off: IPv4-mapped IPv6
# (CONNECT [::ffff:127.0.0.1], SOCKS5 ATYP 4, AAAA answers) is the IPv4 address for rules,
# deny_addresses, allow and the log; 0.0.0.0 and :: are never connected to; every address a
# name resolves to is checked against deny_addresses (the default list refuses the cloud
# metadata address 169.254.169.254), denied ones are skipped when others remain.
# (IPv6 listeners are IPV6_V6ONLY, so clients never arrive in the mapped form; allow
# treats that form as IPv4 all the same.)
source "$(dirname "$0")/lib.sh"

start_backend
# A server on 127.0.0.2 that records every connection it gets: nothing may arrive.
FENCED_PORT=$(free_port)
python3 - "$FENCED_PORT" "$WORK/fenced.log" <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.2", int(sys.argv[1]))); s.listen(16)
while True:
    c, a = s.accept()
    open(sys.argv[2], "a").write("connection from %s\n" % a[0]); c.close()
PY
PIDS+=($!)
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.2', $FENCED_PORT), 0.2)" 2>/dev/null && break; sleep 0.1; done
: > "$WORK/fenced.log"   # the readiness probe itself does not count
start_dnsmasq meta.dc2.test=169.254.169.254 inner.dc2.test=127.0.0.2 web.dc2.test=127.0.0.1 \
    mapped.dc2.test=::ffff:127.0.0.2

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 1000; tries = 1;
             hosts = ( { name = "mixed.dc2.test"; address = "127.0.0.2"; },
                       { name = "mixed.dc2.test"; address = "127.0.0.1"; } ); };
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10", "127.0.0.2/32" ];
rules = (
  { match = "127.0.0.0/8"; action = "deny"; },
  { match = "*"; action = "direct"; }
);
CONF
start_gw "$WORK/gw.conf"

connect_code() {  # connect_code AUTHORITY -> the CONNECT status and Proxy-Status
    printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" | python3 "$HERE/raw.py" "$GW_PORT" | tr -d '\r' | head -2 | tr '\n' ' '
}
socks_atyp4() {  # socks_atyp4 IPV6-HEX PORT -> rep=N
    python3 "$HERE/socks_probe.py" "$GW_PORT" x 0 "05010004$1$(printf '%04x' "$2")"
}
mapped_hex=00000000000000000000ffff7f000001   # ::ffff:127.0.0.1

# 4. IPv4-mapped forms of a denied IPv4 address are denied like it.
out=$(connect_code "127.0.0.1:$BACKEND_PORT")
expect_contains "control: 127.0.0.1 is denied by the 127.0.0.0/8 rule" "403 Forbidden" "$out"
out=$(connect_code "[::ffff:127.0.0.1]:$BACKEND_PORT")
expect_contains "CONNECT [::ffff:127.0.0.1]: denied by the IPv4 rule" "HTTP/1.1 403 Forbidden" "$out"
expect_contains "CONNECT [::ffff:127.0.0.1]: destination_ip_prohibited" "error=destination_ip_prohibited" "$out"
out=$(connect_code "[::FFFF:7f00:1]:$BACKEND_PORT")
expect_contains "CONNECT [::FFFF:7f00:1]: the hex form too" "HTTP/1.1 403" "$out"
expect_eq "SOCKS5 ATYP 4 ::ffff:127.0.0.1: REP 0x02" "rep=2" "$(socks_atyp4 "$mapped_hex" "$BACKEND_PORT")"
sleep 0.3
log=$(grep "proto=http-connect" "$WORK/gw.log" | grep "dest=127.0.0.1:$BACKEND_PORT" | tail -1)
expect_contains "access log: the mapped destination is logged as IPv4" "action=deny" "$log"
check "access log: no mapped form in any dest" bash -c "! grep -q 'dest=\[::ffff' '$WORK/gw.log'"

# One reading of an address: what the resolver reads as an address is one for the rules.
out=$(connect_code "127.0.0.1.:$BACKEND_PORT")
expect_contains "CONNECT 127.0.0.1. (trailing dot): denied by the 127.0.0.0/8 rule" "HTTP/1.1 403" "$out"
out=$(connect_code "127.000.000.001:$BACKEND_PORT")
expect_contains "CONNECT 127.000.000.001 (zero-padded): refused, not taken for a name" "HTTP/1.1 400" "$out"
expect_contains "... saying why" "ends in a numeric label" "$out"
expect_eq "SOCKS5 127.0.0.1. as a name: REP 0x02" "rep=2" "$(python3 "$HERE/socks_probe.py" "$GW_PORT" 127.0.0.1. "$BACKEND_PORT")"

# 0.0.0.0 and :: mean this host to Linux: never connected to.
out=$(connect_code "0.0.0.0:$BACKEND_PORT")
expect_contains "CONNECT 0.0.0.0: 403" "HTTP/1.1 403" "$out"
expect_contains "CONNECT 0.0.0.0: destination_ip_prohibited" "error=destination_ip_prohibited" "$out"
expect_eq "SOCKS5 0.0.0.0: REP 0x02" "rep=2" "$(python3 "$HERE/socks_probe.py" "$GW_PORT" x 0 "0501000100000000$(printf '%04x' "$BACKEND_PORT")")"
out=$(connect_code "[::]:$BACKEND_PORT")
expect_contains "CONNECT [::]: 403" "HTTP/1.1 403" "$out"
expect_eq "SOCKS5 ATYP 4 :: : REP 0x02" "rep=2" "$(socks_atyp4 00000000000000000000000000000000 "$BACKEND_PORT")"

# 5. The addresses a name resolves to are checked, whatever rule allowed the name.
out=$(connect_code "web.dc2.test:$BACKEND_PORT")
expect_contains "control: a name resolving to an allowed address is relayed" "HTTP/1.1 200" "$out"
out=$(connect_code "meta.dc2.test:80")
expect_contains "name -> 169.254.169.254: 403" "HTTP/1.1 403" "$out"
expect_contains "name -> 169.254.169.254: destination_ip_prohibited naming the address" \
    'error=destination_ip_prohibited; details="meta.dc2.test resolves to 169.254.169.254 is in deny_addresses (169.254.0.0/16)' "$out"
expect_eq "name -> 169.254.169.254: SOCKS5 REP 0x02" "rep=2" "$(python3 "$HERE/socks_probe.py" "$GW_PORT" meta.dc2.test 80)"
out=$(connect_code "inner.dc2.test:$FENCED_PORT")
expect_contains "name -> 127.0.0.2 (in the list): 403" 'inner.dc2.test resolves to 127.0.0.2 is in deny_addresses (127.0.0.2/32)' "$out"
out=$(connect_code "mapped.dc2.test:$FENCED_PORT")
expect_contains "AAAA ::ffff:127.0.0.2 is 127.0.0.2: denied" 'mapped.dc2.test resolves to 127.0.0.2 is in deny_addresses' "$out"
# A name with a denied and an allowed address: the denied one is skipped.
out=$(connect_code "mixed.dc2.test:$BACKEND_PORT")
expect_contains "name -> 127.0.0.2 and 127.0.0.1: the allowed address is used" "HTTP/1.1 200" "$out"
out=$(connect_code "mixed.dc2.test:$FENCED_PORT")
expect_contains "name -> 127.0.0.2 and 127.0.0.1: only 127.0.0.1 is tried (refused there)" \
    'details="127.0.0.1:'"$FENCED_PORT"' connect: Connection refused"' "$out"
sleep 0.3
log=$(grep "dest=meta.dc2.test:80" "$WORK/gw.log" | head -1)
expect_contains "access log: refused before any connect (no upstream, no connect time)" "upstream=- " "$log"
expect_contains "access log: connect_ms is -" "connect_ms=- " "$log"
expect_eq "the fenced server on 127.0.0.2 never got a connection" "0" "$(wc -l < "$WORK/fenced.log")"
rc=0; out=$("$MTLSGW" explain -c "$WORK/gw.conf" "meta.dc2.test:80" --connect 2>&1) || rc=$?
expect_contains "explain --connect: the address is marked and not connected to" \
    "169.254.169.254:80 (in deny_addresses: 169.254.0.0/16)" "$out"
expect_contains "explain --connect: fails saying why" "FAILED: every address is in deny_addresses" "$out"
expect_eq "explain --connect: exit 1" "1" "$rc"
# Through http_proxy as well.
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$GW_PORT" "http://meta.dc2.test/latest/meta-data/" || true)
expect_eq "http_proxy request to the metadata address: 403" "403" "$code"

# The default list, with no deny_addresses setting, fences the metadata address; [ ] lifts
# the list but not 0.0.0.0.
GW2_PORT=$(free_port)
cat > "$WORK/gw2.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; timeout_ms = 1000; tries = 1; };
rules = ( { match = "*"; action = "direct"; } );
CONF
"$MTLSGW" run -c "$WORK/gw2.conf" >> "$WORK/gw2.log" 2>&1 &
GW2_PID=$!; PIDS+=($GW2_PID); GW_PIDS+=($GW2_PID)
wait_port "$GW2_PORT" $GW2_PID
expect_eq "default deny_addresses: name -> 169.254.169.254 refused (0x02)" "rep=2" \
    "$(python3 "$HERE/socks_probe.py" "$GW2_PORT" meta.dc2.test 80)"
expect_eq "default deny_addresses: literal 169.254.169.254 refused (0x02)" "rep=2" \
    "$(python3 "$HERE/socks_probe.py" "$GW2_PORT" x 0 "05010001a9fea9fe0050")"
expect_eq "default deny_addresses: name -> 127.0.0.1 (loopback, this host's own services) refused (0x02)" "rep=2" \
    "$(python3 "$HERE/socks_probe.py" "$GW2_PORT" web.dc2.test "$BACKEND_PORT")"
expect_eq "default deny_addresses: literal ::1 refused (0x02)" "rep=2" \
    "$(python3 "$HERE/socks_probe.py" "$GW2_PORT" x 0 "0501000400000000000000000000000000000001$(printf '%04x' "$BACKEND_PORT")")"
cat > "$WORK/gw3.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
deny_addresses = [ ];
rules = ( { match = "*"; action = "direct"; upstream = "169.254.169.254:80"; } );
CONF
rc=0; "$MTLSGW" check -c "$WORK/gw3.conf" > /dev/null 2>&1 || rc=$?
expect_eq "deny_addresses = [ ]: an upstream in the link-local range is accepted" "0" "$rc"
cat > "$WORK/gw4.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
rules = ( { match = "*"; action = "direct";
            upstream = "169.254.169.254:80"; } );
CONF
rc=0; out=$("$MTLSGW" check -c "$WORK/gw4.conf" 2>&1) || rc=$?
expect_eq "an upstream literal inside the default list: the operator's own choice, accepted" "0" "$rc"
cat > "$WORK/gw5.conf" <<CONF
listen = ( { name = "proxy"; address = "127.0.0.1:$GW2_PORT"; } );
deny_addresses = [ "169.254.0.0/16" ];
rules = ( { match = "*"; action = "direct";
            upstream = "169.254.169.254:80"; } );
CONF
rc=0; out=$("$MTLSGW" check -c "$WORK/gw5.conf" 2>&1) || rc=$?
expect_eq "an upstream literal inside a list the operator wrote: check exits 1" "1" "$rc"
expect_contains "... with file:line and why" \
    "$WORK/gw5.conf:3: upstream: 169.254.169.254 is in deny_addresses (169.254.0.0/16)" "$out"

check "gateway still running" gw_alive
finish
