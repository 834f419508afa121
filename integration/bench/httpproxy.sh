#!/usr/bin/env bash
# http_proxy clients that open a new connection per request (curl in a script, wrk with
# Connection: close): mtlsgw's http_proxy with its upstream pool beside nginx http with
# and without an upstream keepalive pool, on the same terminator, one run.
#
#   bash integration/bench/httpproxy.sh                  # about 1 minute
#   BENCH_RUNS=7 BENCH_SECONDS=5 bash integration/bench/httpproxy.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
source "$BENCH_DIR/micro.sh"
dpkg-query -W -f='${Status}' wrk 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }
BENCH_RUNS=${BENCH_RUNS:-5} MTLSGW="$ROOT/build/mtlsgw" LOADGEN="$ROOT/build/integration/mtlsgw_loadgen" \
    WORK="$WORK" PKI="$PKI" python3 "$BENCH_DIR/httpproxy.py"
