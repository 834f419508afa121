# Shared helper for mtlsgw integration tests: real nginx, redis, dnsmasq, curl and
# proxychains4 on free loopback ports, a test PKI made with the openssl CLI, and the
# gateway itself. Every process started here is stopped by its PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MTLSGW=${MTLSGW:-$ROOT/build/mtlsgw}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtlsgw-it.XXXXXX")
PIDS=()
GW_PIDS=()
UNDO=()
FAILS=0
PASSES=0
TEST_NAME=$(basename "$0" .sh)
# MTLSGW_VALGRIND=1 runs the gateways started by start_gw under valgrind's memcheck;
# stop_gateways then fails on any memory error or definitely lost block.
GW_WRAP=()
WAIT_TRIES=100  # tenths of a second to wait for a port or an exit
if [ "${MTLSGW_VALGRIND:-0}" = 1 ]; then
    GW_WRAP=(valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite
             --track-fds=no --num-callers=30 --log-file="$WORK/valgrind.%p.log")
    WAIT_TRIES=600
fi

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    # What a test made outside $WORK (users, groups, folders), undone last: commands in order.
    local undo
    for undo in "${UNDO[@]}"; do
        eval "$undo" > /dev/null 2>&1 || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ] || [ "$FAILS" -gt 0 ]; then
        echo "work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
# Stopped by a signal (a timeout, ^C), a test still removes what it made (users, namespaces).
trap 'exit 143' TERM
trap 'exit 130' INT

# free_port: a loopback port nothing listens on, never one this test was given before
# (the kernel may hand the same ephemeral port out twice; two servers on one port would
# each answer for the other).
free_port() {
    local p
    for _ in $(seq 20); do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
        grep -qx "$p" "$WORK/.ports" 2>/dev/null || break
    done
    echo "$p" >> "$WORK/.ports"
    echo "$p"
}

wait_port() {  # wait_port PORT [PID]
    for _ in $(seq "$WAIT_TRIES"); do
        if python3 -c "import socket,sys; s=socket.create_connection(('${WAIT_HOST:-127.0.0.1}',$1), timeout=0.2)" 2>/dev/null; then
            return 0
        fi
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            echo "process $2 died before listening on $1" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

pass() { PASSES=$((PASSES + 1)); echo "ok - $*"; }
fail() { FAILS=$((FAILS + 1)); echo "not ok - $*"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected [$2], got [$3]"; fi
}

# expect_contains DESCRIPTION NEEDLE HAYSTACK
expect_contains() {
    case "$3" in
        *"$2"*) pass "$1" ;;
        *) fail "$1: [$2] not found in: $3" ;;
    esac
}

# stop_gateways: SIGTERM every gateway, wait for a clean exit, and fail on any sanitizer
# report (ASan/UBSan/LSan builds print them at exit).
stop_gateways() {
    local pid
    for pid in "${GW_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq "$WAIT_TRIES"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    if cat "$WORK"/gw*.log 2>/dev/null | grep -qE "Sanitizer|runtime error:"; then
        fail "sanitizer report in the gateway's log"
        grep -hE -A20 "Sanitizer|runtime error:" "$WORK"/gw*.log | head -60
    else
        pass "gateway stopped cleanly on SIGTERM, no sanitizer report"
    fi
    local vg
    # One log per gateway (its pid: valgrind runs it in its own process). Processes a
    # gateway starts (PKCS#11 signers) leave an empty log of their own: not followed.
    for pid in "${GW_PIDS[@]}"; do
        vg=$WORK/valgrind.$pid.log
        [ -e "$vg" ] || continue
        local lost errors
        lost=$(awk '/definitely lost:/ {gsub(",", "", $4); print $4}' "$vg")
        errors=$(awk '/ERROR SUMMARY:/ {print $4}' "$vg")
        if [ -z "$errors" ]; then
            fail "valgrind: $vg has no summary (the gateway did not exit)"
        elif [ "${lost:-0}" = 0 ] && [ "$errors" = 0 ]; then
            pass "valgrind: no memory errors, 0 bytes definitely lost ($(grep -o 'total heap usage.*' "$vg"))"
        else
            fail "valgrind: ${lost:-0} bytes definitely lost, $errors errors"
            sed -n '/HEAP SUMMARY/,$p' "$vg" | head -80
            grep -B2 -A30 "Invalid\|uninitialised" "$vg" | head -80
        fi
    done
}

