#!/usr/bin/env bash
# CPU per steered answer when clients are many: the five-city demo
# federation (`p2pcdn demo --no-serve`) served by BINARY, then
# bench/ecsload.py sends A queries for the demo site to Frankfurt with ECS
# options cycling over NPREFIX distinct /24s at RATE q/s for SECS seconds,
# and prints Frankfurt's whole-process CPU per answer. dnsperf sends one
# fixed ECS option, so it cannot measure this.
#
#   bash bench/ecs-ab.sh BINARY [RATE=20000] [NPREFIX=4000] [SECS=10]
#
# Uses the demo's ports (DNS 5300 on 127.1.0.1 ...): not beside a
# bench/run.sh. Run it for each binary in turn, several rounds.
set -Eeuo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN=$(realpath "$1") RATE=${2:-20000} NPREFIX=${3:-4000} SECS=${4:-10}
D=$(mktemp -d /tmp/p2pcdn-ecs.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2> /dev/null; wait; rm -rf "$D"' EXIT
"$BIN" --log warn demo --dir "$D/fed" --no-serve > "$D/prep.log" 2>&1 || { cat "$D/prep.log"; exit 1; }
for c in frankfurt newyork singapore saopaulo sydney; do
    "$BIN" --log warn serve --config "$D/fed/$c/p2pcdn.toml" > "$D/$c.log" 2>&1 &
    pids+=($!)
done
sleep 20 # replicated and settled
echo "$(basename "$BIN") $(python3 "$HERE/ecsload.py" 127.1.0.1 5300 www.demo.p2pcdn.test "$RATE" "$SECS" "$NPREFIX" "${pids[0]}")"
