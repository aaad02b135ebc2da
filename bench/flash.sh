# (6) Flash crowd: clients in the five cities load the site's page
# (/index.html, /style.css, /img/logo.png in turn) for FLASH_DURATION seconds,
# one wrk per city (-t1 -c FLASH_CONNS), against (a) one nginx origin, (b) the
# five-instance federation, each city's wrk aimed at the first address DNS
# steers that city to (dig -b 127.N.0.9 just before the run). Sourced by bench/run.sh.

FLASH_PATHS=(/index.html /style.css /img/logo.png)

# flash_run SYSTEM RUN TARGET_IP_0 .. TARGET_IP_4
flash_run() {
    local sys=$1 run=$2
    shift 2
    local targets=("$@") pids=() i
    for i in 0 1 2 3 4; do
        start_bg "$WORK/logs/flash-$sys-$run-${CITIES[$i]}.log" \
            wrk -t1 -c"$FLASH_CONNS" -d"${FLASH_DURATION}s" --timeout 5s -s "$HERE/flash.lua" \
            -H "Host: $SITE" "https://${targets[$i]}:$HTTPS_PORT/" -- "${FLASH_PATHS[@]}"
        pids+=("$LAST_PID")
    done
    for i in 0 1 2 3 4; do
        wait "${pids[$i]}" 2> /dev/null || true
    done
    local jsons=()
    for i in 0 1 2 3 4; do
        local j
        j=$(wrk_json "$WORK/logs/flash-$sys-$run-${CITIES[$i]}.log")
        [ -n "$j" ] || die "flash: no wrk result for ${CITIES[$i]} (see $WORK/logs/flash-$sys-$run-${CITIES[$i]}.log)"
        jsons+=("$j")
        log "  ${CITIES[$i]} -> ${targets[$i]}: $(jexpr "$j" 'f"{requests} req, p50 {p50_us/1000:.2f} ms, p99 {p99_us/1000:.2f} ms, errors {connect+read+write+status+timeout}"')"
    done
    local summary
    summary=$(python3 - "${targets[@]}" "${jsons[@]}" << 'EOF'
import json, statistics, sys
targets, runs = sys.argv[1:6], [json.loads(x) for x in sys.argv[6:11]]
secs = max(r["duration_us"] for r in runs) / 1e6
total = sum(r["requests"] for r in runs)
origin = sum(r["requests"] for t, r in zip(targets, runs) if t in ("127.1.0.1", "127.0.4.1"))
errors = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] for r in runs)
p50 = statistics.median(r["p50_us"] for r in runs) / 1000
p99 = max(r["p99_us"] for r in runs) / 1000
print(round(total / secs), round(p50, 2), round(p99, 2), errors, round((1 - origin / total) * 100, 1) if total else 0)
EOF
)
    local rps p50 p99 errors offload
    read -r rps p50 p99 errors offload <<< "$summary"
    record flash "served requests/s" "$sys" "$run" "$rps" "req/s"
    record flash "p50 latency (median of cities)" "$sys" "$run" "$p50" "ms"
    record flash "p99 latency (worst city)" "$sys" "$run" "$p99" "ms"
    record flash "errors" "$sys" "$run" "$errors" "count"
    record flash "origin offload" "$sys" "$run" "$offload" "%"
}

section_flash() {
    log "== Flash crowd: 5 cities x wrk -c$FLASH_CONNS for ${FLASH_DURATION}s: one nginx origin vs the federation"
    nginx_start
    local run i
    for run in $(seq 1 "$RUNS"); do
        flash_run nginx "$run" "$NGINX_IP" "$NGINX_IP" "$NGINX_IP" "$NGINX_IP" "$NGINX_IP"
        sleep 2
        local steered=() a
        for i in 0 1 2 3 4; do
            a=$(steered_answer "127.$((i + 1)).0.9" "$(city_ip "$i")")
            a=${a%% *}
            [ -n "$a" ] || die "flash: no steered answer for ${CITIES[$i]}"
            steered+=("$a")
        done
        log "  steering: ${CITIES[*]} -> ${steered[*]}"
        flash_run p2pcdn "$run" "${steered[@]}"
        sleep 2
    done
}
