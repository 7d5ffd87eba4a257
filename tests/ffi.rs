//! The C ABI called from Rust: every kind of bad argument returns its status code and sets
//! `bf_last_error` without crashing, and the good paths equal the library's own embeddings.

use bridgeface::cpu;
use bridgeface::data::image::{self, Rgb8};
use bridgeface::data::synthetic::synthetic_face;
use bridgeface::embed::embed_rgb;
use bridgeface::ffi::{
    bf_embed_f32, bf_embed_rgb8, bf_last_error, bf_model_free, bf_model_info, bf_model_load,
    bf_similarity, bf_version, BfModel, BfModelInfo, BfStatus,
};
use bridgeface::model::student::{StudentInfo, StudentNet, StudentParams};
use bridgeface::ops;
use bridgeface::tensor::Tensor;
use bridgeface::weights::StoreDtype;
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr;

const RES: usize = 16;
const EMB: usize = 128;

/// A fresh scratch folder for one test (tests run in parallel, so each gets its own).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridgeface-ffi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// Writes a random 16×16 student and returns its path.
fn write_student(dir: &std::path::Path, seed: u64) -> PathBuf {
    let path = dir.join(format!("student-{seed}.safetensors"));
    StudentParams::random(StudentInfo::new(RES).expect("resolution"), seed)
        .save(&path, StoreDtype::F32)
        .expect("save student");
    path
}

fn c_path(p: &std::path::Path) -> CString {
    CString::new(p.to_str().expect("utf-8 temp path")).expect("no NUL in path")
}

fn last_error() -> String {
    // SAFETY: bf_last_error never returns NULL and the string is NUL-terminated and valid
    // until the next bf_* call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(bf_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts a failed call's status and that it left a message mentioning `needle`.
fn assert_fails(status: BfStatus, expected: BfStatus, needle: &str) {
    assert_eq!(status, expected, "last error: {}", last_error());
    let msg = last_error();
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error message {msg:?} should mention {needle:?}"
    );
}

fn load(path: &std::path::Path) -> *mut BfModel {
    let cp = c_path(path);
    let mut m: *mut BfModel = ptr::null_mut();
    // SAFETY: a valid C string and a valid out pointer.
    let s = unsafe { bf_model_load(cp.as_ptr(), &mut m) };
    assert_eq!(s, BfStatus::Ok, "load: {}", last_error());
    assert!(!m.is_null());
    assert_eq!(last_error(), "", "a success leaves no error message");
    m
}

/// Packs images into one buffer with `pad` extra bytes per row and no padding after the last
/// row of the last image (the smallest buffer the contract allows).
fn pack_strided(images: &[Rgb8], pad: usize) -> (Vec<u8>, usize) {
    let (w, h) = (images[0].width, images[0].height);
    let stride = w * 3 + pad;
    let mut buf = vec![0xAAu8; (images.len() * h - 1) * stride + w * 3];
    for (i, img) in images.iter().enumerate() {
        for y in 0..h {
            let at = (i * h + y) * stride;
            buf[at..at + w * 3].copy_from_slice(&img.pixels[y * w * 3..(y + 1) * w * 3]);
        }
    }
    (buf, stride)
}

