#!/usr/bin/env python3
"""ecsload.py HOST PORT NAME RATE SECS NPREFIX PID

Sends A queries for NAME to HOST:PORT over UDP, each with an EDNS Client
Subnet option for one of NPREFIX distinct random IPv4 /24s (cycled in
order, the same prefixes every run), paced at RATE q/s for SECS seconds;
then prints queries sent, answers, lost, and the CPU time of process PID
(user + system, from /proc) with answers per CPU-second. Used by
bench/ecs-ab.sh."""
import socket, struct, sys, time, random, threading
host, port, name, rate, secs, npre, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def qname(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.strip(".").split(".")) + b"\0"
rng = random.Random(7)
pkts = []
for i in range(npre):
    a = rng.randrange(1 << 24) << 8
    addr = struct.pack("!I", a)[:3]
    ecs = struct.pack("!HBB", 1, 24, 0) + addr
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + len(ecs)) + struct.pack("!HH", 8, len(ecs)) + ecs
    hdr = struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 1)
    pkts.append(hdr + qname(name) + struct.pack("!HH", 1, 1) + opt)
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.connect((host, port))
got = [0]
stop = [False]
def rx():
    s.settimeout(0.2)
    while not stop[0]:
        try:
            s.recv(4096); got[0] += 1
        except socket.timeout:
            pass
t = threading.Thread(target=rx); t.start()
c0 = cpu(); t0 = time.monotonic(); sent = 0
n = int(rate * secs)
batch = max(1, rate // 1000)
while sent < n:
    for _ in range(batch):
        s.send(pkts[sent % npre]); sent += 1
    ahead = sent / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
time.sleep(0.5); stop[0] = True; t.join()
c1 = cpu()
el = time.monotonic() - t0
print(f"sent {sent} answers {got[0]} lost {sent-got[0]} in {el:.1f}s cpu {c1-c0:.2f}s answers/cpu-s {got[0]/max(c1-c0,0.01):.0f}")
