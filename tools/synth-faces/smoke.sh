#!/usr/bin/env bash
# Smoke test of the generator: 2 identities, 12 direction samples, in a throwaway venv.
# Needs a release build of `bridge` and the teacher/detector assets (`bridge fetch`); downloads the
# pinned requirements and the random-face wheel (37.6 MB, into $BRIDGE_ASSETS or assets/).
# Checks: the output's layout and chip size, the edit strengths against the ready set's manifest
# (when ../shared/synth-faces is there), resuming, and determinism of a re-render.
# SYNTH_SMOKE_DIR: where everything goes (default: a new temp dir). SYNTH_SMOKE_VENV: use this
# existing venv instead of installing requirements.txt into a new one (for quick reruns only).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="${SYNTH_SMOKE_DIR:-$(mktemp -d)}"
ready="${SYNTH_READY_SET:-$root/../shared/synth-faces}"
start=$(date +%s)
say() { echo "synth-faces smoke [$(( $(date +%s) - start ))s]: $*"; }

venv="${SYNTH_SMOKE_VENV:-}"
if [ -z "$venv" ]; then
  venv="$tmp/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$root/tools/synth-faces/requirements.txt"
  say "requirements installed"
fi
gen() {
  "$venv/bin/python" "$root/tools/synth-faces/synth_faces.py" \
    --bridge "$root/target/release/bridge" --cache "${BRIDGE_ASSETS:-$root/assets}" \
    --work "$tmp/work" --out "$1" --identities 2 --direction-samples 12 --mean-samples 256 \
    --min-chips 1 --threads 2
}

gen "$tmp/out"
say "generated"
test -s "$tmp/out/manifest.tsv"
test -s "$tmp/out/README.md"
rows=$(($(wc -l < "$tmp/out/manifest.tsv") - 1))
chips=$(find "$tmp/out" -name '*.jpg' | wc -l)
echo "synth-faces smoke: $rows chips written to $tmp/out"
test "$rows" -ge 2
test "$chips" -eq "$rows"
"$venv/bin/python" - "$tmp/out" <<'EOF'
import csv, sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "manifest.tsv"), delimiter="\t"))
for r in rows:
    im = Image.open(out / r["file"])
    assert im.size == (112, 112) and im.mode == "RGB", (r["file"], im.size, im.mode)
    assert 0.45 <= float(r["cosine_to_base"]) <= 1.0001, r
bases = [r for r in rows if r["variant_index"] == "0"]
assert len(bases) == len({r["identity"] for r in rows}), "every identity starts with its base"
EOF

# The edit strengths of every chip are drawn from its seed as the ready set's were.
if [ -s "$ready/manifest.tsv" ]; then
  key() { awk -F'\t' 'NR > 1 && $3 < 700002 { print $3, $4, $5, $6, $7, $8 }' "$1" | sort; }
  common=$(comm -12 <(key "$ready/manifest.tsv") <(key "$tmp/out/manifest.tsv") | wc -l)
  echo "synth-faces smoke: $common of $rows chips have the ready set's seed, variant and edits"
  test "$common" -eq "$rows"
else
  echo "synth-faces smoke: no ready set at $ready; edit strengths not compared"
fi

# Resumable and deterministic: drop the second identity's renders and every chip, run again, and
# get the same renders (bit for bit) and the same manifest.
mv "$tmp/work/renders/seed700001" "$tmp/renders-first"
rm -rf "$tmp/work/aligned"
gen "$tmp/out2"
say "regenerated"
for f in "$tmp/renders-first"/*.png; do cmp "$f" "$tmp/work/renders/seed700001/$(basename "$f")"; done
cmp "$tmp/out/manifest.tsv" "$tmp/out2/manifest.tsv"
say "deterministic, all checks passed"
