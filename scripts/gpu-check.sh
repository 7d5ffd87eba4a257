#!/usr/bin/env bash
# One short GPU session (device machine: CUDA 13, PyTorch, no Rust), in the repo root, with
# assets/gpu-bundle/ carried over (built here by scripts/gpu-bundle.sh). Runs, in order:
#   1. the NVRTC compile tests and every GPU-vs-CPU-scalar correctness test,
#   2. bridge-bench --device cuda:0 (batch 1, 256, 4096, 65536; f32 and f16; CUDA events),
#   3. the teacher and training benchmarks on the GPU (and training on this machine's CPU),
#   4. the PyTorch peer (cuDNN, fp16, channels_last) on the same random student weights.
# Everything is also written to $OUT (or assets/gpu-check-out) for BENCHMARKS.md.
# PARTS (default "tests bench teacher train torch") picks which of these run, so that a short
# second call can redo one part.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${BUNDLE:-assets/gpu-bundle}
O=${OUT:-assets/gpu-check-out}
mkdir -p "$O"
status=0
PARTS=${PARTS:-tests bench teacher train torch}
want() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { echo "== $*" | tee -a "$O/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$O/gpu.txt"
# libnvrtc.so.13 may sit in the CUDA toolkit or inside a Python environment (pip wheels).
nvrtc=$(find / -xdev -name 'libnvrtc.so.13*' -not -name '*builtins*' 2>/dev/null | head -n 1)
if [ -z "$nvrtc" ]; then
  log "FAIL: libnvrtc.so.13 not found on this machine"; exit 1
fi
export LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "nvrtc: $nvrtc"

chmod +x "$B"/* 2>/dev/null
# The teacher checks find SFace in the bundle's own assets folder.
[ -d "$B/assets" ] && export BRIDGE_ASSETS="$(cd "$B/assets" && pwd)"
if want tests; then
log "NVRTC compile tests"
"$B/lib-tests" nvrtc 2>&1 | tee "$O/nvrtc-tests.txt" || status=1
log "GPU correctness tests (every kernel vs cpu::scalar; f32 1e-5, f16 2e-3)"
"$B/cuda-gpu-tests" --include-ignored --test-threads=1 --nocapture 2>&1 | tee "$O/gpu-tests.txt" || status=1
fi
# (tests/cuda_cli.rs is not run here: its binary calls `bridge` at the path it was built
# with.) `bridge embed --device cuda:0` is checked directly against `--device cpu` instead.
"$B/bridge" init --out "$O/student.safetensors" --seed 0 --resolution 16 >/dev/null
python3 - "$O/face.ppm" <<'PY'
import sys
w = h = 16  # the student's own side, so bridge's area resize is the identity
px = bytes(((x * 7 + y * 3) % 256) for y in range(h) for x in range(w) for _ in range(3))
open(sys.argv[1], "wb").write(b"P6 %d %d 255\n" % (w, h) + px)
PY
"$B/bridge" embed "$O/face.ppm" --weights "$O/student.safetensors" --json --device cpu > "$O/embed-cpu.json"
"$B/bridge" embed "$O/face.ppm" --weights "$O/student.safetensors" --json --device cuda:0 > "$O/embed-cuda.json" || status=1
python3 - "$O/embed-cpu.json" "$O/embed-cuda.json" <<'PY' | tee -a "$O/summary.txt" || status=1
import json, sys
a = json.load(open(sys.argv[1]))[0]["embedding"]; b = json.load(open(sys.argv[2]))[0]["embedding"]
err = max(abs(x - y) for x, y in zip(a, b)) / max(abs(x) for x in a)
print(f"bridge embed cpu vs cuda:0 relative error {err:.3e} (bound 1e-5)")
sys.exit(0 if err <= 1e-5 else 1)
PY

if want bench; then
log "bridge-bench --device cuda:0"
"$B/bridge-bench" --device cuda:0 2>&1 | tee "$O/bench-bridge.txt" || status=1
fi
if want teacher; then
log "bridge-bench --model teacher --device cuda:0"
"$B/bridge-bench" --model teacher --device cuda:0 2>&1 | tee "$O/bench-teacher.txt" || status=1
fi
if want train; then
log "bridge-bench --model train --device cuda:0 (training steps on the GPU), then on this machine's CPU"
"$B/bridge-bench" --model train --device cuda:0 2>&1 | tee "$O/bench-train-cuda.txt" || status=1
"$B/bridge-bench" --model train --runs 5 2>&1 | tee "$O/bench-train-cpu.txt" || status=1
log "bridge train --device cuda:0, end to end, on a generated 20-identity folder"
python3 - "$O/tiny" <<'PY'
import os, random, sys
random.seed(0)
for i in range(20):
    d = os.path.join(sys.argv[1], f"id{i:02d}")
    os.makedirs(d, exist_ok=True)
    base = [random.randrange(256) for _ in range(3)]
    for j in range(6):
        px = bytes(min(255, max(0, base[(x + y) % 3] + random.randrange(-30, 31)))
                   for y in range(48) for x in range(48) for _ in range(3))
        open(os.path.join(d, f"{j}.ppm"), "wb").write(b"P6 48 48 255\n" + px)
PY
"$B/bridge" train --data "$O/tiny" --out "$O/tiny-student.safetensors" --device cuda:0 \
  --epochs 2 --batch 32 2>&1 | tail -n 5 | tee -a "$O/summary.txt" || status=1
"$B/bridge" embed "$O/face.ppm" --weights "$O/tiny-student.safetensors" --json --device cpu \
  > /dev/null || status=1
fi
if want torch; then
log "PyTorch peer"
python3 benches/torch_peer.py --weights "$O/student.safetensors" \
  --check-image "$O/face.ppm" --check-embedding "$O/embed-cpu.json" 2>&1 | tee "$O/bench-torch.txt" || status=1
fi

log "exit status $status"
exit $status
