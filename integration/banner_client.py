# banner_client.py PORT [HOST DSTPORT]: through the gateway's SOCKS5 listener at PORT to
# HOST:DSTPORT (or straight to a forward listener at PORT when no HOST is given), read the
# server's banner without sending anything, then send "HELO x" and read the answer. Prints
# both lines, or what went wrong.
import socket
import sys

port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
if len(sys.argv) > 2:
    host, dport = sys.argv[2].encode(), int(sys.argv[3])
    s.sendall(b"\x05\x01\x00")
    if f.read(2) != b"\x05\x00":
        print("bad greeting reply")
        sys.exit(1)
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + dport.to_bytes(2, "big"))
    r = f.read(10)
    if len(r) < 2 or r[1] != 0:
        print("socks reply %r" % r)
        sys.exit(1)
banner = f.readline().decode().strip()
s.sendall(b"HELO x\r\n")
print(banner)
print(f.readline().decode().strip())
