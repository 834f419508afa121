#!/usr/bin/env python3
"""PKCS#11 micro-benchmark (run through pkcs11.sh): CPU per new tunnel of one mtlsgw
worker whose client key is in a SoftHSM token, against the same key in a file, in one run
on the same terminator and load.

Every tunnel is a SOCKS5 request, a full mTLS handshake (the terminator keeps no sessions
and sends no tickets, so every handshake has our CertificateVerify: one signature), one
HTTP request and a close (loadgen close mode). The token row's CPU is the gateway's and
its signer process's (SoftHSM signs in the signer); the signer's share is shown apart.
The two gateways take turns, BENCH_RUNS rounds; medians are reported with their ratio.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (the side-by-side benchmark's helpers and backend)

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def terminator():
    """nginx stream with ssl_verify_client on and no session reuse at all."""
    port = b.free_port()
    term = b.nginx("full-terminator", 1, """stream {{
    log_format reuse '$ssl_session_reused';
    access_log {w}/full-terminator/reuse.log reuse;
    ssl_certificate {p}/orders.chain.crt; ssl_certificate_key {p}/orders.key;
    ssl_client_certificate {p}/client-ca.crt; ssl_verify_client on; ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    server {{ listen 127.0.0.1:{t} ssl backlog=4096; proxy_pass 127.0.0.1:{bh}; }}
}}
""".format(w=b.WORK, p=b.PKI, t=port, bh=b.B_HTTP))
    b.wait_port(port, term)
    return port


def gateway(name, key_lines, term):
    identity = 'name = "ops"; certificate = "{p}/ops.crt"; {key} trust = "{p}/server-trust.crt";'
    rule = '{{ match = "bench.test:80"; identity = "ops"; upstream = "127.0.0.1:{t}"; server_name = "orders.dc2.test"; }}'
    return b.socks_gateway(name, identity.format(p=b.PKI, key=key_lines), rule.format(t=term))


def main():
    b.start_remote()
    term = terminator()
    gws = {
        "file": gateway("file-key", 'key = "%s/ops.key";' % b.PKI, term),
        "token": gateway("token-key", 'key = "pkcs11:token=bench;object=ops"; pkcs11_module = "%s"; '
                         'key_password_file = "%s";' % (MODULE, os.environ["PIN_FILE"]), term),
    }
    runs = {k: [] for k in gws}
    for rnd in range(b.RUNS):
        for key, (p, port) in gws.items():
            pids = b.tree(p.pid)
            c0, g0 = b.cpu_s(pids), b.cpu_s([p.pid])
            r = b.loadgen_close(port, "bench.test:80")
            total = (b.cpu_s(pids) - c0) / max(r["requests"], 1) * 1e6
            own = (b.cpu_s([p.pid]) - g0) / max(r["requests"], 1) * 1e6
            runs[key].append((total, own, r["rps"], r["errors"]))
            b.log("round %d %s key: %.1f us CPU per tunnel (gateway %.1f, signer %.1f), %.0f tunnels/s, %d errors"
                  % (rnd + 1, key, total, own, total - own, r["rps"], r["errors"]))
    b.stop_all()
    with open(os.path.join(b.WORK, "full-terminator", "reuse.log")) as f:
        marks = [line.strip() for line in f if line.strip()]
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] + [sum(x[3] for x in v)]
           for k, v in runs.items()}
    print("| mtlsgw, 1 worker, SOCKS5 + full mTLS handshake + 1 request per tunnel | CPU per new tunnel "
          "| of it: gateway | of it: signer | new tunnels/s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, label in (("file", "key in a file (ECDSA P-256)"), ("token", "key in a SoftHSM token (same key)")):
        m = med[k]
        print("| %s | %.1f us | %.1f us | %.1f us | %.0f | %d |" % (label, m[0], m[1], m[0] - m[1], m[2], m[3]))
    ratio = med["token"][0] / med["file"][0]
    print("\ntoken / file, CPU per new tunnel: %.2f (medians of %d rounds of %d s, %d connections); handshakes "
          "resumed at the terminator: %d of %d" % (ratio, b.RUNS, b.SECS, b.CONC, marks.count("r"), len(marks)))


if __name__ == "__main__":
    b.run_main(main)