finish() {
    stop_gateways
    echo "$TEST_NAME: $PASSES passed, $FAILS failed"
    [ "$FAILS" -eq 0 ]
}

# ---- PKI ----
# make_pki: root CA -> intermediate CA -> server certificates; client certificates from a
# client CA; an unrelated "rogue" CA; an expired server certificate; a CRL.
make_pki() {
    local d=$WORK/pki
    mkdir -p "$d"
    (
        cd "$d"
        ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }
        cat > ca.cnf <<'CNF'
[ ca ]
default_ca = int
[ int ]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
crlnumber = crlnumber
default_md = sha256
policy = any
copy_extensions = copy
default_crl_days = 30
unique_subject = no
[ root ]
dir = .
database = root-index.txt
new_certs_dir = newcerts
serial = root-serial
crlnumber = root-crlnumber
default_md = sha256
policy = any
copy_extensions = none
default_crl_days = 30
unique_subject = no
[ any ]
commonName = supplied
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
[ v3_server ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
[ v3_client ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
CNF
        mkdir -p newcerts; : > index.txt; echo 1000 > serial; echo 1000 > crlnumber
        : > root-index.txt; echo 2000 > root-serial; echo 2000 > root-crlnumber
        # Server side: root -> intermediate -> servers.
        ec root.key
        openssl req -x509 -new -key root.key -subj "/CN=DC2 Root CA" -days 3650 -out root.crt \
            -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        ec int.key
        openssl req -new -key int.key -subj "/CN=DC2 Intermediate CA" -out int.csr 2>/dev/null
        openssl x509 -req -in int.csr -CA root.crt -CAkey root.key -CAcreateserial -days 3650 \
            -extfile ca.cnf -extensions v3_ca -out int.crt 2>/dev/null
        server() {  # server NAME SAN [startdate enddate]
            ec "$1.key"
            openssl req -new -key "$1.key" -subj "/CN=$1" -addext "subjectAltName=$2" -out "$1.csr" 2>/dev/null
            if [ -n "${3:-}" ]; then
                openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server \
                    -startdate "$3" -enddate "$4" -in "$1.csr" -out "$1.crt" 2>/dev/null
            else
                openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server \
                    -days 365 -in "$1.csr" -out "$1.crt" 2>/dev/null
            fi
            openssl x509 -in "$1.crt" -out "$1.leaf.pem"
            cat "$1.leaf.pem" int.crt > "$1.chain.crt"
        }
        server orders "DNS:orders.dc2.test,DNS:*.dc2.test,IP:127.0.0.1"
        server redis "DNS:redis.dc2.test"
        server config "DNS:config.example.com"
        server revoked "DNS:revoked.dc2.test"
        server expired "DNS:expired.dc2.test" 20200101000000Z 20210101000000Z
        openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -revoke revoked.crt 2>/dev/null
        openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -gencrl -out int.crl 2>/dev/null
        # A second intermediate that the root revokes, with a server under it; the root's
        # CRL; crls.pem covers every CA of the chains (with crl set, each needs one).
        ec int2.key
        openssl req -new -key int2.key -subj "/CN=DC2 Revoked Intermediate CA" -out int2.csr 2>/dev/null
        openssl ca -batch -config ca.cnf -name root -cert root.crt -keyfile root.key -extensions v3_ca \
            -days 3650 -in int2.csr -out int2.crt 2>/dev/null
        ec underrevoked.key
        openssl req -new -key underrevoked.key -subj "/CN=underrevoked.dc2.test" \
            -addext "subjectAltName=DNS:underrevoked.dc2.test" -out underrevoked.csr 2>/dev/null
        openssl x509 -req -in underrevoked.csr -CA int2.crt -CAkey int2.key -CAcreateserial -days 365 \
            -extfile ca.cnf -extensions v3_server -copy_extensions copy -out underrevoked.crt 2>/dev/null
        cat underrevoked.crt int2.crt > underrevoked.chain.crt
        openssl ca -batch -config ca.cnf -name root -cert root.crt -keyfile root.key -revoke int2.crt 2>/dev/null
        openssl ca -batch -config ca.cnf -name root -cert root.crt -keyfile root.key -gencrl -out root.crl 2>/dev/null
        cat int.crl root.crl > crls.pem
        # int2's own CRL (empty): with it, the chain under int2 is fully covered and only the
        # root's revocation of int2 can fail it.
        openssl ca -batch -config ca.cnf -cert int2.crt -keyfile int2.key -gencrl -out int2.crl 2>/dev/null
        cat int.crl int2.crl root.crl > crls-all.pem
        # An intermediate CRL whose nextUpdate has passed.
        openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -gencrl -crl_lastupdate 20200101000000Z \
            -crl_nextupdate 20200201000000Z -out int-expired.crl 2>/dev/null
        cat int-expired.crl root.crl > crls-expired.pem
        # A server certificate with no subjectAltName (its CN is the name), and one whose
        # SAN list holds a 1-byte iPAddress after its DNS name.
        ec cnonly.key
        openssl req -new -key cnonly.key -subj "/CN=cnonly.dc2.test" -out cnonly.csr 2>/dev/null
        openssl ca -batch -config ca.cnf -cert int.crt -keyfile int.key -extensions v3_server -days 365 \
            -in cnonly.csr -out cnonly.crt 2>/dev/null
        openssl x509 -in cnonly.crt | cat - int.crt > cnonly.chain.crt
        ec badip.key
        openssl req -new -key badip.key -subj "/CN=badip.dc2.test" -out badip.csr 2>/dev/null
        printf '[ badip ]\nbasicConstraints = CA:false\nextendedKeyUsage = serverAuth\nsubjectAltName = DER:3013820e62616469702e6463322e746573748701ff\n' > badip.ext
        openssl x509 -req -in badip.csr -CA int.crt -CAkey int.key -CAcreateserial -days 365 \
            -extfile badip.ext -extensions badip -out badip.crt 2>/dev/null
        cat badip.crt int.crt > badip.chain.crt
        cat root.crt > server-trust.crt
        cat int.crt root.crt > server-trust-full.crt
        # Client side: a client CA that nginx trusts, and a rogue CA it does not.
        ec client-ca.key
        openssl req -x509 -new -key client-ca.key -subj "/CN=Client CA" -days 3650 -out client-ca.crt \
            -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        ec rogue-ca.key
        openssl req -x509 -new -key rogue-ca.key -subj "/CN=Rogue CA" -days 3650 -out rogue-ca.crt \
            -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        client() {  # client NAME CA
            ec "$1.key"
            openssl req -new -key "$1.key" -subj "/O=mtlsgw-test/CN=$1" -out "$1.csr" 2>/dev/null
            openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 365 \
                -extfile ca.cnf -extensions v3_client -out "$1.crt" 2>/dev/null
        }
        client ops client-ca
        client billing client-ca
        client intruder rogue-ca
        # A self-signed server that nobody trusts.
        ec untrusted.key
        openssl req -x509 -new -key untrusted.key -subj "/CN=untrusted.dc2.test" -days 365 \
            -addext "subjectAltName=DNS:untrusted.dc2.test" -out untrusted.crt 2>/dev/null
    )
    PKI=$d
}

# make_client_cert NAME: one more client certificate from the client CA nginx trusts
# ($PKI/NAME.crt, $PKI/NAME.key; subject /O=mtlsgw-test/CN=NAME).
make_client_cert() {
    (
        cd "$PKI"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
        chmod 600 "$1.key"
        openssl req -new -key "$1.key" -subj "/O=mtlsgw-test/CN=$1" -out "$1.csr" 2>/dev/null
        openssl x509 -req -in "$1.csr" -CA client-ca.crt -CAkey client-ca.key -CAcreateserial -days 365 \
            -extfile ca.cnf -extensions v3_client -out "$1.crt" 2>/dev/null
    )
}

# make_softhsm_token LABEL PIN SO_PIN: a SoftHSM token made in $WORK (SOFTHSM2_CONF is
# exported, so the gateways and signers started later use it); the PIN goes to
# $WORK/LABEL.pin (mode 0600).
make_softhsm_token() {
    export SOFTHSM2_CONF=$WORK/softhsm2.conf
    mkdir -p "$WORK/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" > "$SOFTHSM2_CONF"
    softhsm2-util --init-token --free --label "$1" --pin "$2" --so-pin "$3" > /dev/null
    printf '%s\n' "$2" > "$WORK/$1.pin"
    chmod 600 "$WORK/$1.pin"
}

# ---- servers ----

start_dnsmasq() {  # start_dnsmasq NAME=IP... [--dnsmasq-option...]
    DNS_PORT=$(free_port)
    local args=() rec
    for rec in "$@"; do
        case "$rec" in
            --*) args+=("$rec") ;;  # a dnsmasq option as it is, e.g. --address=/dc2.test/127.0.0.1
            *) args+=("--host-record=${rec%%=*},${rec#*=}") ;;
        esac
    done
    dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-daemon --user=root \
        --listen-address=127.0.0.1 --bind-interfaces --port="$DNS_PORT" \
        --log-queries --log-facility="$WORK/dnsmasq.log" --pid-file="$WORK/dnsmasq.pid" "${args[@]}" \
        > "$WORK/dnsmasq.out" 2>&1 &
    PIDS+=($!)
    DNS_PID=$!
    for _ in $(seq 50); do
        if python3 - "$DNS_PORT" <<'PY' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
