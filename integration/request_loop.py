# request_loop.py PORT PATH SECONDS [STOP-FILE]: one http_proxy request after another (a new
# connection each, Connection: close) for SECONDS or until STOP-FILE exists; prints
# "ok=N bad=M": ok is a 200 from nginx (the client's certificate subject in it) and
# nothing else, such as a log line, in the answer.
import os
import socket
import sys
import time

port, path, seconds = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
stop = sys.argv[4] if len(sys.argv) > 4 else None
ok = bad = 0
end = time.time() + seconds
while time.time() < end and not (stop and os.path.exists(stop)):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET http://orders.dc2.test" + path + b" HTTP/1.1\r\nHost: orders.dc2.test\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
    s.close()
    if got.startswith(b"HTTP/1.1 200") and b"dn=" in got and b"ts=" not in got and b'"ts"' not in got:
        ok += 1
    else:
        bad += 1
print("ok=%d bad=%d" % (ok, bad))
