//! tests/ffi_stress.rs built with the fuzz crate's AddressSanitizer flags (LeakSanitizer is on
//! by default with ASan on Linux): `cargo +nightly fuzz build` makes
//! fuzz/target/x86_64-unknown-linux-gnu/release/ffi_stress; any report makes it exit non-zero.

#[path = "../tests/ffi_stress.rs"]
mod stress;

fn main() {
    let dir = std::env::temp_dir().join(format!("bridgeface-asan-stress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let refused = stress::stress(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "ffi_stress: {} threads × {} embeds equal the single-thread run; {refused} stale-handle calls refused",
        stress::THREADS,
        stress::EMBEDS_PER_THREAD
    );
}
