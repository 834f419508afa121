#!/usr/bin/env python3
"""Side-by-side benchmark driver (run through run.sh, which makes the PKI and builds).

One remote terminator (nginx stream, ssl_verify_client on, session tickets on) in front
of two backends (an nginx HTTP server answering "ok", an iperf3 server). Each client-side
gateway in turn gets the same load on its plain-TCP listener; its processes' CPU time and
memory are read from /proc. Medians of BENCH_RUNS runs. Standard library only.
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

WORK, PKI = os.environ["WORK"], os.environ["PKI"]
MTLSGW, LOADGEN = os.environ["MTLSGW"], os.environ["LOADGEN"]
FLOOR = os.environ.get("FLOOR", os.path.join(os.path.dirname(LOADGEN), "mtlsgw_floor"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECS = int(os.environ.get("BENCH_SECONDS", "3"))
CONC = int(os.environ.get("BENCH_CONCURRENCY", "16"))
HOLDS = [int(x) for x in os.environ.get("BENCH_HOLD", "2000,9000").split(",") if x]
ONLY = [x for x in os.environ.get("BENCH_ONLY", "").split(",") if x]
TICK = os.sysconf("SC_CLK_TCK")
PROCS = []


def log(*a):
    print("#", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args, name, **kw):
    out = open(os.path.join(WORK, name + ".out"), "ab")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         preexec_fn=raise_nofile, **kw)
    PROCS.append(p)
    return p


def stop_all():
    for p in list(PROCS):
        stop(p)


def run_main(main):
    """Runs a benchmark's |main|; whatever happens, nothing it started is left running."""
    try:
        main()
    finally:
        stop_all()


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def wait_port(port, p, tries=100):
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if p is not None and p.poll() is not None:
                raise RuntimeError("%s exited before listening on %d (see %s/*.out)" % (p.args[0], port, WORK))
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d" % port)


