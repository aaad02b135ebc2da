#!/usr/bin/env python3
"""Makes src/status_page/land.path, the status page's world outline.

Input: Natural Earth 1:110m land (public domain) as TopoJSON, `land-110m.json`
from the npm package world-atlas@2 (`npm pack world-atlas@2`, ISC; the data is
Natural Earth's). Output: one SVG path `d` string in the equirectangular
projection the page uses (src/status_page/mod.rs, `project`):

    x = (lon + 180) * 2        0..720
    y = (84 - lat) * 2         0..288 (84 N .. 60 S; Antarctica is left out)

Coordinates are rounded to whole units (half a degree), rings are simplified
with Douglas-Peucker (tolerance TOL units) and written as one absolute moveto
per ring followed by relative linetos. Deterministic: the same input gives the
same bytes.

Usage: make-land-path.py land-110m.json > src/status_page/land.path
"""
import json
import sys

SCALE = 2      # units per degree
TOP = 84       # latitude at y = 0
BOTTOM = -60   # rings entirely south of this are dropped (Antarctica)
TOL = 0.6      # simplification tolerance, units


def decode_arcs(topo):
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)
    return arcs


def ring_points(ring, arcs):
    out = []
    for i in ring:
        pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        out.extend(pts if not out else pts[1:])
    return out


def polygons(geom):
    t = geom["type"]
    if t == "Polygon":
        yield geom["arcs"]
    elif t == "MultiPolygon":
        yield from geom["arcs"]
    elif t == "GeometryCollection":
        for g in geom["geometries"]:
            yield from polygons(g)


def dp(pts, tol):
    """Douglas-Peucker on an open polyline (iterative)."""
    if len(pts) < 3:
        return pts
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        (ax, ay), (bx, by) = pts[a], pts[b]
        dx, dy = bx - ax, by - ay
        norm = (dx * dx + dy * dy) ** 0.5
        best, idx = -1.0, -1
        for i in range(a + 1, b):
            px, py = pts[i]
            if norm == 0:
                d = ((px - ax) ** 2 + (py - ay) ** 2) ** 0.5
            else:
                d = abs(dy * px - dx * py + bx * ay - by * ax) / norm
            if d > best:
                best, idx = d, i
        if best > tol:
            keep[idx] = True
            stack.append((a, idx))
            stack.append((idx, b))
    return [p for p, k in zip(pts, keep) if k]


def main():
    topo = json.load(open(sys.argv[1]))
    arcs = decode_arcs(topo)
    parts = []
    for poly in polygons(topo["objects"]["land"]):
        for ring in poly:
            ll = ring_points(ring, arcs)
            if all(lat < BOTTOM for _, lat in ll):
                continue
            # Rings across the antimeridian (Russia, Fiji): unwrap longitudes
            # so the ring is continuous, then also draw it shifted by a
            # full turn; the map's viewBox clips what lies outside.
            un = [ll[0]]
            for lon, lat in ll[1:]:
                plon = un[-1][0]
                while lon - plon > 180:
                    lon -= 360
                while lon - plon < -180:
                    lon += 360
                un.append((lon, lat))
            lons = [lon for lon, _ in un]
            shifts = [0]
            if max(lons) > 180:
                shifts.append(-360)
            if min(lons) < -180:
                shifts.append(360)
            for shift in shifts:
                part = ring_path(un, shift)
                if part:
                    parts.append(part)
    sys.stdout.write("".join(parts) + "\n")


def ring_path(ll, shift):
    """One ring as `M x y l dx dy ... z`, or None when it collapses."""
    pts = [((lon + shift + 180) * SCALE, (TOP - lat) * SCALE) for lon, lat in ll]
    # Split the closed ring at its farthest point so DP keeps its shape.
    far = max(range(len(pts)), key=lambda i: (pts[i][0] - pts[0][0]) ** 2 + (pts[i][1] - pts[0][1]) ** 2)
    simp = dp(pts[: far + 1], TOL)[:-1] + dp(pts[far:], TOL)
    q = []
    for x, y in simp:
        p = (round(x), round(y))
        if not q or q[-1] != p:
            q.append(p)
    if len(q) > 1 and q[-1] == q[0]:
        q.pop()
    if len(set(q)) < 3:
        return None
    s = f"M{q[0][0]} {q[0][1]}l"
    prev = q[0]
    nums = []
    for x, y in q[1:]:
        nums += [x - prev[0], y - prev[1]]
        prev = (x, y)
    body = ""
    for n in nums:
        t = str(n)
        body += t if (not body or t.startswith("-")) else " " + t
    return s + body + "z"


if __name__ == "__main__":
    main()
