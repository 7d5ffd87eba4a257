#!/usr/bin/env bash
# Builds, HERE (x86-64, no GPU needed), everything a GPU session runs, into assets/gpu-bundle/:
# the bridge and bridge-bench binaries and the test binaries, all with `--features cuda`.
# The device machines have CUDA 13, PyTorch and nvcc but no Rust, so the binaries travel.
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
ls -la "$out"
du -sh "$out"
