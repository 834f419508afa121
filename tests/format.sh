#!/usr/bin/env bash
# The tree is formatted by .clang-format: every C file of the repository, as clang-format
# would leave it. A file that differs fails this test with the lines it would change
# (fix: git ls-files '*.c' '*.h' | xargs clang-format -i).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if ! command -v clang-format > /dev/null; then
    echo "not ok - clang-format is not installed (integration/deps.sh installs it)"
    exit 1
fi
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find gateway policy resolver tests integration -name '*.[ch]')
n=$(echo "$files" | wc -l)
if ! out=$(echo "$files" | xargs clang-format --dry-run --Werror 2>&1); then
    echo "$out" | head -60
    echo "not ok - files differ from .clang-format: $(echo "$out" | grep -oE '^[^:]+\.[ch]' | sort -u | tr '\n' ' ')"
    exit 1
fi
echo "ok - $n C files formatted as .clang-format says"
