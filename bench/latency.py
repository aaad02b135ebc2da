#!/usr/bin/env python3
"""p50 and p99 latency (ms) and lost share (%) from `dnsperf -v` output,
whose per-response lines start with "> " and end with the latency in
seconds. Prints "p50 p99 lost" or nothing."""

import sys

lat = []
lost = done = 0
with open(sys.argv[1], errors="replace") as f:
    for line in f:
        fields = line.split()
        if line.startswith("> ") and len(fields) >= 4:
            try:
                lat.append(float(fields[-1]))
            except ValueError:
                pass
        elif "Queries completed" in line:
            done = int(fields[2])
        elif "Queries lost" in line:
            lost = int(fields[2])
lat.sort()
if lat:
    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(f"{q(0.5):.3f} {q(0.99):.3f} {lost / max(done + lost, 1) * 100:.3f}")
