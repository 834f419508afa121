#!/usr/bin/env python3
"""Round trips on an emulated WAN (run by wan.sh inside the client-side namespace).

Time from a new client connection to the first response byte through each proxy path, to
an nginx mTLS terminator on the far side of a link that delays every packet RTT/2 each
way. Cold: the proxy was just started (no session, no pooled connection). Warm: the
proxy already made a connection to the same destination, and the client connection is
new. Medians of WAN_RUNS samples, in ms and in RTTs of the link (measured with TCP
connects to the far side in the same run).

Environment: MTLSGW, PKI, WORK, FAR (the terminator's address), FAR_PORT, RTT_MS,
WAN_RUNS (default 9), WAN_ONLY (comma-separated path keys).
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

MTLSGW = os.environ["MTLSGW"]
PKI = os.environ["PKI"]
WORK = os.environ["WORK"]
FAR = os.environ["FAR"]
FAR_PORT = int(os.environ["FAR_PORT"])
RTT_MS = float(os.environ["RTT_MS"])
RUNS = int(os.environ.get("WAN_RUNS", "9"))
ONLY = [k for k in os.environ.get("WAN_ONLY", "").split(",") if k]
EXTRA = os.environ.get("WAN_GW_EXTRA", "")  # more top-level mtlsgw settings (A/B runs)
HOST = "orders.dc2.test"
REQ = ("GET /ttfb HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % HOST).encode()
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args, name):
    out = open(os.path.join(WORK, name + ".out"), "ab")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    PROCS.append(p)
    return p


def stop(p):
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def wait_port(port, p):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if p.poll() is not None:
                raise RuntimeError("%s exited before listening on %d (see %s/*.out)" % (p.args[0], port, WORK))
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise RuntimeError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def recv_head(s):
    b = b""
    while b"\r\n\r\n" not in b:
        c = s.recv(1)
        if not c:
            raise RuntimeError("closed before the end of a head: %r" % b)
        b += c
    return b


# ---- one sample: connect, the proxy protocol, the request, the first response byte ----

def ttfb(kind, port):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if kind == "socks5":
            s.sendall(b"\x05\x01\x00")
            if recv_exact(s, 2) != b"\x05\x00":
                raise RuntimeError("SOCKS5 method refused")
            h = HOST.encode()
            s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + (443).to_bytes(2, "big"))
            rep = recv_exact(s, 4)
            if rep[1] != 0:
                raise RuntimeError("SOCKS5 reply %d" % rep[1])
            recv_exact(s, {1: 4, 4: 16}[rep[3]] + 2)
            s.sendall(REQ)
        elif kind == "connect":
            s.sendall(("CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n" % (HOST, HOST)).encode())
            head = recv_head(s)
            if b" 200" not in head.split(b"\r\n")[0]:
                raise RuntimeError("CONNECT answered %r" % head)
            s.sendall(REQ)
        elif kind == "http_proxy":
            s.sendall(("GET http://%s/ttfb HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (HOST, HOST)).encode())
        else:  # a forward listener or a reverse proxy: the request as it is
            s.sendall(REQ)
        first = s.recv(1)
        t1 = time.perf_counter()
        if not first:
            raise RuntimeError("closed before any response byte")
        rest = b""
        while True:  # read the whole response, so the sample leaves nothing behind
            c = s.recv(65536)
            if not c:
                break
            rest += c
        if not (first + rest).startswith(b"HTTP/1.1 200"):
            raise RuntimeError("unexpected response %r" % (first + rest)[:200])
        return (t1 - t0) * 1000.0
    finally:
        s.close()


def link_rtt():
    """The link's RTT as a TCP connect to the far side takes it (median of 9)."""
    v = []
    for _ in range(9):
        t0 = time.perf_counter()
        socket.create_connection((FAR, FAR_PORT), timeout=10).close()
        v.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(0.02)
    return statistics.median(v)


