#!/usr/bin/env bash
# Every test: unit and integration tests on a normal build, then again on an
# AddressSanitizer + UndefinedBehaviorSanitizer build; the main integration scripts once
# more with the gateway under valgrind (memory errors, definitely lost blocks); the unit
# tests and the main scripts on a ThreadSanitizer build (no data race); then each
# libFuzzer harness for a bounded time (FUZZ_SECONDS, default 15).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/integration/deps.sh"
status=0 stages_ok=0 stages_failed=0
stage() {  # stage RESULT: count a stage as passed (0) or failed
    if [ "$1" -eq 0 ]; then stages_ok=$((stages_ok + 1)); else stages_failed=$((stages_failed + 1)); status=1; fi
}
for variant in build build-asan; do
    flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    [ "$variant" = build-asan ] && flags=(-DCMAKE_BUILD_TYPE=Debug -DMTLSGW_SANITIZE=ON)
    echo "=== $variant"
    cmake -S "$ROOT" -B "$ROOT/$variant" "${flags[@]}" > /dev/null
    cmake --build "$ROOT/$variant" -j "$(nproc)"
    rc=0
    (cd "$ROOT/$variant" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure) || rc=1
    stage $rc
done

echo "=== valgrind (integration: mtls, resumption, http, ops, verify, idlists, pkcs11)"
vg_pass=0 vg_fail=0
for t in mtls resumption http ops verify idlists pkcs11; do
    if MTLSGW_VALGRIND=1 MTLSGW="$ROOT/build/mtlsgw" bash "$ROOT/integration/test_$t.sh" > "$ROOT/build/valgrind_$t.log" 2>&1; then
        vg_pass=$((vg_pass + 1)); grep -E "^ok - valgrind|passed," "$ROOT/build/valgrind_$t.log"
    else
        vg_fail=$((vg_fail + 1)); grep -E "not ok|valgrind" "$ROOT/build/valgrind_$t.log" | head -40
    fi
done
echo "valgrind: $vg_pass passed, $vg_fail failed"
stage $vg_fail

echo "=== ThreadSanitizer (unit tests; integration: mtls, http, ops, callers, pkcs11, close, retire, acme)"
rc=0
cmake -S "$ROOT" -B "$ROOT/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMTLSGW_TSAN=ON > /dev/null
cmake --build "$ROOT/build-tsan" -j "$(nproc)"
(cd "$ROOT/build-tsan" && TSAN_OPTIONS=halt_on_error=0 ctest -L unit --output-on-failure) || rc=1
ts_pass=0 ts_fail=0
for t in mtls http ops callers pkcs11 close retire acme; do
    # stop_gateways fails a script on any "Sanitizer" line in the gateway's log (a race).
    if TSAN_OPTIONS=halt_on_error=0 MTLSGW="$ROOT/build-tsan/mtlsgw" bash "$ROOT/integration/test_$t.sh" > "$ROOT/build-tsan/tsan_$t.log" 2>&1; then
        ts_pass=$((ts_pass + 1)); grep -E "passed," "$ROOT/build-tsan/tsan_$t.log"
    else
        ts_fail=$((ts_fail + 1)); grep -E "not ok|ThreadSanitizer|passed," "$ROOT/build-tsan/tsan_$t.log" | head -40
    fi
done
echo "tsan: $ts_pass passed, $ts_fail failed"
[ "$ts_fail" -eq 0 ] || rc=1
stage $rc

echo "=== fuzz (${FUZZ_SECONDS:-15} s per harness)"
rc=0
bash "$ROOT/tests/fuzz/run.sh" "${FUZZ_SECONDS:-15}" || rc=1
stage $rc
echo
echo "stages: unit + integration; the same on ASan+UBSan; valgrind; ThreadSanitizer; fuzz"
echo "run-all: $stages_ok passed, $stages_failed failed"
exit $status
