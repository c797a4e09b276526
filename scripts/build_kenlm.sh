#!/usr/bin/env bash
# Build KenLM's lmplz, build_binary and interpolate (which no PyPI wheel ships) from
# the kenlm==0.3.0 sdist into tools/kenlm/bin.  Idempotent: does nothing when the
# binaries exist.  Needs cmake, g++, the Boost dev packages and Eigen 3 (interpolate;
# make setup installs them with apt when run as root).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/tools/kenlm"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TOOLS=(lmplz build_binary interpolate)
if [[ -x "$DEST/bin/lmplz" && -x "$DEST/bin/build_binary" && -x "$DEST/bin/interpolate" ]]; then
  echo "kenlm tools present in $DEST/bin"; exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "downloading kenlm==0.3.0 sdist"
"$PY" -m pip download -q --no-deps --no-binary kenlm kenlm==0.3.0 -d "$WORK"
tar -xzf "$WORK"/kenlm-0.3.0.tar.gz -C "$WORK"
SRC="$(find "$WORK" -maxdepth 1 -type d -name 'kenlm-*' | head -1)"
mkdir -p "$WORK/build" "$DEST/bin"
echo "building ${TOOLS[*]} (about 4 min on 2 cores)"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 > "$WORK/cmake.log" 2>&1 \
  || { cat "$WORK/cmake.log"; exit 1; }
cmake --build "$WORK/build" -j "$(nproc)" --target "${TOOLS[@]}" > "$WORK/build.log" 2>&1 \
  || { tail -50 "$WORK/build.log"; exit 1; }
for t in "${TOOLS[@]}"; do
  [[ -x "$WORK/build/bin/$t" ]] || { echo "kenlm: $t was not built (interpolate needs libeigen3-dev)"; tail -30 "$WORK/cmake.log"; exit 1; }
  cp "$WORK/build/bin/$t" "$DEST/bin/"
done
echo "built ${TOOLS[*]} in $DEST/bin"
