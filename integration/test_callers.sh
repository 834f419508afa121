#!/usr/bin/env bash
# Who is calling: rules that name the local user or group, and a UNIX-socket listener.
# Real local users and groups made here (useradd/groupadd) and removed after; real curl
# run as each user (setpriv) through http_proxy and SOCKS5 to the same destination; nginx
# says which client certificate it saw, on fresh and resumed sessions.
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    fail "this test makes local users: it must run as root"
    finish
    exit 1
fi

make_pki
make_client_cert orders-svc
start_backend
start_redis
start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1 redis.dc2.test=127.0.0.1

# ---- users and groups, made for this run and removed by cleanup ----
TAG=mt$$
G_OPS=${TAG}ops G_SOCK=${TAG}sock
U_ORD=${TAG}ord U_BIL=${TAG}bil U_CAR=${TAG}car U_NOB=${TAG}nob
groupadd "$G_OPS"; UNDO+=("groupdel $G_OPS")
groupadd "$G_SOCK"; UNDO+=("groupdel $G_SOCK")
for u in "$U_ORD" "$U_BIL" "$U_CAR" "$U_NOB"; do
    useradd --no-create-home --shell /usr/sbin/nologin --user-group "$u"
    UNDO=("userdel $u" "${UNDO[@]}")  # users go before the groups they are in
done
usermod -aG "$G_SOCK" "$U_ORD"
usermod -aG "$G_OPS,$G_SOCK" "$U_CAR"  # supplementary only: the primary group is its own
UID_ORD=$(id -u "$U_ORD"); UID_BIL=$(id -u "$U_BIL"); UID_CAR=$(id -u "$U_CAR"); UID_NOB=$(id -u "$U_NOB")
# The gateway runs as a service user of its own: caller rules need `user` when it is
# started as root (root's clients are then a caller like any other, and the gateway's own
# uid never is). It reads the test PKI as that user.
GW_USER=${TAG}gw
useradd --no-create-home --shell /usr/sbin/nologin --user-group "$GW_USER"; UNDO=("userdel $GW_USER" "${UNDO[@]}")
usermod -aG "$G_SOCK" "$GW_USER"
chmod 0711 "$WORK"; chown -R "$GW_USER" "$PKI"
echo "# users: $U_ORD=$UID_ORD $U_BIL=$UID_BIL $U_CAR=$UID_CAR (in $G_OPS) $U_NOB=$UID_NOB"

# The socket's folder must be reachable by the test users ($WORK is root's, mode 0700).
SOCKDIR=$(mktemp -d /tmp/mtlsgw-sock.XXXXXX); chmod 0755 "$SOCKDIR"; UNDO+=("rm -rf $SOCKDIR")
chown "$GW_USER" "$SOCKDIR"  # so that the gateway can remove its socket on exit
SOCK=$SOCKDIR/proxy.sock
# A stale socket from an earlier run (bound, never unlinked): the gateway replaces it.
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$SOCK"

as_user() { local u=$1; shift; setpriv --reuid "$u" --regid "$(id -g "$u")" --init-groups "$@"; }

# A remote client: a network namespace joined by a veth pair (198.18.231.0/30, a
# benchmarking range). Its sockets are not in the gateway's socket table, so it has no
# caller, even as root: only rules without `caller` can match it.
NS=${TAG}ns VETH=${TAG}h
ip netns add "$NS"; UNDO+=("ip netns del $NS" "ip link del $VETH")
ip link add "$VETH" type veth peer name "${TAG}n"
ip link set "${TAG}n" netns "$NS"
ip addr add 198.18.231.1/30 dev "$VETH"; ip link set "$VETH" up
ip netns exec "$NS" ip addr add 198.18.231.2/30 dev "${TAG}n"
ip netns exec "$NS" ip link set "${TAG}n" up
ip netns exec "$NS" ip link set lo up
LAN_PORT=$(free_port)