# ---- the proxies: each start() returns (process, {kind: port}) ----

def mtlsgw(rule_extra=""):
    def run():
        return mtlsgw_run(rule_extra)
    return run


def mtlsgw_run(rule_extra):
    s, h, f = free_port(), free_port(), free_port()
    conf = os.path.join(WORK, "wan-mtlsgw.conf")
    with open(conf, "w") as c:
        c.write("""workers = 1;
listen = (
  {{ name = "socks"; address = "127.0.0.1:{s}"; protocols = ["socks5"]; }},
  {{ name = "http"; address = "127.0.0.1:{h}"; protocols = ["http"]; }},
  {{ name = "fwd"; address = "127.0.0.1:{f}"; forward = "{host}:443"; }}
);
identities = ( {{ name = "ops"; certificate = "{p}/ops.crt"; key = "{p}/ops.key"; trust = "{p}/server-trust.crt"; }} );
rules = ( {{ match = "{host}"; identity = "ops"; upstream = "{far}:{fp}"; server_name = "{host}"; {rule_extra} }} );
log = {{ level = "warn"; access = "{w}/wan-access.log"; }};
{extra}
""".format(s=s, h=h, f=f, p=PKI, host=HOST, far=FAR, fp=FAR_PORT, w=WORK, extra=EXTRA, rule_extra=rule_extra))
    p = start([MTLSGW, "run", "-c", conf], "wan-mtlsgw")
    wait_port(s, p)
    return p, {"socks5": s, "connect": h, "http_proxy": h, "forward": f}


NGX_HEAD = """worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
"""
NGX_SSL = """proxy_ssl_certificate {p}/ops.crt; proxy_ssl_certificate_key {p}/ops.key;
        proxy_ssl_trusted_certificate {p}/server-trust.crt; proxy_ssl_verify on; proxy_ssl_verify_depth 2;
        proxy_ssl_name {host}; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;"""


