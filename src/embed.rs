//! The library's front door for embedding: decoded images in, L2-normalised embeddings out,
//! through the student and the run-time kernel table. Used by the CLI and the C ABI alike.

use crate::cpu::Kernels;
use crate::data::image::{self, Rgb8};
use crate::error::{Error, Result};
use crate::model::student::StudentNet;
use crate::tensor::Tensor;

/// Embeds decoded images with one batched forward pass (on all CPUs).
pub fn embed_rgb(net: &StudentNet, k: &Kernels, images: &[Rgb8]) -> Result<Tensor> {
    embed_rgb_threads(net, k, images, crate::model::student::default_threads())
}

/// Embeds decoded images with one batched forward pass split over `threads` threads.
pub fn embed_rgb_threads(
    net: &StudentNet,
    k: &Kernels,
    images: &[Rgb8],
    threads: usize,
) -> Result<Tensor> {
    if threads == 0 {
        return Err(Error::parameter("threads", "`threads` must be at least 1"));
    }
    if images.is_empty() {
        return Err(Error::EmptyInput("no images given".into()));
    }
    let inputs = images
        .iter()
        .map(|img| image::to_input(img, net.resolution(), &net.info.normalization))
        .collect::<Result<Vec<_>>>()?;
    net.forward_threads(k, &Tensor::stack(&inputs)?, threads)
}

/// Embeds decoded images with the SFace teacher: each is resized to 112×112 (area averaging;
/// aligned chips already are) and fed as RGB 0..255, which the teacher graph normalises itself.
pub fn embed_rgb_teacher(
    teacher: &crate::model::teacher::Teacher,
    k: &Kernels,
    images: &[Rgb8],
) -> Result<Tensor> {
    teacher.forward(k, &teacher_input(images)?)
}

/// The teacher's input batch `[n, 3, 112, 112]` for decoded images: each resized to 112×112
/// (area averaging) as RGB 0..255, which the teacher graph normalises itself.
pub fn teacher_input(images: &[Rgb8]) -> Result<Tensor> {
    use crate::model::student::Normalization;
    use crate::model::teacher::TEACHER_RESOLUTION;
    if images.is_empty() {
        return Err(Error::EmptyInput("no images given".into()));
    }
    let raw = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let inputs = images
        .iter()
        .map(|img| image::to_input(img, TEACHER_RESOLUTION, &raw))
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&inputs)
}

/// Finds the best face in `img` with YuNet (letterboxed to 640×640) and warps it onto the
/// ArcFace template at `size × size`. `None` when no face scores at least `score_threshold`.
pub fn detect_and_align(
    det: &crate::model::detector::Detector,
    k: &Kernels,
    img: &Rgb8,
    size: usize,
    score_threshold: f32,
) -> Result<Option<(Rgb8, crate::model::detector::Detection)>> {
    let Some(best) = detect_faces(det, k, img, score_threshold)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let landmarks = best.landmarks.map(|p| [p[0] as f64, p[1] as f64]);
    let chip = crate::data::align::align_face(img, &landmarks, size)?;
    Ok(Some((chip, best)))
}

/// Every face YuNet finds in `img` (letterboxed to its 640×640 input), best score first, with
/// boxes and landmarks mapped back to the image's own pixel coordinates.
pub fn detect_faces(
    det: &crate::model::detector::Detector,
    k: &Kernels,
    img: &Rgb8,
    score_threshold: f32,
) -> Result<Vec<crate::model::detector::Detection>> {
    use crate::data::align;
    use crate::model::detector::DETECTOR_SIDE;
    let lb = align::letterbox(img, DETECTOR_SIDE);
    let dets = det.detect(k, &lb.to_bgr_tensor(), score_threshold)?;
    Ok(dets
        .into_iter()
        .map(|d| {
            let tl = lb.to_original([d.bbox[0] as f64, d.bbox[1] as f64]);
            let mut o = d;
            o.bbox = [
                tl[0] as f32,
                tl[1] as f32,
                (d.bbox[2] as f64 / lb.scale) as f32,
                (d.bbox[3] as f64 / lb.scale) as f32,
            ];
            o.landmarks = d.landmarks.map(|p| {
                let q = lb.to_original([p[0] as f64, p[1] as f64]);
                [q[0] as f32, q[1] as f32]
            });
            o
        })
        .collect())
}

/// Closed-set identification rank-1: each probe is assigned the label of the gallery embedding
/// with the highest cosine; returns (correct, probes). Rows are L2-normalised embeddings.
pub fn identification_rank1(
    gallery: &Tensor,
    gallery_labels: &[usize],
    probes: &Tensor,
    probe_labels: &[usize],
) -> Result<(usize, usize)> {
    let [g, d] = gallery.dims2("gallery embeddings")?;
    let [p, d2] = probes.dims2("probe embeddings")?;
    if d != d2 || g != gallery_labels.len() || p != probe_labels.len() || g == 0 {
        return Err(Error::InvalidArgument(format!(
            "gallery [{g}, {d}] with {} labels and probes [{p}, {d2}] with {} labels do not fit",
            gallery_labels.len(),
            probe_labels.len()
        )));
    }
    let mut correct = 0;
    for (i, &label) in probe_labels.iter().enumerate() {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for (j, &gl) in gallery_labels.iter().enumerate() {
            let c = crate::ops::cosine(probes.row(i), gallery.row(j))?;
            if c > best.0 {
                best = (c, gl);
            }
        }
        if best.1 == label {
            correct += 1;
        }
    }
    Ok((correct, p))
}
