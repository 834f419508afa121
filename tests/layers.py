# layers: every #include "..." in gateway/, policy/ and resolver/ points at the file's own
# layer or one below it (DESIGN's folder table), and no header includes itself back
# through another. The link check (CMakeLists.txt, mtlsgw_layer) catches calls upward;
# this catches headers used upward for their types or macros.
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ORDER = ["gateway/base", "gateway/proto", "gateway/tls", "policy", "gateway/signer", "resolver", "gateway/acme",
         "gateway/upstream", "gateway/service",
         "gateway/tunnel",
         "gateway", "gateway/cli"]


def layer_of(path):
    best = None
    for i, prefix in enumerate(ORDER):
        if path.startswith(prefix + "/") and os.path.dirname(path) == prefix:
            best = i
    return best


problems = []
graph = {}
for top in ("gateway", "policy", "resolver"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            mine = layer_of(rel)
            if mine is None:
                problems.append("%s: not in any layer folder" % rel)
                continue
            for n, line in enumerate(open(os.path.join(ROOT, rel)), 1):
                m = re.match(r'#include "([^"]+)"', line)
                if not m:
                    continue
                inc = m.group(1)
                graph.setdefault(rel, []).append(inc)
                # The PKCS#11 signer is a program of its own that must never load
                # BoringSSL: it shares the wire header with the gateway and nothing else.
                if rel.startswith("gateway/signer/") and inc != "gateway/tls/pkcs11_wire.h":
                    problems.append("%s:%d: the signer includes %s; it may include gateway/tls/pkcs11_wire.h only" %
                                    (rel, n, inc))
                theirs = layer_of(inc)
                if theirs is None:
                    problems.append("%s:%d: includes %s, which is in no layer" % (rel, n, inc))
                elif theirs > mine:
                    problems.append("%s:%d: includes %s from the layer above (%s over %s)" %
                                    (rel, n, inc, ORDER[theirs], ORDER[mine]))


def cycle_from(start):
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, []):
            if nxt == start:
                return path + [nxt]
            if nxt not in seen and nxt.endswith(".h"):
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


for h in sorted(k for k in graph if k.endswith(".h")):
    c = cycle_from(h)
    if c:
        problems.append("include cycle: " + " -> ".join(c))
        break

for p in problems:
    print("not ok - " + p)
print("layers: %d problems" % len(problems))
sys.exit(1 if problems else 0)
