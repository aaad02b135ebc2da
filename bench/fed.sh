# The five-instance federation (sourced by bench/run.sh): prepared by
# `p2pcdn demo --no-serve`, then one `p2pcdn serve` process per city.

CITIES=(frankfurt newyork singapore saopaulo sydney)
SITE=www.demo.p2pcdn.test
declare -A FED_PID

city_ip() { echo "127.$(($1 + 1)).0.1"; } # city index 0..4
METRICS_PORT=9464 # the origin's (frankfurt's) Prometheus endpoint

# A counter of the origin's metrics (0 when absent).
origin_metric() {
    curl -s --max-time 2 "http://$(city_ip 0):$METRICS_PORT/metrics" \
        | awk -v m="$1" '$1 == m { printf "%.0f\n", $2; found = 1 } END { if (!found) print 0 }'
}

fed_prepare() {
    FED=$WORK/fed
    log "preparing the federation in $FED (p2pcdn demo --no-serve)"
    "$P2PCDN" --log warn demo --dir "$FED" --no-serve > "$WORK/logs/demo-prepare.log" 2>&1 \
        || die "p2pcdn demo --no-serve failed (see $WORK/logs/demo-prepare.log)"
    # Benchmark files next to the demo's page, stylesheet, image and 20 MiB file.
    mkdir -p "$FED/site/files"
    gen_file "$FED/site/files/1k.bin.tmp" 1 onek && head -c 1024 "$FED/site/files/1k.bin.tmp" > "$FED/site/files/1k.bin"
    rm -f "$FED/site/files/1k.bin.tmp"
    gen_file "$FED/site/files/100m.bin" 100 hundred
    # The origin's metrics (its peer upload bytes, for the replication section).
    printf '\n[metrics]\nlisten = ["%s:%s"]\n' "$(city_ip 0)" "$METRICS_PORT" >> "$FED/frankfurt/p2pcdn.toml"
    fed_publish "$FED/site"
}

# fed_publish DIR: publishes DIR as the site's new version at the origin.
# Sets PUB_VERSION (from publish's "published <site> version N" line) and PUB_SECS.
fed_publish() {
    local t0 t1 out
    t0=$(now)
    out=$("$P2PCDN" --log warn publish --quiet --config "$FED/frankfurt/p2pcdn.toml" --site "$SITE" \
        --key "$FED/owner.key" "$1" 2>> "$WORK/logs/publish.log") || die "publish of $1 failed (see $WORK/logs/publish.log)"
    t1=$(now)
    echo "$out" >> "$WORK/logs/publish.log"
    PUB_VERSION=$(echo "$out" | sed -n 's/^published .* version \([0-9]*\):.*/\1/p')
    [ -n "$PUB_VERSION" ] || die "publish printed no version: $out"
    PUB_SECS=$(calc "$t1 - $t0")
}

# The version a node serves, from its health endpoint (plain HTTP), or nothing.
served_version() {
    curl -s --max-time 1 "http://$1:$HTTP_PORT/.well-known/p2pcdn/v1/health" 2> /dev/null \
        | python3 -c 'import json,sys
try:
    d = json.load(sys.stdin)
    print(max([s["version"] for s in d.get("sites", []) if s["site"] == sys.argv[1]] or [""]))
except Exception:
    pass' "$SITE"
}

# Newest version published at the origin (from its database, via status --json).
origin_version() {
    "$P2PCDN" --log error status --config "$FED/frankfurt/p2pcdn.toml" --json 2> /dev/null \
        | python3 -c 'import json,sys
d = json.load(sys.stdin)
print(max([h["version"] for h in d.get("holds", []) if h["site"] == sys.argv[1]] or [""]))' "$SITE"
}

fed_start_one() {
    local i=$1 c=${CITIES[$1]}
    start_bg "$WORK/logs/serve-$c.log" "$P2PCDN" --log "${P2PCDN_LOG:-warn}" serve --config "$FED/$c/p2pcdn.toml"
    FED_PID[$c]=$LAST_PID
}

fed_start() {
    local i
    for i in 0 1 2 3 4; do
        fed_start_one "$i"
    done
    for i in 0 1 2 3 4; do
        wait_until 30 udp_bound "$(city_ip $i)" "$DNS_PORT" || die "${CITIES[$i]} did not start (see $WORK/logs/serve-${CITIES[$i]}.log)"
        wait_until 30 tcp_listening "$(city_ip $i)" "$HTTPS_PORT" || die "${CITIES[$i]} HTTPS did not start"
    done
}

# Whether node $1 serves version $2: one curl and a grep, polled every
# 0.1 s by the replication section while the transfer runs (a python3
# start per check, as served_version does, took a third of a core from
# the processes being timed). The health JSON's site entries are
# {"site":...,"version":...} (serde_json objects keep their keys sorted).
has_version() {
    curl -s --max-time 1 "http://$1:$HTTP_PORT/.well-known/p2pcdn/v1/health" 2> /dev/null \
        | grep -qF "{\"site\":\"$SITE\",\"version\":$2}"
}

# Waits until all five serve version $1 (bounded by $2 seconds).
fed_wait_version() {
    local v=$1 limit=$2 i
    for i in 0 1 2 3 4; do
        wait_until "$limit" has_version "$(city_ip $i)" "$v" \
            || die "${CITIES[$i]} does not serve version $v after ${limit}s"
    done
}

fed_stop() {
    local c
    for c in "${CITIES[@]}"; do
        stop_pid "${FED_PID[$c]:-}"
    done
}
