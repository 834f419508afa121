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
        info = "dn=%s serial=%s reused=%s tls=%s host=%s path=%s\n" % (
            self.headers.get("X-Client-DN", "-"), self.headers.get("X-Client-Serial", "-"),
            self.headers.get("X-Session-Reused", "-"), self.headers.get("X-TLS", "-"),
            self.headers.get("Host", "-"), self.path)
        self._send(info.encode())

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        while n > 0:
            b = self.rfile.read(min(n, 65536))
            if not b:
                break
            h.update(b)
            n -= len(b)
        self._send(("sha256=%s\n" % h.hexdigest()).encode())


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
