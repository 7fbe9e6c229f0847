#!/usr/bin/env bash
# Sets up (apt, corpus, build incl. tests) and runs the whole test suite with CTest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh"
cd "${TRIBUTARY_BUILD_DIR:-$repo/build}"
# Tests that start several training processes share 2 cores; keep them serialised.
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
