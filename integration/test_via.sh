#!/usr/bin/env bash
# Out through a parent proxy (DESIGN "Through a parent proxy"). Three network namespaces:
# the client and the gateway in one (198.51.100.1), the parent proxies in a second
# (198.51.100.2 toward the gateway, 203.0.113.2 toward the servers), the mTLS terminator
# in a third (203.0.113.3: nginx with ssl_verify_client on, and redis behind its stream
# server), with nftables there accepting only the parent; the gateway has no route to it
# at all. Debian's squid (CONNECT, Basic authentication) and dante-server (SOCKS5, RFC 1929
# against a user this test makes) are the parents; they resolve the destination's name
# (the namespace's own /etc/hosts). redis-cli through SOCKS5 and curl through http_proxy
# reach nginx, which sees our client certificate; the parents' logs show only CONNECT
# host:port; wrong credentials, a refusing parent and a dead one each give their precise
# error, never confused with the destination's. An https:// parent (nginx stream with TLS
# in front of squid, one port requiring a client certificate of a corporate CA): the
# rule's mTLS runs inside TLS to the parent, which verifies our corp identity; a parent
# with a certificate we do not trust, and one that wants a certificate we did not give,
# are refused as the parent's TLS failures. Pre-connected tunnels park through a parent;
# a transparent client (nftables redirect, no proxy settings) goes through one too.
source "$(dirname "$0")/lib.sh"

for tool in squid danted nft; do
    command -v "$tool" > /dev/null || { echo "$tool is not installed (integration/deps.sh)"; exit 77; }
done
make_pki
N=mgwv$$
GWNS=$N-gw PNS=$N-par TNS=$N-term
for ns in $GWNS $PNS $TNS; do
    ip netns add "$ns"
    UNDO+=("ip netns del $ns")
    ip -n "$ns" link set lo up
done
ip link add "$N-a" netns "$GWNS" type veth peer name "$N-b" netns "$PNS"
ip link add "$N-c" netns "$PNS" type veth peer name "$N-d" netns "$TNS"
ip -n "$GWNS" addr add 198.51.100.1/24 dev "$N-a"; ip -n "$GWNS" link set "$N-a" up
ip -n "$PNS" addr add 198.51.100.2/24 dev "$N-b"; ip -n "$PNS" link set "$N-b" up
ip -n "$PNS" addr add 203.0.113.2/24 dev "$N-c"; ip -n "$PNS" link set "$N-c" up
ip -n "$TNS" addr add 203.0.113.3/24 dev "$N-d"; ip -n "$TNS" link set "$N-d" up
ip netns exec "$TNS" nft -f - <<NFT
table inet only_parent {
    chain in {
        type filter hook input priority 0; policy accept;
        iifname "$N-d" ip saddr != 203.0.113.2 counter drop
    }
}
NFT
# The parents' namespace resolves the servers' names (ip netns exec bind-mounts it).
mkdir -p "/etc/netns/$PNS"
UNDO+=("rm -rf /etc/netns/$PNS")
printf '127.0.0.1 localhost\n203.0.113.3 orders.dc2.test redis.dc2.test\n' > "/etc/netns/$PNS/hosts"
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }  # (not for a background process: $! would be a subshell)