#[test]
fn load_rejects_null_missing_and_corrupt_files() {
    let dir = scratch("load");
    let good = write_student(&dir, 1);
    let cp = c_path(&good);
    // A non-null sentinel that a failed load must overwrite with NULL.
    let sentinel = 0x1234usize as *mut BfModel;

    let mut m = sentinel;
    // SAFETY: NULL path is what is being tested; `m` is a valid out pointer.
    let s = unsafe { bf_model_load(ptr::null(), &mut m) };
    assert_fails(s, BfStatus::NullPointer, "path");
    assert!(m.is_null(), "failed load must store NULL");

    // SAFETY: valid path, NULL out pointer is what is being tested.
    let s = unsafe { bf_model_load(cp.as_ptr(), ptr::null_mut()) };
    assert_fails(s, BfStatus::NullPointer, "out_model");

    let missing = c_path(&dir.join("does-not-exist.safetensors"));
    let mut m = sentinel;
    // SAFETY: valid C string and out pointer.
    let s = unsafe { bf_model_load(missing.as_ptr(), &mut m) };
    assert_fails(s, BfStatus::Io, "does-not-exist");
    assert!(m.is_null());

    // Garbage bytes, a truncated real file, and a valid file of the wrong kind.
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x08\x00\x00\x00\x00\x00\x00\x00not json").expect("write");
    let bytes = std::fs::read(&good).expect("read");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").expect("write");
    for bad in [&garbage, &truncated, &empty] {
        let cb = c_path(bad);
        let mut m = sentinel;
        // SAFETY: valid C string and out pointer.
        let s = unsafe { bf_model_load(cb.as_ptr(), &mut m) };
        assert_fails(
            s,
            BfStatus::ModelFormat,
            bad.file_name().unwrap().to_str().unwrap(),
        );
        assert!(m.is_null());
    }

    // A directory is not a file.
    let cd = c_path(&dir);
    let mut m = sentinel;
    // SAFETY: valid C string and out pointer.
    let s = unsafe { bf_model_load(cd.as_ptr(), &mut m) };
    assert_ne!(s, BfStatus::Ok);
    assert!(!last_error().is_empty());
    assert!(m.is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_reports_the_model() {
    let dir = scratch("info");
    let path = write_student(&dir, 2);
    let params = StudentParams::load(&path).expect("load");
    let m = load(&path);
    let mut info = BfModelInfo::default();
    // SAFETY: live handle and a valid out pointer.
    assert_eq!(unsafe { bf_model_info(m, &mut info) }, BfStatus::Ok);
    assert_eq!(info.resolution as usize, RES);
    assert_eq!(info.embedding_size as usize, EMB);
    assert_eq!(info.parameter_count as usize, params.parameter_count());
    assert_eq!(info.threshold, params.info.threshold);
    assert_eq!(info.mean, params.info.normalization.mean);
    assert_eq!(info.std, params.info.normalization.std);

    // SAFETY: NULL out pointer is what is being tested.
    let s = unsafe { bf_model_info(m, ptr::null_mut()) };
    assert_fails(s, BfStatus::NullPointer, "out_info");
    let mut raw = [0u64; 8];
    let odd_info = raw
        .as_mut_ptr()
        .cast::<u8>()
        .wrapping_add(1)
        .cast::<BfModelInfo>();
    // SAFETY: a misaligned pointer is what is being tested; it must not be written through.
    let s = unsafe { bf_model_info(m, odd_info) };
    assert_fails(s, BfStatus::InvalidArgument, "aligned");
    assert_eq!(raw, [0; 8]);
    // SAFETY: NULL model is what is being tested.
    let s = unsafe { bf_model_info(ptr::null(), &mut info) };
    assert_fails(s, BfStatus::NullPointer, "model");
    assert_eq!(bf_model_free(m), BfStatus::Ok);

    // SAFETY: bf_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(bf_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn freed_forged_and_null_handles_are_rejected() {
    let dir = scratch("handles");
    let path = write_student(&dir, 3);
    let m = load(&path);
    let face = synthetic_face(1, 0, 0.0);
    let mut out = vec![f32::NAN; EMB];
    let mut info = BfModelInfo::default();
    let input = vec![0.0f32; 3 * RES * RES];

    assert_eq!(bf_model_free(m), BfStatus::Ok);
    assert_eq!(last_error(), "");
    // Double free.
    assert_fails(
        bf_model_free(m),
        BfStatus::InvalidHandle,
        "not a live model",
    );
    // Use after free, in every function that takes a model.
    // SAFETY: the handle is dead (what is being tested); the other pointers are valid.
    let s = unsafe { bf_model_info(m, &mut info) };
    assert_fails(s, BfStatus::InvalidHandle, "not a live model");
    // SAFETY: as above; `face.pixels` holds 64×64×3 bytes.
    let s = unsafe { bf_embed_rgb8(m, face.pixels.as_ptr(), 1, 64, 64, 64 * 3, out.as_mut_ptr()) };
    assert_fails(s, BfStatus::InvalidHandle, "not a live model");
    // SAFETY: as above; `input` holds 3×16×16 floats.
    let s = unsafe { bf_embed_f32(m, input.as_ptr(), 1, 3, RES, RES, out.as_mut_ptr()) };
    assert_fails(s, BfStatus::InvalidHandle, "not a live model");
    assert!(
        out.iter().all(|v| v.is_nan()),
        "a failed call must not write out"
    );

    // A new model does not bring the old handle back to life.
    let m2 = load(&path);
    assert_ne!(m, m2, "handles are never reused");
    // SAFETY: dead handle, valid out pointer.
    let s = unsafe { bf_model_info(m, &mut info) };
    assert_fails(s, BfStatus::InvalidHandle, "not a live model");

    // Forged handles: small integers, an address of real memory, all bits set.
    let mut local = 0u64;
    for forged in [
        1usize as *mut BfModel,
        0x10usize as *mut BfModel,
        (&mut local as *mut u64).cast::<BfModel>(),
        usize::MAX as *mut BfModel,
    ] {
        // SAFETY: the handle is forged (what is being tested); it is never dereferenced.
        let s = unsafe { bf_model_info(forged, &mut info) };
        assert_fails(s, BfStatus::InvalidHandle, "not a live model");
        assert_fails(
            bf_model_free(forged),
            BfStatus::InvalidHandle,
            "not a live model",
        );
    }
    assert_eq!(local, 0, "a forged handle's memory was never touched");
    // Freeing NULL.
    assert_fails(
        bf_model_free(ptr::null_mut()),
        BfStatus::NullPointer,
        "model",
    );
    // The live model still works after all that.
    // SAFETY: live handle, valid pointers and sizes.
    let s = unsafe {
        bf_embed_rgb8(
            m2,
            face.pixels.as_ptr(),
            1,
            64,
            64,
            64 * 3,
            out.as_mut_ptr(),
        )
    };
    assert_eq!(s, BfStatus::Ok, "{}", last_error());
    assert_eq!(bf_model_free(m2), BfStatus::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embed_rgb8_rejects_bad_arguments_without_writing() {
    let dir = scratch("rgb8-bad");
    let m = load(&write_student(&dir, 4));
    let face = synthetic_face(1, 0, 0.0);
    let px = face.pixels.as_ptr();
    let mut out = vec![f32::NAN; 2 * EMB];
    let o = out.as_mut_ptr();
    type Call = (
        &'static str,
        *const BfModel,
        *const u8,
        usize,
        usize,
        usize,
        usize,
        *mut f32,
        BfStatus,
        &'static str,
    );
    // One byte past `o`: a float pointer that is not 4-byte aligned (never dereferenced).
    let misaligned = o.cast::<u8>().wrapping_add(1).cast::<f32>();
    use BfStatus::{InvalidArgument as Invalid, NullPointer as Null};
    #[rustfmt::skip]
    let cases: [Call; 12] = [
        ("null model", ptr::null(), px, 1, 64, 64, 192, o, Null, "model"),
        ("null pixels", m, ptr::null(), 1, 64, 64, 192, o, Null, "pixels"),
        ("null out", m, px, 1, 64, 64, 192, ptr::null_mut(), Null, "out"),
        ("misaligned out", m, px, 1, 64, 64, 192, misaligned, Invalid, "aligned"),
        ("n = 0", m, px, 0, 64, 64, 192, o, Invalid, "n is 0"),
        ("height 0", m, px, 1, 0, 64, 192, o, Invalid, "empty"),
        ("width 0", m, px, 1, 64, 0, 192, o, Invalid, "empty"),
        ("stride < width×3", m, px, 1, 64, 64, 191, o, Invalid, "row_stride"),
        ("stride 0", m, px, 1, 64, 64, 0, o, Invalid, "row_stride"),
        ("n overflows", m, px, usize::MAX, 64, 64, 192, o, Invalid, "overflow"),
        ("width overflows", m, px, 1, 1, usize::MAX / 2, usize::MAX, o, Invalid, "overflow"),
        ("stride overflows", m, px, 1, 64, 64, usize::MAX / 8, o, Invalid, "overflow"),
    ];
    for (what, model, pixels, n, h, w, stride, out_ptr, expected, needle) in cases {
        // SAFETY: each case has one bad argument, which the function must reject before it
        // reads `pixels` or writes `out`; the other pointers are valid for one 64×64 image.
        let s = unsafe { bf_embed_rgb8(model, pixels, n, h, w, stride, out_ptr) };
        assert_eq!(s, expected, "{what}: {}", last_error());
        let msg = last_error();
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} should mention {needle:?}"
        );
        assert!(out.iter().all(|v| v.is_nan()), "{what}: out was written");
    }
    assert_eq!(bf_model_free(m), BfStatus::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embed_rgb8_equals_the_library_embedding() {
    let dir = scratch("rgb8-good");
    let path = write_student(&dir, 5);
    let net = StudentNet::load(&path).expect("load");
    let k = cpu::kernels().expect("kernels");
    let m = load(&path);
    // 64×64 faces (resized to 16×16), then native 16×16, then an odd size.
    let faces = vec![
        synthetic_face(1, 0, 0.0),
        synthetic_face(1, 2, 0.1),
        synthetic_face(2, -1, 0.05),
    ];
    let small: Vec<Rgb8> = faces.iter().map(|f| crop(f, 24, 20, RES, RES)).collect();
    let odd: Vec<Rgb8> = faces.iter().map(|f| crop(f, 3, 5, 37, 29)).collect();
    for (label, imgs, pad) in [
        ("64×64", &faces, 7),
        ("16×16", &small, 0),
        ("37×29", &odd, 1),
    ] {
        let expected = embed_rgb(&net, k, imgs).expect("library embedding");
        let (buf, stride) = pack_strided(imgs, pad);
        let mut out = vec![f32::NAN; imgs.len() * EMB];
        // SAFETY: `buf` holds exactly (n·h − 1)·stride + w·3 bytes, `out` n·128 floats.
        let s = unsafe {
            bf_embed_rgb8(
                m,
                buf.as_ptr(),
                imgs.len(),
                imgs[0].height,
                imgs[0].width,
                stride,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(s, BfStatus::Ok, "{label}: {}", last_error());
        // The same code path runs on the same input: bit-for-bit equal.
        assert_eq!(out, expected.data(), "{label}: C ABI and library disagree");
        let norm: f32 = out[..EMB].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{label}: embedding norm {norm}");
    }
    assert_eq!(bf_model_free(m), BfStatus::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

fn crop(img: &Rgb8, x0: usize, y0: usize, w: usize, h: usize) -> Rgb8 {
    let stride = img.width * 3;
    Rgb8::from_strided(w, h, stride, &img.pixels[y0 * stride + x0 * 3..]).expect("crop")
}

#[test]
fn embed_f32_checks_shape_and_equals_forward() {
    let dir = scratch("f32");
    let path = write_student(&dir, 6);
    let net = StudentNet::load(&path).expect("load");
    let k = cpu::kernels().expect("kernels");
    let m = load(&path);
    let inputs: Vec<Tensor> = [synthetic_face(3, 0, 0.0), synthetic_face(4, 1, -0.1)]
        .iter()
        .map(|f| image::to_input(f, RES, &net.info.normalization).expect("input"))
        .collect();
    let x = Tensor::stack(&inputs).expect("stack");
    let expected = net.forward(k, &x).expect("forward");
    let mut out = vec![f32::NAN; 2 * EMB];
    // SAFETY: `x` holds 2×3×16×16 floats, `out` 2×128.
    let s = unsafe { bf_embed_f32(m, x.data().as_ptr(), 2, 3, RES, RES, out.as_mut_ptr()) };
    assert_eq!(s, BfStatus::Ok, "{}", last_error());
    assert_eq!(out, expected.data());

    let mut fresh = vec![f32::NAN; 2 * EMB];
    let p = x.data().as_ptr();
    let o = fresh.as_mut_ptr();
    let shapes = [
        ("n = 0", 0, 3, RES, RES, "n is 0"),
        ("1 channel", 2, 1, RES, RES, "[n, 1, 16, 16]"),
        ("wrong height", 2, 3, RES - 1, RES, "[n, 3, 15, 16]"),
        ("wrong width", 2, 3, RES, 32, "[n, 3, 16, 32]"),
        ("n overflows", usize::MAX / 4, 3, RES, RES, "overflow"),
    ];
    for (what, n, c, h, w, needle) in shapes {
        // SAFETY: the shape is wrong (what is being tested) and must be rejected before any
        // read; the pointers are valid for the correct 2×3×16×16 shape.
        let s = unsafe { bf_embed_f32(m, p, n, c, h, w, o) };
        assert_eq!(s, BfStatus::InvalidArgument, "{what}: {}", last_error());
        assert!(last_error().contains(needle), "{what}: {}", last_error());
    }
    // SAFETY: NULL input / out are what is being tested.
    let s = unsafe { bf_embed_f32(m, ptr::null(), 1, 3, RES, RES, o) };
    assert_fails(s, BfStatus::NullPointer, "input");
    // SAFETY: as above.
    let s = unsafe { bf_embed_f32(m, p, 1, 3, RES, RES, ptr::null_mut()) };
    assert_fails(s, BfStatus::NullPointer, "out");
    // SAFETY: NULL model, valid other pointers.
    let s = unsafe { bf_embed_f32(ptr::null(), p, 1, 3, RES, RES, o) };
    assert_fails(s, BfStatus::NullPointer, "model");
    let odd_in = x.data().as_ptr().cast::<u8>().wrapping_add(2).cast::<f32>();
    let odd_out = o.cast::<u8>().wrapping_add(1).cast::<f32>();
    // SAFETY: misaligned pointers are what is being tested; they are never dereferenced.
    let s = unsafe { bf_embed_f32(m, odd_in, 1, 3, RES, RES, o) };
    assert_fails(s, BfStatus::InvalidArgument, "input");
    assert!(last_error().contains("aligned"), "{}", last_error());
    // SAFETY: as above.
    let s = unsafe { bf_embed_f32(m, p, 1, 3, RES, RES, odd_out) };
    assert_fails(s, BfStatus::InvalidArgument, "aligned");
    let mut bad = x.data().to_vec();
    bad[100] = f32::NAN;
    // SAFETY: `bad` holds 2×3×16×16 floats.
    let s = unsafe { bf_embed_f32(m, bad.as_ptr(), 2, 3, RES, RES, o) };
    assert_fails(s, BfStatus::InvalidArgument, "NaN");
    assert!(
        fresh.iter().all(|v| v.is_nan()),
        "a failed call must not write out"
    );
    assert_eq!(bf_model_free(m), BfStatus::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn similarity_matches_cosine_and_rejects_bad_arguments() {
    let a: Vec<f32> = (0..EMB).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..EMB).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut cos = f32::NAN;
    // SAFETY: both vectors hold EMB floats; `cos` is writable.
    let s = unsafe { bf_similarity(a.as_ptr(), b.as_ptr(), EMB, &mut cos) };
    assert_eq!(s, BfStatus::Ok);
    assert_eq!(cos, ops::cosine(&a, &b).unwrap());
    // SAFETY: as above; the two inputs may alias.
    let s = unsafe { bf_similarity(a.as_ptr(), a.as_ptr(), EMB, &mut cos) };
    assert_eq!(s, BfStatus::Ok);
    assert!((cos - 1.0).abs() < 1e-6, "self-similarity {cos}");

    let mut untouched = f32::NAN;
    // SAFETY: each call has one NULL pointer or zero length, which must be rejected first.
    unsafe {
        let s = bf_similarity(ptr::null(), b.as_ptr(), EMB, &mut untouched);
        assert_fails(s, BfStatus::NullPointer, "a is NULL");
        let s = bf_similarity(a.as_ptr(), ptr::null(), EMB, &mut untouched);
        assert_fails(s, BfStatus::NullPointer, "b is NULL");
        let s = bf_similarity(a.as_ptr(), b.as_ptr(), EMB, ptr::null_mut());
        assert_fails(s, BfStatus::NullPointer, "out_similarity");
        let s = bf_similarity(a.as_ptr(), b.as_ptr(), 0, &mut untouched);
        assert_fails(s, BfStatus::InvalidArgument, "len is 0");
        let s = bf_similarity(a.as_ptr(), b.as_ptr(), usize::MAX, &mut untouched);
        assert_fails(s, BfStatus::InvalidArgument, "overflow");
        let odd = a.as_ptr().cast::<u8>().wrapping_add(1).cast::<f32>();
        let s = bf_similarity(odd, b.as_ptr(), EMB - 1, &mut untouched);
        assert_fails(s, BfStatus::InvalidArgument, "aligned");
    }
    assert!(untouched.is_nan());
}

#[test]
fn last_error_is_per_thread_and_cleared_by_success() {
    assert_fails(
        bf_model_free(ptr::null_mut()),
        BfStatus::NullPointer,
        "model",
    );
    let other = std::thread::spawn(last_error).join().expect("thread");
    assert_eq!(other, "", "another thread's error leaked into this one");
    assert!(!last_error().is_empty(), "this thread's error survives");
    let (a, mut cos) = ([1.0f32, 0.0], 0.0f32);
    // SAFETY: valid vectors of 2 floats and a writable float.
    assert_eq!(
        unsafe { bf_similarity(a.as_ptr(), a.as_ptr(), 2, &mut cos) },
        BfStatus::Ok
    );
    assert_eq!(last_error(), "", "a success clears the message");
}

#[test]
fn concurrent_use_and_free_never_crash() {
    let dir = scratch("threads");
    let path = write_student(&dir, 7);
    let m = load(&path);
    let face = synthetic_face(5, 0, 0.0);
    let mut expected = vec![0.0f32; EMB];
    // SAFETY: live handle, one 64×64 image, 128 floats out.
    let s = unsafe {
        bf_embed_rgb8(
            m,
            face.pixels.as_ptr(),
            1,
            64,
            64,
            192,
            expected.as_mut_ptr(),
        )
    };
    assert_eq!(s, BfStatus::Ok);
    // Handles are plain numbers; pass them between threads as such.
    let handle = m as usize;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let face = face.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..50 {
                    let mut out = vec![0.0f32; EMB];
                    // SAFETY: the handle may be freed meanwhile (what is being tested); the
                    // buffers are valid.
                    let s = unsafe {
                        bf_embed_rgb8(
                            handle as *const BfModel,
                            face.pixels.as_ptr(),
                            1,
                            64,
                            64,
                            192,
                            out.as_mut_ptr(),
                        )
                    };
                    match s {
                        BfStatus::Ok => {
                            assert_eq!(out, expected, "concurrent embedding differs");
                            ok += 1;
                        }
                        BfStatus::InvalidHandle => break,
                        other => panic!("unexpected status {other:?}: {}", last_error()),
                    }
                }
                ok
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(bf_model_free(m), BfStatus::Ok);
    for w in workers {
        w.join().expect("worker thread must not panic");
    }
    assert_eq!(bf_model_free(m), BfStatus::InvalidHandle);
    let _ = std::fs::remove_dir_all(&dir);
}