GW_PORT=$(free_port)
cat > "$WORK/gw.conf" <<CONF
workers = 2;
user = "$GW_USER";
listen = (
  { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
  { name = "local"; address = "unix:$SOCK"; mode = "0660"; group = "$G_SOCK"; },
  { name = "lan"; address = "198.18.231.1:$LAN_PORT"; }
);
allow = [ "127.0.0.0/8", "198.18.231.2" ];
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = (
  { name = "orders"; certificate = "$PKI/orders-svc.crt"; key = "$PKI/orders-svc.key"; trust = "$PKI/server-trust.crt"; },
  { name = "billing"; certificate = "$PKI/billing.crt"; key = "$PKI/billing.key"; trust = "$PKI/server-trust.crt"; },
  { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; }
);
rules = (
  { match = "orders.dc2.test:80"; caller = "user:$U_ORD"; identity = "orders"; upstream_port = $NGX_HTTPS; },
  { match = "orders.dc2.test:80"; caller = [ "uid:$UID_BIL" ]; identity = "billing"; upstream_port = $NGX_HTTPS; },
  { match = "orders.dc2.test:80"; caller = [ "group:$G_OPS", "uid:0" ]; identity = "ops"; upstream_port = $NGX_HTTPS; },
  { match = "redis.dc2.test:6379"; caller = "user:$U_ORD"; identity = "orders"; upstream_port = $NGX_REDIS; },
  { match = "open.dc2.test:80"; identity = "billing"; upstream = "127.0.0.1:$NGX_HTTPS"; server_name = "orders.dc2.test"; },
  { match = "*"; action = "deny"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
upstream_pool = { idle_per_key = 0; };  # every request a new connection: this test checks sessions per identity
CONF
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) || true
expect_contains "config with caller rules and a UNIX listener: check OK" "configuration OK" "$out"
start_gw "$WORK/gw.conf"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
check "stale socket at the UNIX listener's path replaced by a live one" test -S "$SOCK"
check "UNIX socket mode 0660, group $G_SOCK" test "$(stat -c '%a %G' "$SOCK")" = "660 $G_SOCK"

# ---- TCP: the caller is the owner of the client's socket ----
dn_of() { sed -n 's/^dn=\([^ ]*\) .*/\1/p'; }
reused_of() { sed -n 's/.* reused=\([^ ]*\) .*/\1/p'; }
get_as() {  # get_as USER PATH: curl as USER through http_proxy
    as_user "$1" env http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 "http://orders.dc2.test/$2"
}
out=$(get_as "$U_ORD" first)
expect_eq "user:$U_ORD gets its own certificate" "CN=orders-svc,O=mtlsgw-test" "$(dn_of <<< "$out")"
out=$(get_as "$U_BIL" first)
expect_eq "uid:$UID_BIL gets billing's certificate" "CN=billing,O=mtlsgw-test" "$(dn_of <<< "$out")"
out=$(get_as "$U_CAR" first)
expect_eq "group:$G_OPS (a supplementary group of $U_CAR) gets ops's certificate" "CN=ops,O=mtlsgw-test" "$(dn_of <<< "$out")"
out=$(http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 http://orders.dc2.test/root)
expect_eq "uid:0 (root) gets ops's certificate" "CN=ops,O=mtlsgw-test" "$(dn_of <<< "$out")"
# Second round: sessions resume, each with its own identity (the cache is per identity).
for who in "$U_ORD:CN=orders-svc" "$U_BIL:CN=billing" "$U_CAR:CN=ops"; do
    u=${who%%:*}; want=${who#*:}
    out=$(get_as "$u" again)
    expect_eq "$u again: resumed session" "r" "$(reused_of <<< "$out")"
    expect_eq "$u again: still its own certificate" "$want,O=mtlsgw-test" "$(dn_of <<< "$out")"
done
# A user that no rule names: default deny, 403 with Proxy-Status.
h=$(as_user "$U_NOB" env http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 -o /dev/null -D - \
    http://orders.dc2.test/nobody | tr -d '\r' | tr 'A-Z' 'a-z')
expect_contains "a user no rule names: 403" "http/1.1 403" "$h"
expect_contains "a user no rule names: Proxy-Status" "proxy-status: mtlsgw; error=http_request_denied" "$h"
# SOCKS_PY ADDR (a port, or a UNIX socket's path) HOST PORT PATH: SOCKS5 CONNECT, then GET
# /PATH; with PORT 0, an http_proxy request (absolute URI) instead.
SOCKS_PY='
import socket, struct, sys
addr, host, port = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
if addr.startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(addr)
    except PermissionError:
        print("EACCES"); sys.exit(0)
else:
    s = socket.create_connection(("127.0.0.1", int(addr)))
s.settimeout(10)
if port == 0:  # an http_proxy request (absolute URI) instead of SOCKS5
    s.sendall(b"GET http://" + host + b"/" + sys.argv[4].encode() + b" HTTP/1.1\r\nHost: " + host +
              b"\r\nConnection: close\r\n\r\n")
else:
    s.sendall(b"\x05\x01\x00"); s.recv(2)
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port))
    rep = s.recv(10)
    print("rep=%d" % rep[1])
    if rep[1] != 0:
        sys.exit(0)
    s.sendall(b"GET /" + sys.argv[4].encode() + b" HTTP/1.1\r\nHost: orders.dc2.test\r\nConnection: close\r\n\r\n")
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(data.split(b"\r\n\r\n", 1)[1].decode())
'
socks_as() { as_user "$1" /usr/bin/python3 -c "$SOCKS_PY" "$2" "$3" "$4" "$5"; }
out=$(socks_as "$U_NOB" "$GW_PORT" orders.dc2.test 80 x)
expect_eq "SOCKS5 from a user no rule names: REP 0x02" "rep=2" "$out"
out=$(socks_as "$U_ORD" "$GW_PORT" orders.dc2.test 80 socks-tcp)
expect_contains "SOCKS5 over TCP as $U_ORD: its own certificate" "dn=CN=orders-svc,O=mtlsgw-test" "$out"
# proxychains4 + redis-cli as the user the redis rule names, and as one it does not.
proxychains_conf "$WORK/pc.conf" "$GW_PORT"; chmod 644 "$WORK/pc.conf"; cp "$WORK/pc.conf" "$SOCKDIR/pc.conf"
out=$(as_user "$U_ORD" proxychains4 -q -f "$SOCKDIR/pc.conf" redis-cli -h redis.dc2.test -p 6379 PING 2>&1)
expect_eq "proxychains4 + redis-cli as $U_ORD: PONG" "PONG" "$out"
out=$(as_user "$U_BIL" proxychains4 -q -f "$SOCKDIR/pc.conf" redis-cli -h redis.dc2.test -p 6379 PING 2>&1 || true)
check "proxychains4 + redis-cli as $U_BIL (no redis rule for it): refused" bash -c "! grep -q PONG <<< '$out'"

# ---- a remote client has no caller ----
for _ in $(seq 50); do ip netns exec "$NS" bash -c "echo > /dev/tcp/198.18.231.1/$LAN_PORT" 2>/dev/null && break; sleep 0.1; done
h=$(ip netns exec "$NS" env http_proxy="http://198.18.231.1:$LAN_PORT" curl -s -m 10 -o /dev/null -D - \
    http://orders.dc2.test/remote | tr -d '\r' | tr 'A-Z' 'a-z')
expect_contains "a remote client (root in another namespace) matches no caller rule: 403" "http/1.1 403" "$h"
out=$(ip netns exec "$NS" env http_proxy="http://198.18.231.1:$LAN_PORT" curl -s -m 10 http://open.dc2.test/remote-open)
expect_eq "a remote client still gets a rule without caller" "CN=billing,O=mtlsgw-test" "$(dn_of <<< "$out")"
sleep 0.3
expect_contains "access log: a remote client's caller is -" "caller=- listener=lan" \
    "$(grep 'client=198.18.231.2:' "$WORK/gw.log" | tail -1)"

# ---- the UNIX socket: SO_PEERCRED, and the socket's own permissions ----
out=$(socks_as "$U_ORD" "$SOCK" orders.dc2.test 80 socks-unix)
expect_contains "SOCKS5 over the UNIX socket as $U_ORD: its own certificate" "dn=CN=orders-svc,O=mtlsgw-test" "$out"
out=$(socks_as "$U_CAR" "$SOCK" orders.dc2.test 80 socks-unix-ops)
expect_contains "SOCKS5 over the UNIX socket as $U_CAR: ops's certificate" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(socks_as "$U_BIL" "$SOCK" orders.dc2.test 80 x)
expect_eq "a user outside the socket's group cannot connect to it" "EACCES" "$out"
# An http_proxy request (absolute URI) over the UNIX socket, written by hand.
out=$(socks_as "$U_ORD" "$SOCK" orders.dc2.test 0 http-unix)
expect_contains "http_proxy request over the UNIX socket as $U_ORD: its own certificate" "dn=CN=orders-svc,O=mtlsgw-test" "$out"

# ---- a client that closed is nobody, never root ----
# A client writes its request and closes while the gateway is stopped: once the kernel ACKs
# its FIN, its socket is a FIN_WAIT2 timewait entry that the kernel reports as uid 0. The
# gateway must not take that for root (rule uid:0 -> ops): such a loopback client has no
# caller and is closed unanswered. Sent as $U_NOB, with the gateway running as $GW_USER.
RACE_PY='
import socket, sys
for i in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET http://orders.dc2.test/race-%d HTTP/1.1\r\nHost: orders.dc2.test\r\nConnection: close\r\n\r\n" % i)
    s.close()
'
cp "$WORK/backend.log" "$WORK/backend.log.before"
kill -STOP "$GW_PID"
as_user "$U_NOB" /usr/bin/python3 -c "$RACE_PY" "$GW_PORT" 20
sleep 0.5   # the FINs are ACKed by the kernel while the gateway cannot accept
fw2=$(ss -tn state fin-wait-2 "( dport = :$GW_PORT )" | grep -c ":$GW_PORT" || true)
echo "# closed clients' sockets in FIN_WAIT2 while the gateway was stopped: $fw2"
kill -CONT "$GW_PID"
sleep 1.5
expect_eq "no request of a closed client was served as root (ops's certificate)" "0" \
    "$(diff "$WORK/backend.log.before" "$WORK/backend.log" | grep "race-" | grep -c "CN=ops" || true)"
echo "# requests of closed clients that reached nginx at all: $(diff "$WORK/backend.log.before" "$WORK/backend.log" | grep -c "race-" || true)"
out=$(get_as "$U_ORD" after-race)
expect_eq "the gateway still serves after the race" "CN=orders-svc,O=mtlsgw-test" "$(dn_of <<< "$out")"

# ---- the gateway's own uid is never a caller ----
# A process of the gateway's service user (as a loop back into the gateway would be) gets
# no caller: rules with `caller` do not match it.
h=$(as_user "$GW_USER" env http_proxy="http://127.0.0.1:$GW_PORT" curl -s -m 10 -o /dev/null -w '%{http_code}' \
    http://orders.dc2.test/as-gateway-user || true)
expect_eq "the gateway's own uid matches no caller rule: 403" "403" "$h"
sleep 0.3
expect_contains "... logged with no caller" "caller=- " "$(grep 'dest=orders.dc2.test:80' "$WORK/gw.log" | grep 'result=denied' | tail -1)"

# ---- seen everywhere ----
sleep 0.3
log=$(cat "$WORK/gw.log")
expect_contains "access log: caller=UID after client (TCP)" "client=127.0.0.1:" "$(grep "caller=$UID_ORD " <<< "$log" | head -1)"
expect_contains "access log: UNIX client as unix:PID with its caller" "caller=$UID_CAR listener=local" \
    "$(grep 'client=unix:' <<< "$log" | grep "caller=$UID_CAR" | head -1)"
expect_contains "access log: the denied user's caller" "caller=$UID_NOB" "$(grep 'path=\|/nobody\|orders.dc2.test:80' <<< "$log" | grep "result=denied" | head -1)"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80 --caller "$U_ORD")
expect_contains "explain --caller USER: that user's rule" "identity     orders" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80 --caller "$UID_CAR")
expect_contains "explain --caller UID (a group member): the group's rule" "identity     ops" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80 --caller "$U_NOB")
expect_contains "explain --caller for a user no rule names: the deny rule" 'match "*"' "$out"
expect_contains "explain --caller for a user no rule names: deny" "action       deny" "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80)
expect_contains "explain without --caller: as a remote client (no caller), the deny rule" 'match "*"' "$out"
out=$("$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:80 --caller no-such-user-here 2>&1 || true)
expect_contains "explain --caller with an unknown user: said so" "neither a user on this system nor a uid" "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf")
expect_contains "identity list: each rule's callers" "(caller group:$G_OPS, uid:0)" "$out"
out=$("$MTLSGW" identity list -c "$WORK/gw.conf" --json)
expect_contains "identity list --json: callers per rule" "\"caller\": \"user:$U_ORD\"" "$(sed 's/"callers": {"[^"]*": /"caller": /g' <<< "$out")"

# ---- membership is read at load: a user added to the group, SIGHUP, and it matches ----
usermod -aG "$G_OPS" "$U_NOB"
reload_gw
out=$(get_as "$U_NOB" after-reload)
expect_eq "user added to $G_OPS + SIGHUP: gets ops's certificate" "CN=ops,O=mtlsgw-test" "$(dn_of <<< "$out")"

# ---- JSON access log after a reload ----
sed -i 's/^resolver = /log = { format = "json"; };\nresolver = /' "$WORK/gw.conf"
reload_gw
get_as "$U_BIL" json > /dev/null
sleep 0.3
expect_contains "JSON access log: \"caller\" as a number" "\"caller\":$UID_BIL," "$(grep '^{' "$WORK/gw.log" | tail -1)"

# ---- config errors ----
sed "s/caller = \"user:$U_ORD\"/caller = \"user:nosuchuser$$\"/" "$WORK/gw.conf" > "$WORK/bad.conf"
out=$("$MTLSGW" check -c "$WORK/bad.conf" 2>&1 || true)
line=$(grep -n "nosuchuser$$" "$WORK/bad.conf" | head -1 | cut -d: -f1)
expect_contains "unknown user in a rule: check names file:line and the setting" \
    "$WORK/bad.conf:$line: rules[0].caller: no user named \"nosuchuser$$\"" "$out"
sed "s/\"group:$G_OPS\"/\"group:nosuchgroup$$\"/" "$WORK/gw.conf" > "$WORK/bad2.conf"
expect_check_error "unknown group in a rule: a file:line error" "$WORK/bad2.conf" "rules[2].caller: no group named \"nosuchgroup$$\""
sed "s/\"uid:$UID_BIL\"/\"uid:-5\"/" "$WORK/gw.conf" > "$WORK/bad3.conf"
expect_check_error "bad uid: what is expected" "$WORK/bad3.conf" "rules[1].caller: expected uid:N with a number N, found \"uid:-5\""
sed "s/\"uid:$UID_BIL\"/\"login:bob\"/" "$WORK/gw.conf" > "$WORK/bad4.conf"
expect_check_error "unknown caller kind: what is expected" "$WORK/bad4.conf" "expected \"user:NAME\", \"uid:N\", \"group:NAME\" or \"gid:N\", found \"login:bob\""
sed '/^user = /d' "$WORK/gw.conf" > "$WORK/bad-nouser.conf"
expect_check_error "caller rules in a gateway started as root without user: a file:line error" "$WORK/bad-nouser.conf" \
    "rules[0].caller: caller rules need \`user\` when the gateway is started as root"
echo "not a socket" > "$SOCKDIR/file"
sed "s#unix:$SOCK#unix:$SOCKDIR/file#" "$WORK/gw.conf" > "$WORK/bad5.conf"
expect_check_error "a non-socket at a UNIX listener's path: a config error" "$WORK/bad5.conf" "listen[1].address: $SOCKDIR/file is a regular file"
check "... and the file is left alone" test "$(cat "$SOCKDIR/file")" = "not a socket"
sed "s#address = \"127.0.0.1:$GW_PORT\"; }#address = \"127.0.0.1:$GW_PORT\"; mode = \"0600\"; }#" "$WORK/gw.conf" > "$WORK/bad6.conf"
expect_check_error "mode on a TCP listener: said to be for UNIX listeners" "$WORK/bad6.conf" "listen[0].mode: only for a UNIX-socket listener"
sed "s#{ name = \"lan\"; address = \"198.18.231.1:$LAN_PORT\"; }#{ name = \"lan\"; address = \"unix:$SOCK\"; }#" "$WORK/gw.conf" > "$WORK/bad7.conf"
expect_check_error "two listeners on one socket path: a config error" "$WORK/bad7.conf" "listen[2].address: $SOCK is already the socket of listen[1]"
# A second gateway on the same socket path: the live socket is not taken over.
P2=$(free_port)
sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$P2/" "$WORK/gw.conf" > "$WORK/second.conf"
out=$(timeout 10 "$MTLSGW" run -c "$WORK/second.conf" 2>&1 || true)
expect_contains "a socket another gateway accepts on is not replaced" "another process accepts on that socket" "$out"
out=$(socks_as "$U_ORD" "$SOCK" orders.dc2.test 80 still)
expect_contains "... and the first gateway still serves on it" "dn=CN=orders-svc,O=mtlsgw-test" "$out"

stop_gateways
check "the UNIX socket is removed on exit" test ! -e "$SOCK"

# ---- privileges dropped after the socket is made ----
mkdir -p "$SOCKDIR/keys"; cp "$PKI"/orders-svc.{crt,key} "$PKI/server-trust.crt" "$SOCKDIR/keys/"
chown -R "$GW_USER" "$SOCKDIR/keys"; chmod 700 "$SOCKDIR/keys"
GW_PORT=$(free_port)
cat > "$WORK/gw-drop.conf" <<CONF
user = "$GW_USER";
listen = ( { name = "local"; address = "unix:$SOCK"; mode = "0660"; group = "$G_SOCK"; },
           { name = "proxy"; address = "127.0.0.1:$GW_PORT"; } );
resolver = { servers = [ "127.0.0.1:$DNS_PORT" ]; };
identities = ( { name = "orders"; certificate = "$SOCKDIR/keys/orders-svc.crt"; key = "$SOCKDIR/keys/orders-svc.key";
                 trust = "$SOCKDIR/keys/server-trust.crt"; } );
rules = ( { match = "orders.dc2.test:80"; caller = "user:$U_ORD"; identity = "orders"; upstream_port = $NGX_HTTPS; } );
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];  # this test's servers listen on loopback
CONF
GW_PIDS=()
start_gw "$WORK/gw-drop.conf"
check "gateway runs as $GW_USER" test "$(ps -o user= -p "$GW_PID")" = "$GW_USER"
# Not dumpable: its /proc files stay root's, so no process of $GW_USER (a PKCS#11 module in
# the signer, say) can read its memory.
check "the gateway is not dumpable (/proc/PID/mem is root's, not $GW_USER's)" test "$(stat -c %U "/proc/$GW_PID/mem")" = root
out=$(as_user "$GW_USER" /usr/bin/python3 -c "import sys; open('/proc/$GW_PID/environ','rb').read(); print('read')" 2>&1 || true)
check "... and its service user cannot read it" bash -c "! grep -q '^read' <<< '$out'"
out=$(socks_as "$U_ORD" "$SOCK" orders.dc2.test 80 dropped)
expect_contains "privileges dropped: the UNIX socket made before still serves" "dn=CN=orders-svc,O=mtlsgw-test" "$out"
out=$(get_as "$U_ORD" dropped-tcp)
expect_contains "privileges dropped: TCP callers still known" "dn=CN=orders-svc,O=mtlsgw-test" "$out"
stop_gateways
check "the UNIX socket is removed on exit, after the drop too" test ! -e "$SOCK"
GW_PIDS=()
finish
