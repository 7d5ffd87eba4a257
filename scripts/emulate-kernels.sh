#!/usr/bin/env bash
# Runs the CUDA kernels of kernels/*.cu on the CPU, without a GPU: the kernel bodies are compiled
# as C++ (g++ ≥ 12) with CUDA's built-ins emulated (each block's threads are real threads meeting
# at a barrier for __syncthreads; warp shuffles through a shared buffer; f16 via _Float16), and
# every kernel is compared with a scalar reference on odd shapes (f32 ≤ 1e-5, f16 ≤ 2e-3).
# It checks indexing, tiling and epilogues; it cannot check the PTX f16 conversions in
# kernels/prelude.cuh, timing, or anything about the real device (that is scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in conv3x3 depthwise pointwise head; do cat "kernels/$f.cu"; done |
  sed 's/extern __shared__ float smem\[\];/float* smem = dyn_smem;/; s/^extern "C" //' > "$tmp/kernels_body.inc"
cp scripts/kernel-emulation/harness.cpp "$tmp/"
g++ -std=c++20 -O2 -pthread -I"$tmp" "$tmp/harness.cpp" -o "$tmp/harness"
"$tmp/harness"
