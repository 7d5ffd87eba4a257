#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/corpus/ (small synthetic inputs only: no face
# photo, no third-party model). Uses the root package's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf fuzz/corpus
cargo run --release --example fuzz_seeds -- fuzz/corpus
find fuzz/corpus -type f | sort | xargs ls -l | awk '{print $5, $9}'
