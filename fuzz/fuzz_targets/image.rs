//! Images through the whole input path: decode under the size limits, area resize to the
//! student's input, YuNet's letterbox, then YuNet's decode, NMS and the 5-point alignment on
//! arbitrary network outputs (the values a hostile photo could drive the detector to).
//!
//! Input: byte 0 = number of planted detections n (mod 5); then n records of a u16 cell index
//! and 16 little-endian f32 (cls, obj, 4 box, 10 landmark values); the rest is the image file.
#![no_main]
use bridgeface::data::{align, image};
use bridgeface::model::detector::{self, DETECTOR_SIDE, STRIDES};
use bridgeface::model::student::Normalization;
use bridgeface::tensor::Tensor;
use libfuzzer_sys::fuzz_target;

const RECORD: usize = 2 + 16 * 4;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n % 5) as usize;
    if rest.len() < n * RECORD {
        return;
    }
    let (records, file) = rest.split_at(n * RECORD);
    let Ok(img) = image::decode_rgb8("fuzz.img", file) else {
        return;
    };
    assert_eq!(img.pixels.len(), img.width * img.height * 3);
    let x = image::to_input(&img, 16, &Normalization::default()).expect("a 3×16×16 input");
    assert!(x.data().iter().all(|v| v.is_finite()));
    let lb = align::letterbox(&img, DETECTOR_SIDE);
    let _ = lb.to_bgr_tensor();

    // YuNet's 12 outputs (cls ×3, obj ×3, bbox ×3, kps ×3), zero but for the planted cells.
    let cells: Vec<usize> = STRIDES
        .iter()
        .map(|s| (DETECTOR_SIDE / s) * (DETECTOR_SIDE / s))
        .collect();
    let widths = [1usize, 1, 4, 10];
    let mut outs: Vec<Vec<f32>> = widths
        .iter()
        .flat_map(|w| cells.iter().map(move |c| vec![0.0f32; c * w]))
        .collect();
    for r in records.chunks_exact(RECORD) {
        let cell = u16::from_le_bytes([r[0], r[1]]) as usize;
        let si = cell % 3;
        let idx = (cell / 3) % cells[si];
        let v: Vec<f32> = r[2..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut at = 0;
        for (k, &w) in widths.iter().enumerate() {
            outs[k * 3 + si][idx * w..idx * w + w].copy_from_slice(&v[at..at + w]);
            at += w;
        }
    }
    let outs: Vec<Tensor> = outs
        .into_iter()
        .map(|v| Tensor::new(&[v.len()], v).expect("a 1-D tensor"))
        .collect();
    let dets = detector::decode(&outs, 0.5).expect("outputs of the right sizes");
    for d in &dets {
        let finite = d
            .bbox
            .iter()
            .chain(d.landmarks.as_flattened())
            .all(|v| v.is_finite());
        assert!(
            finite && d.score >= 0.5,
            "a detection YuNet's decode should drop: {d:?}"
        );
    }
    for d in detector::nms(dets, detector::DEFAULT_NMS_THRESHOLD)
        .iter()
        .take(4)
    {
        let landmarks = d.landmarks.map(|p| {
            let q = lb.to_original([p[0] as f64, p[1] as f64]);
            [q[0], q[1]]
        });
        if let Ok(chip) = align::align_face(&img, &landmarks, 16) {
            assert_eq!((chip.width, chip.height), (16, 16));
        }
    }
});