def tree(pid):
    """pid and its descendants (nginx workers are children of the master)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    out, stack = [], [pid]
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(kids.get(x, []))
    return out


def cpu_s(pids):
    t = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return t / TICK


def rss_kb(pids):
    t = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if m is None:
        raise RuntimeError("wrk latency %r not understood" % v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)]


def wrk(port, close):
    """wrk once; a run whose output cannot be read (wrk itself failed) is tried once more."""
    try:
        return wrk_once(port, close)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        log("wrk failed, once more:", e)
        time.sleep(2)
        return wrk_once(port, close)


def wrk_once(port, close):
    args = ["wrk", "-t1", "-c%d" % CONC, "-d%ds" % SECS, "--latency", "http://127.0.0.1:%d/" % port]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=SECS + 30)
    out = run.stdout
    if not re.search(r"Requests/sec:\s+([\d.]+)", out) or not re.search(r"^\s+99%\s+(\S+)", out, re.M):
        raise RuntimeError("wrk printed no result: %s %s" % (out[-300:], run.stderr[-300:]))
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    r["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    # The "Latency Distribution" lines ("     50%  251.00us"), not a "+/- Stdev" like 90.50%.
    r["p50"] = to_us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    r["p99"] = to_us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    if close:
        r["errors"] = int(bad.group(1)) if bad else 0  # wrk counts the server's close as a read error
    return r


def loadgen_close(port, socks):
    args = [LOADGEN, "close", "127.0.0.1:%d" % port, str(SECS), str(CONC)]
    if socks:
        args += ["--socks5", socks]
    out = subprocess.run(args, capture_output=True, text=True, timeout=SECS + 30).stdout
    m = re.search(r"requests (\d+) errors (\d+) p50_us (\d+) p99_us (\d+)", out)
    n = int(m.group(1))
    return {"rps": n / SECS, "requests": n, "errors": int(m.group(2)), "p50": float(m.group(3)), "p99": float(m.group(4))}


def iperf(port, reverse):
    args = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(SECS), "-J"] + (["-R"] if reverse else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=SECS + 30).stdout
    j = json.loads(out)
    if "error" in j:
        raise RuntimeError(j["error"])
    s = j["end"]["sum_received"]
    return {"gbps": s["bits_per_second"] / 1e9, "bytes": s["bytes"]}


def term_reused(offset):
    """Share of terminator handshakes since |offset| that resumed a session."""
    with open(TERM_LOG) as f:
        f.seek(offset)
        marks = [line.strip() for line in f if line.strip() in ("r", ".")]
    return (100.0 * marks.count("r") / len(marks)) if marks else float("nan"), len(marks)


def term_log_size():
    return os.path.getsize(TERM_LOG) if os.path.exists(TERM_LOG) else 0


# ---- the remote side ----

B_HTTP, B_IPERF, T_HTTP, T_IPERF = free_port(), free_port(), free_port(), free_port()
TERM_LOG = os.path.join(WORK, "term-stream.log")
NGX_COMMON = """load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; multi_accept on; }}
"""


def nginx(name, workers, body):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGX_COMMON.format(dir=d) + "worker_processes %s;\n" % workers + body)
    return start(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-g", "daemon off;"], name)


def start_remote():
    backend = nginx("backend", 1, """http {{
    access_log off; keepalive_requests 100000000; keepalive_timeout 900s; client_header_timeout 900s;
    client_body_temp_path {w}/backend/b; proxy_temp_path {w}/backend/p; fastcgi_temp_path {w}/backend/f;
    uwsgi_temp_path {w}/backend/u; scgi_temp_path {w}/backend/s;
    server {{ listen 127.0.0.1:{b} backlog=4096; location / {{ return 200 "ok\\n"; }} }}
}}
""".format(w=WORK, b=B_HTTP))
    wait_port(B_HTTP, backend)
    ip = start(["iperf3", "-s", "-p", str(B_IPERF)], "iperf3-server")
    wait_port(B_IPERF, ip)
    term = nginx("terminator", "auto", """stream {{
    log_format reuse '$ssl_session_reused';
    access_log {log} reuse;
    ssl_certificate {p}/orders.chain.crt; ssl_certificate_key {p}/orders.key;
    ssl_client_certificate {p}/client-ca.crt; ssl_verify_client on; ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;
    ssl_session_cache shared:S:50m; ssl_session_timeout 1h;
    server {{ listen 127.0.0.1:{th} ssl backlog=4096; proxy_pass 127.0.0.1:{bh}; }}
    server {{ listen 127.0.0.1:{ti} ssl; proxy_pass 127.0.0.1:{bi}; }}
}}
""".format(log=TERM_LOG, p=PKI, th=T_HTTP, bh=B_HTTP, ti=T_IPERF, bi=B_IPERF))
    wait_port(T_HTTP, term)
    wait_port(T_IPERF, term)


def socks_gateway(name, identity, rules):
    """A one-worker mtlsgw with a SOCKS5 listener, the identity group |identity| (without
    braces) and |rules| (the inside of rules = ( ... )), access log off; started and warmed
    up (sessions cached, buffers pooled). Returns (process, port). For the micro-benchmarks
    (callers.py, pkcs11.py)."""
    s = free_port()
    conf = os.path.join(WORK, name + ".conf")
    with open(conf, "w") as f:
        f.write("""workers = 1;
listen = ( {{ name = "socks"; address = "127.0.0.1:{s}"; protocols = ["socks5"]; }} );
resolver = {{ hosts = ( {{ name = "bench.test"; address = "127.0.0.1"; }} ); }};
identities = ( {{ {identity} }} );
rules = ( {rules} );
limits = {{ max_connections = 30000; }};
log = {{ level = "warn"; access = "off"; }};
""".format(s=s, identity=identity, rules=rules))
    p = start([MTLSGW, "run", "-c", conf], name)
    wait_port(s, p)
    loadgen_close(s, "bench.test:80")
    return p, s


# ---- the gateways: each returns (process, http port, iperf port, socks "name:port" or None) ----

def gw_mtlsgw(workers, tls=True, binary=None):
    def run():
        h, i, s = free_port(), free_port(), free_port()
        if tls:
            rules = """
  {{ match = "bench.test:80"; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }},
  {{ match = "iperf.test:5201"; identity = "ops"; upstream = "127.0.0.1:{ti}"; server_name = "orders.dc2.test"; }}
