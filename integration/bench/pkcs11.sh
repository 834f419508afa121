#!/usr/bin/env bash
# PKCS#11 micro-benchmark: CPU per new tunnel (full handshakes) with the client key in a
# SoftHSM token against the same key in a file, one run, same terminator and load.
#
#   bash integration/bench/pkcs11.sh                  # about 1 minute
#   BENCH_RUNS=7 BENCH_SECONDS=5 bash integration/bench/pkcs11.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
source "$BENCH_DIR/micro.sh"
# The same ops key, once in its file and once imported into a SoftHSM token.
make_softhsm_token bench benchPIN1 benchSO1
openssl pkcs8 -topk8 -nocrypt -in "$PKI/ops.key" -out "$WORK/ops.pk8"
softhsm2-util --import "$WORK/ops.pk8" --token bench --label ops --id 01 --pin benchPIN1 > /dev/null
rm -f "$WORK/ops.pk8"
BENCH_RUNS=${BENCH_RUNS:-5} MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" \
    WORK="$WORK" PKI="$PKI" PIN_FILE="$WORK/bench.pin" python3 "$BENCH_DIR/pkcs11.py"
