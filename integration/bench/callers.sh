#!/usr/bin/env bash
# Caller rules micro-benchmark: CPU per new tunnel with and without caller rules, one run.
#
#   bash integration/bench/callers.sh                  # about 1 minute
#   BENCH_RUNS=7 BENCH_SECONDS=5 bash integration/bench/callers.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
source "$BENCH_DIR/micro.sh"
BENCH_RUNS=${BENCH_RUNS:-5} MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" \
    WORK="$WORK" PKI="$PKI" python3 "$BENCH_DIR/callers.py"
