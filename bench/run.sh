#!/usr/bin/env bash
# Side-by-side benchmarks of p2pcdn against reference systems, on this machine,
# in one run. See bench/README.md. Usage:
#
#   bash bench/run.sh                 # full run: 3 runs of 10 s per comparison (~25 min)
#   QUICK=1 bash bench/run.sh         # smoke run: 1 short run of each (< 3 min)
#
# Environment (defaults in brackets, QUICK=1 values after the slash):
#   RUNS [3/1]  DURATION seconds per DNS/HTTPS run [10/3]  SECTIONS [all]
#   KILLS failover kills [20/3]  DATA_MIB size for hashing and replication [1024/256]
#   FLASH_DURATION [60/10]  FLASH_CONNS connections per city [16]
#   P2PCDN binary [target/release/p2pcdn, built with cargo if missing]
#   WORK scratch dir [mktemp]  KEEP=1 keeps it  RESULTS_MD also write the summary here
#
# Installs nothing. Needs: dnsperf gdnsd knot nginx wrk b3sum dig curl nc openssl python3.
# Only loopback addresses are used (127.1-5.0.1 for the federation, 127.0.2-5.1
# for the reference servers); every load is bounded in time.
set -Eeuo pipefail
trap 'echo "bench/run.sh: failed at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND" >&2' ERR

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1} DURATION=${DURATION:-3} KILLS=${KILLS:-3} DATA_MIB=${DATA_MIB:-256}
    FLASH_DURATION=${FLASH_DURATION:-10}
else
    RUNS=${RUNS:-3} DURATION=${DURATION:-10} KILLS=${KILLS:-20} DATA_MIB=${DATA_MIB:-1024}
    FLASH_DURATION=${FLASH_DURATION:-60}
fi
FLASH_CONNS=${FLASH_CONNS:-16}
SECTIONS=${SECTIONS:-dns https hash flash failover replication}
FAILOVER_LIMIT=${FAILOVER_LIMIT:-30} # seconds: a kill not noticed by then counts as this
REPL_LIMIT=${REPL_LIMIT:-600}
# Fixed by `p2pcdn demo`.
DNS_PORT=5300 HTTPS_PORT=8443 HTTP_PORT=8080
[ $((DATA_MIB % 8)) -eq 0 ] || { echo "DATA_MIB must be a multiple of 8" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$HERE/common.sh"
. "$HERE/fed.sh"
. "$HERE/dns.sh"
. "$HERE/https.sh"
. "$HERE/hash.sh"
. "$HERE/failover.sh"
. "$HERE/replication.sh"
. "$HERE/flash.sh"

# ---- preflight -------------------------------------------------------------
need=(dig curl openssl python3 ss)
for s in $SECTIONS; do
    case $s in
        dns) need+=(dnsperf gdnsd knotd) ;;
        https | flash) need+=(nginx wrk) ;;
        hash) need+=(b3sum) ;;
        replication) need+=(nc nginx) ;;
        failover) ;;
        *) die "unknown section '$s' (dns https hash flash failover replication)" ;;
    esac
done
missing=()
for c in "${need[@]}"; do command -v "$c" > /dev/null || missing+=("$c"); done
[ ${#missing[@]} -eq 0 ] || die "missing commands: ${missing[*]} (see bench/README.md for the packages)"
for ip in 127.1.0.1 127.2.0.1 127.3.0.1 127.4.0.1 127.5.0.1 127.0.2.1 127.0.3.1 127.0.4.1; do
    for p in $DNS_PORT $HTTPS_PORT $HTTP_PORT; do
        if tcp_listening "$ip" "$p" || udp_bound "$ip" "$p"; then
            die "$ip:$p is in use (another p2pcdn demo or benchmark running?): stop it first"
        fi
    done
done

WORK=${WORK:-$(mktemp -d /tmp/p2pcdn-bench.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/bin"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
trap 'cleanup; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT

# Snapshot the binary: a concurrent `cargo build` must not swap it mid-run.
if [ -z "${P2PCDN:-}" ]; then
    if [ ! -x "$ROOT/target/release/p2pcdn" ]; then
        log "building target/release/p2pcdn"
        (cd "$ROOT" && cargo build --release --quiet)
    fi
    P2PCDN=$ROOT/target/release/p2pcdn
fi
cp "$P2PCDN" "$WORK/bin/p2pcdn"
P2PCDN=$WORK/bin/p2pcdn

# ---- machine facts ---------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: QUICK=$QUICK RUNS=$RUNS DURATION=$DURATION KILLS=$KILLS DATA_MIB=$DATA_MIB FLASH_DURATION=$FLASH_DURATION FLASH_CONNS=$FLASH_CONNS SECTIONS='$SECTIONS' bash bench/run.sh"
    echo "p2pcdn: $("$P2PCDN" --version) (git $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')$(git -C "$ROOT" diff --quiet -- src 2> /dev/null || echo ', src modified'))"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    for p in dnsperf gdnsd knot nginx wrk; do
        echo "$p: $(dpkg-query -W -f='${Version}' "$p" 2> /dev/null || echo '?')"
    done
    echo "b3sum: $(b3sum --version 2> /dev/null || echo '?')"
} > "$WORK/machine.txt"
cat "$WORK/machine.txt" >&2

# ---- the federation --------------------------------------------------------
fed_prepare
fed_start
log "waiting until all five instances serve version $PUB_VERSION"
fed_wait_version "$PUB_VERSION" 120

for s in $SECTIONS; do
    "section_$s"
done

nginx_stop
fed_stop
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$WORK/machine.txt"

# ---- summary ---------------------------------------------------------------
{
    echo "## Results"
    echo
    sed 's/^/    /' "$WORK/machine.txt"
    echo
    python3 "$HERE/summarize.py" "$RESULTS"
} > "$WORK/summary.md"
cat "$WORK/summary.md"
if [ -n "${RESULTS_MD:-}" ]; then
    cp "$WORK/summary.md" "$RESULTS_MD"
    cp "$RESULTS" "${RESULTS_MD%.md}.tsv"
fi
