#!/usr/bin/env python3
"""Summarizes bench/run.sh results (a TSV of section, metric, system, run,
value, unit) as Markdown: median, min, max (and p90 for distributions) per
system, the ratio p2pcdn/system of the medians, and the targets."""

import statistics
import sys
from collections import OrderedDict

# (section, metric, reference system) -> (comparison, bound) on the ratio
# p2pcdn median / reference median. ("max", bound) is an absolute bound on
# p2pcdn's own maximum.
TARGETS = {
    ("dns-steered", "queries/s", "gdnsd"): (">=", 1.0),
    ("dns-steered", "queries/s", "knot"): (">=", 0.6),
    # Issue 12: answers per server CPU-second (UDP, NXDOMAIN mix, TCP), p99
    # latency at half of gdnsd's peak, no lost queries.
    ("dns-steered", "answers per server CPU-second", "gdnsd"): (">=", 1.0),
    ("dns-nxmix", "answers per server CPU-second", "gdnsd"): (">=", 1.0),
    ("dns-tcp", "answers per server CPU-second", "gdnsd"): (">=", 1.0),
    ("dns-p99", "p99 latency", "gdnsd"): ("<=", 1.0),
    ("dns-steered", "lost", "p2pcdn"): ("max<=", 0.0),
    ("dns-nxmix", "lost", "p2pcdn"): ("max<=", 0.0),
    ("dns-tcp", "lost", "p2pcdn"): ("max<=", 0.0),
    ("dns-p99", "lost", "p2pcdn"): ("max<=", 0.0),
    ("https-1k", "requests/s", "nginx"): (">=", 1.0),
    ("https-100m", "throughput", "nginx"): (">=", 1.0),
    ("hash", "throughput", "b3sum"): (">=", 0.8),
    ("failover", "time to removal", "p2pcdn"): ("max<=", 2.0),
    # Issue 11: 4 mirrors x DATA_MIB against the same bytes to 4 parallel
    # curl streams from one nginx (the machine's own bound).
    ("replication", "transfer time", "nginx, 4 parallel curl streams (bound)"): ("<=", 1.5),
}


def fmt(x):
    if x is None:
        return ""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def p90(values):
    v = sorted(values)
    if len(v) < 5:
        return None
    # nearest rank
    k = max(0, int(round(0.9 * len(v) + 0.5)) - 1)
    return v[min(k, len(v) - 1)]


def main(path):
    groups = OrderedDict()
    units = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            section, metric, system, _run, value, unit = parts
            try:
                v = float(value)
            except ValueError:
                continue
            groups.setdefault((section, metric), OrderedDict()).setdefault(system, []).append(v)
            units[(section, metric)] = unit.split(" ")[0]
    out = []
    out.append("| test | metric | system | median | min | max | p90 | runs | p2pcdn/system | target |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for (section, metric), systems in groups.items():
        unit = units[(section, metric)]
        base = systems.get("p2pcdn")
        base_med = statistics.median(base) if base else None
        for system, values in systems.items():
            med = statistics.median(values)
            ratio = ""
            if system != "p2pcdn" and base_med is not None and med:
                ratio = f"{base_med / med:.2f}x"
            target = ""
            t = TARGETS.get((section, metric, system))
            if t:
                op, bound = t
                if op == "max<=":
                    ok = max(values) <= bound
                    target = f"max <= {bound:g} {unit}: {'met' if ok else 'MISSED'}"
                    verdicts.append((section, metric, f"max {fmt(max(values))} {unit} (bound {bound:g})", ok))
                elif base_med is not None and med:
                    r = base_med / med
                    ok = r >= bound if op == ">=" else r <= bound
                    target = f"{op} {bound:g}x: {'met' if ok else 'MISSED'}"
                    verdicts.append((section, metric, f"{r:.2f}x vs {system} (target {op} {bound:g}x)", ok))
            out.append(
                f"| {section} | {metric} ({unit}) | {system} | {fmt(med)} | {fmt(min(values))} | "
                f"{fmt(max(values))} | {fmt(p90(values))} | {len(values)} | {ratio} | {target} |"
            )
    out.append("")
    out.append("Targets:")
    for section, metric, what, ok in verdicts:
        out.append(f"- {section} {metric}: {what} -- {'met' if ok else 'MISSED'}")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
