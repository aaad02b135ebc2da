# (1) DNS: dnsperf against p2pcdn (the Frankfurt authority of the running
# federation: geo + health steering), gdnsd 3 (plugin_geoip, `DYNA geoip!www`
# over the same mmdb, city-auto mode with the five cities' coordinates) and
# knot (the same zone, www answered statically with what p2pcdn answers a
# Singapore client). Sourced by bench/run.sh.

GDNSD_IP=127.0.2.1
KNOT_IP=127.0.3.1
DNS_CLIENT=127.3.0.9 # a resolver in Singapore (test world: 127.3.0.0/16)

dns_write_configs() {
    local d=$WORK/gdnsd k=$WORK/knot
    mkdir -p "$d/zones" "$d/geoip" "$d/run" "$d/state" "$k/db" "$k/run"
    cp "$ROOT/geodata/test/steering-test-city.mmdb" "$d/geoip/"
    cat > "$d/config" << EOF
options => {
  listen => [ $GDNSD_IP ]
  dns_port => $DNS_PORT
  udp_threads => 2
  tcp_threads => 2
  run_dir => $d/run
  state_dir => $d/state
}
plugins => {
  geoip => {
    maps => {
      world => {
        geoip2_db => steering-test-city.mmdb
        datacenters => [ fra, nyc, sin, sao, syd ]
        auto_dc_coords => {
          fra => [ 50.11, 8.68 ]
          nyc => [ 40.71, -74.01 ]
          sin => [ 1.35, 103.82 ]
          sao => [ -23.55, -46.63 ]
          syd => [ -33.87, 151.21 ]
        }
      }
    }
    resources => {
      www => {
        map => world
        # the same two addresses p2pcdn answers (nearest first) for each city
        dcmap => {
          fra => [ 127.1.0.1, 127.2.0.1 ]
          nyc => [ 127.2.0.1, 127.1.0.1 ]
          sin => [ 127.3.0.1, 127.5.0.1 ]
          sao => [ 127.4.0.1, 127.2.0.1 ]
          syd => [ 127.5.0.1, 127.3.0.1 ]
        }
      }
    }
  }
}
EOF
    # The demo zone, with www as a dynamic geoip resource (gdnsd) or static (knot).
    grep -v '^;' "$FED/frankfurt/zones/demo.p2pcdn.test.zone" \
        | sed -e 's/^www[[:space:]].*/www         IN DYNA  geoip!www/' > "$d/zones/demo.p2pcdn.test"
    grep -v '^;' "$FED/frankfurt/zones/demo.p2pcdn.test.zone" \
        | sed -e 's/^www[[:space:]].*/www         IN A     127.3.0.1\nwww         IN A     127.5.0.1/' \
            > "$k/demo.p2pcdn.test.zone"
    cat > "$k/knot.conf" << EOF
server:
    listen: $KNOT_IP@$DNS_PORT
    udp-workers: 2
    tcp-workers: 2
    background-workers: 1
    rundir: $k/run
log:
  - target: stderr
    any: warning
database:
    storage: $k/db
template:
  - id: default
    storage: $k
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: demo.p2pcdn.test
    file: demo.p2pcdn.test.zone
EOF
    # Query files: the steered name; an NXDOMAIN-heavy mix (9 of 10 names do not exist).
    echo "$SITE A" > "$WORK/dns-steered.txt"
    python3 - "$WORK/dns-nxmix.txt" "$SITE" << 'EOF'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(20000):
        if i % 10 == 0:
            f.write(f"{sys.argv[2]} A\n")
        else:
            f.write(f"nx{i * 7919 % 1000003:x}.demo.p2pcdn.test A\n")
EOF
}

# dns_one SYSTEM SERVER_IP PID QUERYFILE MIXNAME RUN [dnsperf args...]
dns_one() {
    local sys=$1 ip=$2 pid=$3 qf=$4 mix=$5 run=$6
    shift 6
    local c0 c1 t0 t1 out qps done lost
    c0=$(cpu_ticks "$pid")
    t0=$(now)
    out=$(dnsperf -s "$ip" -p "$DNS_PORT" -a "$DNS_CLIENT" -d "$qf" -l "$DURATION" \
        -T 1 -c 8 -q 256 -t 2 -e "$@" 2>&1) || true
    t1=$(now)
    c1=$(cpu_ticks "$pid")
    echo "$out" > "$WORK/logs/dnsperf-$mix-$sys-$run.log"
    qps=$(echo "$out" | awk '/Queries per second/{print $4}')
    done=$(echo "$out" | awk '/Queries completed/{print $3}')
    lost=$(echo "$out" | awk '/Queries lost/{print $3}')
    if [ -z "$qps" ] || [ -z "$done" ] || [ "$done" = 0 ]; then
        log "dnsperf against $sys gave no result (see $WORK/logs/dnsperf-$mix-$sys-$run.log)"
        return 0
    fi
    record "dns-$mix" "queries/s" "$sys" "$run" "$(calc "round($qps)")" "q/s"
    record "dns-$mix" "server CPU per answer" "$sys" "$run" \
        "$(calc "round(($c1 - $c0) / $CLK_TCK / $done * 1e6, 2)")" "us"
    record "dns-$mix" "answers per server CPU-second" "$sys" "$run" \
        "$(calc "round($done / max(($c1 - $c0) / $CLK_TCK, 0.01))")" "answers/s"
    record "dns-$mix" "server CPU" "$sys" "$run" "$(calc "round(($c1 - $c0) / $CLK_TCK / ($t1 - $t0) * 100)")" "%"
    record "dns-$mix" "lost" "$sys" "$run" "$(calc "round($lost / ($done + $lost) * 100, 3)")" "%"
}

