//! The SFace teacher on our own engine: an imported graph with one `[n, 3, 112, 112]` RGB 0–255
//! input and a 128-D output. It checks the graph's interface; it does not read ONNX itself.

use crate::cpu::Kernels;
use crate::error::{Error, Result};
use crate::model::graph::Graph;
use crate::model::plan::GraphPlan;
use crate::model::student::default_threads;
use crate::ops;
use crate::tensor::Tensor;

/// SFace's input side.
pub const TEACHER_RESOLUTION: usize = 112;
/// SFace's embedding width.
pub const TEACHER_EMBEDDING: usize = 128;
/// OpenCV's FaceRecognizerSF cosine threshold for "same person".
pub const TEACHER_THRESHOLD: f32 = 0.363;
/// Faces per run of the graph in one thread: one 112×112 face's largest activation
/// (64 channels, ~3 MiB) already fills Zen3's L2, so larger chunks only spill to memory.
pub const TEACHER_FACES_PER_CHUNK: usize = 1;

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

    /// Raw SFace outputs `[n, 128]` for `[n, 3, 112, 112]` RGB in 0..255 (the graph normalises),
    /// on one thread.
    pub fn forward_raw(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        self.forward_raw_threads(k, x, 1)
    }

    /// `forward_raw` on at most `threads` threads (at least one): each thread takes a contiguous
    /// share of the batch and runs it [`TEACHER_FACES_PER_CHUNK`] faces at a time (a graph with
    /// a baked-in batch size runs that many). The result does not depend on the thread count.
    pub fn forward_raw_threads(&self, k: &Kernels, x: &Tensor, threads: usize) -> Result<Tensor> {
        let [n, c, h, w] = x.dims4("teacher input")?;
        if c != 3 || h != TEACHER_RESOLUTION || w != TEACHER_RESOLUTION {
            return Err(Error::Shape(format!(
                "teacher input must be [n, 3, {0}, {0}], got [{n}, {c}, {h}, {w}]",
                TEACHER_RESOLUTION
            )));
        }
        if threads == 0 {
            return Err(Error::parameter("threads", "`threads` must be at least 1"));
        }
        let chunk = self.graph.spec.inputs[0].shape[0].unwrap_or(TEACHER_FACES_PER_CHUNK);
        if chunk == 0 || n % chunk != 0 {
            return Err(Error::Shape(format!(
                "this teacher graph takes batches of {chunk} faces; {n} is not a multiple"
            )));
        }
        let face = 3 * h * w;
        let mut out = vec![0.0f32; n * TEACHER_EMBEDDING];
        let per = n.div_ceil(threads).div_ceil(chunk) * chunk;
        if per >= n {
            self.run_faces(k, chunk, x.data(), &mut out)?;
        } else {
            std::thread::scope(|s| {
                let jobs: Vec<_> = x
                    .data()
                    .chunks(per * face)
                    .zip(out.chunks_mut(per * TEACHER_EMBEDDING))
                    .map(|(xs, ys)| s.spawn(move || self.run_faces(k, chunk, xs, ys)))
                    .collect();
                jobs.into_iter().try_for_each(|j| {
                    j.join()
                        .map_err(|_| Error::InvalidArgument("a teacher thread panicked".into()))?
                })
            })?;
        }
        Tensor::new(&[n, TEACHER_EMBEDDING], out)
    }

    /// Runs the plan on the NCHW faces in `x`, `chunk` faces per run, into rows of `y`; the
    /// per-sample tail (SFace's 25 MB linear layer) runs once on all of them (`run_many`).
    fn run_faces(&self, k: &Kernels, chunk: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
        let face = 3 * TEACHER_RESOLUTION * TEACHER_RESOLUTION;
        let name = &self.graph.spec.inputs[0].name;
        let runs = x
            .chunks(chunk * face)
            .map(|xs| {
                let m = xs.len() / face;
                let t = Tensor::new(&[m, 3, TEACHER_RESOLUTION, TEACHER_RESOLUTION], xs.to_vec())?;
                Ok(vec![(name.clone(), t)])
            })
            .collect::<Result<Vec<_>>>()?;
        if runs.is_empty() {
            return Ok(());
        }
        let o = self.plan.run_many(k, runs)?.remove(0);
        if o.numel() != y.len() {
            return Err(Error::Shape(format!(
                "teacher gave {}-D outputs, expected {TEACHER_EMBEDDING}",
                o.numel() / (x.len() / face).max(1)
            )));
        }
        y.copy_from_slice(o.data());
        Ok(())
    }

    /// L2-normalised embeddings `[n, 128]`, on [`default_threads`] threads.
    pub fn forward(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        self.forward_threads(k, x, default_threads())
    }

    /// L2-normalised embeddings `[n, 128]` on at most `threads` threads.
    pub fn forward_threads(&self, k: &Kernels, x: &Tensor, threads: usize) -> Result<Tensor> {
        let mut e = self.forward_raw_threads(k, x, threads)?;
        ops::l2_normalize(k, &mut e)?;
        Ok(e)
    }
}