""".format(th=T_HTTP, ti=T_IPERF)
        else:
            rules = """
  {{ match = "bench.test:80"; action = "direct"; upstream = "127.0.0.1:{bh}"; }},
  {{ match = "iperf.test:5201"; action = "direct"; upstream = "127.0.0.1:{bi}"; }}
""".format(bh=B_HTTP, bi=B_IPERF)
        conf = os.path.join(WORK, "mtlsgw-%d-%d.conf" % (workers, tls))
        with open(conf, "w") as f:
            f.write("""workers = {w};
listen = (
  {{ name = "http"; address = "127.0.0.1:{h}"; forward = "bench.test:80"; }},
  {{ name = "iperf"; address = "127.0.0.1:{i}"; forward = "iperf.test:5201"; }},
  {{ name = "socks"; address = "127.0.0.1:{s}"; protocols = ["socks5"]; }}
);
resolver = {{ hosts = ( {{ name = "bench.test"; address = "127.0.0.1"; }}, {{ name = "iperf.test"; address = "127.0.0.1"; }} ); }};
identities = ( {{ name = "ops"; certificate = "{p}/ops.crt"; key = "{p}/ops.key"; trust = "{p}/server-trust.crt"; }} );
rules = ({rules});
limits = {{ max_connections = 30000; idle_timeout_s = 900; confirm_ms = %s; }};
log = {{ level = "warn"; access = "off"; }};
""".format(w=workers, h=h, i=i, s=s, p=PKI, rules=rules) % os.environ.get("CONFIRM", "200"))
        p = start([binary or MTLSGW, "run", "-c", conf], "mtlsgw")
        wait_port(h, p)
        return p, h, i, "bench.test:80"
    return run


def gw_nginx(workers):
    def run():
        h, i = free_port(), free_port()
        ssl = """proxy_ssl on; proxy_ssl_certificate {p}/ops.crt; proxy_ssl_certificate_key {p}/ops.key;
        proxy_ssl_trusted_certificate {p}/server-trust.crt; proxy_ssl_verify on; proxy_ssl_verify_depth 2;
        proxy_ssl_name orders.dc2.test; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;""".format(p=PKI)
        p = nginx("client-nginx-%s" % workers, workers, """stream {{
    access_log off;
    server {{ listen 127.0.0.1:{h} backlog=4096; proxy_pass 127.0.0.1:{th}; {ssl} }}
    server {{ listen 127.0.0.1:{i}; proxy_pass 127.0.0.1:{ti}; {ssl} }}
}}
""".format(h=h, i=i, th=T_HTTP, ti=T_IPERF, ssl=ssl))
        wait_port(h, p)
        return p, h, i, None
    return run


def gw_haproxy(threads):
    def run():
        h, i = free_port(), free_port()
        conf = os.path.join(WORK, "haproxy-%d.cfg" % threads)
        srv = "ssl crt {p}/ops.pem ca-file {p}/server-trust.crt verify required sni str(orders.dc2.test) verifyhost orders.dc2.test".format(p=PKI)
        with open(conf, "w") as f:
            f.write("""global
    nbthread {t}
    maxconn 9900
    ssl-default-server-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 5s
    timeout client 900s
    timeout server 900s
listen http
    bind 127.0.0.1:{h}
    server t 127.0.0.1:{th} {srv}
listen iperf
    bind 127.0.0.1:{i}
    server t 127.0.0.1:{ti} {srv}