# a minimal query for "." NS; any answer means dnsmasq is up
s.sendto(bytes.fromhex("12340100000100000000000000000200 01".replace(" ", "")), ("127.0.0.1", int(sys.argv[1])))
s.recv(512)
PY
        sleep 0.1
    done
    echo "dnsmasq did not start" >&2; cat "$WORK/dnsmasq.out" >&2; return 1
}

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" > /dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$REDIS_PORT" $!
}

start_backend() {  # a small HTTP backend that echoes what nginx tells it
    BACKEND_PORT=$(free_port)
    python3 "$HERE/backend.py" "$BACKEND_PORT" > "$WORK/backend.log" 2>&1 &
    PIDS+=($!)
    wait_port "$BACKEND_PORT" $!
}

# start_nginx: the remote mTLS terminator. HTTPS servers (ssl_verify_client on) that
# answer with the client's certificate subject and whether the session was reused, and a
# stream server in front of redis.
start_nginx() {
    NGX_HTTPS=$(free_port); NGX_REDIS=$(free_port); NGX_TLS12=$(free_port)
    NGX_EXPIRED=$(free_port); NGX_REVOKED=$(free_port); NGX_UNTRUSTED=$(free_port)
    mkdir -p "$WORK/nginx/logs"
    cat > "$WORK/nginx/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile ${NGX_WORKER_CONNECTIONS:-1024};
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log info;
events { worker_connections ${NGX_WORKER_CONNECTIONS:-1024}; }
http {
    access_log $WORK/nginx/logs/access.log;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    ssl_client_certificate $PKI/client-ca.crt;
    ssl_verify_client on;
    ssl_session_cache shared:S:1m;
    ssl_session_tickets on;
    client_max_body_size 0;
    map \$ssl_client_verify \$mtls_ok { SUCCESS 1; default 0; }
    server {
        listen ${NGX_ADDR:-127.0.0.1}:$NGX_HTTPS ssl;${NGX_ADDR6:+ listen [$NGX_ADDR6]:$NGX_HTTPS ssl;}
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/orders.chain.crt;
        ssl_certificate_key $PKI/orders.key;
        location /rejected-by-nginx { return 403; }
        location /fixed { keepalive_requests 1000; return 200 "dn=\$ssl_client_s_dn reused=\$ssl_session_reused\n"; }
        location / {
            proxy_pass http://127.0.0.1:$BACKEND_PORT;
            proxy_set_header X-Client-DN \$ssl_client_s_dn;
            proxy_set_header X-Client-Serial \$ssl_client_serial;
            proxy_set_header X-Session-Reused \$ssl_session_reused;
            proxy_set_header X-TLS \$ssl_protocol;
            proxy_set_header X-Conn \$connection;
            proxy_set_header Host \$host;
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
        }
    }
    server {
        listen 127.0.0.1:$NGX_TLS12 ssl;
        ssl_protocols TLSv1.2;
        ssl_certificate $PKI/orders.chain.crt;
        ssl_certificate_key $PKI/orders.key;
        location / { return 200 "dn=\$ssl_client_s_dn reused=\$ssl_session_reused proto=\$ssl_protocol\n"; }
    }
    server {
        listen 127.0.0.1:$NGX_EXPIRED ssl;
        ssl_certificate $PKI/expired.chain.crt;
        ssl_certificate_key $PKI/expired.key;
        location / { return 200 "reached expired\n"; }
    }
    server {
        listen 127.0.0.1:$NGX_REVOKED ssl;
        ssl_certificate $PKI/revoked.chain.crt;
        ssl_certificate_key $PKI/revoked.key;
        location / { return 200 "reached revoked\n"; }
    }
    server {
        listen 127.0.0.1:$NGX_UNTRUSTED ssl;
        ssl_certificate $PKI/untrusted.crt;
        ssl_certificate_key $PKI/untrusted.key;
        location / { return 200 "reached untrusted\n"; }
    }
}
stream {
    log_format mtls '\$remote_addr dn="\$ssl_client_s_dn" reused=\$ssl_session_reused \$status';
    access_log $WORK/nginx/logs/stream.log mtls;
    server {
        listen ${NGX_ADDR:-127.0.0.1}:$NGX_REDIS ssl;${NGX_ADDR6:+ listen [$NGX_ADDR6]:$NGX_REDIS ssl;}
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/redis.chain.crt;
        ssl_certificate_key $PKI/redis.key;
        ssl_client_certificate $PKI/client-ca.crt;
        ssl_verify_client on;
        ssl_session_cache shared:T:1m;
        proxy_pass 127.0.0.1:$REDIS_PORT;
    }
}
NGX
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' > "$WORK/nginx/out.log" 2>&1 &
    PIDS+=($!)
    NGINX_PID=$!
    WAIT_HOST=${NGX_ADDR:-127.0.0.1} wait_port "$NGX_HTTPS" $NGINX_PID
    WAIT_HOST=${NGX_ADDR:-127.0.0.1} wait_port "$NGX_REDIS" $NGINX_PID
}

