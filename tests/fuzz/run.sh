#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for SECONDS
# (default 20) on its seed corpus. New inputs go to build-fuzz/corpus/NAME, never into
# the repository; a crash leaves its input in build-fuzz/ and fails the run.
#   bash tests/fuzz/run.sh            # CI: 20 s each
#   bash tests/fuzz/run.sh 3600 http  # one harness for an hour
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(socks http chunked match config certnames sockdiag acme ocsp)
B=$ROOT/build-fuzz
cmake -S "$ROOT" -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DMTLSGW_FUZZ=ON \
    -DMTLSGW_TESTS=OFF > /dev/null
cmake --build "$B" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${TARGETS[@]}") > /dev/null
status=0 passed=0 failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$B/corpus/$t" "$B/crashes/$t"
    echo "=== fuzz_$t for ${SECONDS_EACH}s"
    if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$ROOT/tests/fuzz/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$B/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="$B/crashes/$t/" \
        "$B/corpus/$t" "$ROOT/tests/fuzz/corpus/$t" > "$B/fuzz_$t.log" 2>&1; then
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$B/fuzz_$t.log" | tr '\n' ' '; echo
        echo "ok - fuzz_$t: no crash, leak or sanitizer report"
        passed=$((passed + 1))
    else
        status=1 failed=$((failed + 1))
        tail -40 "$B/fuzz_$t.log"
        echo "not ok - fuzz_$t: see $B/crashes/$t/"
    fi
done
echo "fuzz: $passed passed, $failed failed"
exit $status
