# Shared start of the micro-benchmarks (callers.sh, pkcs11.sh): packages (and iperf3 for
# bench.py's remote side), the build, lib.sh and a test PKI. Sourced with ROOT set.
bash "$ROOT/integration/deps.sh"
dpkg-query -W -f='${Status}' iperf3 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iperf3; }
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target mtlsgw mtlsgw-pkcs11 mtlsgw_loadgen > /dev/null
source "$ROOT/integration/lib.sh"
make_pki
