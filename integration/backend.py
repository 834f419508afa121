# A tiny HTTP/1.1 backend behind the test nginx: answers with what nginx passed on about
# the client certificate, echoes request bodies, and serves sized downloads.
import hashlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.requestline, self.headers.get("X-Client-DN", "-")))

    def _send(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = bytes(range(256)) * 256
            while n > 0:
                k = min(n, len(chunk))
                self.wfile.write(chunk[:k])
                n -= k
            return
        if self.path == "/headers":
            self._send(("headers=%s\n" % ",".join(k.lower() for k in self.headers.keys())).encode())
            return
        info = "dn=%s serial=%s reused=%s tls=%s host=%s path=%s conn=%s\n" % (
            self.headers.get("X-Client-DN", "-"), self.headers.get("X-Client-Serial", "-"),
            self.headers.get("X-Session-Reused", "-"), self.headers.get("X-TLS", "-"),
            self.headers.get("Host", "-"), self.path, self.headers.get("X-Conn", "-"))
        self._send(info.encode())

    do_HEAD = do_GET

    def do_POST(self):
        h = hashlib.sha256()
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                b = self.rfile.read(size)
                h.update(b)
                total += len(b)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length", "0"))
            while n > 0:
                b = self.rfile.read(min(n, 65536))
                if not b:
                    break
                h.update(b)
                total += len(b)
                n -= len(b)
        self._send(("sha256=%s bytes=%d te=%s conn=%s\n" % (
            h.hexdigest(), total, self.headers.get("Transfer-Encoding", "-"),
            self.headers.get("X-Conn", "-"))).encode())


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