""".format(t=threads, h=h, i=i, th=T_HTTP, ti=T_IPERF, srv=srv))
        p = start(["haproxy", "-db", "-f", conf], "haproxy")
        wait_port(h, p)
        return p, h, i, None
    return run


def gw_stunnel():
    h, i = free_port(), free_port()
    conf = os.path.join(WORK, "stunnel.conf")
    svc = """client = yes
cert = {p}/ops.crt
key = {p}/ops.key
CAfile = {p}/server-trust.crt
verifyChain = yes
checkHost = orders.dc2.test
sni = orders.dc2.test
""".format(p=PKI)
    with open(conf, "w") as f:
        f.write("""foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[http]
accept = 127.0.0.1:{h}
connect = 127.0.0.1:{th}
{svc}
[iperf]
accept = 127.0.0.1:{i}
connect = 127.0.0.1:{ti}
{svc}
""".format(h=h, i=i, th=T_HTTP, ti=T_IPERF, svc=svc))
    p = start(["stunnel4", conf], "stunnel")
    wait_port(h, p)
    return p, h, i, None


def gw_direct():
    return None, B_HTTP, B_IPERF, None


def gw_floor():
    """The floor of a resumed tunnel's cost is measured by floor.c, not served: no process."""
    return None, None, None, None


def measure_floor():
    """floor.c: the client side of a resumed TLS 1.3 handshake and exchange (in-process
    server, memory BIOs) plus half of two loopback TCP connections, both ends in one
    thread: what a tunnel costs at the least here (its own medians of 5 batches)."""
    out = subprocess.run([FLOOR, "2000", PKI + "/ops.crt", PKI + "/ops.key", PKI + "/server-trust.crt",
                          PKI + "/orders.chain.crt", PKI + "/orders.key", PKI + "/client-ca.crt"],
                         capture_output=True, text=True, timeout=300)
    m = re.search(r"tls_us ([\d.]+) tcp_us ([\d.]+) floor_us ([\d.]+)", out.stdout)
    if m is None:
        raise RuntimeError("floor printed no result: %s %s" % (out.stdout[-300:], out.stderr[-300:]))
    return {"cpu_per_tunnel_us": float(m.group(3)), "floor_tls_us": float(m.group(1)),
            "floor_tcp_us": float(m.group(2)), "resumed": 100.0}


ROWS = [
    ("mtlsgw-1w", "mtlsgw forward listener, 1 worker", gw_mtlsgw(1)),
    ("mtlsgw-socks5", "mtlsgw SOCKS5 path, 1 worker", gw_mtlsgw(1)),
    ("mtlsgw-2w", "mtlsgw forward listener, 2 workers", gw_mtlsgw(2)),
    ("nginx-1w", "nginx stream proxy_ssl, 1 worker", gw_nginx(1)),
    ("nginx-auto", "nginx stream proxy_ssl, auto (2)", gw_nginx("auto")),
    ("haproxy-1t", "HAProxy 2.6 ssl crt, 1 thread", gw_haproxy(1)),
    ("haproxy-2t", "HAProxy 2.6 ssl crt, 2 threads", gw_haproxy(2)),
    ("stunnel", "stunnel 5.68 client mode", gw_stunnel),
    ("relay", "plain TCP relay (mtlsgw direct, no TLS), 1 worker", gw_mtlsgw(1, tls=False)),
    ("direct", "direct to the backend (no gateway, no TLS)", gw_direct),
    ("floor", "floor of a resumed tunnel (floor.c: TLS client side + TCP, no waiting)", gw_floor),
]
# MTLSGW_BASE: an older build's rows in the same run, to compare a change before and after.
BASE = os.environ.get("MTLSGW_BASE")
if BASE:
    ROWS[3:3] = [
        ("base-1w", "mtlsgw BASE forward listener, 1 worker", gw_mtlsgw(1, binary=BASE)),
        ("base-socks5", "mtlsgw BASE SOCKS5 path, 1 worker", gw_mtlsgw(1, binary=BASE)),
        ("base-2w", "mtlsgw BASE forward listener, 2 workers", gw_mtlsgw(2, binary=BASE)),
    ]


