# (4) Failover: KILLS times, kill -9 one instance of the running federation
# (cycling through the five cities), and poll another authority every 100 ms,
# as a resolver in the victim's city (`dig -b 127.N.0.9`, so the victim is the
# first answer before the kill), until the victim's address is gone. Then
# restart it and wait until it is back in the answers before the next kill.
# Sourced by bench/run.sh.

answer_has() { case " $(steered_answer "$1" "$2") " in *" $3 "*) return 0 ;; *) return 1 ;; esac; }
answer_lacks() {
    local a
    a=$(steered_answer "$1" "$2")
    [ -n "$a" ] || return 1 # no answer at all (timeout) is not a removal
    case " $a " in *" $3 "*) return 1 ;; *) return 0 ;; esac
}

section_failover() {
    log "== Failover: $KILLS kills (kill -9), time until the victim leaves another authority's answers"
    local k v a victim_ip client auth_ip t0 t1 pid
    for k in $(seq 1 "$KILLS"); do
        v=$(((k - 1) % 5))
        a=$(((v + 1) % 5))
        victim_ip=$(city_ip "$v")
        auth_ip=$(city_ip "$a")
        client="127.$((v + 1)).0.9"
        wait_until 60 answer_has "$client" "$auth_ip" "$victim_ip" \
            || die "failover: ${CITIES[$v]} is not in $auth_ip's answers before the kill"
        sleep 0.5
        pid=${FED_PID[${CITIES[$v]}]}
        t0=$(now_ms)
        kill -9 "$pid"
        local gone=0
        while [ $(($(now_ms) - t0)) -lt $((FAILOVER_LIMIT * 1000)) ]; do
            if answer_lacks "$client" "$auth_ip" "$victim_ip"; then
                gone=1
                break
            fi
            sleep 0.1
        done
        t1=$(now_ms)
        wait "$pid" 2> /dev/null || true
        if [ "$gone" = 1 ]; then
            record failover "time to removal" p2pcdn "$k" "$(calc "($t1 - $t0) / 1000")" "s"
        else
            record failover "time to removal" p2pcdn "$k" "$FAILOVER_LIMIT" "s (not removed: limit)"
        fi
        # Restart with the same command; time until it is back in the answers.
        start_bg "$WORK/logs/serve-${CITIES[$v]}-restart-$k.log" "$P2PCDN" --log warn serve --config "$FED/${CITIES[$v]}/p2pcdn.toml"
        FED_PID[${CITIES[$v]}]=$LAST_PID
        t0=$(now_ms)
        if wait_until 90 answer_has "$client" "$auth_ip" "$victim_ip"; then
            record failover "time back after restart" p2pcdn "$k" "$(calc "($(now_ms) - $t0) / 1000")" "s"
        else
            die "failover: ${CITIES[$v]} did not come back within 90 s of its restart"
        fi
    done
}
