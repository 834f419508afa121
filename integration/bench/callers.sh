#!/usr/bin/env bash
# Caller rules micro-benchmark: CPU per new tunnel with and without caller rules, one run.
#
#   bash integration/bench/callers.sh                  # about 1 minute
#   BENCH_RUNS=7 BENCH_SECONDS=5 bash integration/bench/callers.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
bash "$ROOT/integration/deps.sh"
# The remote side is the side-by-side benchmark's (bench.py), which also starts iperf3.
dpkg-query -W -f='${Status}' iperf3 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iperf3; }
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target mtlsgw mtlsgw_loadgen > /dev/null
source "$ROOT/integration/lib.sh"
make_pki
BENCH_RUNS=${BENCH_RUNS:-5} MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" \
    WORK="$WORK" PKI="$PKI" python3 "$BENCH_DIR/callers.py"
