#!/usr/bin/env bash
# Smoke test of the generator: 2 identities, 12 direction samples, in a throwaway venv.
# Needs a release build of `bridge` and the teacher/detector assets (`bridge fetch`).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="${SYNTH_SMOKE_DIR:-$(mktemp -d)}"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -r "$root/tools/synth-faces/requirements.txt"
"$tmp/venv/bin/python" "$root/tools/synth-faces/synth_faces.py" \
  --bridge "$root/target/release/bridge" --cache "${BRIDGE_ASSETS:-$root/assets}" \
  --work "$tmp/work" --out "$tmp/out" --identities 2 --direction-samples 12 --mean-samples 256 \
  --min-chips 1 --threads 2
test -s "$tmp/out/manifest.tsv"
rows=$(($(wc -l < "$tmp/out/manifest.tsv") - 1))
echo "synth-faces smoke: $rows chips written to $tmp/out"
test "$rows" -ge 2
# Deterministic: a second run from the same cache gives the same manifest.
"$tmp/venv/bin/python" "$root/tools/synth-faces/synth_faces.py" \
  --bridge "$root/target/release/bridge" --cache "${BRIDGE_ASSETS:-$root/assets}" \
  --work "$tmp/work" --out "$tmp/out2" --identities 2 --direction-samples 12 --mean-samples 256 \
  --min-chips 1 --threads 2
cmp "$tmp/out/manifest.tsv" "$tmp/out2/manifest.tsv"
echo "synth-faces smoke: deterministic"
