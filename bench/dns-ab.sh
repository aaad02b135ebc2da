#!/usr/bin/env bash
# A/B of DNS CPU per answer on a shared machine: p2pcdn binaries (or
# wrapper scripts that exec one) and gdnsd, measured in turn within the
# same minutes, several rounds.
#
#   bash bench/dns-ab.sh BINARY_A BINARY_B [BINARY...]
#
# Environment: ROUNDS [3], SECS per measurement [5], MIX [steered|nxmix|tcp],
# RATE (q/s: pace dnsperf with -Q and print p50/p99 latency instead, as
# bench/run.sh's dns-p99 does),
# PROFILE=FILE (perf record -g of the last binary's last round into FILE),
# LATLOG=DIR (keep each paced run's dnsperf -v output there),
# PORT_OFFSET [100] (the demo's ports + this, so a bench/run.sh of someone
# else on the demo's ports is not disturbed), WORK [mktemp], KEEP=1.
#
# Per round and system: the five-city demo federation (prepared once by
# `p2pcdn demo --no-serve`) is served by that binary; dnsperf
# (`-T 1 -c 8 -q 256`, the bench/run.sh load, a Singapore resolver
# 127.3.0.9) sends the mix to Frankfurt for SECS seconds while
# `perf stat -e task-clock,context-switches` counts the server process.
# gdnsd (bench/dns.sh's configuration) stays up and is measured between
# the first two binaries, while the second one's federation runs (as in
# bench/run.sh, where gdnsd shares the machine with the demo federation). Prints one line per measurement: system, answers,
# CPU seconds, answers per CPU-second, context switches per answer, load.
set -Eeuo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
[ ${#BINS[@]} -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [BINARY...]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3} SECS=${SECS:-5} MIX=${MIX:-steered} PORT_OFFSET=${PORT_OFFSET:-100}
DNS_PORT=$((5300 + PORT_OFFSET)) HTTPS_PORT=$((8443 + PORT_OFFSET)) HTTP_PORT=$((8080 + PORT_OFFSET))
. "$HERE/common.sh"
. "$HERE/fed.sh"
. "$HERE/dns.sh"
for c in dnsperf gdnsd perf dig; do command -v "$c" > /dev/null || die "missing $c"; done
WORK=${WORK:-$(mktemp -d /tmp/p2pcdn-dnsab.XXXXXX)}
mkdir -p "$WORK/logs"
trap 'cleanup; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
FED=$WORK/fed
"${BINS[0]}" --log warn demo --dir "$FED" --no-serve > "$WORK/logs/demo.log" 2>&1 || die "demo --no-serve failed"
if [ "$PORT_OFFSET" != 0 ]; then
    for c in "${CITIES[@]}"; do
        sed -i -e "s/:5300\b/:$DNS_PORT/g" -e "s/:8443\b/:$HTTPS_PORT/g" -e "s/:8080\b/:$HTTP_PORT/g" \
            "$FED/$c/p2pcdn.toml"
    done
fi
dns_write_configs
start_bg "$WORK/logs/gdnsd.log" gdnsd -c "$WORK/gdnsd" start
GPID=$LAST_PID
QF=$WORK/dns-$MIX.txt EXTRA=()
[ "$MIX" = tcp ] && QF=$WORK/dns-steered.txt EXTRA=(-m tcp)

# latency NAME IP PID: steered queries paced at RATE, p50/p99 (ms),
# lost (%) and the server's CPU (cores: task-clock over the run).
latency() {
    local name=$1 ip=$2 pid=$3 ps cores
    perf stat -x, -e task-clock -p "$pid" -o "$WORK/perf.txt" -- sleep "$SECS" &
    ps=$!
    dnsperf -s "$ip" -p "$DNS_PORT" -a "$DNS_CLIENT" -d "$QF" -l "$SECS" \
        -T 1 -c 8 -q 256 -t 2 -e -Q "$RATE" -v > "$WORK/lat.log" 2>&1 || true
    wait "$ps" || true
    cores=$(awk -F, -v s="$SECS" '$3 == "task-clock" {printf "%.2f", $1 / 1000 / s}' "$WORK/perf.txt")
    [ -n "${LATLOG:-}" ] && cp "$WORK/lat.log" "$LATLOG/$name-$(date +%s%N).log"
    set -- $(python3 "$HERE/latency.py" "$WORK/lat.log")
    printf '%-10s at %s q/s: p50 %s ms  p99 %s ms  lost %s %%  server cores %s  load %s\n' "$name" "$RATE" "$1" "$2" "$3" \
        "$cores" "$(cut -d' ' -f1 /proc/loadavg)"
}

# measure NAME IP PID
measure() {
    if [ -n "${RATE:-}" ]; then
        latency "$1" "$2" "$3"
        return
    fi
    local name=$1 ip=$2 pid=$3 out ps rb0 rb1
    rb0=$(awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp)
    perf stat -x, -e task-clock,context-switches -p "$pid" -o "$WORK/perf.txt" -- sleep "$SECS" &
    ps=$!
    out=$(dnsperf -s "$ip" -p "$DNS_PORT" -a "$DNS_CLIENT" -d "$QF" -l "$SECS" \
        -T 1 -c 8 -q 256 -t 2 -e "${EXTRA[@]}" 2>&1) || true
    wait "$ps" || true
    rb1=$(awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp)
    python3 - "$name" "$(cut -d' ' -f1 /proc/loadavg)" "$WORK/perf.txt" "$((rb1 - rb0))" << EOF
import sys
name, load, perf = sys.argv[1], sys.argv[2], sys.argv[3]
out = """$out"""
done = lost = 0
for l in out.splitlines():
    w = l.split()
    if l.strip().startswith("Queries completed:"): done = int(w[2])
    if l.strip().startswith("Queries lost:"): lost = int(w[2])
ms = cs = 0.0
for l in open(perf):
    f = l.split(",")
    if len(f) > 2 and f[2] == "task-clock": ms = float(f[0])
    if len(f) > 2 and f[2] == "context-switches": cs = float(f[0])
cpu = ms / 1000
print(f"{name:10} answers {done:8d} lost {lost:4d} cpu {cpu:6.3f} s  answers/cpu-s {done / max(cpu, 1e-9):9.0f}  cs/answer {cs / max(done, 1):.3f}  load {load}  rcvbuf drops (whole machine) {sys.argv[4]}")
EOF
}

serve() {
    P2PCDN=$1
    fed_start
    wait_until 30 bash -c "dig +short +time=1 +tries=1 -b $DNS_CLIENT @127.1.0.1 -p $DNS_PORT $SITE A | grep -q 127.3.0.1" \
        || die "no steered answer from $P2PCDN"
    sleep 3
}

wait_until 20 dig +short +time=1 +tries=1 @"$GDNSD_IP" -p "$DNS_PORT" "$SITE" A || die "gdnsd does not answer"
for r in $(seq 1 "$ROUNDS"); do
    echo "# round $r ($MIX, ${SECS}s)"
    for i in "${!BINS[@]}"; do
        serve "${BINS[$i]}"
        # gdnsd shares the machine with a running federation, as in bench/run.sh.
        [ "$i" = 1 ] && measure gdnsd "$GDNSD_IP" "$GPID"
        if [ -n "${PROFILE:-}" ] && [ "$r" = "$ROUNDS" ] && [ "$i" = $((${#BINS[@]} - 1)) ]; then
            perf record -F 1999 -g -o "$PROFILE" -p "${FED_PID[frankfurt]}" -- sleep "$SECS" 2> /dev/null &
            PERF_PID=$!
        fi
        measure "$(basename "${BINS[$i]}")" 127.1.0.1 "${FED_PID[frankfurt]}"
        [ -n "${PERF_PID:-}" ] && { wait "$PERF_PID" || true; PERF_PID=; }
        fed_stop
    done
done
stop_pid "$GPID"
