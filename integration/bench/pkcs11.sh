#!/usr/bin/env bash
# PKCS#11 micro-benchmark: CPU per new tunnel (full handshakes) with the client key in a
# SoftHSM token against the same key in a file, one run, same terminator and load.
#
#   bash integration/bench/pkcs11.sh                  # about 1 minute
#   BENCH_RUNS=7 BENCH_SECONDS=5 bash integration/bench/pkcs11.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
bash "$ROOT/integration/deps.sh"
dpkg-query -W -f='${Status}' iperf3 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iperf3; }
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target mtlsgw mtlsgw-pkcs11 mtlsgw_loadgen > /dev/null
source "$ROOT/integration/lib.sh"
make_pki
# The same ops key, once in its file and once imported into a SoftHSM token.
export SOFTHSM2_CONF=$WORK/softhsm2.conf
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --pin benchPIN1 --so-pin benchSO1 > /dev/null
printf 'benchPIN1\n' > "$WORK/bench.pin" && chmod 600 "$WORK/bench.pin"
openssl pkcs8 -topk8 -nocrypt -in "$PKI/ops.key" -out "$WORK/ops.pk8"
softhsm2-util --import "$WORK/ops.pk8" --token bench --label ops --id 01 --pin benchPIN1 > /dev/null
rm -f "$WORK/ops.pk8"
BENCH_RUNS=${BENCH_RUNS:-5} MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" \
    WORK="$WORK" PKI="$PKI" PIN_FILE="$WORK/bench.pin" python3 "$BENCH_DIR/pkcs11.py"