def start_row(key, fn):
    """Starts a row's gateway and warms it up: sessions into the caches, buffers into the pools."""
    p, h, i, socks = fn()
    if key == "floor":
        return {"key": key, "p": None, "pids": [], "socks_row": False, "tls": False}
    row = {"key": key, "p": p, "h": h, "i": i, "socks": socks, "pids": tree(p.pid) if p else [],
           "socks_row": key.endswith("-socks5"), "tls": key not in ("relay", "direct")}
    if row["socks_row"]:
        row["sp"] = SOCKS_PORT(p, key)
        subprocess.run([LOADGEN, "close", "127.0.0.1:%d" % row["sp"], "1", "4", "--socks5", socks],
                       capture_output=True, timeout=30)
    else:
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", "http://127.0.0.1:%d/" % h], capture_output=True, timeout=30)
    return row


def stop_row(row):
    if row["p"]:
        stop(row["p"])
    time.sleep(1)


def measure_once(row):
    if row["key"] == "floor":
        return measure_floor()
    key, pids, h, i, socks = row["key"], row["pids"], row["h"], row["i"], row["socks"]
    r = {}
    off = term_log_size()
    c0 = cpu_s(pids)
    new = loadgen_close(row["sp"], socks) if row["socks_row"] else wrk(h, True)
    c1 = cpu_s(pids)
    r["new_rps"], r["new_err"] = new["rps"], new["errors"]
    r["cpu_per_tunnel_us"] = (c1 - c0) / max(new["requests"], 1) * 1e6 if pids else float("nan")
    r["resumed"], r["handshakes"] = term_reused(off) if row["tls"] else (float("nan"), 0)
    if key in ("mtlsgw-1w", "base-1w"):
        # The same client as the SOCKS5 row, for the SOCKS5-vs-forward comparison.
        c0 = cpu_s(pids)
        lg = loadgen_close(h, None)
        r["lg_cpu_per_tunnel_us"] = (cpu_s(pids) - c0) / max(lg["requests"], 1) * 1e6
        r["lg_rps"] = lg["rps"]
    if row["socks_row"]:
        r["lg_cpu_per_tunnel_us"], r["lg_rps"] = r["cpu_per_tunnel_us"], r["new_rps"]
        return r
    c0 = cpu_s(pids)
    ka = wrk(h, False)
    r["ka_rps"], r["p50_us"], r["p99_us"], r["ka_err"] = ka["rps"], ka["p50"], ka["p99"], ka["errors"]
    r["cpu_per_req_us"] = (cpu_s(pids) - c0) / max(ka["requests"], 1) * 1e6 if pids else float("nan")
    c0 = cpu_s(pids)
    up = iperf(i, False)
    down = iperf(i, True)
    cpu = cpu_s(pids) - c0
    r["up_gbps"], r["down_gbps"] = up["gbps"], down["gbps"]
    r["cpu_per_gb_s"] = cpu / ((up["bytes"] + down["bytes"]) / 1e9) if pids else float("nan")
    return r


def measure_holds(row):
    """Idle tunnels: memory per tunnel once COUNT are open and idle (each did two requests)."""
    out = {}
    port = row["sp"] if row["socks_row"] else row["h"]
    for n in HOLDS:
        if row["pids"]:
            out["hold_%d" % n] = hold(row["pids"], port, row["socks"] if row["socks_row"] else None, n)
    return out


_socks_ports = {}


def SOCKS_PORT(p, key):
    # The SOCKS5 listener is the third in the mtlsgw config: read it back from the file.
    if p.pid not in _socks_ports:
        conf = p.args[-1]
        with open(conf) as f:
            _socks_ports[p.pid] = int(re.search(r'name = "socks"; address = "127.0.0.1:(\d+)"', f.read()).group(1))
    return _socks_ports[p.pid]


