#!/usr/bin/env bash
# The demo: installs packages, builds mtlsgw, and shows it carrying real curl and
# redis-cli traffic over mutual TLS to a local nginx (ssl_verify_client on), plus a
# denied request with its error. Everything runs on loopback and stops at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/integration/deps.sh"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$ROOT/build" -j "$(nproc)" > /dev/null
source "$ROOT/integration/lib.sh"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

say "Test PKI (openssl CLI), remote side: nginx with ssl_verify_client on, redis behind an nginx stream server"
make_pki; start_backend; start_redis; start_nginx
start_dnsmasq orders.dc2.test=127.0.0.1 redis.dc2.test=127.0.0.1
GW_PORT=$(free_port); FWD_PORT=$(free_port)
sed -e "s|@PKI@|$PKI|g" -e "s|@GW_PORT@|$GW_PORT|g" -e "s|@FWD_PORT@|$FWD_PORT|g" -e "s|@DNS_PORT@|$DNS_PORT|g" \
    -e "s|@NGX_HTTPS@|$NGX_HTTPS|g" -e "s|@NGX_REDIS@|$NGX_REDIS|g" "$ROOT/etc/demo.conf" > "$WORK/demo.conf"
run "$MTLSGW" check -c "$WORK/demo.conf"
start_gw "$WORK/demo.conf"
proxychains_conf "$WORK/proxychains.conf" "$GW_PORT"

say "curl with http_proxy set: a plain http:// request, mTLS on the wire (nginx sees identity ops)"
run env http_proxy="http://127.0.0.1:$GW_PORT" curl -s http://orders.dc2.test/greet/danish http://orders.dc2.test/greet/norwegian
say "curl through HTTP CONNECT"
run curl -s -p -x "http://127.0.0.1:$GW_PORT" http://orders.dc2.test/greet/finnish
say "curl through SOCKS5 with remote DNS"
run curl -s --socks5-hostname "127.0.0.1:$GW_PORT" http://orders.dc2.test/greet/swedish
say "redis-cli under proxychains4 -> SOCKS5 -> mTLS -> nginx stream -> redis"
run proxychains4 -q -f "$WORK/proxychains.conf" redis-cli -h redis.dc2.test -p 6379 SET greeting hej
run proxychains4 -q -f "$WORK/proxychains.conf" redis-cli -h redis.dc2.test -p 6379 GET greeting
say "redis-cli without any proxy support, through the forward listener"
run redis-cli -p "$FWD_PORT" GET greeting
say "A destination no rule allows: 403 with Proxy-Status (default deny)"
run env http_proxy="http://127.0.0.1:$GW_PORT" curl -s -i http://billing.example.com/
say "Which rule decides, and with which identity"
run "$MTLSGW" explain -c "$WORK/demo.conf" redis.dc2.test:6379
say "Access log (one line per tunnel, one per request for http_proxy clients)"
grep -v 'level=' "$WORK/gw.log" | tail -8
say "nginx stream log: the client certificate each tunnel presented"
grep -v 'dn="-"' "$WORK/nginx/logs/stream.log"  # (dn="-": the readiness probe of this script)
