# (3) Hashing: `p2pcdn publish` of DATA_MIB (8 files) into an empty store
# (BLAKE3 hashing + verified store writes + fsync), the same publish again
# (files already stored: hashing only), and b3sum of the same files (default
# threads, and --num-threads 1). Page cache warm for all. Sourced by bench/run.sh.

section_hash() {
    log "== Hashing: p2pcdn publish vs b3sum, $DATA_MIB MiB in 8 files"
    local h=$WORK/hash i run
    mkdir -p "$h/site"
    cp "$FED/site/index.html" "$h/site/"
    for i in 1 2 3 4 5 6 7 8; do
        gen_file "$h/site/part-$i.bin" $((DATA_MIB / 8)) "hash-$i"
    done
    local bytes
    bytes=$(du -sb "$h/site" | cut -f1)
    # A config for a separate data directory (same site and owner key as the origin).
    sed -e "s|^data_dir = .*|data_dir = \"$h/data\"|" \
        -e "s|^zones_dir = .*|zones_dir = \"$FED/frankfurt/zones\"|" \
        -e "s|^key = \"node.key\"|key = \"$FED/frankfurt/node.key\"|" \
        "$FED/frankfurt/p2pcdn.toml" > "$h/p2pcdn.toml"
    b3sum "$h"/site/*.bin > /dev/null # warm the page cache
    local t0 t1
    for run in $(seq 1 "$RUNS"); do
        t0=$(now)
        b3sum "$h"/site/*.bin > /dev/null
        t1=$(now)
        record hash "throughput" b3sum "$run" "$(calc "round($bytes / ($t1 - $t0) / 1e6)")" "MB/s"
        t0=$(now)
        b3sum --num-threads 1 "$h"/site/*.bin > /dev/null
        t1=$(now)
        record hash "throughput" "b3sum (1 thread)" "$run" "$(calc "round($bytes / ($t1 - $t0) / 1e6)")" "MB/s"
        rm -rf "$h/data"
        sync
        t0=$(now)
        "$P2PCDN" --log warn publish --quiet --config "$h/p2pcdn.toml" --site "$SITE" \
            --key "$FED/owner.key" "$h/site" >> "$WORK/logs/hash-publish.log" 2>&1 || die "publish failed (see $WORK/logs/hash-publish.log)"
        t1=$(now)
        record hash "throughput" p2pcdn "$run" "$(calc "round($bytes / ($t1 - $t0) / 1e6)")" "MB/s"
        t0=$(now)
        "$P2PCDN" --log warn publish --quiet --config "$h/p2pcdn.toml" --site "$SITE" \
            --key "$FED/owner.key" "$h/site" >> "$WORK/logs/hash-publish.log" 2>&1 || die "publish failed"
        t1=$(now)
        record hash "throughput" "p2pcdn (already stored)" "$run" "$(calc "round($bytes / ($t1 - $t0) / 1e6)")" "MB/s"
    done
    rm -rf "$h"
}