# ---- the terminator: nginx (mTLS) and redis behind its stream server ----
REDIS_PORT=6380
ip netns exec "$TNS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis.log" > /dev/null 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/tn"
cat > "$WORK/tn/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/tn/nginx.pid;
error_log $WORK/tn/error.log info;
events { worker_connections 128; }
http {
$(for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $WORK/tn/$d;"; done)
    access_log $WORK/tn/access.log;
    server {
        listen 203.0.113.3:443 ssl;
        ssl_certificate $PKI/orders.chain.crt; ssl_certificate_key $PKI/orders.key;
        ssl_client_certificate $PKI/client-ca.crt; ssl_verify_client on;
        location / { return 200 "dn=\$ssl_client_s_dn from=\$remote_addr\n"; }
    }
}
stream {
    server {
        listen 203.0.113.3:6379 ssl;
        ssl_certificate $PKI/redis.chain.crt; ssl_certificate_key $PKI/redis.key;
        ssl_client_certificate $PKI/client-ca.crt; ssl_verify_client on;
        proxy_pass 127.0.0.1:$REDIS_PORT;
    }
}
NGX
ip netns exec "$TNS" nginx -p "$WORK/tn" -c "$WORK/tn/nginx.conf" -g 'daemon off;' > "$WORK/tn/out.log" 2>&1 &
PIDS+=($!)

# ---- squid: CONNECT with Basic authentication; forbidden.dc2.test refused ----
SQUID_USER=egress SQUID_PASS=s3cret-egress
mkdir -p "$WORK/squid"
printf '%s:%s\n' "$SQUID_USER" "$(openssl passwd -apr1 "$SQUID_PASS")" > "$WORK/squid/passwd"
cat > "$WORK/squid/squid.conf" <<SQ
http_port 198.51.100.2:3128
pid_filename $WORK/squid/squid.pid
cache deny all
cache_dir null /tmp
access_log stdio:$WORK/squid/access.log squid
cache_log $WORK/squid/cache.log
cache_store_log none
shutdown_lifetime 1 seconds
coredump_dir $WORK/squid
hosts_file /etc/netns/$PNS/hosts
dns_nameservers 127.0.0.1
auth_param basic program /usr/lib/squid/basic_ncsa_auth $WORK/squid/passwd
auth_param basic realm egress
acl authed proxy_auth REQUIRED
acl forbidden dstdomain forbidden.dc2.test
http_access deny forbidden
http_access allow authed
http_access deny all
SQ
chown -R proxy "$WORK/squid"
chmod o+x "$WORK"
ip netns exec "$PNS" squid -N -f "$WORK/squid/squid.conf" > "$WORK/squid/out.log" 2>&1 &
SQUID_PID=$!
PIDS+=($SQUID_PID)

# ---- dante: SOCKS5 with RFC 1929 against a system user made for it ----
SOCKS_USER=mgwvia$$ SOCKS_PASS=s0cks-pass
useradd -M -s /usr/sbin/nologin "$SOCKS_USER"
UNDO+=("userdel $SOCKS_USER")
echo "$SOCKS_USER:$SOCKS_PASS" | chpasswd
cat > "$WORK/danted.conf" <<DANTE
logoutput: $WORK/danted.log
internal: 198.51.100.2 port = 1080
external: 203.0.113.2
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass { from: 198.51.100.0/24 to: 0.0.0.0/0 }
socks block { from: 0.0.0.0/0 to: 203.0.113.3/32 port = 8443 log: connect error }
socks pass {
    from: 198.51.100.0/24 to: 0.0.0.0/0
    command: connect
    log: connect disconnect
}
DANTE
ip netns exec "$PNS" danted -f "$WORK/danted.conf" -N 1 > "$WORK/danted.out" 2>&1 &
PIDS+=($!)
# ---- an https:// parent: nginx stream with TLS in front of squid ----
(
    cd "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out corp-ca.key 2>/dev/null
    openssl req -x509 -new -key corp-ca.key -subj "/CN=Corp CA" -days 3650 -out corp-ca.crt \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    for c in egress:serverAuth:"subjectAltName=IP:198.51.100.2,DNS:egress.corp" gw-corp:clientAuth:; do
        name=${c%%:*} rest=${c#*:} eku=${rest%%:*} san=${rest#*:}
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
        chmod 600 "$name.key"
        printf 'basicConstraints=CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' \
            "$eku" "$san" > "$name.ext"
        openssl req -new -key "$name.key" -subj "/O=corp/CN=$name" -out "$name.csr" 2>/dev/null
        openssl x509 -req -in "$name.csr" -CA corp-ca.crt -CAkey corp-ca.key -CAcreateserial -days 365 \
            -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    done
)
mkdir -p "$WORK/pt"
cat > "$WORK/pt/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/pt/nginx.pid;
error_log $WORK/pt/error.log info;
events { worker_connections 128; }
stream {
    log_format tls '\$server_port client=\$ssl_client_s_dn verify=\$ssl_client_verify \$ssl_protocol';
    access_log $WORK/pt/access.log tls;
    server {   # wants a client certificate of the corp CA
        listen 198.51.100.2:3129 ssl;
        ssl_certificate $PKI/egress.crt; ssl_certificate_key $PKI/egress.key;
        ssl_client_certificate $PKI/corp-ca.crt; ssl_verify_client on; ssl_protocols TLSv1.3;
        proxy_pass 198.51.100.2:3128;
    }
    server {   # TLS only (1.2)
        listen 198.51.100.2:3130 ssl; ssl_protocols TLSv1.2;
        ssl_certificate $PKI/egress.crt; ssl_certificate_key $PKI/egress.key;
        proxy_pass 198.51.100.2:3128;
    }
}
NGX
ip netns exec "$PNS" nginx -p "$WORK/pt" -c "$WORK/pt/nginx.conf" -g 'daemon off;' > "$WORK/pt/out.log" 2>&1 &
PIDS+=($!)
for p in 3128 1080 3129 3130; do
    for _ in $(seq 100); do inns "$GWNS" bash -c "exec 3<>/dev/tcp/198.51.100.2/$p" 2>/dev/null && break; sleep 0.1; done
done

# ---- the gateway, in the client's namespace ----
printf '%s:%s\n' "$SQUID_USER" "$SQUID_PASS" > "$WORK/squid.cred"
printf '%s:%s\n' "$SQUID_USER" "wrong" > "$WORK/squid-wrong.cred"
printf '%s:%s\n' "$SOCKS_USER" "$SOCKS_PASS" > "$WORK/socks.cred"
printf '%s:%s\n' "$SOCKS_USER" "wrong" > "$WORK/socks-wrong.cred"
chmod 600 "$WORK"/*.cred
GW_PORT=18080 ADMIN_PORT=19901 FWD_PORT=18081 TP_PORT=18082
cat > "$WORK/gw.conf" <<CONF
workers = 1;
listen = ( { name = "proxy"; address = "127.0.0.1:$GW_PORT"; },
           { name = "fwd"; address = "127.0.0.1:$FWD_PORT"; forward = "tls-orders.test:80"; },
           { name = "redirect"; address = "127.0.0.1:$TP_PORT"; transparent = true; } );
# Redirected in OUTPUT, a transparent client's source is this host's address toward the destination.
allow = [ "127.0.0.0/8", "198.51.100.0/24" ];
admin = { address = "127.0.0.1:$ADMIN_PORT"; };
identities = ( { name = "ops"; certificate = "$PKI/ops.crt"; key = "$PKI/ops.key"; trust = "$PKI/server-trust.crt"; },
               { name = "corp"; certificate = "$PKI/gw-corp.crt"; key = "$PKI/gw-corp.key"; trust = "$PKI/corp-ca.crt"; } );
via = "http://198.51.100.2:3128";           # the default parent
via_credentials_file = "$WORK/squid.cred";
rules = (
  { match = "orders.dc2.test:443"; identity = "ops"; },
  { match = "redis.dc2.test:6379"; identity = "ops"; via = "socks5://198.51.100.2:1080";
    via_credentials_file = "$WORK/socks.cred"; },
  { match = "socks-orders.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "socks5://198.51.100.2:1080"; via_credentials_file = "$WORK/socks.cred"; },
  { match = "wrongpass.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via_credentials_file = "$WORK/squid-wrong.cred"; },
  { match = "nocred.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "http://198.51.100.2:3128"; },   # its own via: the default's credentials do not go with it
  { match = "socks-wrongpass.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "socks5://198.51.100.2:1080"; via_credentials_file = "$WORK/socks-wrong.cred"; },
  { match = "forbidden.dc2.test"; identity = "ops"; },
  { match = "socks-blocked.test"; identity = "ops"; upstream = "203.0.113.3:8443"; server_name = "orders.dc2.test";
    via = "socks5://198.51.100.2:1080"; via_credentials_file = "$WORK/socks.cred"; },
  { match = "dead.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "http://198.51.100.2:3999"; },
  { match = "203.0.113.3:80"; identity = "ops"; upstream_port = 443; server_name = "orders.dc2.test"; },  # transparent
  { match = "direct.test"; identity = "ops"; upstream = "203.0.113.3:443"; server_name = "orders.dc2.test"; via = "none"; },
  { match = "tls-orders.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "https://198.51.100.2:3129"; via_identity = "corp"; via_credentials_file = "$WORK/squid.cred"; },
  { match = "tls-redis.test"; identity = "ops"; upstream = "redis.dc2.test:6379"; preconnect = 1;
    via = "https://198.51.100.2:3129"; via_identity = "corp"; via_credentials_file = "$WORK/squid.cred"; },
  { match = "tls-only.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "https://198.51.100.2:3130"; via_trust = "$PKI/corp-ca.crt"; via_credentials_file = "$WORK/squid.cred"; },
  { match = "orders.dc2.test:8443"; action = "direct"; upstream = "orders.dc2.test:443";
    via = "https://198.51.100.2:3130"; via_trust = "$PKI/corp-ca.crt"; via_credentials_file = "$WORK/squid.cred"; },
  { match = "tls-untrusted.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "https://198.51.100.2:3130"; via_trust = "$PKI/server-trust.crt"; },
  { match = "tls-nocert.test"; identity = "ops"; upstream = "orders.dc2.test:443"; server_name = "orders.dc2.test";
    via = "https://198.51.100.2:3129"; via_trust = "$PKI/corp-ca.crt"; },
  { match = "pre-redis.test"; identity = "ops"; upstream = "redis.dc2.test:6379"; preconnect = 1;
    via = "socks5://198.51.100.2:1080"; via_credentials_file = "$WORK/socks.cred"; }
);
deny_addresses = [ "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10" ];
CONF
ip netns exec "$GWNS" "${GW_WRAP[@]}" "$MTLSGW" run -c "$WORK/gw.conf" >> "$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
GW_PIDS+=($GW_PID)
for _ in $(seq "$WAIT_TRIES"); do inns "$GWNS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$GW_PORT" 2>/dev/null && break; sleep 0.1; done
gcurl() { inns "$GWNS" curl -s -m 15 "$@"; }
px() { gcurl -i -x "http://127.0.0.1:$GW_PORT" "$@"; }

check "the gateway cannot reach the terminator by itself (no route)" bash -c \
    "! ip netns exec $GWNS bash -c 'exec 3<>/dev/tcp/203.0.113.3/443' 2>/dev/null"
out=$(px http://orders.dc2.test:443/)
expect_contains "http_proxy via squid (CONNECT, Basic): nginx saw our client certificate" "dn=CN=ops,O=mtlsgw-test from=203.0.113.2" "$out"
expect_contains "... access log says via=" "via=198.51.100.2:3128" "$(grep 'dest=orders.dc2.test:443' "$WORK/gw.log" | tail -1)"
expect_contains "... and upstream is the destination" "upstream=orders.dc2.test:443" "$(grep 'dest=orders.dc2.test:443' "$WORK/gw.log" | tail -1)"
out=$(px http://orders.dc2.test:443/again)
expect_contains "a second request: answered" "dn=CN=ops" "$out"
expect_contains "... on the pooled connection through the parent" "conn=pooled" "$(grep 'dest=orders.dc2.test:443' "$WORK/gw.log" | tail -1)"
out=$(gcurl --socks5-hostname "127.0.0.1:$GW_PORT" http://socks-orders.test/)
expect_contains "SOCKS5 client via dante (RFC 1929): nginx saw our client certificate" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(inns "$GWNS" bash -c "printf 'PING\r\n' | timeout 10 python3 '$HERE/socks_probe.py' $GW_PORT redis.dc2.test 6379")
expect_eq "redis (SOCKS5 front door) via dante reaches redis behind nginx stream: reply" "rep=0" "$out"
proxychains_conf "$WORK/pc.conf" "$GW_PORT"
out=$(inns "$GWNS" timeout 20 proxychains4 -q -f "$WORK/pc.conf" redis-cli -h redis.dc2.test -p 6379 PING 2>&1)
expect_eq "redis-cli under proxychains4 via dante: PONG" "PONG" "$out"
check "dante logged the CONNECT to the destination" grep -q "redis.dc2.test.6379\|203.0.113.3.6379" "$WORK/danted.log"

# ---- a transparent client (no proxy settings; nftables redirects it) through the parent ----
ip -n "$GWNS" route add 203.0.113.0/24 dev "$N-a"   # (the parents' namespace forwards nothing)
ip netns exec "$GWNS" nft -f - <<NFT
table inet gwredir {
    chain out {
        type nat hook output priority -100;
        ip daddr 203.0.113.3 tcp dport 80 redirect to :$TP_PORT
    }
}
NFT
out=$(gcurl http://203.0.113.3/transparent)
expect_contains "a transparent client through squid: nginx saw our client certificate" \
    "dn=CN=ops,O=mtlsgw-test from=203.0.113.2" "$out"
line=$(for _ in $(seq 50); do grep -q "dest=203.0.113.3:80" "$WORK/gw.log" && break; sleep 0.1; done
       grep "dest=203.0.113.3:80" "$WORK/gw.log" | tail -1)
expect_contains "... logged as transparent, through the parent to the address it was going to" \
    "proto=transparent dest=203.0.113.3:80" "$line"
expect_contains "... via=" "via=198.51.100.2:3128" "$line"
expect_contains "... upstream= the address with upstream_port" "upstream=203.0.113.3:443" "$line"

# ---- an https:// parent: the mTLS runs inside TLS to it ----
out=$(px http://tls-orders.test/)
expect_contains "http_proxy via an https:// parent (TLS to nginx, then squid): nginx saw our client certificate" \
    "dn=CN=ops,O=mtlsgw-test from=203.0.113.2" "$out"
out=$(px http://tls-orders.test/second)
expect_contains "... a second request on the pooled connection inside the parent's TLS" "dn=CN=ops" "$out"
expect_contains "... (conn=pooled)" "conn=pooled" "$(grep 'dest=tls-orders.test' "$WORK/gw.log" | tail -1)"
out=$(gcurl --socks4a "127.0.0.1:$GW_PORT" http://tls-orders.test/)
expect_contains "SOCKS4a through the https:// parent" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(gcurl -p -x "http://127.0.0.1:$GW_PORT" http://tls-orders.test/)
expect_contains "HTTP CONNECT through the https:// parent" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(gcurl "http://127.0.0.1:$FWD_PORT/")
expect_contains "a forward listener through the https:// parent" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(px http://tls-only.test/)
expect_contains "an https:// parent verified with via_trust alone (nothing presented)" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(inns "$GWNS" curl -s -m 15 -p -x "http://127.0.0.1:$GW_PORT" --cacert "$PKI/root.crt" --cert "$PKI/ops.crt" \
    --key "$PKI/ops.key" https://orders.dc2.test:8443/direct) || true
expect_contains "a direct rule through an https:// parent: the client's own TLS inside the parent's" "dn=CN=ops,O=mtlsgw-test" "$out"
# last_line DEST: the access log's last line for DEST (a tunnel logs when it closes: wait a little).
last_line() {
    for _ in $(seq 50); do grep -q "dest=$1" "$WORK/gw.log" && break; sleep 0.1; done
    grep "dest=$1" "$WORK/gw.log" | tail -1
}
parked() { gcurl "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "mtlsgw_preconnect_parked" { print $2 }'; }
for _ in $(seq 100); do [ "$(parked)" = 2 ] && break; sleep 0.1; done
expect_eq "two connections parked, one through the https:// parent, one through dante" "2" "$(parked)"
out=$(inns "$GWNS" bash -c "printf 'PING\r\n' | timeout 10 python3 '$HERE/socks_probe.py' $GW_PORT tls-redis.test 6379")
expect_eq "SOCKS5 to redis through an https:// parent: reply" "rep=0" "$out"
expect_contains "... on a connection parked through the parent (preconnect)" "conn=preconnected" "$(last_line tls-redis.test)"
expect_contains "... logged with the parent" "via=198.51.100.2:3129" "$(last_line tls-redis.test)"
out=$(inns "$GWNS" bash -c "printf 'PING\r\n' | timeout 10 python3 '$HERE/socks_probe.py' $GW_PORT pre-redis.test 6379")
expect_eq "SOCKS5 to redis on a connection parked through dante (preconnect)" "rep=0" "$out"
expect_contains "... conn=preconnected" "conn=preconnected" "$(last_line pre-redis.test)"
out=$(px http://tls-untrusted.test/)
expect_contains "an https:// parent whose certificate we do not trust: 502 tls_certificate_error, next-hop the parent" \
    'error=tls_certificate_error; next-hop="198.51.100.2:3130"' "$out"
expect_contains "... in words" "parent proxy https://198.51.100.2:3130: its certificate was rejected" "$out"
expect_contains "... access log result=parent_tls_failed" "result=parent_tls_failed" "$(grep 'dest=tls-untrusted.test' "$WORK/gw.log" | tail -1)"
out=$(px http://tls-nocert.test/)
expect_contains "an https:// parent that wants a certificate we did not give" "set via_identity" "$out"
expect_contains "... 502 tls_protocol_error naming the parent" 'error=tls_protocol_error; next-hop="198.51.100.2:3129"' "$out"
expect_eq "... SOCKS5 client: 0x01" "rep=1" "$(inns "$GWNS" python3 "$HERE/socks_probe.py" "$GW_PORT" tls-untrusted.test 80)"
out=$(inns "$GWNS" timeout 20 "$MTLSGW" explain -c "$WORK/gw.conf" tls-orders.test:80 --connect 2>&1) || true
expect_contains "explain shows how the https:// parent is verified" 'verified for "198.51.100.2" with the trust of identity "corp"' "$out"
expect_contains "explain --connect: TLS to the parent" "via tls      TLSv1.3" "$out"
expect_contains "... then CONNECT inside it" "via          ok: parent proxy https://198.51.100.2:3129 answered CONNECT orders.dc2.test:443: 200" "$out"
expect_contains "... and the mTLS inside that" "client cert  accepted" "$out"
out=$(inns "$GWNS" timeout 20 "$MTLSGW" explain -c "$WORK/gw.conf" tls-untrusted.test:80 --connect 2>&1) || true
expect_contains "explain --connect: where the https:// parent broke" "via          FAILED: parent proxy https://198.51.100.2:3130: its certificate was rejected" "$out"

# ---- failures, each the parent's ----
out=$(px http://wrongpass.test/)
expect_contains "squid refuses our credentials: 502" "HTTP/1.1 502" "$out"
expect_contains "... proxy_auth_required naming the parent as next-hop" 'error=proxy_auth_required; next-hop="198.51.100.2:3128"' "$out"
expect_contains "... in words" "refused our credentials for CONNECT orders.dc2.test:443: 407" "$out"
out=$(px http://nocred.test/)
expect_contains "no credentials for squid: says it wants some" "wants credentials (via_credentials_file)" "$out"
out=$(px http://forbidden.dc2.test:443/)
expect_contains "squid refuses the destination (403): 502 http_request_denied" "error=http_request_denied; next-hop=" "$out"
expect_contains "... with squid's words" "refused CONNECT forbidden.dc2.test:443: 403" "$out"
expect_eq "... SOCKS5 client: 0x02 (not allowed)" "rep=2" "$(inns "$GWNS" python3 "$HERE/socks_probe.py" "$GW_PORT" forbidden.dc2.test 443)"
out=$(px http://socks-wrongpass.test/)
expect_contains "dante refuses our RFC 1929 credentials" "refused our credentials (RFC 1929)" "$out"
out=$(px http://socks-blocked.test/)
expect_contains "dante refuses the destination: REP 2 in words" "SOCKS5 reply 2 (connection not allowed by ruleset)" "$out"
expect_eq "... SOCKS5 client: 0x02" "rep=2" "$(inns "$GWNS" python3 "$HERE/socks_probe.py" "$GW_PORT" socks-blocked.test 80)"
out=$(px http://dead.test/)
expect_contains "a dead parent: its own reason, naming it" "parent proxy http://198.51.100.2:3999: " "$out"
expect_contains "... connection refused, next-hop the parent" 'error=connection_refused; next-hop="198.51.100.2:3999"' "$out"
out=$(px http://direct.test/)
expect_contains "via = \"none\": the rule goes direct (and here cannot: no route)" "HTTP/1.1 50" "$out"
check "... not through a parent (no next-hop)" bash -c "! echo '$out' | grep -q next-hop"
# ---- explain --connect through the parent: the chain, and where it broke ----
out=$(inns "$GWNS" timeout 20 "$MTLSGW" explain -c "$WORK/gw.conf" orders.dc2.test:443 --connect 2>&1) || true
expect_contains "explain shows the parent" "via          http://198.51.100.2:3128, as $SQUID_USER" "$out"
expect_contains "explain --connect asks squid as a tunnel does" \
    "via          ok: parent proxy http://198.51.100.2:3128 answered CONNECT orders.dc2.test:443: 200" "$out"
expect_contains "... and the mTLS inside is accepted" "client cert  accepted" "$out"
out=$(inns "$GWNS" timeout 20 "$MTLSGW" explain -c "$WORK/gw.conf" socks-orders.test:80 --connect 2>&1) || true
expect_contains "explain --connect via dante" "answered CONNECT orders.dc2.test:443: SOCKS5 reply 0 (succeeded)" "$out"
out=$(inns "$GWNS" timeout 20 "$MTLSGW" explain -c "$WORK/gw.conf" wrongpass.test:80 --connect 2>&1) || true
expect_contains "explain --connect: where it broke (squid's 407)" "via          FAILED: parent proxy http://198.51.100.2:3128 refused our credentials for CONNECT orders.dc2.test:443: 407" "$out"

# ---- reload: new parent settings apply, pooled connections of the old config retire ----
sed -i "s|via_credentials_file = \"$WORK/squid-wrong.cred\"|via_credentials_file = \"$WORK/squid.cred\"|" "$WORK/gw.conf"
reload_gw
out=$(px http://wrongpass.test/)
expect_contains "after a reload the rule's new credentials file is used" "dn=CN=ops,O=mtlsgw-test" "$out"
out=$(px http://tls-orders.test/after-reload)
expect_contains "through the https:// parent after the reload" "dn=CN=ops" "$out"
expect_contains "... on a new connection (the old config's pooled one retired)" "conn=new" "$(grep 'dest=tls-orders.test' "$WORK/gw.log" | tail -1)"
for _ in $(seq 100); do [ "$(parked)" = 2 ] && break; sleep 0.1; done
expect_eq "... and the parked connections are made again through their parents" "2" "$(parked)"

metrics=$(gcurl "http://127.0.0.1:$ADMIN_PORT/metrics")
expect_contains "metrics: ok through squid" 'mtlsgw_via_connects_total{via="http://198.51.100.2:3128",result="ok"}' "$metrics"
echo "$metrics" > "$WORK/metrics.txt"
check "... auth failures counted" grep -qE 'via="http://198.51.100.2:3128",result="auth_failed"} [1-9]' "$WORK/metrics.txt"
check "... the dead parent as unreachable" grep -qE 'via="http://198.51.100.2:3999",result="unreachable"} [1-9]' "$WORK/metrics.txt"
check "... the untrusted https:// parent as tls_failed" grep -qE 'via="https://198.51.100.2:3130",result="tls_failed"} [1-9]' "$WORK/metrics.txt"
check "... and the https:// one that works as ok" grep -qE 'via="https://198.51.100.2:3129",result="ok"} [1-9]' "$WORK/metrics.txt"
check "no credential in any gateway log line" bash -c "! grep -qE '$SQUID_PASS|$SOCKS_PASS' '$WORK/gw.log'"

# ---- config ----
cat > "$WORK/bad.conf" <<CONF
listen = ( { name = "p"; address = "127.0.0.1:1"; } );
via_credentials_file = "$WORK/squid.cred";
rules = (
  { match = "a.test"; action = "direct"; via = "ftp://x:1"; },
  { match = "b.test"; action = "direct"; via = "http://user:pw@x:3128"; },
  { match = "c.test"; action = "direct"; via = "https://x:3129"; },
  { match = "f.test"; action = "direct"; via = "https://x:3129"; via_identity = "nobody"; },
  { match = "g.test"; action = "direct"; via = "http://x:3128"; via_trust = "$PKI/corp-ca.crt"; },
  { match = "h.test"; action = "direct"; via_identity = "corp"; },
  { match = "d.test"; action = "deny"; via = "http://x:3128"; },
  { match = "e.test"; action = "direct"; via = "http://x:3128"; via_credentials_file = "$WORK/nonexistent"; }
);
CONF
out=$("$MTLSGW" check -c "$WORK/bad.conf" 2>&1) || true
expect_contains "config: credentials without a parent" 'bad.conf:2: via_credentials_file: only used with via' "$out"
expect_contains "config: scheme" 'bad.conf:4: rules[0].via: expected "http://HOST:PORT", "https://HOST:PORT" or "socks5://HOST:PORT"' "$out"
expect_contains "config: credentials in the URL refused" 'rules[1].via: expected "http://HOST:PORT"' "$out"
expect_contains "config: an https parent must be verified" "bad.conf:6: rules[2].via: an https:// parent is verified like any server: set via_trust" "$out"
expect_contains "config: via_identity names an identity" 'rules[3].via_identity: no identity is named "nobody"' "$out"
expect_contains "config: via_trust only for https" 'rules[4].via_trust: only used with an https:// parent' "$out"
expect_contains "config: via_identity without via" 'rules[5].via_identity: only used with via' "$out"
expect_contains "config: deny takes no via" "rules[6].via: a deny rule takes no via" "$out"
expect_contains "config: credentials file" "rules[7].via_credentials_file: cannot read" "$out"
chmod 644 "$WORK/socks.cred"
out=$("$MTLSGW" check -c "$WORK/gw.conf" 2>&1) || true
expect_contains "check: a credentials file readable by others is reported" "via_credentials_file $WORK/socks.cred has mode 0644" "$out"

# squid logs a CONNECT when it ends: after the gateway (and its pooled connections) stopped.
stop_gateways
for _ in $(seq 50); do grep -q "CONNECT orders.dc2.test:443" "$WORK/squid/access.log" && break; sleep 0.1; done
check "squid's log shows CONNECT host:port" grep -q "CONNECT orders.dc2.test:443" "$WORK/squid/access.log"
# nginx stream logs a session when it ends: after the gateway stopped.
for _ in $(seq 50); do grep -q "client=CN=gw-corp" "$WORK/pt/access.log" && break; sleep 0.1; done
check "the https:// parent verified our corp identity (via_identity)" grep -q "3129 client=CN=gw-corp,O=corp verify=SUCCESS" "$WORK/pt/access.log"
check "... and TLS 1.3 to it" grep -q "3129 client=CN=gw-corp,O=corp verify=SUCCESS TLSv1.3" "$WORK/pt/access.log"
check "... and nothing of what went inside (no request line of ours)" bash -c "! grep -qE 'GET |/again' '$WORK/squid/access.log'"

finish
