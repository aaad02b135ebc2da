# (5) Replication: publish a new version with DATA_MIB of new content (8 files)
# at the origin of the running federation; time from the end of the publish
# until all four mirrors serve it (their health endpoints list the version,
# i.e. every blob is stored and verified), and the origin's upload: blob
# payload bytes served to peers (p2pcdn_peer_upload_bytes_total) and every
# byte the origin process wrote (wchar of /proc/PID/io: sockets, TLS framing,
# its few disk writes). The bound: the same 4 x DATA_MIB pulled by 4 parallel
# curl streams over HTTPS from one nginx (1 worker), right after on the same
# machine. Also for scale: one curl over HTTPS from the origin (one TLS
# connection, files in sequence), raw TCP (dd | nc) and four fsync'd disk
# copies. Sourced by bench/run.sh.

REPL_NC_IP=127.0.5.1
REPL_NC_PORT=19999

section_replication() {
    log "== Replication: $DATA_MIB MiB published at the origin, until 4 mirrors serve it"
    local run i
    for run in $(seq 1 "$RUNS"); do
        local s=$WORK/repl-$run
        mkdir -p "$s/files"
        # The site's page files stay; the large parts are new for every run.
        cp -r "$FED/site/." "$s/"
        for i in 1 2 3 4 5 6 7 8; do
            gen_file "$s/files/part-$i.bin" $((DATA_MIB / 8)) "repl-$run-$i-$RANDOM"
        done
        local bytes
        bytes=$(du -cb "$s"/files/part-*.bin | tail -1 | cut -f1)
        local v t0 tdone up0 w0 up1 w1 opid=${FED_PID[frankfurt]}
        up0=$(origin_metric p2pcdn_peer_upload_bytes_total)
        w0=$(awk '/^wchar:/ {print $2}' "/proc/$opid/io")
        fed_publish "$s"
        t0=$(now_ms)
        v=$PUB_VERSION
        record replication "publish at origin" p2pcdn "$run" "$(calc "round($PUB_SECS, 2)")" "s"
        local pending=(1 2 3 4) left
        declare -A got=()
        while [ ${#pending[@]} -gt 0 ]; do
            [ $(($(now_ms) - t0)) -lt $((REPL_LIMIT * 1000)) ] || break
            left=()
            for i in "${pending[@]}"; do
                if has_version "$(city_ip "$i")" "$v"; then
                    got[$i]=$(($(now_ms) - t0))
                else
                    left+=("$i")
                fi
            done
            pending=("${left[@]}")
            [ ${#pending[@]} -eq 0 ] || sleep 0.1
        done
        [ ${#pending[@]} -eq 0 ] || die "replication: mirrors ${pending[*]} do not serve $v after ${REPL_LIMIT}s"
        tdone=0
        for i in 1 2 3 4; do
            [ "${got[$i]}" -gt "$tdone" ] && tdone=${got[$i]}
            log "  ${CITIES[$i]} serves $v after $(calc "${got[$i]} / 1000") s"
        done
        record replication "transfer time" p2pcdn "$run" "$(calc "round($tdone / 1000, 2)")" "s"
        up1=$(origin_metric p2pcdn_peer_upload_bytes_total)
        w1=$(awk '/^wchar:/ {print $2}' "/proc/$opid/io")
        record replication "origin upload, blob payload" p2pcdn "$run" "$((up1 - up0))" "B"
        record replication "origin upload, blob payload / content" p2pcdn "$run" "$(calc "round(($up1 - $up0) / $bytes, 3)")" "x"
        record replication "origin process writes (wchar)" p2pcdn "$run" "$((w1 - w0))" "B"
        # The machine's own bound: the same bytes to 4 clients from one nginx.
        nginx_start
        local www=$WORK/nginx/www/repl-$run ngpids=() k
        mkdir -p "$www"
        cp "$s"/files/part-*.bin "$www/"
        local nargs=()
        for i in 1 2 3 4 5 6 7 8; do
            nargs+=(-o /dev/null "https://$SITE:$HTTPS_PORT/repl-$run/part-$i.bin")
        done
        t0=$(now)
        for k in 1 2 3 4; do
            curl -s --cacert "$FED/tls/ca.pem" --resolve "$SITE:$HTTPS_PORT:$NGINX_IP" \
                -w '%{size_download}\n' "${nargs[@]}" > "$s/nginx-$k.out" &
            ngpids+=($!)
        done
        wait "${ngpids[@]}"
        local t1n
        t1n=$(now)
        local ngbytes
        ngbytes=$(cat "$s"/nginx-*.out | awk '{s+=$1} END {printf "%.0f\n", s}')
        [ "$ngbytes" = "$((4 * bytes))" ] || die "replication: nginx streams got $ngbytes bytes, expected $((4 * bytes))"
        local ngsecs
        ngsecs=$(calc "$t1n - $t0")
        record replication "transfer time" "nginx, 4 parallel curl streams (bound)" "$run" "$(calc "round($ngsecs, 2)")" "s"
        record replication "p2pcdn time / nginx 4-stream bound" p2pcdn "$run" "$(calc "round($tdone / 1000 / $ngsecs, 2)")" "x"
        rm -rf "$www"
        # Single-stream references for the same bytes.
        local args=() out
        for i in 1 2 3 4 5 6 7 8; do
            args+=(-o /dev/null "https://$SITE:$HTTPS_PORT/files/part-$i.bin")
        done
        out=$(curl -s --cacert "$FED/tls/ca.pem" --resolve "$SITE:$HTTPS_PORT:127.1.0.1" \
            -w '%{size_download} %{time_total}\n' "${args[@]}")
        local got_bytes secs
        got_bytes=$(echo "$out" | awk '{s+=$1} END {print s}')
        secs=$(echo "$out" | awk '{s+=$2} END {print s}')
        [ "$got_bytes" = "$bytes" ] || die "replication: curl got $got_bytes bytes, expected $bytes"
        record replication "transfer time" "curl, 1 HTTPS stream" "$run" "$(calc "round($secs, 2)")" "s"
        if command -v nc > /dev/null; then
            start_bg "$WORK/logs/nc.log" sh -c "nc -l $REPL_NC_IP $REPL_NC_PORT > /dev/null"
            local ncpid=$LAST_PID t1
            wait_until 10 tcp_listening "$REPL_NC_IP" "$REPL_NC_PORT" || die "nc did not listen"
            t0=$(now)
            cat "$s"/files/part-*.bin | nc -N "$REPL_NC_IP" "$REPL_NC_PORT"
            t1=$(now)
            wait "$ncpid" 2> /dev/null || true
            record replication "transfer time" "nc, 1 TCP stream" "$run" "$(calc "round($t1 - $t0, 2)")" "s"
        fi
        # The disk side: four mirrors each store the bytes durably (fsync);
        # four parallel fsync'd copies on this disk, for scale.
        local ddpids=()
        t0=$(now)
        for i in 1 2 3 4; do
            cat "$s"/files/part-*.bin | dd of="$s/copy-$i" bs=1M conv=fsync status=none &
            ddpids+=($!)
        done
        wait "${ddpids[@]}" # (not a bare `wait`: the federation runs in the background too)
        t1=$(now)
        record replication "transfer time" "4 fsync'd disk copies (dd)" "$run" "$(calc "round($t1 - $t0, 2)")" "s"
        rm -rf "$s"
    done
}
