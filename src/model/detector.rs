//! The YuNet (2023mar) face detector on our engine: a fixed 640×640 BGR input, its twelve heads
//! decoded per stride (8, 16, 32) into boxes and 5 landmarks, score threshold and NMS.
//! It takes a ready input tensor; letterboxing and alignment belong to `data::align`.

use crate::cpu::Kernels;
use crate::error::{Error, Result};
use crate::model::graph::Graph;
use crate::model::plan::GraphPlan;
use crate::tensor::Tensor;

/// YuNet's fixed input side.
pub const DETECTOR_SIDE: usize = 640;
/// The feature strides of YuNet's three heads.
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// OpenCV FaceDetectorYN's defaults.
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.9;
pub const DEFAULT_NMS_THRESHOLD: f32 = 0.3;

/// One face, in the coordinates of the detector input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// `sqrt(cls * obj)`, as OpenCV computes it.
    pub score: f32,
    /// Left, top, width, height.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right mouth corner, left mouth corner (image left to right
    /// for a frontal face), as (x, y).
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    /// Intersection over union of two boxes.
    pub fn iou(&self, o: &Detection) -> f32 {
        let [ax, ay, aw, ah] = self.bbox;
        let [bx, by, bw, bh] = o.bbox;
        let iw = ((ax + aw).min(bx + bw) - ax.max(bx)).max(0.0);
        let ih = ((ay + ah).min(by + bh) - ay.max(by)).max(0.0);
        let inter = iw * ih;
        let union = aw * ah + bw * bh - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// The names of the twelve YuNet outputs, in the order `decode` reads them.
pub fn output_names() -> Vec<String> {
    let mut v = Vec::new();
    for head in ["cls", "obj", "bbox", "kps"] {
        for s in STRIDES {
            v.push(format!("{head}_{s}"));
        }
    }
    v
}

/// YuNet, ready to run.
#[derive(Clone, Debug)]
pub struct Detector {
    pub graph: Graph,
    /// Index into the graph outputs of each name of `output_names()`.
    order: Vec<usize>,
    /// The graph with its weights packed once (what `forward` runs).
    plan: GraphPlan,
}

impl Detector {
    /// Wraps an imported YuNet graph, checking its input and its twelve named outputs.
    pub fn from_graph(graph: Graph) -> Result<Detector> {
        let ok_in = graph.spec.inputs.len() == 1
            && graph.spec.inputs[0].shape.len() == 4
            && graph.spec.inputs[0].shape[1..]
                == [Some(3), Some(DETECTOR_SIDE), Some(DETECTOR_SIDE)];
        if !ok_in {
            return Err(Error::Onnx(format!(
                "a YuNet graph takes one [1, 3, {DETECTOR_SIDE}, {DETECTOR_SIDE}] input; this one has {:?}",
                graph.spec.inputs.iter().map(|i| (&i.name, &i.shape)).collect::<Vec<_>>()
            )));
        }
        let order = output_names()
            .iter()
            .map(|n| {
                graph.spec.outputs.iter().position(|o| o == n).ok_or_else(|| {
                    Error::Onnx(format!(
                        "the detector graph has no output `{n}`; expected YuNet 2023mar's cls/obj/bbox/kps_{{8,16,32}}"
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let plan = GraphPlan::new(graph.clone())?;
        Ok(Detector { graph, order, plan })
    }

    /// The twelve raw outputs for a `[1, 3, 640, 640]` BGR 0..255 input, in `output_names()` order.
    pub fn raw_outputs(&self, k: &Kernels, x: &Tensor) -> Result<Vec<Tensor>> {
        if x.shape() != [1, 3, DETECTOR_SIDE, DETECTOR_SIDE] {
            return Err(Error::Shape(format!(
                "detector input must be [1, 3, {DETECTOR_SIDE}, {DETECTOR_SIDE}], got {:?}",
                x.shape()
            )));
        }
        let name = self.graph.spec.inputs[0].name.clone();
        let mut outs: Vec<Option<Tensor>> = self
            .plan
            .run(k, vec![(name, x.clone())])?
            .into_iter()
            .map(Some)
            .collect();
        self.order
            .iter()
            .map(|&i| {
                outs[i]
                    .take()
                    .ok_or_else(|| Error::Shape("detector output used twice".into()))
            })
            .collect()
    }

    /// Faces in a `[1, 3, 640, 640]` BGR 0..255 input, best first, after threshold and NMS.
    pub fn detect(&self, k: &Kernels, x: &Tensor, score_threshold: f32) -> Result<Vec<Detection>> {
        let outs = self.raw_outputs(k, x)?;
        let dets = decode(&outs, score_threshold)?;
        Ok(nms(dets, DEFAULT_NMS_THRESHOLD))
    }
}

/// Decodes YuNet's outputs (in `output_names()` order) as OpenCV's FaceDetectorYN does: for the
/// cell at row `r`, column `c` of stride `s`, score = sqrt(clamp(cls)·clamp(obj)), centre =
/// ((c, r) + bbox[0..2])·s, size = exp(bbox[2..4])·s, landmark i = ((c, r) + kps[2i..2i+2])·s.
pub fn decode(outs: &[Tensor], score_threshold: f32) -> Result<Vec<Detection>> {
    if outs.len() != 12 {
        return Err(Error::Shape(format!(
            "YuNet has 12 outputs, got {}",
            outs.len()
        )));
    }
    let mut dets = Vec::new();
    for (si, &s) in STRIDES.iter().enumerate() {
        let cols = DETECTOR_SIDE / s;
        let cells = cols * (DETECTOR_SIDE / s);
        let (cls, obj, bbox, kps) = (
            outs[si].data(),
            outs[3 + si].data(),
            outs[6 + si].data(),
            outs[9 + si].data(),
        );
        if cls.len() != cells
            || obj.len() != cells
            || bbox.len() != 4 * cells
            || kps.len() != 10 * cells
        {
            return Err(Error::Shape(format!(
                "stride {s} outputs have {}, {}, {}, {} values; expected {cells}, {cells}, {}, {}",
                cls.len(),
                obj.len(),
                bbox.len(),
                kps.len(),
                4 * cells,
                10 * cells
            )));
        }
        let sf = s as f32;
        for idx in 0..cells {
            let score = (cls[idx].clamp(0.0, 1.0) * obj[idx].clamp(0.0, 1.0)).sqrt();
            // NaN passes through clamp and compares false, so it is dropped explicitly.
            if score.is_nan() || score < score_threshold {
                continue;
            }
            let (r, c) = ((idx / cols) as f32, (idx % cols) as f32);
            let b = &bbox[idx * 4..idx * 4 + 4];
            let cx = (c + b[0]) * sf;
            let cy = (r + b[1]) * sf;
            let w = b[2].exp() * sf;
            let h = b[3].exp() * sf;
            let mut landmarks = [[0.0f32; 2]; 5];
            for (i, l) in landmarks.iter_mut().enumerate() {
                *l = [
                    (kps[idx * 10 + 2 * i] + c) * sf,
                    (kps[idx * 10 + 2 * i + 1] + r) * sf,
                ];
            }
            let bbox = [cx - w / 2.0, cy - h / 2.0, w, h];
            // A box or landmark the network drove to infinity or NaN locates nothing; keeping it
            // would hand NaN coordinates to NMS and the aligner.
            if !bbox
                .iter()
                .chain(landmarks.as_flattened())
                .all(|v| v.is_finite())
            {
                continue;
            }
            dets.push(Detection {
                score,
                bbox,
                landmarks,
            });
        }
    }
    Ok(dets)
}

/// Greedy non-maximum suppression: best score first, dropping boxes whose IoU with a kept box
/// exceeds `iou_threshold`.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.iter().all(|k| k.iou(&d) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            score,
            bbox,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_separate_ones() {
        let dets = vec![
            det(0.8, [0.0, 0.0, 10.0, 10.0]),
            det(0.95, [1.0, 1.0, 10.0, 10.0]),
            det(0.9, [50.0, 50.0, 10.0, 10.0]),
        ];
        let kept = nms(dets, 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.95);
        assert_eq!(kept[1].score, 0.9);
        assert!(
            (det(1.0, [0.0, 0.0, 2.0, 2.0]).iou(&det(1.0, [1.0, 0.0, 2.0, 2.0])) - 1.0 / 3.0).abs()
                < 1e-6
        );
    }

    #[test]
    fn decode_places_a_single_hot_cell_where_opencv_would() {
        // One confident cell at stride 16, row 3, column 5, with known offsets.
        let mut outs = Vec::new();
        for width in [1usize, 1, 4, 10] {
            for s in STRIDES {
                let cells = (DETECTOR_SIDE / s).pow(2);
                outs.push(Tensor::zeros(&[1, cells, width]));
            }
        }
        let cols = DETECTOR_SIDE / 16;
        let idx = 3 * cols + 5;
        outs[1].data_mut()[idx] = 0.81; // cls_16
        outs[4].data_mut()[idx] = 1.0; // obj_16
        outs[7].data_mut()[idx * 4..idx * 4 + 4].copy_from_slice(&[0.5, 0.25, 0.0, 2f32.ln()]);
        outs[10].data_mut()[idx * 10] = -1.0;
        let d = decode(&outs, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        assert!((d[0].score - 0.9).abs() < 1e-6);
        // centre (5.5·16, 3.25·16) = (88, 52), size (16, 32)
        let want = [80.0, 36.0, 16.0, 32.0];
        for (g, w) in d[0].bbox.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{:?}", d[0].bbox);
        }
        assert_eq!(d[0].landmarks[0], [64.0, 48.0]);
        assert!(decode(&outs, 0.95).unwrap().is_empty());
        assert!(decode(&outs[..11], 0.5).is_err());
    }
}
