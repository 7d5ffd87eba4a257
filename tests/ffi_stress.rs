//! The C ABI under threads: 8 threads share one model for 10,000 embeds each while another
//! thread loads, uses and frees a second model over and over and keeps calling its stale
//! handle. Every shared-model embedding must equal the single-thread one bit for bit, and every
//! stale call must fail with BF_ERR_INVALID_HANDLE. The fuzz crate builds this same file into
//! an AddressSanitizer binary (`fuzz/ffi_stress.rs`), which CI runs with LeakSanitizer on.

use bridgeface::ffi::{
    bf_embed_rgb8, bf_last_error, bf_model_free, bf_model_info, bf_model_load, BfModel,
    BfModelInfo, BfStatus,
};
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::weights::StoreDtype;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Threads sharing the first model, and the embeds each one makes.
pub const THREADS: usize = 8;
pub const EMBEDS_PER_THREAD: usize = 10_000;
/// The smallest student (8×8 input) keeps 80,000 embeds within seconds, under ASan too.
const RES: usize = 8;
const EMB: usize = 128;
/// Distinct test images, 11×9 so that every embed also runs the area resize.
const IMAGES: usize = 16;
const W: usize = 11;
const H: usize = 9;

fn last_error() -> String {
    // SAFETY: bf_last_error never returns NULL; the string is NUL-terminated and valid until
    // the next bf_* call on this thread, and it is copied at once.
    unsafe { CStr::from_ptr(bf_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn write_student(dir: &Path, seed: u64) -> PathBuf {
    let path = dir.join(format!("student-{seed}.safetensors"));
    StudentParams::random(StudentInfo::new(RES).expect("resolution"), seed)
        .save(&path, StoreDtype::F32)
        .expect("save student");
    path
}

fn load(path: &Path) -> usize {
    let cp = CString::new(path.to_str().expect("utf-8 temp path")).expect("no NUL");
    let mut m: *mut BfModel = std::ptr::null_mut();
    // SAFETY: a valid C string and a valid out pointer.
    let s = unsafe { bf_model_load(cp.as_ptr(), &mut m) };
    assert_eq!(s, BfStatus::Ok, "load: {}", last_error());
    m as usize
}

/// Deterministic pixels for image `i` (a gradient plus a per-image offset).
fn image(i: usize) -> Vec<u8> {
    (0..W * H * 3)
        .map(|k| ((k * 7 + i * 31 + (k / 3) * (i + 1)) % 256) as u8)
        .collect()
}

fn embed(model: usize, pixels: &[u8]) -> (BfStatus, [f32; EMB]) {
    let mut out = [0.0f32; EMB];
    // SAFETY: `pixels` holds one W×H RGB8 image with stride W×3 and `out` holds EMB floats;
    // `model` is any value: a dead or forged handle is an error, never a dereference.
    let s = unsafe {
        bf_embed_rgb8(
            model as *const BfModel,
            pixels.as_ptr(),
            1,
            H,
            W,
            W * 3,
            out.as_mut_ptr(),
        )
    };
    (s, out)
}

/// Runs the whole stress; returns the number of stale-handle calls that were refused.
pub fn stress(dir: &Path) -> usize {
    let shared = load(&write_student(dir, 1));
    let second_path = write_student(dir, 2);
    let images: Vec<Vec<u8>> = (0..IMAGES).map(image).collect();
    // The single-thread reference.
    let reference: Vec<[f32; EMB]> = images
        .iter()
        .map(|p| {
            let (s, e) = embed(shared, p);
            assert_eq!(s, BfStatus::Ok, "reference embed: {}", last_error());
            e
        })
        .collect();
    let done = AtomicBool::new(false);
    let refused = std::thread::scope(|scope| {
        let workers: Vec<_> =
            (0..THREADS)
                .map(|t| {
                    let (images, reference) = (&images, &reference);
                    scope.spawn(move || {
                        for k in 0..EMBEDS_PER_THREAD {
                            let i = (t * 7 + k) % IMAGES;
                            let (s, e) = embed(shared, &images[i]);
                            assert_eq!(s, BfStatus::Ok, "thread {t} embed {k}: {}", last_error());
                            assert!(
                            e.iter().zip(&reference[i]).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "thread {t} embed {k}: image {i} differs from the single-thread run"
                        );
                        }
                    })
                })
                .collect();
        let churn = scope.spawn(|| {
            let mut refused = 0usize;
            let mut rounds = 0usize;
            while !done.load(Ordering::Relaxed) || rounds < 3 {
                rounds += 1;
                let second = load(&second_path);
                let (s, _) = embed(second, &images[0]);
                assert_eq!(s, BfStatus::Ok, "second model embed: {}", last_error());
                assert_eq!(bf_model_free(second as *mut BfModel), BfStatus::Ok);
                // The stale handle, every way it can be used.
                let (s, _) = embed(second, &images[0]);
                assert_eq!(s, BfStatus::InvalidHandle, "stale embed: {}", last_error());
                let mut info = std::mem::MaybeUninit::<BfModelInfo>::uninit();
                // SAFETY: a valid out pointer; the handle is dead, which must be an error.
                let s = unsafe { bf_model_info(second as *const BfModel, info.as_mut_ptr()) };
                assert_eq!(s, BfStatus::InvalidHandle, "stale info: {}", last_error());
                assert_eq!(
                    bf_model_free(second as *mut BfModel),
                    BfStatus::InvalidHandle,
                    "a second free"
                );
                assert!(
                    last_error().contains("not a live model"),
                    "{}",
                    last_error()
                );
                refused += 3;
            }
            refused
        });
        for w in workers {
            w.join().expect("a worker thread panicked");
        }
        done.store(true, Ordering::Relaxed);
        churn.join().expect("the churn thread panicked")
    });
    assert_eq!(bf_model_free(shared as *mut BfModel), BfStatus::Ok);
    let (s, _) = embed(shared, &images[0]);
    assert_eq!(
        s,
        BfStatus::InvalidHandle,
        "the shared model after its free"
    );
    refused
}

#[test]
fn eight_threads_share_a_model_while_a_stale_handle_is_refused() {
    let dir = std::env::temp_dir().join(format!("bridgeface-ffi-stress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let refused = stress(&dir);
    assert!(refused >= 9, "the churn thread made {refused} stale calls");
    let _ = std::fs::remove_dir_all(&dir);
}
