#!/usr/bin/env bash
# CI's hostile-input step: every fuzz target for FUZZ_SECONDS (60) from the committed seeds, the
# C ABI stress test under AddressSanitizer + LeakSanitizer, and the C example under valgrind.
# Needs nightly Rust and cargo-fuzz, and installs them when missing; when that is impossible it
# says what it skipped and why, and exits 0. Any crash, leak or sanitizer report fails the step.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
targets=(weights onnx image pairs checkpoint gallery)
t0=$(date +%s)
note() { echo "-- [$(( $(date +%s) - t0 ))s] $*"; }

have_nightly=1
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  note "installing the nightly toolchain (rustup, minimal profile)"
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || have_nightly=0
fi
if [ "$have_nightly" = 1 ] && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  note "installing cargo-fuzz from crates.io (about 1.5 min on 2 cores)"
  cargo +nightly install cargo-fuzz --locked >/dev/null 2>&1 || have_nightly=0
fi

if [ "$have_nightly" = 1 ]; then
  note "building the fuzz targets and ffi_stress with AddressSanitizer (nightly)"
  (cd fuzz && cargo +nightly fuzz build -a)
  bin=fuzz/target/x86_64-unknown-linux-gnu/release
  for t in "${targets[@]}"; do
    note "fuzzing $t for ${secs}s from fuzz/corpus/$t"
    work=$(mktemp -d)
    mkdir -p "fuzz/artifacts/$t"
    # The built binary, not `cargo fuzz run`, which would rebuild first.
    if ! "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$work" "fuzz/corpus/$t" \
        > "$work.log" 2>&1; then
      tail -n 60 "$work.log" >&2
      echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/" >&2
      exit 1
    fi
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$work.log" || true
    rm -rf "$work" "$work.log"
  done
  note "C ABI stress test (8 threads x 10,000 embeds, stale handles) under ASan and LSan"
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
    fuzz/target/x86_64-unknown-linux-gnu/release/ffi_stress
else
  echo "SKIPPED fuzz smoke and ASan stress: nightly Rust or cargo-fuzz could not be installed" \
       "(no rustup, or crates.io unreachable); run fuzz/ci.sh where they are available" >&2
fi

if command -v valgrind >/dev/null && command -v gcc >/dev/null; then
  note "the C example under valgrind memcheck"
  work=$(mktemp -d)
  cargo build --release --quiet
  gcc -O2 -Iinclude examples/c/embed.c target/release/libbridgeface.a \
      -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$work/embed"
  target/release/bridge init --out "$work/s.safetensors" --resolution 16 --seed 3 >/dev/null
  for f in a b; do
    { printf 'P6\n20 24\n255\n'; head -c $((20 * 24 * 3)) /dev/urandom; } > "$work/$f.ppm"
  done
  # valgrind's CPU has no AVX-512, so the run-time dispatch picks the kernels it can emulate.
  valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
      --errors-for-leak-kinds=definite,indirect -q \
      "$work/embed" "$work/s.safetensors" "$work/a.ppm" "$work/b.ppm"
  rm -rf "$work"
else
  echo "SKIPPED valgrind check of the C example: valgrind or gcc is not installed" >&2
fi
note "hostile-input step done"
