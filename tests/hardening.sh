#!/usr/bin/env bash
# The installed binaries are built hardened (CMakeLists.txt): a position-independent
# executable, full RELRO (read-only relocations, bound at start), a stack protector, and
# _FORTIFY_SOURCE's checked functions where the build optimises. Read off the ELF files
# with readelf, as Debian's hardening-check does.
#   bash tests/hardening.sh BUILD_TYPE BINARY...
set -uo pipefail
type=$1; shift
pass=0 failed=0
check() {  # check WHAT COMMAND...
    if "${@:2}" > /dev/null 2>&1; then pass=$((pass + 1)); echo "ok - $1"; else failed=$((failed + 1)); echo "not ok - $1"; fi
}
for bin in "$@"; do
    name=$(basename "$bin")
    check "$name: position-independent executable (ELF type DYN, PIE flag)" \
        bash -c "readelf -h '$bin' | grep -q 'DYN (Position-Independent Executable' || readelf -d '$bin' | grep -q 'FLAGS_1.*PIE'"
    check "$name: RELRO segment" bash -c "readelf -lW '$bin' | grep -q GNU_RELRO"
    check "$name: bound at start (BIND_NOW)" bash -c "readelf -d '$bin' | grep -qE 'BIND_NOW|FLAGS_1.*NOW'"
    check "$name: stack protector" bash -c "readelf -sW --dyn-syms '$bin' | grep -q __stack_chk_fail"
    if [ "$type" = Debug ]; then
        echo "# $name: _FORTIFY_SOURCE needs optimisation: not checked in a Debug build"
    else
        check "$name: _FORTIFY_SOURCE (checked libc functions)" bash -c "readelf -sW --dyn-syms '$bin' | grep -qE '__[a-z_]+_chk@'"
    fi
    check "$name: no executable stack" bash -c "readelf -lW '$bin' | grep GNU_STACK | grep -qv RWE"
done
echo "hardening: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
