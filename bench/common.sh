# Helpers shared by the benchmark sections (sourced by bench/run.sh).
# Every process a section starts is recorded in PIDS and ended by PID on exit.

PIDS=()
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Float arithmetic: calc '1/3'
calc() { python3 -c "print($1)"; }

# record SECTION METRIC SYSTEM RUN VALUE UNIT
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >> "$RESULTS"
    log "  $1 | $2 | $3 | run $4: $5 $6"
}

# start_bg LOGFILE CMD...: starts CMD in the background; its PID is left in
# LAST_PID and remembered for cleanup. (Not in $(...): that would lose both.)
start_bg() {
    local logf=$1
    shift
    "$@" > "$logf" 2>&1 < /dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Ends one process we started: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill "$pid" 2> /dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2> /dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2> /dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2> /dev/null || true
    done
    wait 2> /dev/null || true
}

# CPU ticks (utime+stime) of a process and its direct children (nginx workers).
cpu_ticks() {
    local pid=$1 total=0 p t
    for p in $pid $(ps -o pid= --ppid "$pid" 2> /dev/null || true); do
        t=$(awk '{print $14+$15}' "/proc/$p/stat" 2> /dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# wait_until TIMEOUT_S CMD...: polls CMD every 0.1 s; fails after TIMEOUT_S.
wait_until() {
    local limit=$1
    shift
    local end=$(($(now_ms) + limit * 1000))
    while ! "$@" > /dev/null 2>&1; do
        [ "$(now_ms)" -lt "$end" ] || return 1
        sleep 0.1
    done
}

# Is something listening on TCP ADDR:PORT?
tcp_listening() { ss -Hlnt "src $1:$2" | grep -q .; }
udp_bound() { ss -Hlnu "src $1:$2" | grep -q .; }

# Steered answer (space-separated A records) for a client in city N from authority IP.
steered_answer() {
    local client=$1 authority=$2
    dig +short +time=1 +tries=1 -b "$client" @"$authority" -p "$DNS_PORT" "$SITE" A 2> /dev/null \
        | grep -E '^[0-9.]+$' | tr '\n' ' '
}

# The WRKJSON summary line of a wrk output file (JSON text).
wrk_json() { grep '^WRKJSON ' "$1" | tail -1 | cut -d' ' -f2-; }
# jexpr JSON EXPR: evaluates EXPR (Python) with the JSON object's keys as names.
jexpr() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))' "$1" "$2"; }

# gen_file PATH MIB SEED: deterministic pseudo-random content (AES-CTR keystream).
gen_file() {
    { openssl enc -aes-128-ctr -pass "pass:$3" -nosalt -pbkdf2 -in /dev/zero 2> /dev/null || true; } \
        | head -c $(($2 * 1024 * 1024)) > "$1"
}
