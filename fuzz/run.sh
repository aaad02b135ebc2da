#!/usr/bin/env bash
# Bounded fuzzing smoke run: builds every fuzz target and runs each for
# SECONDS (default 30) with libFuzzer's -max_total_time. Exits non-zero if
# any target crashes, panics, times out or runs out of memory (the input is
# left in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Environment:
#   FUZZ_SANITIZER=address|none   (default: address; "none" runs ~2x faster)
#   FUZZ_REGRESSIONS=1            also replay tests/fuzz_regressions/<target>/*
#                                 first (fails while a recorded bug is unfixed)
#   FUZZ_JOBS=N                   libFuzzer -jobs/-workers when N > 1 (default 1:
#                                 one in-process run, output on the console)
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags (sanitizer, coverage instrumentation) to stable rustc.
set -uo pipefail

secs="${1:-30}"
[ $# -gt 0 ] && shift
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

all_targets=(dns_request zone_file manifest report http_decide config)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
san="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi

echo "== building ${targets[*]} (sanitizer: $san)"
for t in "${targets[@]}"; do
    cargo fuzz build -O -s "$san" "$t" || exit 1
done

triple="$(rustc -vV | sed -n 's/^host: //p')"
bindir="$here/target/$triple/release"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ "${FUZZ_REGRESSIONS:-0}" = 1 ] && compgen -G "../tests/fuzz_regressions/$t/*" >/dev/null; then
        echo "== $t: replaying tests/fuzz_regressions/$t"
        if ! "$bindir/$t" -rss_limit_mb=2048 -timeout=30 ../tests/fuzz_regressions/"$t"/*; then
            failed+=("$t (regression)")
            continue
        fi
    fi
    echo "== $t: fuzzing for ${secs}s"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    # corpus/<t> (git-ignored) collects new inputs; seeds/<t> is read only.
    par=()
    # With -jobs libFuzzer runs workers and writes their output to fuzz-<n>.log.
    [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
    if ! cargo fuzz run -O -s "$san" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 "${par[@]}" \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/"; then
        failed+=("$t")
    fi
    for log in fuzz-*.log; do
        [ -f "$log" ] || continue
        tail -n 15 "$log"
        mv "$log" "artifacts/$t/last-run-$log"
    done
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FUZZ FAILURES: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz smoke run: ${#targets[@]} targets, ${secs}s each, no crashes"
