#!/usr/bin/env bash
# Builds this bundle's upscaler on a desktop against ncnn, and runs it: the same C++ (cpp/srdeploy_sr.cpp) the
# Android app runs. NCNN_INSTALL: an ncnn install (cmake --install of ncnn built from source, or a release).
#   bash build_desktop.sh NCNN_INSTALL [IN.ppm OUT.ppm [TILE [RAW.f32]]]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ncnn="$1"
shift
cmake -S "$here/cpp" -B "$here/build" -Dncnn_DIR="$ncnn/lib/cmake/ncnn" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$here/build" -j >/dev/null
if [ $# -ge 2 ]; then
  "$here/build/srdeploy_upscale" "$here/assets/model" "$@"
fi
