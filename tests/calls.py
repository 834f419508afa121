#!/usr/bin/env python3
"""calls: the files of gateway/tunnel/ call each other without a circle, and only the driver
answers, flushes and closes.

From the layer's object files (nm): file A calls file B when A uses a symbol B defines.
The graph must have no cycle (the driver, tunnel.c, on top; the phases below it; record.c
at the bottom), and only tunnel.c may use the doors' replies (reply_ok, reply_err) and the
close path. Usage: calls.py OBJECT... (CMake passes $<TARGET_OBJECTS:mtlsgw_tunnel>).
"""
import os
import re
import subprocess
import sys

objs = [o for a in sys.argv[1:] for o in a.split(";") if o.endswith(".o")]  # CMake may pass one list
defined, used = {}, {}
for o in objs:
    name = os.path.basename(o).split(".")[0] + ".c"
    out = subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout
    defined[name] = {l.split()[-1] for l in out.splitlines() if re.match(r"^\S+ [TDRB] ", l)}
    used[name] = {l.split()[-1] for l in out.splitlines() if re.match(r"^\s+U ", l)}
edges = {a: sorted({b for b in defined if b != a and used[a] & defined[b]}) for a in defined}
problems = []


def cycle():
    state = {}
    def visit(n, path):
        state[n] = 1
        for m in edges[n]:
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                c = visit(m, path + [m])
                if c:
                    return c
        state[n] = 2
        return None
    for n in sorted(edges):
        if n not in state:
            c = visit(n, [n])
            if c:
                return c
    return None


c = cycle()
if c:
    problems.append("a call circle among the tunnel's files: %s" % " -> ".join(c))
# Only the driver answers, flushes and closes: the doors' replies are called through the
# door table from tunnel.c alone, and tunnel_close is tunnel.c's own.
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gateway", "tunnel")
for f in sorted(os.listdir(src)):
    if not f.endswith(".c") or f == "tunnel.c":
        continue
    text = open(os.path.join(src, f)).read()
    for what in ("->reply_ok(", "->reply_err(", "tunnel_close(", "tunnel_advance("):
        if what in text:
            problems.append("%s calls %s: only the driver (tunnel.c) does" % (f, what.strip("(->")))
if len(defined) < 6:
    problems.append("only %d objects given: the build changed shape?" % len(defined))
for p in problems:
    print("not ok -", p)
order = " ; ".join("%s -> %s" % (a, ", ".join(edges[a]) or "-") for a in sorted(edges))
print("calls: %d files, no circle: %s" % (len(defined), "no" if problems else "yes"))
print("# " + order)
sys.exit(1 if problems else 0)