section_dns() {
    log "== DNS: p2pcdn vs gdnsd (geoip DYNA) vs knot (static)"
    dns_write_configs
    gdnsd -c "$WORK/gdnsd" checkconf > "$WORK/logs/gdnsd-checkconf.log" 2>&1 || die "gdnsd checkconf failed (see $WORK/logs/gdnsd-checkconf.log)"
    start_bg "$WORK/logs/gdnsd.log" gdnsd -c "$WORK/gdnsd" start
    local gpid=$LAST_PID
    start_bg "$WORK/logs/knotd.log" knotd -c "$WORK/knot/knot.conf"
    local kpid=$LAST_PID
    local ppid=${FED_PID[frankfurt]} ip
    for ip in "$GDNSD_IP" "$KNOT_IP" 127.1.0.1; do
        wait_until 20 dig +short +time=1 +tries=1 -b "$DNS_CLIENT" @"$ip" -p "$DNS_PORT" "$SITE" A \
            || die "no DNS answer from $ip"
    done
    # Same answer set from all three (order may differ: gdnsd lists a multi-address set in its own order).
    local a
    for ip in 127.1.0.1 "$GDNSD_IP" "$KNOT_IP"; do
        a=$(steered_answer "$DNS_CLIENT" "$ip" | tr ' ' '\n' | sort | tr '\n' ' ')
        log "  answer for a Singapore client from $ip: $a"
    done
    local mix run
    for mix in steered nxmix tcp; do
        local qf=$WORK/dns-steered.txt extra=()
        [ "$mix" = nxmix ] && qf=$WORK/dns-nxmix.txt
        [ "$mix" = tcp ] && extra=(-m tcp)
        for run in $(seq 1 "$RUNS"); do
            dns_one p2pcdn 127.1.0.1 "$ppid" "$qf" "$mix" "$run" "${extra[@]}"
            dns_one gdnsd "$GDNSD_IP" "$gpid" "$qf" "$mix" "$run" "${extra[@]}"
            dns_one knot "$KNOT_IP" "$kpid" "$qf" "$mix" "$run" "${extra[@]}"
        done
    done
    # p99 latency at half of gdnsd's peak (its median steered q/s in this run):
    # the same paced load (-Q) against p2pcdn and gdnsd, every response's
    # latency printed (-v) and the 99th percentile taken.
    local peak rate
    peak=$(awk -F'\t' '$1 == "dns-steered" && $2 == "queries/s" && $3 == "gdnsd" {print $5}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
    if [ -n "$peak" ]; then
        rate=$(calc "int($peak / 2)")
        log "  p99 latency at $rate q/s (half of gdnsd's $peak)"
        for run in $(seq 1 "$RUNS"); do
            dns_p99 p2pcdn 127.1.0.1 "$rate" "$run"
            dns_p99 gdnsd "$GDNSD_IP" "$rate" "$run"
        done
    fi
    stop_pid "$gpid"
    stop_pid "$kpid"
}

# dns_p99 SYSTEM SERVER_IP RATE RUN: steered queries paced at RATE q/s,
# every latency printed by dnsperf -v; records p50, p99 and lost.
dns_p99() {
    local sys=$1 ip=$2 rate=$3 run=$4 logf stats
    logf=$WORK/logs/dnsperf-p99-$sys-$run.log
    dnsperf -s "$ip" -p "$DNS_PORT" -a "$DNS_CLIENT" -d "$WORK/dns-steered.txt" -l "$DURATION" \
        -T 1 -c 8 -q 256 -t 2 -e -Q "$rate" -v > "$logf" 2>&1 || true
    stats=$(python3 "$HERE/latency.py" "$logf")
    if [ -z "$stats" ]; then
        log "dnsperf -v against $sys gave no latencies (see $logf)"
        return 0
    fi
    set -- $stats
    record dns-p99 "p50 latency" "$sys" "$run" "$1" "ms"
    record dns-p99 "p99 latency" "$sys" "$run" "$2" "ms"
    record dns-p99 "lost" "$sys" "$run" "$3" "%"
    # The per-query lines are large; keep the summary only.
    grep -v '^> ' "$logf" > "$logf.summary" && mv "$logf.summary" "$logf"
}
