#!/usr/bin/env python3
"""Caller rules micro-benchmark (run through callers.sh): CPU per new tunnel of one mtlsgw
worker without and with caller rules, in one run on the same terminator and load.

Each new tunnel is a SOCKS5 request, a resumed mTLS handshake to the terminator, one HTTP
request and a close (loadgen close mode). Without caller rules and with the access log
off the gateway never asks who the caller is; with them, every TCP client costs a
getsockname and one NETLINK_SOCK_DIAG request, and every rule lookup a uid check. The two
gateways take turns, BENCH_RUNS rounds; medians are reported with their ratio.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (the side-by-side benchmark's helpers and remote side)

RULES_PLAIN = '{{ match = "bench.test:80"; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }}'
# The caller rules a shared host would have: the load runs as root (uid 0), matched by the
# third rule; the first two name other callers of the same destination.
RULES_CALLERS = """
  {{ match = "bench.test:80"; caller = "uid:4000"; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }},
  {{ match = "bench.test:80"; caller = [ "uid:4001", "uid:4002" ]; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }},
  {{ match = "bench.test:80"; caller = [ "group:root", "uid:0" ]; identity = "ops"; upstream = "127.0.0.1:{th}"; server_name = "orders.dc2.test"; }}
"""


def gateway(name, rules):
    identity = 'name = "ops"; certificate = "{p}/ops.crt"; key = "{p}/ops.key"; trust = "{p}/server-trust.crt";'
    return b.socks_gateway(name, identity.format(p=b.PKI), rules.format(th=b.T_HTTP))


def main():
    b.start_remote()
    gws = {"without": gateway("no-callers", RULES_PLAIN), "with": gateway("callers", RULES_CALLERS)}
    runs = {k: [] for k in gws}
    for rnd in range(b.RUNS):
        for key, (p, port) in gws.items():
            c0 = b.cpu_s([p.pid])
            r = b.loadgen_close(port, "bench.test:80")
            us = (b.cpu_s([p.pid]) - c0) / max(r["requests"], 1) * 1e6
            runs[key].append((us, r["rps"], r["errors"]))
            b.log("round %d %s caller rules: %.1f us CPU per tunnel, %.0f tunnels/s, %d errors"
                  % (rnd + 1, key, us, r["rps"], r["errors"]))
    for p, _ in gws.values():
        b.stop(p)
    b.stop_all()
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), sum(x[2] for x in v))
           for k, v in runs.items()}
    print("| mtlsgw, 1 worker, SOCKS5 + resumed mTLS + 1 request per tunnel | CPU per new tunnel | new tunnels/s | errors |")
    print("|---|---|---|---|")
    for k in ("without", "with"):
        print("| %s caller rules | %.1f us | %.0f | %d |" % (k, med[k][0], med[k][1], med[k][2]))
    ratio = med["with"][0] / med["without"][0]
    print("\nwith / without caller rules, CPU per new tunnel: %.3f (%+.1f %%; medians of %d rounds of %d s, %d connections)"
          % (ratio, (ratio - 1) * 100, b.RUNS, b.SECS, b.CONC))


if __name__ == "__main__":
    b.run_main(main)
