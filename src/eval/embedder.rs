//! The one interface evaluation needs from a model: faces at its native input size in,
//! embeddings out. Owns the student's implementation; must not know any evaluation protocol.
//!
//! Plugging in another model (the SFace teacher, or the teacher plus the step-1 bridge head) takes
//! one `impl FaceEmbedder` next to that model: `input_side()` is its native side (112 for the
//! teacher) and `embed()` runs it on faces already resized to that side. The evaluation applies
//! the resolution protocol (`data::resample::degrade_to_resolution`) before calling `embed`, so
//! a model never sees more than r×r pixels of detail. Then add its name to
//! `cli::eval::load_embedder`.

use crate::cpu::{self, Kernels};
use crate::data::image::{self, Rgb8};
use crate::distill::head::BridgeHead;
use crate::error::{Error, Result};
use crate::model::student::{Normalization, StudentNet};
use crate::model::teacher::{Teacher, TEACHER_RESOLUTION};
use crate::tensor::Tensor;
use std::path::Path;

/// A face-recognition model as evaluation sees it.
pub trait FaceEmbedder {
    /// A short human-readable name for reports, e.g. `student 16px (weights/student.safetensors)`.
    fn name(&self) -> String;
    /// The side of the square face image the model takes natively.
    fn input_side(&self) -> usize;
    /// Embeds faces of `input_side() × input_side()` pixels into `[faces.len(), d]` rows.
    /// Rows need not be normalised; evaluation compares them by cosine similarity.
    fn embed(&self, faces: &[Rgb8]) -> Result<Tensor>;
}

/// The BridgeNet student, run through the process-wide kernel table.
pub struct StudentEmbedder {
    net: StudentNet,
    kernels: &'static Kernels,
    label: String,
}

impl StudentEmbedder {
    /// Wraps a loaded student; `label` names it in reports.
    pub fn new(net: StudentNet, label: impl Into<String>) -> Result<Self> {
        Ok(StudentEmbedder {
            net,
            kernels: cpu::kernels()?,
            label: label.into(),
        })
    }

    /// Loads a student weight file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::new(StudentNet::load(path)?, path.display().to_string())
    }
}

impl FaceEmbedder for StudentEmbedder {
    fn name(&self) -> String {
        format!("student {0}x{0} ({1})", self.net.resolution(), self.label)
    }

    fn input_side(&self) -> usize {
        self.net.resolution()
    }

    fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
        if faces.is_empty() {
            return Err(Error::EmptyInput("no faces to embed".into()));
        }
        let side = self.net.resolution();
        let inputs = faces
            .iter()
            .map(|f| image::to_input(f, side, &self.net.info.normalization))
            .collect::<Result<Vec<_>>>()?;
        self.net.forward(self.kernels, &Tensor::stack(&inputs)?)
    }
}

/// The SFace teacher, optionally followed by the step-1 bridge head (then it embeds into the
/// space the student was distilled to mimic), on all CPUs.
pub struct TeacherEmbedder {
    teacher: Teacher,
    head: Option<BridgeHead>,
    kernels: &'static Kernels,
    label: String,
    threads: usize,
}

impl TeacherEmbedder {
    pub fn new(
        teacher: Teacher,
        head: Option<BridgeHead>,
        label: impl Into<String>,
    ) -> Result<Self> {
        Ok(TeacherEmbedder {
            teacher,
            head,
            kernels: cpu::kernels()?,
            label: label.into(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }
}

impl FaceEmbedder for TeacherEmbedder {
    fn name(&self) -> String {
        match &self.head {
            Some(_) => format!("teacher+bridge 112x112 ({})", self.label),
            None => format!("teacher 112x112 ({})", self.label),
        }
    }

    fn input_side(&self) -> usize {
        TEACHER_RESOLUTION
    }

    fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
        if faces.is_empty() {
            return Err(Error::EmptyInput("no faces to embed".into()));
        }
        let raw = Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let inputs = faces
            .iter()
            .map(|f| image::to_input(f, TEACHER_RESOLUTION, &raw))
            .collect::<Result<Vec<_>>>()?;
        // The teacher splits the batch over threads itself.
        let e =
            self.teacher
                .forward_threads(self.kernels, &Tensor::stack(&inputs)?, self.threads)?;
        match &self.head {
            Some(h) => h.forward(self.kernels, &e),
            None => Ok(e),
        }
    }
}
