# (2) HTTPS: wrk against p2pcdn (the origin instance, 127.1.0.1) and nginx
# (1 worker, access_log off, sendfile on, keepalive_requests 100000), both with
# an ECDSA P-256 certificate from `p2pcdn dev-cert`, HTTP/1.1 keep-alive.
# Also provides nginx for the flash crowd. Sourced by bench/run.sh.

NGINX_IP=127.0.4.1
NGINX_PID=

nginx_setup() {
    local n=$WORK/nginx
    mkdir -p "$n/tmp" "$n/www"
    "$P2PCDN" --log warn dev-cert --ca-dir "$FED/tls" --out nginx "$SITE" "$NGINX_IP" > /dev/null
    # The same files the federation serves (the published site folder).
    cp -r "$FED/site/." "$n/www/"
    cat > "$n/nginx.conf" << EOF
user root;
worker_processes 1;
daemon off;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 65;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    server {
        listen $NGINX_IP:$HTTPS_PORT ssl;
        server_name $SITE;
        ssl_certificate $FED/tls/nginx.pem;
        ssl_certificate_key $FED/tls/nginx.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $n/www;
    }
}
EOF
}

nginx_start() {
    [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2> /dev/null && return 0
    [ -f "$WORK/nginx/nginx.conf" ] || nginx_setup
    start_bg "$WORK/logs/nginx.log" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
    NGINX_PID=$LAST_PID
    wait_until 20 tcp_listening "$NGINX_IP" "$HTTPS_PORT" || die "nginx did not start (see $WORK/logs/nginx.log, $WORK/nginx/error.log)"
}

nginx_stop() {
    stop_pid "$NGINX_PID"
    NGINX_PID=
}

# https_one SYSTEM IP PID FILE TEST RUN CONNS
https_one() {
    local sys=$1 ip=$2 pid=$3 path=$4 test=$5 run=$6 conns=$7
    local out=$WORK/logs/wrk-$test-$sys-$run.log j c0 c1 t0 t1
    c0=$(cpu_ticks "$pid")
    t0=$(now)
    wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$HERE/wrk-report.lua" \
        -H "Host: $SITE" "https://$ip:$HTTPS_PORT$path" > "$out" 2>&1 || true
    t1=$(now)
    c1=$(cpu_ticks "$pid")
    j=$(wrk_json "$out")
    if [ -z "$j" ]; then
        log "wrk against $sys gave no result (see $out)"
        return 0
    fi
    local errors cpu_s
    errors=$(jexpr "$j" 'connect + read + write + status + timeout')
    cpu_s=$(calc "max(($c1 - $c0) / $CLK_TCK, 0.01)")
    if [ "$test" = https-1k ]; then
        record "$test" "requests/s" "$sys" "$run" "$(jexpr "$j" 'round(requests / (duration_us / 1e6))')" "req/s"
        record "$test" "p99 latency" "$sys" "$run" "$(jexpr "$j" 'round(p99_us / 1000, 2)')" "ms"
        record "$test" "requests per server CPU-second" "$sys" "$run" "$(jexpr "$j" "round(requests / $cpu_s)")" "req"
    else
        record "$test" "throughput" "$sys" "$run" "$(jexpr "$j" 'round(bytes / (duration_us / 1e6) / 1e6)')" "MB/s"
        record "$test" "MB per server CPU-second" "$sys" "$run" "$(jexpr "$j" "round(bytes / 1e6 / $cpu_s)")" "MB"
    fi
    record "$test" "server CPU" "$sys" "$run" "$(calc "round(($c1 - $c0) / $CLK_TCK / ($t1 - $t0) * 100)")" "%"
    record "$test" "errors" "$sys" "$run" "$errors" "count"
    [ "$errors" = 0 ] || log "  (errors: $j)"
}

section_https() {
    log "== HTTPS: p2pcdn vs nginx, 1 KiB (wrk -t1 -c64) and 100 MiB (wrk -t1 -c4)"
    nginx_start
    # Sanity: both serve the same bytes; warm up (first open verifies the blob).
    local ip
    for ip in 127.1.0.1 "$NGINX_IP"; do
        for f in 1k 100m; do
            curl -sf --cacert "$FED/tls/ca.pem" --resolve "$SITE:$HTTPS_PORT:$ip" \
                "https://$SITE:$HTTPS_PORT/files/$f.bin" -o "$WORK/check-$f.bin" \
                || die "GET /files/$f.bin from $ip failed"
            cmp -s "$WORK/check-$f.bin" "$FED/site/files/$f.bin" || die "/files/$f.bin from $ip differs"
        done
    done
    rm -f "$WORK"/check-*.bin
    local run
    for run in $(seq 1 "$RUNS"); do
        https_one p2pcdn 127.1.0.1 "${FED_PID[frankfurt]}" /files/1k.bin https-1k "$run" 64
        https_one nginx "$NGINX_IP" "$NGINX_PID" /files/1k.bin https-1k "$run" 64
    done
    for run in $(seq 1 "$RUNS"); do
        https_one p2pcdn 127.1.0.1 "${FED_PID[frankfurt]}" /files/100m.bin https-100m "$run" 4
        https_one nginx "$NGINX_IP" "$NGINX_PID" /files/100m.bin https-100m "$run" 4
    done
}
