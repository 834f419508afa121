#!/usr/bin/env python3
"""http_proxy with a new client connection per request (run through httpproxy.sh).

What a client that does not keep its connection pays: wrk with "Connection: close" and
16 connections, one request each. mtlsgw's http_proxy (absolute-form requests, its
upstream pool on by default) beside nginx http as a reverse proxy to the same mTLS
terminator, with an upstream keepalive pool and without (as the classic article
configures it). Per row: requests/s, the proxy's CPU per request, and the upstream
handshakes per request (the terminator's log counts them). The rows take turns,
BENCH_RUNS rounds; medians with the ratios to nginx with its pool.
"""
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (the side-by-side benchmark's helpers and remote side)

SSL = """proxy_ssl_certificate {p}/ops.crt; proxy_ssl_certificate_key {p}/ops.key;
        proxy_ssl_trusted_certificate {p}/server-trust.crt; proxy_ssl_verify on; proxy_ssl_verify_depth 2;
        proxy_ssl_name orders.dc2.test; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;"""


def gw_mtlsgw():
    h = b.free_port()
    conf = os.path.join(b.WORK, "httpproxy-mtlsgw.conf")
    with open(conf, "w") as f:
        f.write("""workers = 1;
listen = ( {{ name = "http"; address = "127.0.0.1:{h}"; protocols = ["http"]; }} );
identities = ( {{ name = "ops"; certificate = "{p}/ops.crt"; key = "{p}/ops.key"; trust = "{p}/server-trust.crt"; }} );
rules = ( {{ match = "bench.test:80"; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }} );
limits = {{ max_connections = 30000; }};
log = {{ level = "warn"; access = "off"; }};
""".format(h=h, p=b.PKI, th=b.T_HTTP))
    p = b.start([b.MTLSGW, "run", "-c", conf], "httpproxy-mtlsgw")
    b.wait_port(h, p)
    return p, h, True


def gw_nginx(keepalive):
    h = b.free_port()
    pool = "keepalive 64; keepalive_requests 100000; keepalive_timeout 60s;" if keepalive else ""
    p = b.nginx("httpproxy-nginx-%s" % ("ka" if keepalive else "plain"), 1, """http {{
    access_log off;
    client_body_temp_path {w}/hb; proxy_temp_path {w}/hp; fastcgi_temp_path {w}/hf;
    uwsgi_temp_path {w}/hu; scgi_temp_path {w}/hs;
    upstream terminator {{ server 127.0.0.1:{th}; {pool} }}
    server {{
        listen 127.0.0.1:{h} backlog=4096;
        location / {{ proxy_pass https://terminator; proxy_http_version 1.1; proxy_set_header Connection ""; {ssl} }}
    }}
}}
""".format(w=b.WORK, th=b.T_HTTP, h=h, pool=pool, ssl=SSL.format(p=b.PKI)))
    b.wait_port(h, p)
    return p, h, False


def wrk(port, proxy):
    """wrk, Connection: close; through a proxy the request line carries the absolute URI."""
    script = os.path.join(b.WORK, "absolute.lua")
    with open(script, "w") as f:
        f.write('wrk.path = "http://bench.test/"\nwrk.headers["Host"] = "bench.test"\n')
    args = ["wrk", "-t1", "-c%d" % b.CONC, "-d%ds" % b.SECS, "-H", "Connection: close",
            "http://127.0.0.1:%d/" % port]
    if proxy:
        args[1:1] = ["-s", script]
    out = subprocess.run(args, capture_output=True, text=True, timeout=b.SECS + 30).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return n, int(bad.group(1)) if bad else 0


ROWS = [
    ("mtlsgw-http", "mtlsgw http_proxy (upstream pool on)", gw_mtlsgw),
    ("nginx-http-ka", "nginx http, upstream keepalive pool", lambda: gw_nginx(True)),
    ("nginx-http", "nginx http, no upstream pool", lambda: gw_nginx(False)),
]


def main():
    b.start_remote()
    gws = {}
    for key, _, fn in ROWS:
        p, port, proxy = fn()
        wrk(port, proxy)  # warm: sessions, pooled connections, buffers
        gws[key] = (p, port, proxy)
    runs = {k: [] for k in gws}
    for rnd in range(b.RUNS):
        for key, (p, port, proxy) in gws.items():
            pids = b.tree(p.pid)
            off = b.term_log_size()
            c0 = b.cpu_s(pids)
            n, bad = wrk(port, proxy)
            us = (b.cpu_s(pids) - c0) / max(n, 1) * 1e6
            _, hs = b.term_reused(off)
            runs[key].append((n / b.SECS, us, hs / max(n, 1), bad))
            b.log("round %d %-14s %7.0f req/s %6.1f us CPU/request %.3f handshakes/request %d non-2xx"
                  % (rnd + 1, key, n / b.SECS, us, hs / max(n, 1), bad))
    for p, _, _ in gws.values():
        b.stop(p)
    b.stop_all()
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] + [sum(x[3] for x in v)] for k, v in runs.items()}
    ka = med["nginx-http-ka"]
    print("| new client connection per request (wrk -c%d, Connection: close) | req/s | CPU per request | "
          "upstream handshakes per request | non-2xx | req/s vs nginx pool | CPU vs nginx pool |" % b.CONC)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, words, _ in ROWS:
        m = med[key]
        print("| %s | %.0f | %.1f us | %.3f | %d | %.2fx | %.2fx |" % (words, m[0], m[1], m[2], m[3], m[0] / ka[0], m[1] / ka[1]))
    print("\nMedians of %d rounds of %d s; one worker each; the terminator is bench.py's (nginx stream, mTLS)."
          % (b.RUNS, b.SECS))


if __name__ == "__main__":
    b.run_main(main)
