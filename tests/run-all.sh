#!/usr/bin/env bash
# Every test: unit and integration tests on a normal build, then again on an
# AddressSanitizer + UndefinedBehaviorSanitizer build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/integration/deps.sh"
status=0
for variant in build build-asan; do
    flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    [ "$variant" = build-asan ] && flags=(-DCMAKE_BUILD_TYPE=Debug -DMTLSGW_SANITIZE=ON)
    echo "=== $variant"
    cmake -S "$ROOT" -B "$ROOT/$variant" "${flags[@]}" > /dev/null
    cmake --build "$ROOT/$variant" -j "$(nproc)"
    (cd "$ROOT/$variant" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure) || status=1
done
exit $status