# start_nginx_with PORT...: an nginx of the test's own, its http and stream blocks read from
# standard input after a common head (stream module, one worker, pid and error log in
# $WORK/nginx); inside http, `include $WORK/nginx/temp_paths.conf;` puts nginx's temporary
# folders there too. Waits until each PORT listens.
start_nginx_with() {
    mkdir -p "$WORK/nginx/logs"
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        echo "${t}_temp_path $WORK/nginx/$t;"
    done > "$WORK/nginx/temp_paths.conf"
    {
        printf 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes 1;\n'
        printf 'pid %s/nginx/nginx.pid;\nerror_log %s/nginx/logs/error.log info;\n' "$WORK" "$WORK"
        printf 'events { worker_connections 512; }\n'
        cat
    } > "$WORK/nginx/nginx.conf"
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' > "$WORK/nginx/out.log" 2>&1 &
    PIDS+=($!)
    NGINX_PID=$!
    local port
    for port in "$@"; do
        wait_port "$port" "$NGINX_PID"
    done
}

# start_gw CONFIG: run the gateway; its access log and errors go to $WORK/gw.log.
start_gw() {
    GW_CONF=$1
    "${GW_WRAP[@]}" "$MTLSGW" run -c "$GW_CONF" >> "$WORK/gw.log" 2>&1 &
    GW_PID=$!
    PIDS+=($GW_PID)
    GW_PIDS+=($GW_PID)
    wait_port "$GW_PORT" $GW_PID
}

gw_alive() { kill -0 "$GW_PID" 2>/dev/null; }

# expect_check_error NAME CONF TEXT: `mtlsgw check -c CONF` exits 1 and says TEXT.
expect_check_error() {
    local out rc=0
    out=$("$MTLSGW" check -c "$2" 2>&1) || rc=$?
    expect_contains "$1" "$3" "$out"
    [ "$rc" = 1 ] || fail "$1: check exited with $rc, not 1"
}

# reload_gw: SIGHUP to the gateway, then wait (5 s at most) for its next "reloaded" line.
reload_gw() {
    local before
    before=$(grep -c "reloaded" "$WORK/gw.log" || true)
    kill -HUP "$GW_PID"
    for _ in $(seq 50); do [ "$(grep -c "reloaded" "$WORK/gw.log" || true)" -gt "$before" ] && break; sleep 0.1; done
}

# proxychains_conf FILE PORT TYPE: a proxychains4 config using the gateway.
proxychains_conf() {
    cat > "$1" <<PC
strict_chain
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
localnet 127.0.0.0/255.0.0.0
[ProxyList]
${3:-socks5} 127.0.0.1 $2
PC
}