def nginx(name, body):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" + NGX_HEAD.format(d=d) + body)
    return start(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-g", "daemon off;"], name)


def http_block(d, inner):
    temps = "".join("%s_temp_path %s/%s;\n" % (t, d, t) for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return "http {\n access_log off;\n" + temps + inner + "}\n"


def nginx_stream():
    port = free_port()
    ssl = NGX_SSL.format(p=PKI, host=HOST)
    p = nginx("wan-nginx-stream", "stream {\n server { listen 127.0.0.1:%d; proxy_pass %s:%d; proxy_ssl on; %s }\n}\n"
              % (port, FAR, FAR_PORT, ssl))
    wait_port(port, p)
    return p, {"forward": port}


def nginx_http(keepalive):
    def run():
        port = free_port()
        name = "wan-nginx-http-ka" if keepalive else "wan-nginx-http"
        d = os.path.join(WORK, name)
        ssl = NGX_SSL.format(p=PKI, host=HOST)
        if keepalive:
            inner = """upstream far {{ server {far}:{fp}; keepalive 16; }}
server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass https://far; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header Host {host}; {ssl} }} }}
""".format(far=FAR, fp=FAR_PORT, port=port, host=HOST, ssl=ssl)
        else:
            # As the classic article configures it: proxy_pass https://, a new connection each time.
            inner = """server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass https://{far}:{fp};
    proxy_set_header Host {host}; {ssl} }} }}
""".format(far=FAR, fp=FAR_PORT, port=port, host=HOST, ssl=ssl)
        p = nginx(name, http_block(d, inner))
        wait_port(port, p)
        return p, {"reverse": port}
    return run


def haproxy():
    port = free_port()
    conf = os.path.join(WORK, "wan-haproxy.cfg")
    srv = ("ssl crt {p}/ops.pem ca-file {p}/server-trust.crt verify required sni str({h}) verifyhost {h}"
           .format(p=PKI, h=HOST))
    with open(conf, "w") as f:
        f.write("""global
    nbthread 1
    ssl-default-server-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 10s
    timeout client 60s
    timeout server 60s
listen fwd
    bind 127.0.0.1:{port}
    server t {far}:{fp} {srv}
""".format(port=port, far=FAR, fp=FAR_PORT, srv=srv))
    p = start(["haproxy", "-db", "-f", conf], "wan-haproxy")
    wait_port(port, p)
    return p, {"forward": port}


PATHS = [
    # key, words, proxy, kind
    ("mtlsgw-socks5", "mtlsgw SOCKS5 (reply, then request)", mtlsgw(), "socks5"),
    ("mtlsgw-connect", "mtlsgw HTTP CONNECT", mtlsgw(), "connect"),
    ("mtlsgw-http", "mtlsgw http_proxy (upstream pool)", mtlsgw(), "http_proxy"),
    ("mtlsgw-forward", "mtlsgw forward listener", mtlsgw(), "forward"),
    ("mtlsgw-socks5-pre", "mtlsgw SOCKS5, preconnect = 2", mtlsgw("preconnect = 2;"), "socks5"),
    ("mtlsgw-forward-pre", "mtlsgw forward listener, preconnect = 2", mtlsgw("preconnect = 2;"), "forward"),
    ("mtlsgw-socks5-early", "mtlsgw SOCKS5, early_data = true", mtlsgw("early_data = true;"), "socks5"),
    ("mtlsgw-forward-early", "mtlsgw forward listener, early_data = true", mtlsgw("early_data = true;"), "forward"),
    ("mtlsgw-forward-tfo", "mtlsgw forward listener, tcp_fastopen = true", mtlsgw("tcp_fastopen = true;"), "forward"),
    ("mtlsgw-forward-tfo-early", "mtlsgw forward listener, tcp_fastopen and early_data",
     mtlsgw("tcp_fastopen = true; early_data = true;"), "forward"),
    ("mtlsgw-socks5-tfo-early", "mtlsgw SOCKS5, tcp_fastopen and early_data",
     mtlsgw("tcp_fastopen = true; early_data = true;"), "socks5"),
    ("nginx-stream", "nginx stream proxy_ssl", nginx_stream, "forward"),
    ("haproxy", "HAProxy ssl crt (tcp)", haproxy, "forward"),
    ("nginx-http", "nginx http proxy_pass https:// (no pool)", nginx_http(False), "reverse"),
    ("nginx-http-ka", "nginx http with an upstream keepalive pool", nginx_http(True), "reverse"),
]


def measure(fn, kind):
    cold, warm = [], []
    for _ in range(RUNS):
        p, ports = fn()
        try:
            time.sleep(0.2)  # settled: listening is not the same as having loaded everything
            cold.append(ttfb(kind, ports[kind]))
        finally:
            stop(p)
    p, ports = fn()
    try:
        ttfb(kind, ports[kind])  # the first contact: sessions, pooled connections
        for _ in range(RUNS):
            time.sleep(0.1)  # tickets arrive after the handshake; a client comes a moment later
            warm.append(ttfb(kind, ports[kind]))
    finally:
        stop(p)
    return statistics.median(cold), statistics.median(warm)


def main():
    rtt = link_rtt()
    rows = []
    for key, words, fn, kind in PATHS:
        if ONLY and key not in ONLY:
            continue
        cold, warm = measure(fn, kind)
        rows.append({"key": key, "path": words, "cold_ms": cold, "warm_ms": warm,
                     "cold_rtt": cold / rtt, "warm_rtt": warm / rtt})
        print("  %-16s cold %7.1f ms %5.2f RTT   warm %7.1f ms %5.2f RTT" % (key, cold, cold / rtt, warm, warm / rtt),
              file=sys.stderr, flush=True)
    print(json.dumps({"rtt_nominal_ms": RTT_MS, "rtt_measured_ms": rtt, "runs": RUNS, "rows": rows}))


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            stop(p)
