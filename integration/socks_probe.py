# socks_probe.py PORT HOST DSTPORT [raw-hex]: send a SOCKS5 CONNECT (or raw bytes after the
# greeting) and print the reply code as "rep=N", or "closed" if the gateway closed.
import socket
import sys

port, host, dport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=15)
s.sendall(b"\x05\x01\x00")
if s.recv(2) != b"\x05\x00":
    print("bad greeting reply")
    sys.exit(0)
if len(sys.argv) > 4:
    s.sendall(bytes.fromhex(sys.argv[4]))
else:
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + dport.to_bytes(2, "big"))
r = s.recv(262)
print("rep=%d" % r[1] if len(r) >= 2 else "closed")
