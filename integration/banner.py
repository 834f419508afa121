# banner.py PORT: a server that speaks first, as SMTP, SSH and MySQL do: on connect it sends
# "220 banner.test ready <n>" (n counts connections), then answers each line with
# "250 <line>". Logs each connection to stderr.
import socketserver
import sys
import threading

lock = threading.Lock()
count = 0


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        global count
        with lock:
            count += 1
            n = count
        sys.stderr.write("connection %d\n" % n)
        sys.stderr.flush()
        self.wfile.write(b"220 banner.test ready %d\r\n" % n)
        for line in self.rfile:
            self.wfile.write(b"250 " + line.rstrip(b"\r\n") + b"\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
