#!/usr/bin/env bash
# The side-by-side benchmark: mtlsgw against nginx stream proxy_ssl, HAProxy and stunnel
# on the same PKI (ECDSA P-256), the same remote terminator (nginx stream,
# ssl_verify_client on, session tickets on), the same backends and the same load, one
# gateway at a time, plus direct-to-backend and a plain TCP relay as baselines, and the
# floor of a resumed tunnel's cost (floor.c: blocking, no event loop, no policy).
#
#   bash integration/bench/run.sh              # about 10 minutes; the table goes to stdout
#   BENCH_RUNS=5 BENCH_SECONDS=5 bash integration/bench/run.sh
#   BENCH_ONLY=mtlsgw-1w,nginx-1w bash integration/bench/run.sh   # a subset of the rows
#
# Needs (installed here if missing): nginx + libnginx-mod-stream, haproxy, stunnel4,
# iperf3, wrk. Everything listens on loopback and is stopped by PID at the end.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
bash "$ROOT/integration/deps.sh"
missing=()
for p in haproxy stunnel4 iperf3 wrk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target mtlsgw mtlsgw_loadgen mtlsgw_policy_bench mtlsgw_floor > /dev/null
source "$ROOT/integration/lib.sh"
make_pki
cat "$PKI/ops.crt" "$PKI/ops.key" > "$PKI/ops.pem"   # HAProxy wants certificate and key in one file
MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" WORK="$WORK" PKI="$PKI" \
    python3 "$BENCH_DIR/bench.py"
echo
echo "Policy micro-benchmark (integration/bench/policy_bench.c):"
echo
"$ROOT/build/integration/mtlsgw_policy_bench" 100000