def hold(pids, port, socks, n):
    time.sleep(0.5)
    before = rss_kb(pids)
    args = [LOADGEN, "hold", "127.0.0.1:%d" % port, str(n)] + (["--socks5", socks] if socks else [])
    lg = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    PROCS.append(lg)
    lines = []
    deadline = time.time() + 180
    while time.time() < deadline:
        line = lg.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("exchanged"):
            break
    time.sleep(2.5)  # idle: pools that shrink when unused (ours does, once a second) have done so
    after = rss_kb(pids)
    lg.stdin.close()
    rest = lg.stdout.read()
    lg.wait(60)
    PROCS.remove(lg)
    text = " ".join(lines) + " " + rest
    est = re.search(r"established (\d+) errors (\d+)", text)
    exc = re.search(r"exchanged (\d+) errors (\d+)", text)
    ok = int(exc.group(1)) if exc else 0
    log("hold", n, text.strip(), "rss %d -> %d kB" % (before, after))
    return {"ok": ok, "kib": (after - before) / max(ok, 1) if ok else float("nan"),
            "errors": (int(est.group(2)) if est else n) + (int(exc.group(2)) if exc else n)}


def fmt(v, nd=0):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return ("{:,.%df}" % nd).format(v)


def with_row(key, fn, measure):
    """Starts the row's gateway, measures it, and stops it whatever happens."""
    row = start_row(key, fn)
    try:
        return measure(row)
    finally:
        stop_row(row)


def run_guarded(key, failed, what):
    """Runs what(); a gateway that fails is reported in the table, not hidden."""
    try:
        return what()
    except Exception as e:
        import traceback
        log(key, "failed:", repr(e), traceback.format_exc().replace("\n", " | "))
        failed[key] = str(e)
        for p in list(PROCS)[3:]:  # the remote side (backend, iperf3, terminator) stays
            stop(p)
        return None


