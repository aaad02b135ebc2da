#!/usr/bin/env python3
"""p50 and p99 latency (ms) and lost share (%) from `dnsperf -v` output,
whose per-response lines start with "> " and end with the latency in
seconds. Prints "p50 p99 lost" or nothing.

    latency.py FILE [FILE...]         one line over all files, pooled
    latency.py --tail FILE [FILE...]  also the share of answers slower than
                                      0.2, 0.3, 0.4, 0.5, 0.7, 1 and 2 ms
                                      (%), for comparing whole tails of
                                      several runs (bench/dns-ab.sh LATLOG)"""

import sys

args = sys.argv[1:]
tail = bool(args) and args[0] == "--tail"
if tail:
    args = args[1:]
lat = []
lost = done = 0
for path in args:
    with open(path, errors="replace") as f:
        for line in f:
            fields = line.split()
            if line.startswith("> ") and len(fields) >= 4:
                try:
                    lat.append(float(fields[-1]))
                except ValueError:
                    pass
            elif "Queries completed" in line:
                done += int(fields[2])
            elif "Queries lost" in line:
                lost += int(fields[2])
lat.sort()
if lat:
    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    out = f"{q(0.5):.3f} {q(0.99):.3f} {lost / max(done + lost, 1) * 100:.3f}"
    if tail:
        import bisect
        shares = []
        for ms in (0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 2.0):
            slower = len(lat) - bisect.bisect_right(lat, ms / 1000)
            shares.append(f">{ms:g}ms {slower / len(lat) * 100:.3f}")
        out += f" answers {len(lat)} " + " ".join(shares)
    print(out)
