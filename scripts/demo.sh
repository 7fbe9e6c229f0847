#!/usr/bin/env bash
# Sets up (apt, corpus, build) and runs the embedded demo: a coordinator and 4 peer processes
# training a character-level GPT on Moby-Dick over loopback, then the single-process reference.
# Extra arguments go to `tributary demo` (e.g. --mode ddp, --peers 3, --rounds 4).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup.sh" tributary
cd "$repo"
exec "${TRIBUTARY_BUILD_DIR:-$repo/build}/launcher/tributary" demo "$@"