def main():
    start_remote()
    rows = [(key, fn) for key, _, fn in ROWS if not ONLY or key in ONLY]
    runs, failed = {key: [] for key, _ in rows}, {}
    # Rounds, not rows one after the other: each round measures every gateway once, so a
    # busy minute on this shared machine spreads over all of them instead of one.
    for rnd in range(RUNS):
        for key, fn in rows:
            if key in failed:
                continue
            log("=== round %d: %s" % (rnd + 1, key))
            r = run_guarded(key, failed, lambda: with_row(key, fn, measure_once))
            if r is not None:
                runs[key].append(r)
                log(key, {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()})
    results = {}
    for key, fn in rows:
        if key in failed or not runs[key]:
            results[key] = {"failed": failed.get(key, "no run")}
            continue
        results[key] = {k: statistics.median([r[k] for r in runs[key] if k in r]) for k in runs[key][0]}
        if HOLDS and key not in ("direct", "floor"):
            log("=== idle tunnels: %s" % key)
            h = run_guarded(key, failed, lambda: with_row(key, fn, measure_holds))
            if h is not None:
                results[key].update(h)
    for p in list(PROCS):
        stop(p)
    uname = os.uname()
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print("Run %s on %s (%s, %d cores), kernel %s; medians of %d rounds (every gateway once a round) of %d s per workload; %d connections of load."
          % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), uname.nodename, cpu, os.cpu_count(),
             uname.release, RUNS, SECS, CONC))
    print()
    hold_cols = "".join(" idle KiB/tunnel @%d |" % n for n in HOLDS)
    print("| gateway | new tunnels/s | CPU µs/new tunnel | resumed | keep-alive req/s | p50 µs | p99 µs | "
          "up Gbit/s | down Gbit/s | CPU s/GB |" + hold_cols)
    print("|---|" + "---:|" * (9 + len(HOLDS)))
    for key, label, _ in ROWS:
        if key not in results:
            continue
        m = results[key]
        if "failed" in m:
            print("| %s | failed: %s |" % (label, m["failed"]) + " |" * (8 + len(HOLDS)))
            continue
        holds = ""
        for n in HOLDS:
            hv = m.get("hold_%d" % n)
            if hv is None:
                holds += " – |"
            elif hv["ok"] == n:
                holds += " %s |" % fmt(hv["kib"], 1)
            else:
                holds += " %s (%d of %d held) |" % (fmt(hv["kib"], 1), hv["ok"], n)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s" % (
            label, fmt(m.get("new_rps")), fmt(m.get("cpu_per_tunnel_us")),
            fmt(m.get("resumed"), 1) + ("%" if m.get("resumed") == m.get("resumed") and "resumed" in m else ""),
            fmt(m.get("ka_rps")), fmt(m.get("p50_us")), fmt(m.get("p99_us")),
            fmt(m.get("up_gbps"), 2), fmt(m.get("down_gbps"), 2), fmt(m.get("cpu_per_gb_s"), 2), holds))
    # Targets: ratios against nginx stream with 1 worker, from this same run.
    base, ours = results.get("nginx-1w"), results.get("mtlsgw-1w")
    if base and ours and "failed" not in base and "failed" not in ours:
        print()
        print("| target (against nginx stream, 1 worker, same run) | wanted | measured | met |")
        print("|---|---:|---:|:-:|")

        def row(name, want, value, ok):
            print("| %s | %s | %s | %s |" % (name, want, value, "yes" if ok else "**no**"))

        def ratio(a, b):
            return a / b if b else float("nan")
        r = ratio(ours["cpu_per_tunnel_us"], base["cpu_per_tunnel_us"])
        row("gateway CPU per new (resumed) tunnel", "≤ 0.4×", "%.2f×" % r, r <= 0.4)
        floor = results.get("floor")
        if floor and "failed" not in floor:
            r = ratio(ours["cpu_per_tunnel_us"], floor["cpu_per_tunnel_us"])
            row("... against the floor (floor.c, same run: %s µs)" % fmt(floor["cpu_per_tunnel_us"]), "≤ 1.5×",
                "%.2f×" % r, r <= 1.5)
        r = ratio(ours["new_rps"], base["new_rps"])
        row("new tunnels per second", "≥ 1.5×", "%.2f×" % r, r >= 1.5)
        row("sessions resumed (terminator's $ssl_session_reused)", "≥ 99 %", "%.1f %%" % ours["resumed"], ours["resumed"] >= 99)
        r = ratio(ours["cpu_per_gb_s"], base["cpu_per_gb_s"])
        row("CPU per GB", "≤ 0.85×", "%.2f×" % r, r <= 0.85)
        r = ratio(ours["up_gbps"] + ours["down_gbps"], base["up_gbps"] + base["down_gbps"])
        row("bulk throughput (up + down)", "≥ 1.1×", "%.2f×" % r, r >= 1.1)
        r = ratio(ours["p99_us"], base["p99_us"])
        row("warm keep-alive p99", "≤ 1.0×", "%.2f×" % r, r <= 1.0)
        r = ratio(ours["ka_rps"], base["ka_rps"])
        row("warm keep-alive req/s", "≥ 1.1×", "%.2f×" % r, r >= 1.1)
        for n in HOLDS:
            hv = ours.get("hold_%d" % n)
            if hv:
                row("memory per idle tunnel @%d" % n, "≤ 12 KiB", "%s KiB (%d held, %d errors)" % (fmt(hv["kib"], 1), hv["ok"], hv["errors"]),
                    hv["ok"] == n and hv["kib"] <= 12)
        socks = results.get("mtlsgw-socks5")
        if socks and "failed" not in socks:
            r = ratio(socks["lg_cpu_per_tunnel_us"], ours["lg_cpu_per_tunnel_us"])
            row("SOCKS5 path CPU per tunnel vs the forward listener (same client)", "≤ 1.1×", "%.2f×" % r, r <= 1.1)
    print()
    print("<details><summary>raw medians</summary>\n\n```\n%s\n```\n</details>" % json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p)
