//! The SFace teacher on our own engine: an imported graph with one `[n, 3, 112, 112]` RGB 0–255
//! input and a 128-D output. It checks the graph's interface; it does not read ONNX itself.

use crate::cpu::Kernels;
use crate::error::{Error, Result};
use crate::model::graph::Graph;
use crate::model::plan::GraphPlan;
use crate::ops;
use crate::tensor::Tensor;

/// SFace's input side.
pub const TEACHER_RESOLUTION: usize = 112;
/// SFace's embedding width.
pub const TEACHER_EMBEDDING: usize = 128;
/// OpenCV's FaceRecognizerSF cosine threshold for "same person".
pub const TEACHER_THRESHOLD: f32 = 0.363;

/// SFace, ready to run.
#[derive(Clone, Debug)]
pub struct Teacher {
    pub graph: Graph,
    /// The graph with its weights packed once (what `forward` runs).
    plan: GraphPlan,
}

impl Teacher {
    /// Wraps an imported graph, checking that it takes one `[_, 3, 112, 112]` input and gives one
    /// output.
    pub fn from_graph(graph: Graph) -> Result<Teacher> {
        let ok_in = graph.spec.inputs.len() == 1
            && graph.spec.inputs[0].shape.len() == 4
            && graph.spec.inputs[0].shape[1..]
                .iter()
                .zip([3, TEACHER_RESOLUTION, TEACHER_RESOLUTION])
                .all(|(d, want)| d.map_or(true, |d| d == want));
        if !ok_in || graph.spec.outputs.len() != 1 {
            return Err(Error::Onnx(format!(
                "a teacher graph needs one [n, 3, {0}, {0}] input and one output; this one has inputs {1:?} and outputs {2:?}",
                TEACHER_RESOLUTION,
                graph.spec.inputs.iter().map(|i| (&i.name, &i.shape)).collect::<Vec<_>>(),
                graph.spec.outputs
            )));
        }
        let plan = GraphPlan::new(graph.clone())?;
        Ok(Teacher { graph, plan })
    }

    /// Raw SFace outputs `[n, 128]` for `[n, 3, 112, 112]` RGB in 0..255 (the graph normalises).
    pub fn forward_raw(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = x.dims4("teacher input")?;
        if c != 3 || h != TEACHER_RESOLUTION || w != TEACHER_RESOLUTION {
            return Err(Error::Shape(format!(
                "teacher input must be [n, 3, {0}, {0}], got [{n}, {c}, {h}, {w}]",
                TEACHER_RESOLUTION
            )));
        }
        let name = self.graph.spec.inputs[0].name.clone();
        let fixed_batch = self.graph.spec.inputs[0].shape[0];
        let mut out = match fixed_batch {
            // A graph with a baked-in batch size runs one face at a time.
            Some(b) if b != n => {
                let per = 3 * h * w;
                let mut rows = Vec::with_capacity(n);
                for i in 0..n {
                    let one =
                        Tensor::new(&[1, 3, h, w], x.data()[i * per..(i + 1) * per].to_vec())?;
                    rows.push(self.plan.run(k, vec![(name.clone(), one)])?.remove(0));
                }
                let flat: Vec<f32> = rows.iter().flat_map(|t| t.data().to_vec()).collect();
                let d = flat.len() / n.max(1);
                Tensor::new(&[n, d], flat)?
            }
            _ => self.plan.run(k, vec![(name, x.clone())])?.remove(0),
        };
        let d = out.numel() / n.max(1);
        out = out.reshape(&[n, d])?;
        if d != TEACHER_EMBEDDING {
            return Err(Error::Shape(format!(
                "teacher gave {d}-D outputs, expected {TEACHER_EMBEDDING}"
            )));
        }
        Ok(out)
    }

    /// L2-normalised embeddings `[n, 128]`.
    pub fn forward(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        let mut e = self.forward_raw(k, x)?;
        ops::l2_normalize(k, &mut e)?;
        Ok(e)
    }
}
